"""Every kind of change trialwatch reports, defined once: its ``field``, label, severity and what it
means for a referral.

A change (``Change``) is one of these kinds:

- **field changes**: what ``diff(old, new)`` finds between two versions of a record (the
  catalogue ``FIELDS`` below, in the order a digest lists changes of one severity). Any other
  difference under ``protocolSection`` is a minor change whose ``field`` is the dotted JSON path
  (``fallback``), so nothing is missed silently.
- **search events**: a trial joins or leaves a saved search (``search_joined``, ``search_left``).
- **record events**: the record is gone from ClinicalTrials.gov (``record_removed``).
- **history**: changes between registry versions (``trialwatch backfill``) are field changes of
  the same kinds, stored with ``historical`` set and a ``registry_date``; they are never news
  (no outbox row, digest or feed entry), so they need no kind of their own.

A new event type is one ``Kind`` here (with a constructor when code outside ``diff`` makes it),
its row in the README's change table (``tests/test_docs.py`` checks the two agree), and the line
that emits it. ``Change``'s public shape ``(field, label, old, new, severity, detail, site)`` is
what the store, feeds, CLI and mail read.
"""

from __future__ import annotations

import enum
import re
from dataclasses import asdict, dataclass
from typing import Any


class Severity(enum.StrEnum):
    """A change's urgency. A ``str``: stored, compared and printed as ``"critical"`` etc."""

    CRITICAL = "critical"
    IMPORTANT = "important"
    MINOR = "minor"

    @property
    def rank(self) -> int:
        """3 for critical, 2 for important, 1 for minor: higher is more urgent."""
        return len(_ORDER) - _ORDER.index(self)


_ORDER = tuple(Severity)                                   # most severe first
SEVERITIES: tuple[str, ...] = tuple(s.value for s in _ORDER)
SEVERITY_RANK: dict[str, int] = {s.value: s.rank for s in _ORDER}


def rank(severity: str | None) -> int:
    """The rank of a severity word; 0 for anything else (an unknown stored value sorts last)."""
    return SEVERITY_RANK.get(severity or "", 0)


# A change of the overall status: its catalogued field, or the same value under its JSON path.
STATUS_FIELDS = frozenset({"overall_status", "protocolSection.statusModule.overallStatus"})


def is_status_change(change: Any) -> bool:
    """Whether a change (a ``Change`` or a stored row) is of the trial's overall status."""
    return change.field in STATUS_FIELDS


# Overall statuses of a trial that no longer recruits (and is not an expanded-access record).
NOT_RECRUITING = ("ACTIVE_NOT_RECRUITING", "SUSPENDED", "TERMINATED", "COMPLETED", "WITHDRAWN")


def stops_recruiting(change: Any) -> bool:
    """Whether a change moves the trial's overall status to one that takes no new patients."""
    return is_status_change(change) and change.new_value in NOT_RECRUITING


@dataclass(frozen=True)
class Change:
    field: str            # stable machine name: overall_status, site_status, ... or a JSON path
    label: str            # what a person reads: "Overall status", "Site Mayo Clinic (Rochester, US)"
    old: Any              # JSON-able value before (None: absent)
    new: Any              # JSON-able value after (None: absent)
    severity: str         # a Severity: critical | important | minor
    detail: str | None = None   # e.g. a readable line diff of eligibility criteria
    site: str | None = None     # facility name, for per-site changes

    @property
    def rank(self) -> int:
        return SEVERITY_RANK[self.severity]

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Kind:
    """One kind of change. ``label`` is the words a reader sees; ``{…}`` marks a part filled in
    per change (a measure, a site, a search name). ``severities`` are the ones it can take,
    ``severity`` the usual one."""

    field: str
    label: str
    severities: tuple[Severity, ...]
    meaning: str                      # what it means for a referral
    family: str = "field"             # field | search | record
    also: tuple[str, ...] = ()        # other labels it may carry ("Results removed")

    @property
    def severity(self) -> Severity:
        return self.severities[0]

    def words(self, **parts: str) -> str:
        """The label of one change: ``words(site="Mayo Clinic (Rochester, Minnesota)")``."""
        return self.label.format(**parts)

    def doc_label(self) -> str:
        """The label as the README writes it: ``{measure}`` -> ``‹measure›``."""
        return re.sub(r"\{(\w+)\}", lambda m: _DOC_PARTS.get(m[1], f"‹{m[1]}›"), self.label)


_DOC_PARTS = {"site": "‹facility› (‹city, state, country›)"}


_C, _I, _M = Severity.CRITICAL, Severity.IMPORTANT, Severity.MINOR

_KINDS = (
    Kind("overall_status", "Overall status", (_I, _C),
         "Whether the trial takes patients at all; suspended, terminated or withdrawn (critical) ends referrals."),
    Kind("why_stopped", "Why stopped", (_C, _I),
         "The registry's reason a trial stopped: its first appearance is the news that it stopped."),
    Kind("primary_outcomes", "Primary outcomes", (_C, _M),
         "The endpoint the trial is judged by; swapping it changes what a patient is enrolled into."),
    Kind("primary_outcome_time_frame", "Primary outcome time frame: {measure}", (_I,),
         "When the primary endpoint is assessed; moving it is a known form of outcome switching."),
    Kind("last_known_status", "Last known status", (_I,),
         "The status an unverified record last reported."),
    Kind("site_added", "Site: {site}", (_I,),
         "A new place where a patient might enrol."),
    Kind("site_removed", "Site: {site}", (_I,),
         "A place no longer on the record: a patient referred there has nowhere to go."),
    Kind("site_status", "Site: {site}", (_I,),
         "Whether one site recruits: the site a patient is referred to must be open."),
    Kind("enrollment", "Enrollment", (_I,),
         "Target or actual number of participants; reaching it closes enrolment."),
    Kind("primary_completion_date", "Primary completion date", (_I,),
         "When the primary endpoint's data collection ends, and with it usually enrolment."),
    Kind("completion_date", "Completion date", (_I,), "When the whole study ends."),
    Kind("eligibility_criteria", "Eligibility criteria", (_I, _M),
         "Who may enrol: a patient who qualified yesterday may not today (minor when only spacing changed)."),
    Kind("sex", "Sex", (_I,), "Which sexes may enrol."),
    Kind("minimum_age", "Minimum age", (_I,), "The youngest age that may enrol."),
    Kind("maximum_age", "Maximum age", (_I,), "The oldest age that may enrol."),
    Kind("healthy_volunteers", "Healthy volunteers", (_I,), "Whether people without the condition may enrol."),
    Kind("results_posted", "Results posted", (_I,),
         "Results are on ClinicalTrials.gov (or were removed): worth reading before a referral.",
         also=("Results removed",)),
    Kind("expanded_access", "Expanded access", (_I, _M),
         "A route to the drug for a patient who cannot enrol (important when it newly opens)."),
    Kind("primary_outcome_description", "Primary outcome description: {measure}", (_M,),
         "How the primary endpoint is described."),
    Kind("site_statuses", "Site statuses", (_M,),
         "Per-site status vanished from every site at once: the registry does that when a study stops "
         "recruiting (overall status carries the news)."),
    Kind("site_contact", "Site contacts: {site}", (_M,),
         "Whom to call at one site."),
    Kind("site_details", "Site details: {site}", (_M,),
         "A site's address or coordinates."),
    Kind("std_ages", "Age groups", (_M,), "The registry's age groups, when they moved without the age limits."),
    Kind("brief_title", "Title", (_M,), "The trial's short title."),
    Kind("official_title", "Official title", (_M,), "The trial's full title."),
    Kind("start_date", "Start date", (_M,), "When the study started or will start."),
    Kind("status_verified_date", "Status verified", (_M,),
         "When the sponsor last confirmed the status; an old date makes the status doubtful."),
    Kind("study_type", "Study type", (_M,), "Interventional, observational or expanded access."),
    Kind("phases", "Phases", (_M,), "The trial's phase."),
    Kind("conditions", "Conditions", (_M,), "The conditions studied."),
    Kind("interventions", "Interventions", (_M,), "What participants receive."),
    Kind("arms", "Arms", (_M,), "The groups participants are assigned to."),
    Kind("secondary_outcomes", "Secondary outcomes", (_M,), "The trial's other measures."),
    Kind("lead_sponsor", "Lead sponsor", (_M,), "Who runs the trial."),
    Kind("overall_officials", "Overall officials", (_M,), "The investigators responsible for the trial."),
    Kind("central_contacts", "Central contacts", (_M,), "Whom to call about the trial as a whole."),
    Kind("results_section", "Results", (_M,), "Posted results were updated."),
    Kind("documents", "Documents", (_M,), "Protocol, statistical plan or consent form files."),
    Kind("annotations", "Annotations", (_M,), "The registry's own notes on the record."),
    Kind("record_removed", "Record no longer on ClinicalTrials.gov", (_C,),
         "The record answers 'not found': withdrawn from public view or merged; do not refer from it.",
         family="record"),
    Kind("search_match", "Now matches saved search “{search}”", (_I,),
         "A trial newly fits a saved search: a candidate to look at.", family="search"),
    Kind("search_unmatch", "No longer matches saved search “{search}”", (_I,),
         "A trial left a saved search; the detail says why (status, gone, or the search's results).",
         family="search"),
)

KINDS: dict[str, Kind] = {k.field: k for k in _KINDS}
# The field changes diff reports.
FIELDS: tuple[Kind, ...] = tuple(k for k in _KINDS if k.family == "field")
FALLBACK = Kind("*", "the last key in words", (_M,),
                "Any other change under protocolSection, so nothing is missed silently.")


def kind(field: str) -> Kind:
    """The kind of a change by its field; a dotted JSON path is the fallback kind."""
    return KINDS.get(field, FALLBACK)


# --- constructors for the events code outside diff makes --------------------------------------

def search_joined(search: str) -> Change:
    """The trial newly matches saved search ``search``."""
    k = KINDS["search_match"]
    return Change(k.field, k.words(search=search), None, search, k.severity)


def search_left(search: str, why: str) -> Change:
    """The trial no longer matches saved search ``search``; ``why`` says what moved it."""
    k = KINDS["search_unmatch"]
    return Change(k.field, k.words(search=search), search, None, k.severity, detail=why)


def record_removed(status_before: str | None) -> Change:
    """ClinicalTrials.gov answers 404 for a record it served before (``status_before`` its last status)."""
    k = KINDS["record_removed"]
    return Change(k.field, k.label, status_before, None, k.severity,
                  detail="ClinicalTrials.gov answers 'not found' for this record; it may have been "
                         "withdrawn from public view or merged into another record.")

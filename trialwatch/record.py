"""Reading a ClinicalTrials.gov v2 study record: NCT numbers, the canonical form and its hash.

Pure functions only: nothing here does I/O. The canonical form is what a snapshot stores and
what the content hash covers; it leaves out what the registry changes without the trial changing
(``derivedSection``, last-update dates) and sorts lists whose order means nothing, so two fetches
of an unchanged trial have the same hash.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from .errors import InvalidNctId

# ASCII: ``\d`` would otherwise accept other scripts' digits ("NCT0326860３") and build an ID
# that no URL or database key matches.
_NCT_RE = re.compile(r"^NCT0*([1-9]\d{0,7})$", re.IGNORECASE | re.ASCII)


def normalize_nct(value: str) -> str:
    """``' nct3268603 '`` -> ``'NCT03268603'``; anything that is not an NCT number raises."""
    if not isinstance(value, str):
        raise InvalidNctId(f"{value!r} is not an NCT number")
    m = _NCT_RE.match(value.strip())
    if not m:
        raise InvalidNctId(f"{value.strip()!r} is not an NCT number")
    return "NCT" + m.group(1).zfill(8)


def is_study(obj: Any) -> bool:
    """A plausible v2 study: the shape every real record has, with an NCT number we can read."""
    try:
        nct = obj["protocolSection"]["identificationModule"]["nctId"]
        normalize_nct(nct)
        return isinstance(obj["protocolSection"].get("statusModule"), dict)
    except (KeyError, TypeError, InvalidNctId):
        return False


def nct_of(record: dict) -> str:
    return normalize_nct(record["protocolSection"]["identificationModule"]["nctId"])


# Paths (dotted, list indexes omitted) dropped from the canonical form: the registry rewrites
# them on every data refresh or record touch without the trial itself changing.
CHURN_PATHS = (
    "derivedSection",
    "protocolSection.statusModule.lastUpdateSubmitDate",
    "protocolSection.statusModule.lastUpdatePostDateStruct",
)

# Lists whose order carries no meaning; sorted in the canonical form.
UNORDERED_LISTS = frozenset({
    "protocolSection.identificationModule.nctIdAliases",
    "protocolSection.identificationModule.secondaryIdInfos",
    "protocolSection.conditionsModule.conditions",
    "protocolSection.conditionsModule.keywords",
    "protocolSection.sponsorCollaboratorsModule.collaborators",
    "protocolSection.designModule.phases",
    "protocolSection.eligibilityModule.stdAges",
    "protocolSection.contactsLocationsModule.centralContacts",
    "protocolSection.contactsLocationsModule.overallOfficials",
    "protocolSection.contactsLocationsModule.locations",
    "protocolSection.contactsLocationsModule.locations.contacts",
    "protocolSection.referencesModule.references",
    "protocolSection.referencesModule.seeAlsoLinks",
})


# Built once: json.dumps with these options would build an encoder on every call, and the
# canonical form makes hundreds of thousands of calls in a first poll of 10,000 trials.
# check_circular=False changes nothing for parsed JSON, which has no cycles.
# The sort key of an unordered list's items: their JSON, keys sorted (the form hashes were
# made with; a cheaper key must order every list the same way, or stored hashes change).
_sort_key = json.JSONEncoder(sort_keys=True, ensure_ascii=False, check_circular=False).encode
_COMPACT = json.JSONEncoder(sort_keys=True, ensure_ascii=False, check_circular=False,
                            separators=(",", ":")).encode


class _Spec:
    """What the canonical form changes under one path: keys dropped, lists sorted, and the
    paths below that hold more of either. A path with neither is kept as it is."""

    __slots__ = ("drop", "sort", "children")

    def __init__(self) -> None:
        self.drop: frozenset[str] = frozenset()
        self.sort = False
        self.children: dict[str, _Spec] = {}


def _build_spec() -> _Spec:
    root = _Spec()
    for paths, churn in ((CHURN_PATHS, True), (UNORDERED_LISTS, False)):
        for path in paths:
            *parents, last = path.split(".")
            node = root
            for key in parents:
                node = node.children.setdefault(key, _Spec())
            if churn:
                node.drop = node.drop | {last}
            else:
                node.children.setdefault(last, _Spec()).sort = True
    return root


_SPEC = _build_spec()


def _dotted(spec: _Spec, key: str) -> tuple[bool, _Spec | None]:
    """(dropped, spec below) for ``key`` under ``spec``. Paths were plain joined strings, so a
    key "a.b" sits at the same path as "b" under "a", and an empty key at the top at the top's
    own path. No real record has such keys; a crafted one keeps its canonical form (and hash)."""
    if "." not in key and key:
        return key in spec.drop, spec.children.get(key)
    if not key:
        return False, spec if spec is _SPEC else None
    *parents, last = key.split(".")
    node: _Spec | None = spec
    for part in parents:
        node = node.children.get(part) if node is not None else None
    if node is None:
        return False, None
    return last in node.drop, node.children.get(last)


def _copy(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _copy(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_copy(v) for v in node]
    return node


def _canon(node: Any, spec: _Spec, copy: bool) -> Any:
    """``node`` at the path ``spec`` describes. What the spec leaves alone is deep-copied
    (``copy``) or kept as it is. List indexes are not part of a path: the items of a list,
    and lists nested in it, sit at the list's own path."""
    if isinstance(node, dict):
        if not spec.children and not spec.drop:
            return _copy(node) if copy else node
        return _canon_dict(node, spec, copy)
    if isinstance(node, list):
        if not spec.sort and not spec.children and not spec.drop:
            return _copy(node) if copy else node
        items = [_canon(v, spec, copy) for v in node]
        if spec.sort and len(items) > 1:
            items.sort(key=_sort_key)
        return items
    return node


def _canon_dict(node: dict, spec: _Spec, copy: bool) -> dict:
    if "" in node or "." in "".join(node):
        return _canon_odd_keys(node, spec, copy)
    drop, children = spec.drop, spec.children
    if copy:
        out = {k: v if k in children else _copy(v) for k, v in node.items() if k not in drop}
    else:
        out = {k: v for k, v in node.items() if k not in drop} if drop & node.keys() else dict(node)
    for k, child in children.items():
        if k in out:
            out[k] = _canon(out[k], child, copy)
    return out


def _canon_odd_keys(node: dict, spec: _Spec, copy: bool) -> dict:
    """A dict with a key holding a dot, or an empty key: key by key (see ``_dotted``)."""
    out = {}
    for k, v in node.items():
        dropped, child = _dotted(spec, k)
        if not dropped:
            out[k] = (_copy(v) if copy else v) if child is None else _canon(v, child, copy)
    return out


def canonical(record: dict) -> dict:
    """The record as trialwatch keeps it: churn removed, unordered lists sorted (a new object
    sharing nothing with ``record``)."""
    return _canon(record, _SPEC, True)


def canonical_view(record: dict) -> dict:
    """``canonical(record)`` without the copy: what it leaves alone is ``record``'s own
    objects. For readers only (the store's hashing and splitting): neither the view nor
    ``record`` may be changed afterwards. Equal to ``canonical(record)``, byte for byte."""
    return _canon(record, _SPEC, False)


def canonical_json(record: dict) -> bytes:
    """Canonical bytes of an already-canonical record (stable key order, compact)."""
    return _COMPACT(record).encode()


def content_hash(record: dict) -> str:
    """SHA-256 of the canonical form: equal for two fetches that differ only in churn."""
    return hashlib.sha256(canonical_json(canonical(record))).hexdigest()


def get(record: dict | None, path: str, default: Any = None) -> Any:
    """``get(r, 'protocolSection.statusModule.overallStatus')``; missing parts give default."""
    node: Any = record
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


STATUS_WORDS = {
    "ACTIVE_NOT_RECRUITING": "Active, not recruiting",
    "COMPLETED": "Completed",
    "ENROLLING_BY_INVITATION": "Enrolling by invitation",
    "NOT_YET_RECRUITING": "Not yet recruiting",
    "RECRUITING": "Recruiting",
    "SUSPENDED": "Suspended",
    "TERMINATED": "Terminated",
    "WITHDRAWN": "Withdrawn",
    "AVAILABLE": "Available",
    "NO_LONGER_AVAILABLE": "No longer available",
    "TEMPORARILY_NOT_AVAILABLE": "Temporarily not available",
    "APPROVED_FOR_MARKETING": "Approved for marketing",
    "WITHHELD": "Withheld",
    "UNKNOWN": "Unknown status",
}

_ENUM_WORDS = {
    **STATUS_WORDS,
    "ACTUAL": "actual", "ESTIMATED": "estimated",
    "EARLY_PHASE1": "Early Phase 1", "PHASE1": "Phase 1", "PHASE2": "Phase 2",
    "PHASE3": "Phase 3", "PHASE4": "Phase 4", "NA": "Not applicable",
    "ALL": "All", "FEMALE": "Female", "MALE": "Male",
    "CHILD": "Child", "ADULT": "Adult", "OLDER_ADULT": "Older adult",
}
_ENUM_RE = re.compile(r"^[A-Z][A-Z0-9_]+$")


def words(value: Any) -> str:
    """A stored value as a person reads it: enums in words, lists joined, None as an em dash.

    Dicts are the shapes ``diff`` puts in a change: ``{"date", "type"}`` and ``{"count", "type"}``
    read "2026-12 (estimated)" / "75 (estimated)"; any other dict lists its values.
    """
    if value is None or value == "" or value == {}:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        sep = "; " if any(isinstance(v, dict) for v in value) else ", "
        return sep.join(words(v) for v in value) or "—"
    if isinstance(value, dict):
        return _dict_words(value)
    if isinstance(value, str) and _ENUM_RE.match(value) and not _NCT_RE.match(value):
        return _ENUM_WORDS.get(value, value.replace("_", " ").capitalize())
    return str(value)


def _dict_words(value: dict) -> str:
    main = next((k for k in ("date", "count") if k in value), None)
    if main is not None and set(value) <= {main, "type"}:
        kind = value.get("type")
        return f"{words(value[main])} ({words(kind)})" if kind else words(value[main])
    # Booleans alone would read "yes"/"no" with no subject, so they keep their key.
    return ", ".join(f"{_key_words(k)}: {words(v)}" if isinstance(v, bool) else words(v)
                     for k, v in value.items() if v not in (None, "", [], {})) or "—"


def _key_words(key: str) -> str:
    """``hasExpandedAccess`` -> ``has expanded access``."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", key).lower()


def url(nct_id: str) -> str:
    return f"https://clinicaltrials.gov/study/{nct_id}"


# --- summary: what a physician reads in ten seconds before a referral ---------------------------

UNSPECIFIED = "UNSPECIFIED"   # sites_by_status key for sites that carry no status (JSON keys are strings)


@dataclass(frozen=True)
class Contact:
    name: str | None
    role: str | None
    phone: str | None
    email: str | None


@dataclass(frozen=True)
class Official:
    name: str | None
    affiliation: str | None
    role: str | None


@dataclass(frozen=True)
class Site:
    facility: str | None
    city: str | None
    state: str | None
    country: str | None
    status: str | None          # RecruitmentStatus enum; the registry often omits it
    contacts: list[Contact] = field(default_factory=list)


@dataclass(frozen=True)
class ExpandedAccess:
    has_expanded_access: bool | None
    nct_id: str | None          # the separate expanded-access record, when there is one
    status: str | None          # statusForNctId: AVAILABLE, APPROVED_FOR_MARKETING, ...


@dataclass(frozen=True)
class Eligibility:
    sex: str | None
    minimum_age: str | None     # as the registry writes it: "18 Years"
    maximum_age: str | None
    healthy_volunteers: bool | None
    std_ages: list[str]
    criteria: str | None


@dataclass(frozen=True)
class Outcome:
    measure: str | None
    time_frame: str | None


@dataclass(frozen=True)
class Summary:
    nct_id: str | None
    title: str | None
    official_title: str | None
    acronym: str | None
    status: str | None
    status_words: str
    last_known_status: str | None
    why_stopped: str | None
    status_verified: str | None
    enrollment_count: int | None
    enrollment_type: str | None
    phases: list[str]
    study_type: str | None
    lead_sponsor: str | None
    conditions: list[str]
    interventions: list[str]
    start_date: str | None
    start_date_type: str | None
    primary_completion_date: str | None
    primary_completion_date_type: str | None
    completion_date: str | None
    completion_date_type: str | None
    has_results: bool
    results_first_posted: str | None
    sites: list[Site]
    sites_by_status: dict[str, int]
    central_contacts: list[Contact]
    overall_officials: list[Official]
    expanded_access: ExpandedAccess | None
    eligibility: Eligibility
    primary_outcomes: list[Outcome]
    last_update_posted: str | None   # None on a canonical record: the canonical form drops it
    url: str | None

    def to_dict(self) -> dict:
        return asdict(self)


def as_list(value: Any) -> list:
    # Real records omit empty modules and lists; a wrong type is treated as absent, not a crash.
    return value if isinstance(value, list) else []


def _contact(c: dict) -> Contact:
    return Contact(c.get("name"), c.get("role"), c.get("phone"), c.get("email"))


def _dicts(value: Any) -> list[dict]:
    """The dict items of a list (a partial record may hold anything)."""
    return [x for x in as_list(value) if isinstance(x, dict)]


def summary(record: dict) -> Summary:
    """The few facts a physician checks before a referral; never fails on a partial record."""
    ps = "protocolSection"
    g = lambda path: get(record, f"{ps}.{path}")  # noqa: E731
    nct = g("identificationModule.nctId")
    status = g("statusModule.overallStatus")
    sites = [Site(facility=loc.get("facility"), city=loc.get("city"), state=loc.get("state"),
                  country=loc.get("country"), status=loc.get("status"),
                  contacts=[_contact(c) for c in _dicts(loc.get("contacts"))])
             for loc in _dicts(g("contactsLocationsModule.locations"))]
    # A status that is not an enum string is no status (a wrong type must not break the sort).
    by_status = Counter(s.status if s.status and isinstance(s.status, str) else UNSPECIFIED
                        for s in sites)
    eai = g("statusModule.expandedAccessInfo")
    elig = g("eligibilityModule")
    elig = elig if isinstance(elig, dict) else {}
    return Summary(
        nct_id=nct,
        title=g("identificationModule.briefTitle"),
        official_title=g("identificationModule.officialTitle"),
        acronym=g("identificationModule.acronym"),
        status=status,
        status_words=words(status),
        last_known_status=g("statusModule.lastKnownStatus"),
        why_stopped=g("statusModule.whyStopped"),
        status_verified=g("statusModule.statusVerifiedDate"),
        enrollment_count=g("designModule.enrollmentInfo.count"),
        enrollment_type=g("designModule.enrollmentInfo.type"),
        phases=list(as_list(g("designModule.phases"))),
        study_type=g("designModule.studyType"),
        lead_sponsor=g("sponsorCollaboratorsModule.leadSponsor.name"),
        conditions=list(as_list(g("conditionsModule.conditions"))),
        interventions=[i.get("name") for i in _dicts(g("armsInterventionsModule.interventions"))],
        start_date=g("statusModule.startDateStruct.date"),
        start_date_type=g("statusModule.startDateStruct.type"),
        primary_completion_date=g("statusModule.primaryCompletionDateStruct.date"),
        primary_completion_date_type=g("statusModule.primaryCompletionDateStruct.type"),
        completion_date=g("statusModule.completionDateStruct.date"),
        completion_date_type=g("statusModule.completionDateStruct.type"),
        has_results=bool(get(record, "hasResults")),
        results_first_posted=g("statusModule.resultsFirstPostDateStruct.date"),
        sites=sites,
        sites_by_status=dict(sorted(by_status.items())),
        central_contacts=[_contact(c) for c in _dicts(g("contactsLocationsModule.centralContacts"))],
        overall_officials=[Official(o.get("name"), o.get("affiliation"), o.get("role"))
                           for o in _dicts(g("contactsLocationsModule.overallOfficials"))],
        expanded_access=(ExpandedAccess(eai.get("hasExpandedAccess"), eai.get("nctId"),
                                        eai.get("statusForNctId"))
                         if isinstance(eai, dict) else None),
        eligibility=Eligibility(
            sex=elig.get("sex"), minimum_age=elig.get("minimumAge"),
            maximum_age=elig.get("maximumAge"), healthy_volunteers=elig.get("healthyVolunteers"),
            std_ages=list(as_list(elig.get("stdAges"))), criteria=elig.get("eligibilityCriteria")),
        primary_outcomes=[Outcome(o.get("measure"), o.get("timeFrame"))
                          for o in _dicts(g("outcomesModule.primaryOutcomes"))],
        last_update_posted=g("statusModule.lastUpdatePostDateStruct.date"),
        url=url(nct) if isinstance(nct, str) else None,
    )

"""diff(old, new) -> list[Change]: what changed between two versions of a record, for a physician.

Pure: no clock, network or database; the same two records always give the same list. Both inputs
go through ``record.canonical`` first, so raw fetches and stored canonical snapshots both work and
churn (``derivedSection``, last-update dates, key order, order of unordered lists) never shows.

The result is sorted most severe first, then by the catalogue order below, then by site / path.

Field catalogue (``field`` is stable: scripts and subscriptions may match on it)

============================  ===============================  =========  ====================================
field                         label                            severity   old / new
============================  ===============================  =========  ====================================
overall_status                Overall status                   critical   enum ("RECRUITING"); critical when the
                                                                          new one is SUSPENDED, TERMINATED or
                                                                          WITHDRAWN, else important
why_stopped                   Why stopped                      critical   text; critical when a reason first
                                                                          appears, important when reworded or
                                                                          removed
primary_outcomes              Primary outcomes                 critical   list of measure texts; critical when a
                                                                          measure is added, removed or reworded
                                                                          (minor, label "... (order)", if only
                                                                          reordered); detail = -/+ lines
primary_outcome_time_frame    Primary outcome time frame: <m>  important  text
last_known_status             Last known status                important  enum
site_added, site_removed      Site: <facility (city, state,    important  {facility, city, state, country,
                              country)>                                   status} / None
site_status                   Site: <facility (...)>           important  enum or None
enrollment                    Enrollment                       important  {"count": 75, "type": "ESTIMATED"}
primary_completion_date       Primary completion date          important  {"date": "2026-12", "type": "ESTIMATED"}
completion_date               Completion date                  important  same shape
eligibility_criteria          Eligibility criteria             important  full text; detail = items gained/lost per list
sex                           Sex                              important  enum
minimum_age, maximum_age      Minimum age, Maximum age         important  text ("18 Years")
healthy_volunteers            Healthy volunteers               important  bool
results_posted                Results posted (Results removed) important  bool (hasResults); detail = first
                                                                          posted date and results modules
expanded_access               Expanded access                  important  expandedAccessInfo as the API has it;
                                                                          important when it newly becomes
                                                                          available, minor otherwise
primary_outcome_description   Primary outcome description: <m> minor      text; detail = line diff
site_statuses                 Site statuses                    minor      {status: count} -> None: per-site
                                                                          status vanished from every site at
                                                                          once (the registry does that when a
                                                                          study stops recruiting)
site_contact                  Site contacts: <facility (...)>  minor      list of contact dicts; detail per
                                                                          contact
site_details                  Site details: <facility (...)>   minor      {key: value} of the changed keys
                                                                          (state, zip, geoPoint, ...)
std_ages                      Age groups                       minor      list of enums; only when the age
                                                                          limits did not change with it
brief_title                   Title                            minor      text
official_title                Official title                   minor      text
start_date                    Start date                       minor      {"date", "type"}
status_verified_date          Status verified                  minor      "2025-08"
study_type                    Study type                       minor      enum
phases                        Phases                           minor      list of enums
conditions                    Conditions                       minor      list of text
interventions                 Interventions                    minor      list of names; detail per item
arms                          Arms                             minor      list of labels; detail per item
secondary_outcomes            Secondary outcomes               minor      list of measures; detail per item
lead_sponsor                  Lead sponsor                     minor      {"name", "class"}
overall_officials             Overall officials                minor      list of {name, affiliation, role}
central_contacts              Central contacts                 minor      list of {name, role, phone, email}
results_section               Results                          minor      list of results modules; detail
                                                                          names the updated ones
documents                     Documents                        minor      list of large-document file names
annotations                   Annotations                      minor      list of annotation modules
<dotted JSON path>            humanised last key               minor      the value at that path
============================  ===============================  =========  ====================================

Per-item ``detail`` lines read ``+ added``, ``- removed``, ``~ name: phone: a → b``; text diffs
read ``- old line`` / ``+ new line`` / ``  context`` with ``…`` between hunks.

Dates and enrollment keep the API's own struct shape, so an ESTIMATED -> ACTUAL change is visible
and enums stay as the API spells them; ``record.words`` renders them ("2026-12 (estimated)").

Sites are keyed by (facility, city, country); ``Change.site`` is the facility name (or the place
when a site has no facility name). Per-site changes are one Change per site.

The generic fallback reports any other difference anywhere in the record as a minor change whose
``field`` is the dotted path (``protocolSection.descriptionModule.briefSummary``); lists are reported
at the list's path, never per index. Paths the catalogue owns are never reported twice. Should a
catalogue entry's source differ in a way the entry does not describe, the fallback reports the
source path, so nothing is silently missed.

``ignore`` holds dotted path prefixes (``protocolSection.referencesModule``): the subtree is
removed from both records before comparing, which silences the catalogue entries reading it too
(``protocolSection.contactsLocationsModule`` turns off contacts and sites). A catalogue ``field``
name (``site_contact``) is accepted as well and drops changes with that field.
"""

from __future__ import annotations

import difflib
import re
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any, Callable, Iterable

from . import record as rec

SEVERITY_RANK = {"critical": 3, "important": 2, "minor": 1}


@dataclass(frozen=True)
class Change:
    field: str            # stable machine name: overall_status, site_status, ... or a JSON path
    label: str            # what a person reads: "Overall status", "Site Mayo Clinic (Rochester, US)"
    old: Any              # JSON-able value before (None: absent)
    new: Any              # JSON-able value after (None: absent)
    severity: str         # critical | important | minor
    detail: str | None = None   # e.g. a readable line diff of eligibility criteria
    site: str | None = None     # facility name, for per-site changes

    @property
    def rank(self) -> int:
        return SEVERITY_RANK[self.severity]

    def to_dict(self) -> dict:
        return asdict(self)


STOPPED = frozenset({"SUSPENDED", "TERMINATED", "WITHDRAWN"})

_PS = "protocolSection"
_STATUS = f"{_PS}.statusModule"
_DESIGN = f"{_PS}.designModule"
_ELIG = f"{_PS}.eligibilityModule"
_OUTCOMES = f"{_PS}.outcomesModule"
_ARMS = f"{_PS}.armsInterventionsModule"
_CONTACTS = f"{_PS}.contactsLocationsModule"
_IDENT = f"{_PS}.identificationModule"
_LOCATIONS = f"{_CONTACTS}.locations"

Pair = tuple[dict, dict]


# --- small helpers ------------------------------------------------------------------------------

def _list(value: Any) -> list:
    return value if isinstance(value, list) else []


def _humanize(key: str) -> str:
    """``briefSummary`` -> ``brief summary``; ``designModule`` -> ``design``."""
    key = re.sub(r"(Module|Struct|Info)$", "", key) or key
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", key).lower()


# Last keys too vague to stand alone in a label: the parent's name goes in front.
_VAGUE = frozenset({"type", "date", "name", "class", "count", "description", "label", "value",
                    "status", "code", "id", "info"})


_ACRONYMS = {"nct": "NCT", "id": "ID", "ids": "IDs", "ipd": "IPD", "fda": "FDA", "dmc": "DMC",
             "qc": "QC", "url": "URL", "us": "US", "mesh": "MeSH", "sap": "SAP", "icf": "ICF"}


def _path_label(path: str) -> str:
    """``…designInfo.maskingInfo.masking`` -> ``Masking``; ``…organization.class`` -> ``Organization class``."""
    parts = [p for p in path.split(".") if p != _PS] or [path]
    words = _humanize(parts[-1])
    if parts[-1] in _VAGUE and len(parts) > 1:
        parent = _humanize(parts[-2])
        words = parent if parent.endswith(" " + words) else f"{parent} {words}"
    words = " ".join(_ACRONYMS.get(w, w) for w in words.split(" "))
    return words[:1].upper() + words[1:]


def _text(v: Any) -> str:
    # Keys must be strings whatever a partial record holds, so sorting them cannot fail.
    return v if isinstance(v, str) else ("" if v is None else rec.words(v))


def line_diff(old: str | None, new: str | None, *, context: int = 1) -> str:
    """Changed lines of two texts, ``- `` removed, ``+ `` added, ``  `` context, ``…`` between hunks."""
    out: list[str] = []
    started = False
    for line in difflib.unified_diff(_text(old).splitlines(), _text(new).splitlines(),
                                     lineterm="", n=context):
        if line.startswith("@@"):
            if started:
                out.append("…")
            started = True
            continue
        if not started:        # the ---/+++ file header
            continue
        tag, text = line[:1], line[1:]
        if tag == " ":
            if text.strip():   # blank context lines (between bullets) say nothing
                out.append(f"  {text}")
        else:
            out.append(f"{tag} {text}")
    return "\n".join(out)


def _set_detail(old: list, new: list) -> str | None:
    """``+ added`` / ``- removed`` lines for two lists of scalars."""
    o, n = Counter(map(rec.words, old)), Counter(map(rec.words, new))
    lines = [f"- {x}" for x in sorted((o - n).elements())] + [f"+ {x}" for x in sorted((n - o).elements())]
    return "\n".join(lines) or None


def _short(v: Any) -> bool:
    return not isinstance(v, (dict, list)) and len(str(v)) <= 80


def _item_change(old: dict, new: dict) -> str:
    """What changed inside one list item: ``phone: 1 → 2; description changed``."""
    parts = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if a != b:
            parts.append(f"{_humanize(k)}: {rec.words(a)} → {rec.words(b)}" if _short(a) and _short(b)
                         else f"{_humanize(k)} changed")
    return "; ".join(parts)


def _keyed(items: Iterable[Any], key: Callable[[dict], Any]) -> dict[tuple, dict]:
    """Index list items by key; repeats of a key get an occurrence number so none is lost."""
    out: dict[tuple, dict] = {}
    seen: Counter = Counter()
    for item in items:
        if not isinstance(item, dict):
            item = {"value": item}
        k = _text(key(item))
        out[(k, seen[k])] = item
        seen[k] += 1
    return out


def _keyed_detail(old: list, new: list, key: Callable[[dict], str]) -> str | None:
    o, n = _keyed(old, key), _keyed(new, key)
    lines = []
    for k in sorted(set(o) | set(n)):
        name = k[0] or "(unnamed)"
        if k not in n:
            lines.append(f"- {name}")
        elif k not in o:
            lines.append(f"+ {name}")
        elif o[k] != n[k]:
            lines.append(f"~ {name}: {_item_change(o[k], n[k])}")
    return "\n".join(lines) or None


# --- catalogue entries: each reads a pair of canonical records and returns changes ------------

def _overall_status(o: dict, n: dict) -> list[Change]:
    a, b = rec.get(o, f"{_STATUS}.overallStatus"), rec.get(n, f"{_STATUS}.overallStatus")
    if a == b:
        return []
    return [Change("overall_status", "Overall status", a, b,
                   "critical" if isinstance(b, str) and b in STOPPED else "important")]


def _why_stopped(o: dict, n: dict) -> list[Change]:
    a, b = rec.get(o, f"{_STATUS}.whyStopped"), rec.get(n, f"{_STATUS}.whyStopped")
    if a == b:
        return []
    # A reason appearing is the news that the trial stopped; later rewording is less urgent.
    return [Change("why_stopped", "Why stopped", a, b, "critical" if not a and b else "important")]


def _measure(item: dict) -> str:
    return _text(item.get("measure"))


def _squash(text: str) -> str:
    return " ".join(text.split())


def _with_time_frame(item: dict) -> str:
    tf = item.get("timeFrame")
    return f"{_measure(item)} (time frame: {_text(tf)})" if tf else _measure(item)


def _primary_outcomes(o: dict, n: dict) -> list[Change]:
    a = [x for x in _list(rec.get(o, f"{_OUTCOMES}.primaryOutcomes")) if isinstance(x, dict)]
    b = [x for x in _list(rec.get(n, f"{_OUTCOMES}.primaryOutcomes")) if isinstance(x, dict)]
    if a == b:
        return []
    ma, mb = [_measure(x) for x in a], [_measure(x) for x in b]
    out = []
    if Counter(map(_squash, ma)) == Counter(map(_squash, mb)) and Counter(ma) != Counter(mb):
        # Only spacing differs: the endpoint is the same, so no critical alert.
        out.append(Change("primary_outcomes", "Primary outcomes (whitespace only)", ma, mb, "minor"))
    elif Counter(ma) != Counter(mb):
        # Swapping the primary endpoint is what invalidates a trial's conclusions. The detail
        # carries each measure's time frame, which a rewording may have moved as well.
        out.append(Change("primary_outcomes", "Primary outcomes", ma, mb, "critical",
                          detail=_set_detail([_with_time_frame(x) for x in a],
                                             [_with_time_frame(x) for x in b])))
    elif ma != mb:
        out.append(Change("primary_outcomes", "Primary outcomes (order)", ma, mb, "minor"))
    ka, kb = _keyed(a, _measure), _keyed(b, _measure)
    for k in sorted(set(ka) & set(kb)):
        x, y = ka[k], kb[k]
        if x.get("timeFrame") != y.get("timeFrame"):
            # Moving when the primary endpoint is assessed is a known form of outcome switching.
            out.append(Change("primary_outcome_time_frame", f"Primary outcome time frame: {k[0]}",
                              x.get("timeFrame"), y.get("timeFrame"), "important"))
        if x.get("description") != y.get("description"):
            out.append(Change("primary_outcome_description", f"Primary outcome description: {k[0]}",
                              x.get("description"), y.get("description"), "minor",
                              detail=line_diff(x.get("description"), y.get("description"))))
    return out


def _site_key(loc: dict) -> tuple[str, str, str]:
    return (_text(loc.get("facility")), _text(loc.get("city")), _text(loc.get("country")))


def _paired_sites(a: list, b: list) -> tuple[dict[tuple, dict], dict[tuple, dict]]:
    """Old and new sites under shared keys: the same key on both sides is the same site.

    Several sites may share (facility, city, country) ("Research Site" sponsors list one per
    address). Numbering them by position would pair different sites once the canonical sort
    moves one (its status changed), making phantom changes on both. So, within such a group,
    identical sites pair first, then sites at the same address (state, zip, geoPoint), then the
    rest in order; a site left over is added or removed."""
    ga: dict[tuple, list[dict]] = {}
    gb: dict[tuple, list[dict]] = {}
    for items, groups in ((a, ga), (b, gb)):
        for item in items:
            if not isinstance(item, dict):
                item = {"value": item}
            groups.setdefault(_site_key(item), []).append(item)
    ka: dict[tuple, dict] = {}
    kb: dict[tuple, dict] = {}
    for k in set(ga) | set(gb):
        xs, ys = ga.get(k, []), gb.get(k, [])
        if len(xs) <= 1 and len(ys) <= 1:
            if xs:
                ka[(k, 0)] = xs[0]
            if ys:
                kb[(k, 0)] = ys[0]
            continue
        xs, ys = list(xs), list(ys)
        pairs: list[tuple[dict | None, dict | None]] = []
        for same in (lambda x, y: x == y,
                     lambda x, y: all(x.get(f) == y.get(f) for f in ("state", "zip", "geoPoint"))):
            for x in list(xs):
                y = next((y for y in ys if same(x, y)), None)
                if y is not None:
                    pairs.append((x, y))
                    xs.remove(x)
                    ys.remove(y)
        pairs += list(zip(xs, ys))
        pairs += [(x, None) for x in xs[len(ys):]] + [(None, y) for y in ys[len(xs):]]
        for i, (x, y) in enumerate(pairs):
            if x is not None:
                ka[(k, i)] = x
            if y is not None:
                kb[(k, i)] = y
    return ka, kb


def _site_name(loc: dict) -> str:
    place = ", ".join(p for p in (_text(loc.get(k)) for k in ("city", "state", "country")) if p)
    fac = _text(loc.get("facility"))
    return f"{fac} ({place})" if fac and place else (fac or place or "(unnamed site)")


def _site_value(loc: dict) -> dict:
    return {k: loc[k] for k in ("facility", "city", "state", "country", "status") if loc.get(k)}


_SITE_OWN = frozenset({"status", "contacts"})


def _sites(o: dict, n: dict) -> list[Change]:
    a, b = _list(rec.get(o, _LOCATIONS)), _list(rec.get(n, _LOCATIONS))
    if a == b:
        return []
    ka, kb = _paired_sites(a, b)
    out = []
    # The registry drops per-site status from every site once a study stops recruiting: one
    # summary line instead of a thousand "Recruiting -> —" lines (overall_status carries the news).
    vanished = any(loc.get("status") for loc in ka.values()) and not any(
        loc.get("status") for loc in kb.values())
    if vanished:
        counts = Counter(loc.get("status") or rec.UNSPECIFIED for loc in ka.values() if loc.get("status"))
        out.append(Change("site_statuses", "Site statuses", dict(sorted(counts.items())), None, "minor",
                          detail=f"Per-site recruitment status is no longer listed for "
                                 f"{sum(counts.values())} sites (was: "
                                 + ", ".join(f"{v} {rec.words(k).lower()}" for k, v in sorted(counts.items()))
                                 + ")."))
    for k in sorted(set(ka) | set(kb)):
        x, y = ka.get(k), kb.get(k)
        if x == y:
            continue
        loc = y if y is not None else x
        site = _text(loc.get("facility")) or _site_name(loc)
        label = f"Site: {_site_name(loc)}"
        if x is None:
            out.append(Change("site_added", label, None, _site_value(y), "important", site=site))
            continue
        if y is None:
            out.append(Change("site_removed", label, _site_value(x), None, "important", site=site))
            continue
        if x.get("status") != y.get("status") and not (vanished and not y.get("status")):
            out.append(Change("site_status", label, x.get("status"), y.get("status"), "important",
                              site=site))
        if x.get("contacts") != y.get("contacts"):
            ca, cb = _list(x.get("contacts")), _list(y.get("contacts"))
            out.append(Change("site_contact", f"Site contacts: {_site_name(loc)}", ca, cb, "minor",
                              detail=_keyed_detail(ca, cb, lambda c: c.get("name") or ""), site=site))
        rest = sorted(key for key in set(x) | set(y) if key not in _SITE_OWN and x.get(key) != y.get(key))
        if rest:
            out.append(Change("site_details", f"Site details: {_site_name(loc)}",
                              {key: x.get(key) for key in rest}, {key: y.get(key) for key in rest},
                              "minor", site=site))
    return out


def _value(field: str, label: str, path: str, severity: str,
           detail: Callable[[Any, Any], str | None] | None = None) -> Callable[[dict, dict], list[Change]]:
    """A catalogue entry for one value compared whole."""
    def entry(o: dict, n: dict) -> list[Change]:
        a, b = rec.get(o, path), rec.get(n, path)
        if a == b:
            return []
        return [Change(field, label, a, b, severity, detail=detail(a, b) if detail else None)]
    return entry


def _list_detail(a: Any, b: Any) -> str | None:
    return _set_detail(_list(a), _list(b))


def _named_list(field: str, label: str, path: str, key: str) -> Callable[[dict, dict], list[Change]]:
    """Long items (arms, interventions, outcomes): old/new list their names, detail says what changed."""
    def entry(o: dict, n: dict) -> list[Change]:
        a, b = _list(rec.get(o, path)), _list(rec.get(n, path))
        if a == b:
            return []
        names = lambda items: [i.get(key) if isinstance(i, dict) else i for i in items]  # noqa: E731
        return [Change(field, label, names(a), names(b), "minor",
                       detail=_keyed_detail(a, b, lambda i: i.get(key) or ""))]
    return entry


def _people(field: str, label: str, path: str) -> Callable[[dict, dict], list[Change]]:
    """Short items (contacts, officials): old/new are the items, since the phone is the point."""
    def entry(o: dict, n: dict) -> list[Change]:
        a, b = _list(rec.get(o, path)), _list(rec.get(n, path))
        if a == b:
            return []
        return [Change(field, label, a, b, "minor",
                       detail=_keyed_detail(a, b, lambda i: i.get("name") or ""))]
    return entry


def _layout(text: Any) -> list[str]:
    """The lines of a text without what markdown does not render: trailing spaces, blank lines, CR.
    (Leading indentation stays: it nests bullets.)"""
    return [line.rstrip() for line in _text(text).replace("\r", "").split("\n") if line.strip()]


def _eligibility_criteria(o: dict, n: dict) -> list[Change]:
    a, b = rec.get(o, f"{_ELIG}.eligibilityCriteria"), rec.get(n, f"{_ELIG}.eligibilityCriteria")
    if a == b:
        return []
    if isinstance(a, str) and isinstance(b, str) and _layout(a) == _layout(b):
        # Re-spacing alone: not one criterion reads differently, so no physician needs alerting
        # (and a line diff of it would show identical-looking lines).
        return [Change("eligibility_criteria", "Eligibility criteria (whitespace only)", a, b, "minor",
                       detail="Only spacing or blank lines changed; no criterion was reworded.")]
    return [Change("eligibility_criteria", "Eligibility criteria", a, b, "important",
                   detail=_criteria_detail(a, b))]


def _criteria_detail(a: Any, b: Any) -> str:
    """Which list gained or lost which item ("+ Inclusion: …", "- Exclusion: …"); when no item
    differs (bullets, numbering or order changed), the line diff says what did."""
    from .eligibility import criteria_detail

    if all(isinstance(x, str) or x is None for x in (a, b)):
        items = criteria_detail(a, b)
        if items:
            return items
        return ("No criterion was added, removed or reworded; the layout or order changed:\n"
                + line_diff(a, b))
    return line_diff(a, b)


def _ages(o: dict, n: dict) -> list[Change]:
    out = (_value("minimum_age", "Minimum age", f"{_ELIG}.minimumAge", "important")(o, n)
           + _value("maximum_age", "Maximum age", f"{_ELIG}.maximumAge", "important")(o, n))
    # stdAges is derived from the age limits: reported only when it moved on its own.
    return out or _value("std_ages", "Age groups", f"{_ELIG}.stdAges", "minor", _list_detail)(o, n)


def _results(o: dict, n: dict) -> list[Change]:
    a, b = bool(rec.get(o, "hasResults")), bool(rec.get(n, "hasResults"))
    ra, rb = rec.get(o, "resultsSection"), rec.get(n, "resultsSection")
    ra, rb = (x if isinstance(x, dict) else {} for x in (ra, rb))   # else the fallback reports it
    if a != b:
        # The resultsFirst* dates in statusModule arrive with the results: folded in here.
        posted = rec.get(n, f"{_STATUS}.resultsFirstPostDateStruct.date")
        detail = "; ".join(x for x in (
            f"first posted {posted}" if b and posted else "",
            f"modules: {', '.join(_humanize(k) for k in sorted(rb))}" if b and rb else "") if x)
        return [Change("results_posted", "Results posted" if b else "Results removed", a, b,
                       "important", detail=detail or None)]
    if ra == rb:
        return []
    # Results run to thousands of leaves; one line naming the updated modules is what a reader needs.
    updated = sorted(k for k in set(ra) | set(rb) if ra.get(k) != rb.get(k))
    return [Change("results_section", "Results", sorted(ra), sorted(rb), "minor",
                   detail="Updated: " + ", ".join(_humanize(k) for k in updated))]


def _documents(o: dict, n: dict) -> list[Change]:
    a, b = rec.get(o, "documentSection"), rec.get(n, "documentSection")
    if a == b:
        return []
    files = lambda d: sorted(  # noqa: E731
        _text(doc.get("filename") or doc.get("label")) for doc in
        _list(rec.get(d, "largeDocumentModule.largeDocs")) if isinstance(doc, dict))
    fa, fb = files(a), files(b)
    return [Change("documents", "Documents", fa, fb, "minor",
                   detail=_set_detail(fa, fb) or "Document details updated")]


def _annotations(o: dict, n: dict) -> list[Change]:
    a, b = rec.get(o, "annotationSection"), rec.get(n, "annotationSection")
    a, b = (x if isinstance(x, dict) else {} for x in (a, b))   # else the fallback reports it
    if a == b:
        return []
    updated = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    return [Change("annotations", "Annotations", sorted(a), sorted(b), "minor",
                   detail="Updated: " + ", ".join(_humanize(k) for k in updated))]


def _expanded_access(o: dict, n: dict) -> list[Change]:
    a, b = rec.get(o, f"{_STATUS}.expandedAccessInfo"), rec.get(n, f"{_STATUS}.expandedAccessInfo")
    if a == b:
        return []
    # A new route to the drug for a patient who cannot enrol is worth the physician's attention.
    opened = bool(rec.get(b, "hasExpandedAccess")) and not rec.get(a, "hasExpandedAccess")
    return [Change("expanded_access", "Expanded access", a, b, "important" if opened else "minor")]


# (source paths the entry owns, entry). The order is the tie-break within a severity.
_CATALOGUE: list[tuple[tuple[str, ...], Callable[[dict, dict], list[Change]]]] = [
    ((f"{_STATUS}.overallStatus",), _overall_status),
    ((f"{_STATUS}.whyStopped",), _why_stopped),
    ((f"{_OUTCOMES}.primaryOutcomes",), _primary_outcomes),
    ((f"{_STATUS}.lastKnownStatus",),
     _value("last_known_status", "Last known status", f"{_STATUS}.lastKnownStatus", "important")),
    ((_LOCATIONS,), _sites),
    ((f"{_DESIGN}.enrollmentInfo",),
     _value("enrollment", "Enrollment", f"{_DESIGN}.enrollmentInfo", "important")),
    ((f"{_STATUS}.primaryCompletionDateStruct",),
     _value("primary_completion_date", "Primary completion date",
            f"{_STATUS}.primaryCompletionDateStruct", "important")),
    ((f"{_STATUS}.completionDateStruct",),
     _value("completion_date", "Completion date", f"{_STATUS}.completionDateStruct", "important")),
    ((f"{_ELIG}.eligibilityCriteria",), _eligibility_criteria),
    ((f"{_ELIG}.sex",), _value("sex", "Sex", f"{_ELIG}.sex", "important")),
    ((f"{_ELIG}.minimumAge", f"{_ELIG}.maximumAge", f"{_ELIG}.stdAges"), _ages),
    ((f"{_ELIG}.healthyVolunteers",),
     _value("healthy_volunteers", "Healthy volunteers", f"{_ELIG}.healthyVolunteers", "important")),
    (("hasResults", "resultsSection", f"{_STATUS}.resultsFirstSubmitDate",
      f"{_STATUS}.resultsFirstSubmitQcDate", f"{_STATUS}.resultsFirstPostDateStruct"), _results),
    ((f"{_STATUS}.expandedAccessInfo",), _expanded_access),
    ((f"{_IDENT}.briefTitle",), _value("brief_title", "Title", f"{_IDENT}.briefTitle", "minor")),
    ((f"{_IDENT}.officialTitle",),
     _value("official_title", "Official title", f"{_IDENT}.officialTitle", "minor")),
    ((f"{_STATUS}.startDateStruct",),
     _value("start_date", "Start date", f"{_STATUS}.startDateStruct", "minor")),
    ((f"{_STATUS}.statusVerifiedDate",),
     _value("status_verified_date", "Status verified", f"{_STATUS}.statusVerifiedDate", "minor")),
    ((f"{_DESIGN}.studyType",), _value("study_type", "Study type", f"{_DESIGN}.studyType", "minor")),
    ((f"{_DESIGN}.phases",), _value("phases", "Phases", f"{_DESIGN}.phases", "minor", _list_detail)),
    ((f"{_PS}.conditionsModule.conditions",),
     _value("conditions", "Conditions", f"{_PS}.conditionsModule.conditions", "minor", _list_detail)),
    ((f"{_ARMS}.interventions",), _named_list("interventions", "Interventions", f"{_ARMS}.interventions", "name")),
    ((f"{_ARMS}.armGroups",), _named_list("arms", "Arms", f"{_ARMS}.armGroups", "label")),
    ((f"{_OUTCOMES}.secondaryOutcomes",),
     _named_list("secondary_outcomes", "Secondary outcomes", f"{_OUTCOMES}.secondaryOutcomes", "measure")),
    ((f"{_PS}.sponsorCollaboratorsModule.leadSponsor",),
     _value("lead_sponsor", "Lead sponsor", f"{_PS}.sponsorCollaboratorsModule.leadSponsor", "minor")),
    ((f"{_CONTACTS}.overallOfficials",),
     _people("overall_officials", "Overall officials", f"{_CONTACTS}.overallOfficials")),
    ((f"{_CONTACTS}.centralContacts",),
     _people("central_contacts", "Central contacts", f"{_CONTACTS}.centralContacts")),
    (("documentSection",), _documents),
    (("annotationSection",), _annotations),
]

_OWNED = frozenset(p for paths, _ in _CATALOGUE for p in paths) | {"derivedSection"}


# --- generic fallback ---------------------------------------------------------------------------

def _fallback(old: Any, new: Any, path: str, out: list[Change]) -> None:
    """Minor changes for differences no catalogue entry owns: dict leaves, lists whole."""
    if old == new or path in _OWNED:
        return
    # *Struct dicts ({date, type}) read as one value, like the catalogue's dates.
    if isinstance(old, dict) and isinstance(new, dict) and not path.endswith("Struct"):
        for key in sorted(set(old) | set(new)):
            _fallback(old.get(key), new.get(key), f"{path}.{key}" if path else key, out)
        return
    if (isinstance(old, dict) and new is None or old is None and isinstance(new, dict)) \
            and path and not path.endswith("Struct"):
        # A module appeared or vanished: its leaves, like any other edit inside it.
        _fallback(old or {}, new or {}, path, out)
        return
    detail = None
    if isinstance(old, str) and isinstance(new, str) and ("\n" in old + new or len(old + new) > 160):
        detail = line_diff(old, new)
    elif isinstance(old, list) and isinstance(new, list) and all(_short(v) for v in old + new):
        detail = _set_detail(old, new)
    out.append(Change(path, _path_label(path), old, new, "minor", detail=detail))


# --- ignore -------------------------------------------------------------------------------------

def _prune(node: Any, parts: list[str]) -> None:
    """Remove a dotted path (list indexes omitted, as in ``record.CHURN_PATHS``) in place."""
    if isinstance(node, list):
        for item in node:
            _prune(item, parts)
    elif isinstance(node, dict) and parts:
        if len(parts) == 1:
            node.pop(parts[0], None)
        elif parts[0] in node:
            _prune(node[parts[0]], parts[1:])


def _ignored(field: str, ignore: tuple[str, ...]) -> bool:
    return any(field == p or field.startswith(p + ".") for p in ignore)


# --- diff ---------------------------------------------------------------------------------------

def diff(old: dict, new: dict, *, ignore: tuple[str, ...] | list[str] = (),
         assume_canonical: bool = False) -> list[Change]:
    """The changes from ``old`` to ``new``, most severe first; ``[]`` when only churn differs.
    ``assume_canonical``: both are already ``record.canonical`` forms (the store's case), so
    the work of canonicalising 1,000-site records is not done twice."""
    ignore = tuple(p.strip() for p in ignore if p and p.strip())
    if assume_canonical and not ignore:
        o, n = old, new  # read only below; pruning (ignore) is what needs fresh copies
    else:
        o, n = rec.canonical(old), rec.canonical(new)   # fresh copies: pruning them is safe
    for path in ignore:
        for r in (o, n):
            _prune(r, path.split("."))
    if o == n:
        return []
    ranked: list[tuple[int, int, Change]] = []
    for order, (paths, entry) in enumerate(_CATALOGUE):
        found = entry(o, n)
        if not found:
            # The entry saw nothing it describes, yet its source moved: say so by path.
            for p in paths:
                a, b = rec.get(o, p), rec.get(n, p)
                if a != b:
                    found.append(Change(p, _path_label(p), a, b, "minor"))
        ranked.extend((order, i, c) for i, c in enumerate(found))
    rest: list[Change] = []
    _fallback(o, n, "", rest)
    ranked.extend((len(_CATALOGUE), i, c) for i, c in enumerate(rest))
    ranked.sort(key=lambda t: (-t[2].rank, t[0], t[1]))
    return [c for _, _, c in ranked if not _ignored(c.field, ignore)]

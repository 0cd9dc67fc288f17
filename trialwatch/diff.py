"""diff(old, new) -> list[Change]: what changed between two versions of a record, for a physician.

Pure: no clock, network or database; the same two records always give the same list. Both inputs
go through ``record.canonical`` first, so raw fetches and stored canonical snapshots both work and
churn (``derivedSection``, last-update dates, key order, order of unordered lists) never shows.

The result is sorted most severe first, then by the catalogue order below, then by site / path.

The catalogue of fields (each ``field``, its label, severity and meaning) is
``trialwatch.events.FIELDS``; the README's change table is checked against it
(``tests/test_docs.py``). ``field`` is stable: scripts and subscriptions may match on it. Each
entry below reads a pair of canonical records and returns that field's changes; site changes are
in ``diff_sites``, the words of labels and details in ``diff_util``.

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

from collections import Counter
from typing import Any, Callable

from . import record as rec
from .diff_sites import sites as _sites
from .diff_util import (ARMS, CONTACTS, DESIGN, ELIG, IDENT, LOCATIONS, OUTCOMES, PS, STATUS, as_text,
                        humanize, is_short, keyed, keyed_detail, line_diff, path_label,
                        set_detail)
from .events import KINDS, SEVERITY_RANK, Change, Severity
from .record import as_list

# Re-exported: older callers import these from here.
__all__ = ["Change", "SEVERITY_RANK", "STOPPED", "diff", "line_diff"]

STOPPED = frozenset({"SUSPENDED", "TERMINATED", "WITHDRAWN"})



def _change(field: str, old: Any, new: Any, severity: Severity | None = None, *, label: str | None = None,
            **kw: Any) -> Change:
    """A change of a catalogued field: label and severity from ``events`` unless given."""
    k = KINDS[field]
    return Change(field, label or k.label, old, new, severity or k.severity, **kw)


# --- catalogue entries: each reads a pair of canonical records and returns changes ------------

def _overall_status(o: dict, n: dict) -> list[Change]:
    a, b = rec.get(o, f"{STATUS}.overallStatus"), rec.get(n, f"{STATUS}.overallStatus")
    if a == b:
        return []
    return [_change("overall_status", a, b,
                    Severity.CRITICAL if isinstance(b, str) and b in STOPPED else Severity.IMPORTANT)]


def _why_stopped(o: dict, n: dict) -> list[Change]:
    a, b = rec.get(o, f"{STATUS}.whyStopped"), rec.get(n, f"{STATUS}.whyStopped")
    if a == b:
        return []
    # A reason appearing is the news that the trial stopped; later rewording is less urgent.
    return [_change("why_stopped", a, b, Severity.CRITICAL if not a and b else Severity.IMPORTANT)]


def _measure(item: dict) -> str:
    return as_text(item.get("measure"))


def _squash(text: str) -> str:
    return " ".join(text.split())


def _with_time_frame(item: dict) -> str:
    tf = item.get("timeFrame")
    return f"{_measure(item)} (time frame: {as_text(tf)})" if tf else _measure(item)


def _primary_outcomes(o: dict, n: dict) -> list[Change]:
    a = [x for x in as_list(rec.get(o, f"{OUTCOMES}.primaryOutcomes")) if isinstance(x, dict)]
    b = [x for x in as_list(rec.get(n, f"{OUTCOMES}.primaryOutcomes")) if isinstance(x, dict)]
    if a == b:
        return []
    ma, mb = [_measure(x) for x in a], [_measure(x) for x in b]
    out = []
    if Counter(map(_squash, ma)) == Counter(map(_squash, mb)) and Counter(ma) != Counter(mb):
        # Only spacing differs: the endpoint is the same, so no critical alert.
        out.append(_change("primary_outcomes", ma, mb, Severity.MINOR,
                           label=KINDS["primary_outcomes"].label + " (whitespace only)"))
    elif Counter(ma) != Counter(mb):
        # Swapping the primary endpoint is what invalidates a trial's conclusions. The detail
        # carries each measure's time frame, which a rewording may have moved as well.
        out.append(_change("primary_outcomes", ma, mb, Severity.CRITICAL,
                          detail=set_detail([_with_time_frame(x) for x in a],
                                             [_with_time_frame(x) for x in b])))
    elif ma != mb:
        out.append(_change("primary_outcomes", ma, mb, Severity.MINOR, label=KINDS["primary_outcomes"].label + " (order)"))
    ka, kb = keyed(a, _measure), keyed(b, _measure)
    for k in sorted(set(ka) & set(kb)):
        x, y = ka[k], kb[k]
        if x.get("timeFrame") != y.get("timeFrame"):
            # Moving when the primary endpoint is assessed is a known form of outcome switching.
            out.append(_change("primary_outcome_time_frame", x.get("timeFrame"), y.get("timeFrame"),
                               label=KINDS["primary_outcome_time_frame"].words(measure=k[0])))
        if x.get("description") != y.get("description"):
            out.append(_change("primary_outcome_description", x.get("description"), y.get("description"),
                               label=KINDS["primary_outcome_description"].words(measure=k[0]),
                              detail=line_diff(x.get("description"), y.get("description"))))
    return out


# A catalogue row: (source paths the entry owns, entry).
_Row = tuple[tuple[str, ...], Callable[[dict, dict], list[Change]]]


def _value(field: str, path: str, detail: Callable[[Any, Any], str | None] | None = None) -> Callable[[dict, dict], list[Change]]:
    """A catalogue entry for one value compared whole."""
    def entry(o: dict, n: dict) -> list[Change]:
        a, b = rec.get(o, path), rec.get(n, path)
        if a == b:
            return []
        return [_change(field, a, b, detail=detail(a, b) if detail else None)]
    return entry


def _whole(field: str, path: str, detail: Callable[[Any, Any], str | None] | None = None) -> _Row:
    """A catalogue row owning ``path``, its value compared whole."""
    return (path,), _value(field, path, detail)


def _list_detail(a: Any, b: Any) -> str | None:
    return set_detail(as_list(a), as_list(b))


def _named_list(field: str, path: str, key: str) -> _Row:
    """A catalogue row for long items at ``path`` (arms, interventions, outcomes): old/new list
    their names, detail says what changed."""
    def entry(o: dict, n: dict) -> list[Change]:
        a, b = as_list(rec.get(o, path)), as_list(rec.get(n, path))
        if a == b:
            return []
        names = lambda items: [i.get(key) if isinstance(i, dict) else i for i in items]  # noqa: E731
        return [_change(field, names(a), names(b),
                        detail=keyed_detail(a, b, lambda i: i.get(key) or ""))]
    return (path,), entry


def _people(field: str, path: str) -> _Row:
    """A catalogue row for short items at ``path`` (contacts, officials): old/new are the items,
    since the phone is the point."""
    def entry(o: dict, n: dict) -> list[Change]:
        a, b = as_list(rec.get(o, path)), as_list(rec.get(n, path))
        if a == b:
            return []
        return [_change(field, a, b,
                        detail=keyed_detail(a, b, lambda i: i.get("name") or ""))]
    return (path,), entry


def _layout(text: Any) -> list[str]:
    """The lines of a text without what markdown does not render: trailing spaces, blank lines, CR.
    (Leading indentation stays: it nests bullets.)"""
    return [line.rstrip() for line in as_text(text).replace("\r", "").split("\n") if line.strip()]


def _eligibility_criteria(o: dict, n: dict) -> list[Change]:
    a, b = rec.get(o, f"{ELIG}.eligibilityCriteria"), rec.get(n, f"{ELIG}.eligibilityCriteria")
    if a == b:
        return []
    if isinstance(a, str) and isinstance(b, str) and _layout(a) == _layout(b):
        # Re-spacing alone: not one criterion reads differently, so no physician needs alerting
        # (and a line diff of it would show identical-looking lines).
        return [_change("eligibility_criteria", a, b, Severity.MINOR,
                        label=KINDS["eligibility_criteria"].label + " (whitespace only)",
                       detail="Only spacing or blank lines changed; no criterion was reworded.")]
    return [_change("eligibility_criteria", a, b,
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
    out = _value("minimum_age", f"{ELIG}.minimumAge")(o, n) + _value("maximum_age", f"{ELIG}.maximumAge")(o, n)
    # stdAges is derived from the age limits: reported only when it moved on its own.
    return out or _value("std_ages", f"{ELIG}.stdAges", _list_detail)(o, n)


def _results(o: dict, n: dict) -> list[Change]:
    a, b = bool(rec.get(o, "hasResults")), bool(rec.get(n, "hasResults"))
    ra, rb = rec.get(o, "resultsSection"), rec.get(n, "resultsSection")
    ra, rb = (x if isinstance(x, dict) else {} for x in (ra, rb))   # else the fallback reports it
    if a != b:
        # The resultsFirst* dates in statusModule arrive with the results: folded in here.
        posted = rec.get(n, f"{STATUS}.resultsFirstPostDateStruct.date")
        detail = "; ".join(x for x in (
            f"first posted {posted}" if b and posted else "",
            f"modules: {', '.join(humanize(k) for k in sorted(rb))}" if b and rb else "") if x)
        return [_change("results_posted", a, b, label=None if b else KINDS["results_posted"].also[0], detail=detail or None)]
    if ra == rb:
        return []
    # Results run to thousands of leaves; one line naming the updated modules is what a reader needs.
    updated = sorted(k for k in set(ra) | set(rb) if ra.get(k) != rb.get(k))
    return [_change("results_section", sorted(ra), sorted(rb),
                   detail="Updated: " + ", ".join(humanize(k) for k in updated))]


def _documents(o: dict, n: dict) -> list[Change]:
    a, b = rec.get(o, "documentSection"), rec.get(n, "documentSection")
    if a == b:
        return []
    files = lambda d: sorted(  # noqa: E731
        as_text(doc.get("filename") or doc.get("label")) for doc in
        as_list(rec.get(d, "largeDocumentModule.largeDocs")) if isinstance(doc, dict))
    fa, fb = files(a), files(b)
    return [_change("documents", fa, fb,
                   detail=set_detail(fa, fb) or "Document details updated")]


def _annotations(o: dict, n: dict) -> list[Change]:
    a, b = rec.get(o, "annotationSection"), rec.get(n, "annotationSection")
    a, b = (x if isinstance(x, dict) else {} for x in (a, b))   # else the fallback reports it
    if a == b:
        return []
    updated = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    return [_change("annotations", sorted(a), sorted(b),
                   detail="Updated: " + ", ".join(humanize(k) for k in updated))]


def _expanded_access(o: dict, n: dict) -> list[Change]:
    a, b = rec.get(o, f"{STATUS}.expandedAccessInfo"), rec.get(n, f"{STATUS}.expandedAccessInfo")
    if a == b:
        return []
    # A new route to the drug for a patient who cannot enrol is worth the physician's attention.
    opened = bool(rec.get(b, "hasExpandedAccess")) and not rec.get(a, "hasExpandedAccess")
    return [_change("expanded_access", a, b, Severity.IMPORTANT if opened else Severity.MINOR)]


# (source paths the entry owns, entry). The order is the tie-break within a severity.
_CATALOGUE: list[_Row] = [
    ((f"{STATUS}.overallStatus",), _overall_status),
    ((f"{STATUS}.whyStopped",), _why_stopped),
    ((f"{OUTCOMES}.primaryOutcomes",), _primary_outcomes),
    _whole("last_known_status", f"{STATUS}.lastKnownStatus"),
    ((LOCATIONS,), _sites),
    _whole("enrollment", f"{DESIGN}.enrollmentInfo"),
    _whole("primary_completion_date", f"{STATUS}.primaryCompletionDateStruct"),
    _whole("completion_date", f"{STATUS}.completionDateStruct"),
    ((f"{ELIG}.eligibilityCriteria",), _eligibility_criteria),
    _whole("sex", f"{ELIG}.sex"),
    ((f"{ELIG}.minimumAge", f"{ELIG}.maximumAge", f"{ELIG}.stdAges"), _ages),
    _whole("healthy_volunteers", f"{ELIG}.healthyVolunteers"),
    (("hasResults", "resultsSection", f"{STATUS}.resultsFirstSubmitDate",
      f"{STATUS}.resultsFirstSubmitQcDate", f"{STATUS}.resultsFirstPostDateStruct"), _results),
    ((f"{STATUS}.expandedAccessInfo",), _expanded_access),
    _whole("brief_title", f"{IDENT}.briefTitle"),
    _whole("official_title", f"{IDENT}.officialTitle"),
    _whole("start_date", f"{STATUS}.startDateStruct"),
    _whole("status_verified_date", f"{STATUS}.statusVerifiedDate"),
    _whole("study_type", f"{DESIGN}.studyType"),
    _whole("phases", f"{DESIGN}.phases", _list_detail),
    _whole("conditions", f"{PS}.conditionsModule.conditions", _list_detail),
    _named_list("interventions", f"{ARMS}.interventions", "name"),
    _named_list("arms", f"{ARMS}.armGroups", "label"),
    _named_list("secondary_outcomes", f"{OUTCOMES}.secondaryOutcomes", "measure"),
    _whole("lead_sponsor", f"{PS}.sponsorCollaboratorsModule.leadSponsor"),
    _people("overall_officials", f"{CONTACTS}.overallOfficials"),
    _people("central_contacts", f"{CONTACTS}.centralContacts"),
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
    if not path.endswith("Struct") and _descends(old, new, path):
        old, new = old or {}, new or {}
        for key in sorted(set(old) | set(new)):
            _fallback(old.get(key), new.get(key), f"{path}.{key}" if path else key, out)
        return
    out.append(Change(path, path_label(path), old, new, Severity.MINOR, detail=_fallback_detail(old, new)))


def _descends(old: Any, new: Any, path: str) -> bool:
    """Two dicts are compared key by key; so is a module (below the root) that appeared or
    vanished: its leaves, like any other edit inside it."""
    if isinstance(old, dict) and isinstance(new, dict):
        return True
    return bool(path) and (isinstance(old, dict) and new is None or old is None and isinstance(new, dict))


def _fallback_detail(old: Any, new: Any) -> str | None:
    if isinstance(old, str) and isinstance(new, str) and ("\n" in old + new or len(old + new) > 160):
        return line_diff(old, new)
    if isinstance(old, list) and isinstance(new, list) and all(is_short(v) for v in old + new):
        return set_detail(old, new)
    return None


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
                    found.append(Change(p, path_label(p), a, b, Severity.MINOR))
        ranked.extend((order, i, c) for i, c in enumerate(found))
    rest: list[Change] = []
    _fallback(o, n, "", rest)
    ranked.extend((len(_CATALOGUE), i, c) for i, c in enumerate(rest))
    ranked.sort(key=lambda t: (-t[2].rank, t[0], t[1]))
    return [c for _, _, c in ranked if not _ignored(c.field, ignore)]

"""Plain-text reports for the terminal: what ``trialwatch check`` and ``history`` print.

Record text is untrusted: every value goes through ``untrusted.one_line`` (a title with a CR or
an OSC sequence must neither forge a line nor reach the terminal), a diff's lines through
``strip_controls`` one by one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .events import Severity
from .record import UNSPECIFIED, words
from .untrusted import one_line, strip_controls

if TYPE_CHECKING:
    from .check import CheckResult

SEVERITY_MARK = {Severity.CRITICAL: "!!", Severity.IMPORTANT: " !", Severity.MINOR: "  "}


def _date(value: Any, kind: Any = None) -> str:
    return words({"date": value, "type": kind}) if value else "—"


def _when(t: Any) -> str:
    return t.strftime("%Y-%m-%d %H:%M UTC") if t else "—"


def change_line(ch: Any) -> list[str]:
    """One change as lines: severity, label, old -> new; a diff detail indented below."""
    old, new = ch.old_value, ch.new_value  # a stored ChangeRow: JSON decoded
    lines = [f"  {SEVERITY_MARK.get(ch.severity, '  ')} [{ch.severity}] {one_line(ch.label)}: "
             f"{_value(old)} → {_value(new)}"]
    if ch.detail:
        lines.extend("        " + strip_controls(ln, newlines=False) for ln in ch.detail.splitlines()[:40])
    return lines


def _value(v: Any) -> str:
    """``record.words`` (which reads the date and enrollment shapes), cut to one line."""
    s = one_line(words(v))
    return s if len(s) <= 120 else s[:117] + "…"


def check_report(res: "CheckResult", *, criteria: bool = False) -> str:
    """The terminal report of one checked trial; ``criteria`` lists every criterion."""
    s = res.summary
    out = [f"{s.nct_id}  {one_line(s.title)}"]
    if res.requested_id != s.nct_id:
        out.append(f"  (requested as {res.requested_id}, which ClinicalTrials.gov now files as {s.nct_id})")
    for label, value in _rows(res, criteria):
        out.append(f"  {label + ':':<20}{one_line(str(value))}" if label else f"  {'':<20}{value}")
    out.append("")
    if res.nearest is not None and res.nearest.sites:
        out.extend(_nearest_block(res.nearest))
        out.append("")
    if criteria and res.criteria is not None:
        out.extend(_criteria_block(res.criteria))
        out.append("")
    out.extend(_changes_block(res))
    return "\n".join(out)


Row = tuple[str, Any]   # (label, value); an empty label continues the row above


def _rows(res: "CheckResult", criteria: bool) -> list[Row]:
    """The report's label/value rows, from status to the record's link."""
    from .eligibility import glance

    s = res.summary
    status = s.status_words
    if s.last_known_status:
        status += f" (last known: {words(s.last_known_status)})"
    rows: list[Row] = [("Status", status), *(("Warning", w.text) for w in res.warnings)]
    if s.why_stopped:
        rows.append(("Why stopped", s.why_stopped))
    rows += [
        ("Enrollment", "—" if s.enrollment_count is None else f"{s.enrollment_count} ({words(s.enrollment_type)})"),
        ("Phase", words(list(s.phases)) if s.phases else "not applicable"),
        ("Sponsor", s.lead_sponsor or "—"),
        ("Start", _date(s.start_date, s.start_date_type)),
        ("Primary completion", _date(s.primary_completion_date, s.primary_completion_date_type)),
        ("Completion", _date(s.completion_date, s.completion_date_type)),
        ("Sites", _sites_words(s.sites_by_status)),
        *_contact_rows(res),
    ]
    if res.nearest is not None:
        n = res.nearest
        rows.append(("Nearest open site", _site_line(n.sites[0]) if n.sites else f"none: {n.summary()}"))
    e = s.eligibility
    rows.append(("Eligibility", glance(e.sex, e.minimum_age, e.maximum_age, e.healthy_volunteers)))
    rows += _criteria_rows(res.criteria, criteria)
    rows.append(("Expanded access", _expanded_access_words(s.expanded_access)))
    if s.has_results:
        rows.append(("Results", f"posted{' ' + s.results_first_posted if s.results_first_posted else ''}"))
    rows.append(("Record", s.url))
    return rows


def _site_line(site: Any) -> str:
    from .referral import site_line

    return site_line(site)


def _sites_words(by_status: dict) -> str:
    if not by_status:
        return "none listed"
    parts = [f"{n} {words(k).lower() if k != UNSPECIFIED else 'without a listed status'}"
             for k, n in sorted(by_status.items(), key=lambda kv: -kv[1])]
    return f"{sum(by_status.values())}: {', '.join(parts)}"


def _contact_rows(res: "CheckResult") -> list[Row]:
    """The central contacts; without one, never the contact of a site that does not recruit:
    with a place, the nearest open site's; without one, the investigator, and how to find the
    nearest open site."""
    from .referral import contact_line

    s = res.summary
    if s.central_contacts:
        return [("Contact", ", ".join(b for b in (c.name, c.phone, c.email) if b)) for c in s.central_contacts[:2]]
    officials = [", ".join(b for b in (o.name, o.affiliation) if b) for o in s.overall_officials[:1]]
    nearest = res.nearest.sites[0] if res.nearest and res.nearest.sites else None
    reachable = [c for c in nearest.contacts if c.phone or c.email] if nearest else []
    if reachable:
        rows = [("Contact", f"{contact_line(reachable[0])} (site contact, {nearest.facility or nearest.city})")]
    elif officials:
        rows = [("Contact", f"{officials[0]} (investigator; no central contact listed)")]
    else:
        rows = [("Contact", "none listed on the record")]
    if res.nearest is None and _open_sites_have_contacts(s.sites):
        rows.append(("", "open sites list their own contacts: --near PLACE names the nearest"))
    return rows


def _open_sites_have_contacts(sites: Any) -> bool:
    from .referral import OPEN_SITE_STATUSES

    return any(site.status in OPEN_SITE_STATUSES and site.contacts for site in sites)


def _criteria_rows(c: Any, listed: bool) -> list[Row]:
    if c is None:
        return []
    if not (c.split or c.other):
        return [("Criteria", "none on the record")]
    if c.split:
        counts = f"{len(c.inclusion)} inclusion, {len(c.exclusion)} exclusion"
        if c.other:
            counts += f", {len(c.other)} under no heading"
    else:
        counts = f"{len(c.other)} item{'s' if len(c.other) != 1 else ''}, not split into inclusion and exclusion"
    return [("Criteria", counts if listed else f"{counts} (--eligibility lists them)")]


def _expanded_access_words(ea: Any) -> str:
    if not (ea and ea.has_expanded_access):
        return "not offered on this record"
    extra = f" via {ea.nct_id}" if ea.nct_id else ""
    st = f" ({words(ea.status)})" if ea.status else ""
    return f"yes{extra}{st}"


def _changes_block(res: "CheckResult") -> list[str]:
    """What changed since the last check, or why there is nothing to say."""
    r = res.recorded
    if r is None:
        return []
    if r.first:
        return ["First snapshot: nothing to compare with yet; later checks will show what changed."]
    if not r.stored:
        return [f"No change since {_when(r.previous_fetched_at)}"
                + (f" (last checked {_when(r.previous_checked_at)})." if r.previous_checked_at else ".")]
    if not res.changes:
        return ["New version stored, but nothing a referring physician needs changed "
                "(only ignored fields differ)."]
    out = [f"{len(res.changes)} change{'s' if len(res.changes) != 1 else ''} since {_when(r.previous_fetched_at)}:"]
    for ch in res.changes:
        out.extend(change_line(ch))
    return out


def _nearest_block(n: Any) -> list[str]:
    from .referral import contact_line

    head = (f"Open sites nearest to {n.place.label} ({len(n.sites)} of {n.open_sites} open "
            f"site{'s' if n.open_sites != 1 else ''}")
    if n.unranked:
        head += f"; {n.unranked} without coordinates on the record, not ranked"
    out = [head + "):"]
    for i, site in enumerate(n.sites, 1):
        out.append(f"  {i:>2}. {site.distance_km:>6.0f} km {site.distance_miles:>6.0f} mi  "
                   f"{site.where()} · {words(site.status)}")
        for c in [c for c in site.contacts if c.phone or c.email][:2] or site.contacts[:1]:
            origin = " (central contact)" if site.contacts_from == "central" else ""
            out.append(f"{'':>27}{contact_line(c)}{origin}")
    return out


def _criteria_block(c: Any) -> list[str]:
    out: list[str] = []
    for title, items in (("Inclusion criteria", c.inclusion), ("Exclusion criteria", c.exclusion),
                         ("Criteria under no inclusion/exclusion heading" if c.split else "Criteria", c.other)):
        if not items and (title == "Criteria" or title.startswith("Criteria under")):
            continue
        out.append(f"{title} ({len(items)}):" if items else f"{title}: none listed")
        for i, item in enumerate(items, 1):
            first, *rest = item.split("\n")
            out.append(f"  {i:>2}. {first}")
            out.extend(f"      {line}" for line in rest)
    return out


def timeline_lines(tl: Any) -> list[str]:
    """``Recruiting  2017-10-03 → 2021-05-14, 3 y 7 m`` per status run, oldest first."""
    out = []
    if tl.state == "pending":
        out.append("  (the registry's history is still to come: a later poll fetches it)")
    elif tl.state == "unavailable":
        out.append("  (the registry's history is unavailable; what trialwatch saw itself)")
    for e in tl.entries:
        out.append(f"  {words(e['status']):<24} {e['from']} → {e['to'] or 'now'}, {e['duration']}"
                   + (f"  (v{e['version']})" if e["version"] is not None else ""))
    return out


def history_report(nct: str, snaps: list, changes: list, timeline: Any = None) -> str:
    by_snap: dict[Any, list] = {}
    for ch in changes:
        by_snap.setdefault(ch.snapshot_id, []).append(ch)
    out = []
    if timeline is not None:
        out += ["Status timeline:", *timeline_lines(timeline), ""]
    out.append(f"{nct}: {len(snaps)} stored version{'s' if len(snaps) != 1 else ''}")
    for snap in snaps:
        if snap.source == "registry":
            out.append(f"v{snap.registry_version}  {snap.registry_date} (registry)  {one_line(words(snap.overall_status))}"
                       f"  ({snap.blob_hash[:12]})")
        else:
            out.append(f"#{snap.seq}  {_when(snap.fetched_at)}  {one_line(words(snap.overall_status))}"
                       f"  (record updated {snap.last_update_posted or '—'}, {snap.blob_hash[:12]})")
        for ch in sorted(by_snap.get(snap.id, []), key=lambda c: -c.rank):
            out.extend(change_line(ch))
    events = by_snap.get(None, [])
    if events:
        out.append("Events:")
        for ch in events:
            out.append(f"  {_when(ch.detected_at)}")
            out.extend(change_line(ch))
    return "\n".join(out)


def alternatives_report(res: Any) -> str:
    """The terminal report of ``trialwatch alternatives``: the notice first, then each entry
    with why it is listed, its link and (with a place) its nearest open site."""
    from .alternatives import NOTICE
    from .referral import site_line

    out = [f"Alternatives to {res.nct_id}"
           + (f" near {one_line(res.place.label)}, within {res.within_miles:g} mi" if res.place else ""),
           f"  Note: {NOTICE}"]
    if not res.query.conditions:
        out.append("  The trial's record names no condition, so there is nothing to search for.")
    if res.condition_only:
        out.append("  No recruiting trial of a similar intervention was found; listed by condition only.")
    out.append("")
    if res.alternatives:
        out.append(f"Recruiting now ({len(res.alternatives)}):")
        for i, a in enumerate(res.alternatives, 1):
            phases = f" · {words(a.phases)}" if a.phases else ""
            out.append(f"  {i:>2}. {a.nct_id}  {one_line(a.title)}")
            out.append(f"      {words(a.status)}{phases} — {one_line(a.why)}")
            if a.nearest_site is not None:
                out.append(f"      nearest open site: {one_line(site_line(a.nearest_site))}")
            elif res.place is not None:
                out.append("      nearest open site: none with coordinates on the record")
            out.append(f"      {a.url}")
    else:
        out.append("Recruiting now: none found by the registry's search"
                   + (" within that distance." if res.place else "."))
    out.append("")
    if res.expanded_access:
        out.append(f"Expanded access ({len(res.expanded_access)}):")
        for e in res.expanded_access:
            out.append(f"   - {e.nct_id}  {one_line(e.title) if e.title else '(title not in the search results)'}")
            out.append(f"      {words(e.status)} — {one_line(e.why)}")
            out.append(f"      {e.url}")
    else:
        out.append("Expanded access: no available expanded-access record found for this condition and intervention.")
    out.append("")
    out.append(f"({res.requests} request{'s' if res.requests != 1 else ''} to ClinicalTrials.gov)")
    return "\n".join(out)


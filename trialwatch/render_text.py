"""Plain-text reports for the terminal: what ``trialwatch check`` and ``history`` print."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .record import UNSPECIFIED, words

if TYPE_CHECKING:
    from .check import CheckResult

SEVERITY_MARK = {"critical": "!!", "important": " !", "minor": "  "}


def _date(value: Any, kind: Any = None) -> str:
    return words({"date": value, "type": kind}) if value else "—"


def _when(t: Any) -> str:
    return t.strftime("%Y-%m-%d %H:%M UTC") if t else "—"


def change_line(ch: Any) -> list[str]:
    """One change as lines: severity, label, old -> new; a diff detail indented below."""
    old, new = ch.old_value, ch.new_value  # a stored ChangeRow: JSON decoded
    lines = [f"  {SEVERITY_MARK.get(ch.severity, '  ')} [{ch.severity}] {ch.label}: {_value(old)} → {_value(new)}"]
    if ch.detail:
        lines.extend("        " + ln for ln in ch.detail.splitlines()[:40])
    return lines


def _value(v: Any) -> str:
    """``record.words`` (which reads the date and enrollment shapes), cut to one line."""
    s = words(v)
    return s if len(s) <= 120 else s[:117] + "…"


def check_report(res: "CheckResult") -> str:
    s = res.summary
    r = res.recorded
    out = [f"{s.nct_id}  {s.title}"]
    if res.requested_id != s.nct_id:
        out.append(f"  (requested as {res.requested_id}, which ClinicalTrials.gov now files as {s.nct_id})")
    status = s.status_words
    if s.last_known_status:
        status += f" (last known: {words(s.last_known_status)})"
    row = lambda label, value: out.append(f"  {label + ':':<20}{value}")  # noqa: E731
    row("Status", status)
    if s.why_stopped:
        row("Why stopped", s.why_stopped)
    row("Enrollment", "—" if s.enrollment_count is None else f"{s.enrollment_count} ({words(s.enrollment_type)})")
    row("Phase", words(list(s.phases)) if s.phases else "not applicable")
    row("Sponsor", s.lead_sponsor or "—")
    row("Start", _date(s.start_date, s.start_date_type))
    row("Primary completion", _date(s.primary_completion_date, s.primary_completion_date_type))
    row("Completion", _date(s.completion_date, s.completion_date_type))
    if s.sites_by_status:
        parts = [f"{n} {words(k).lower() if k != UNSPECIFIED else 'without a listed status'}"
                 for k, n in sorted(s.sites_by_status.items(), key=lambda kv: -kv[1])]
        row("Sites", f"{sum(s.sites_by_status.values())}: {', '.join(parts)}")
    else:
        row("Sites", "none listed")
    for c in s.central_contacts[:2]:
        row("Contact", ", ".join(b for b in (c.name, c.phone, c.email) if b))
    if not s.central_contacts:
        officials = [", ".join(b for b in (o.name, o.affiliation) if b) for o in s.overall_officials[:1]]
        site_contacts = [c for site in s.sites for c in site.contacts if c.phone or c.email][:1]
        if site_contacts:
            c = site_contacts[0]
            row("Contact", ", ".join(b for b in (c.name, c.phone, c.email) if b) + " (site contact)")
        elif officials:
            row("Contact", f"{officials[0]} (investigator; no central contact listed)")
        else:
            row("Contact", "none listed on the record")
    ea = s.expanded_access
    if ea and ea.has_expanded_access:
        extra = f" via {ea.nct_id}" if ea.nct_id else ""
        st = f" ({words(ea.status)})" if ea.status else ""
        row("Expanded access", f"yes{extra}{st}")
    else:
        row("Expanded access", "not offered on this record")
    if s.has_results:
        row("Results", f"posted{' ' + s.results_first_posted if s.results_first_posted else ''}")
    row("Record", s.url)
    out.append("")
    if r is None:
        pass
    elif r.first:
        out.append("First snapshot: nothing to compare with yet; later checks will show what changed.")
    elif not r.stored:
        out.append(f"No change since {_when(r.previous_fetched_at)}"
                   + (f" (last checked {_when(r.previous_checked_at)})." if r.previous_checked_at else "."))
    elif not res.changes:
        out.append("New version stored, but nothing a referring physician needs changed "
                   "(only ignored fields differ).")
    else:
        out.append(f"{len(res.changes)} change{'s' if len(res.changes) != 1 else ''} since "
                   f"{_when(r.previous_fetched_at)}:")
        for ch in res.changes:
            out.extend(change_line(ch))
    return "\n".join(out)


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
            out.append(f"v{snap.registry_version}  {snap.registry_date} (registry)  {words(snap.overall_status)}"
                       f"  ({snap.blob_hash[:12]})")
        else:
            out.append(f"#{snap.seq}  {_when(snap.fetched_at)}  {words(snap.overall_status)}"
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

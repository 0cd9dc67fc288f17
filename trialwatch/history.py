"""A trial's past from the registry itself: its status timeline and, on demand, every version.

ClinicalTrials.gov keeps every version of every record, served by its internal (undocumented)
API beside v2:

* ``GET {int}/studies/{NCT}/history``: the version list, each with its number, date, overall
  status and the modules it changed. One request gives the whole status timeline.
* ``GET {int}/studies/{NCT}/history/{v}``: the record as it stood at version ``v`` (legacy
  HTML-like text, no derivedSection).

``fetch_lists`` asks for version lists (when ``check``/``watch`` first store a trial, and up to
``history.per_poll`` a poll); ``backfill`` fetches the versions not stored yet, oldest first,
through ``Store.record_registry_version`` (historical changes, never mail). Any failure of the
internal API is "history unavailable": one warning a run, and the caller carries on.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import CtgovError, HistoryUnavailable, TrialNotFound, UsageError

if TYPE_CHECKING:
    from .config import Config
    from .ctgov import Client
    from .store import Store

log = logging.getLogger("trialwatch.history")

_DATE = re.compile(r"^\d{4}(?:-\d{2}(?:-\d{2})?)?$")

# Module labels whose edits cannot make a change of important or critical severity (see the
# catalogue in diff.py): titles, conditions, descriptions, arms and interventions, sponsors,
# oversight, references, IPD sharing. ``backfill --important-only`` skips a version that
# changed only these.
MINOR_MODULES = frozenset({
    "Study Identification", "Conditions", "Study Description", "Arms and Interventions",
    "Sponsor/Collaborators", "Oversight", "References", "IPD Sharing", "IPDSharing",
    "Document Section", "Large Documents",
})


# -- reading the internal API's answers --------------------------------------------------------

def parse_versions(data: Any) -> list[dict]:
    """``[{version, date, status, modules}]`` oldest first from a version-list answer
    (``{"changes": [...]}``, or the ``?history=true`` shape ``{"history": {"changes": [...]}}``);
    HistoryUnavailable for anything else."""
    changes = data.get("changes") if isinstance(data, dict) else None
    if changes is None and isinstance(data, dict) and isinstance(data.get("history"), dict):
        changes = data["history"].get("changes")
    if not isinstance(changes, list) or not changes:
        raise HistoryUnavailable("the version list has no 'changes' list")
    out: dict[int, dict] = {}
    for i, c in enumerate(changes):
        entry = _parse_entry(i, c, out)
        out[entry["version"]] = entry
    return [out[v] for v in sorted(out)]


def _parse_entry(i: int, c: Any, seen: dict[int, dict]) -> dict:
    """Entry ``i`` of a version list, checked field by field (``seen``: the versions before it)."""
    if not isinstance(c, dict):
        raise HistoryUnavailable(f"version list entry {i} is not an object")
    v, date, status = c.get("version"), c.get("date"), c.get("status")
    modules = c.get("moduleLabels", [])
    if not isinstance(v, int) or isinstance(v, bool) or v < 0 or v in seen:
        raise HistoryUnavailable(f"version list entry {i} has no usable version number: {v!r}")
    if not isinstance(date, str) or not _DATE.match(date[:10]) or len(date) < 4:
        raise HistoryUnavailable(f"version {v} has no usable date: {date!r}")
    if status is not None and not isinstance(status, str):
        raise HistoryUnavailable(f"version {v} has a status that is not text: {status!r}")
    if not isinstance(modules, list) or not all(isinstance(m, str) for m in modules):
        raise HistoryUnavailable(f"version {v} has unreadable moduleLabels")
    if any("\x00" in x for x in [date, status or "", *modules]):
        raise HistoryUnavailable(f"version {v} carries NUL characters")
    return {"version": v, "date": date[:10], "status": status, "modules": modules}


def parse_version(data: Any, nct_id: str, version: int) -> dict:
    """The study record inside a ``history/{v}`` answer, checked to be that trial's version."""
    from .record import is_study, nct_of

    study = data.get("study") if isinstance(data, dict) else None
    if not is_study(study):
        raise HistoryUnavailable(f"version {version} of {nct_id} is not a study record")
    if nct_of(study) != nct_id:
        raise HistoryUnavailable(f"asked for version {version} of {nct_id} and got {nct_of(study)}")
    got = data.get("studyVersion", version)
    if got != version:
        raise HistoryUnavailable(f"asked for version {version} of {nct_id} and got version {got!r}")
    return study


def history_base(config: "Config") -> str:
    from .ctgov import int_base_url

    return config.history.url or int_base_url(config.ctgov.base_url)


class _Run:
    """One command's or poll's use of the internal API: warns once, and stops asking once it
    answered garbage (retries spent) so a broken API does not cost every trial its retries."""

    def __init__(self, client: "Client", config: "Config") -> None:
        self.client = client
        self.config = config
        self.base = history_base(config)
        self.warned = False
        self.broken: str | None = None

    def warn(self, nct: str, why: str) -> None:
        if not self.warned:
            self.warned = True
            log.warning("registry history unavailable for %s (%s); carrying on without it", nct, why)
        else:
            log.debug("registry history unavailable for %s (%s)", nct, why)

    def call(self, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except HistoryUnavailable:
            raise
        except TrialNotFound:
            # 404: no history for this trial (or the API moved): about one trial, go on.
            raise HistoryUnavailable("the internal API answers 404 (not found)") from None
        except CtgovError as e:
            # Anything else, after the client's retries, means the API is not answering
            # usefully: stop asking for the rest of this run.
            message = e.message.replace("GET /http", "GET http")  # an absolute URL, not a v2 path
            self.broken = message
            raise HistoryUnavailable(message) from None


# -- version lists (the timeline) --------------------------------------------------------------

@dataclass
class ListsReport:
    asked: int = 0
    fetched: int = 0
    unavailable: list[str] = field(default_factory=list)


def fetch_lists(store: "Store", config: "Config", client: "Client", nct_ids: Iterable[str], *,
                run: _Run | None = None, checkpoint: Callable[[], None] | None = None) -> ListsReport:
    """Fetch and keep the version list of each trial (one request each). Never raises for the
    registry's sake: a failure is recorded as "unavailable" and warned about once.
    ``checkpoint`` is called before each request (a poll stops there on SIGTERM)."""
    run = run or _Run(client, config)
    report = ListsReport()
    for nct in nct_ids:
        if run.broken:
            break  # the rest are asked for next time
        if checkpoint is not None:
            checkpoint()
        report.asked += 1
        try:
            versions = parse_versions(run.call(lambda n=nct: client.history(n, base_url=run.base)))
        except HistoryUnavailable as e:
            run.warn(nct, e.message)
            store.mark_history_unavailable(nct, e.message)
            report.unavailable.append(nct)
            continue
        store.save_registry_versions(nct, versions)
        report.fetched += 1
    return report


def fill_for_poll(store: "Store", config: "Config", client: "Client", watched: list[str], *,
                  checkpoint: Callable[[], None] | None = None) -> ListsReport:
    """A poll's share of version lists: at most ``history.per_poll``, oldest-watched first."""
    todo = store.trials_without_registry_history(watched, config.history.per_poll)
    return fetch_lists(store, config, client, todo, checkpoint=checkpoint) if todo else ListsReport()


# -- the timeline --------------------------------------------------------------------------------

@dataclass
class Timeline:
    state: str  # ok | pending (version list still to come) | unavailable
    entries: list[dict]  # {status, from, to, version, duration}, oldest first

    def to_json(self) -> list[dict]:
        return [{"status": e["status"], "from": e["from"], "to": e["to"], "version": e["version"]}
                for e in self.entries]


def timeline(store: "Store", nct_id: str, *, today: dt.date | None = None) -> Timeline:
    """Status runs, oldest first: the registry's versions (its own dates), then what live
    snapshots saw after the version list was fetched. Consecutive equal statuses merge."""
    today = today or dt.datetime.now(dt.timezone.utc).date()
    row, versions = store.registry_history(nct_id)
    points: list[tuple[str, str | None, int | None]] = []  # (date, status, version)
    registry = row is not None and row.state == "ok" and bool(versions)
    if registry:
        points = [(v.date, v.overall_status, v.version) for v in versions]
    live = store.live_snapshots(nct_id)
    for snap in live:
        if not registry:
            points.append((snap.fetched_at.date().isoformat(), snap.overall_status, None))
            continue
        # After the registry's list: a live snapshot dated (when the registry posted it) no
        # earlier than its newest version continues the timeline; one showing the same
        # status as that version merges into it below.
        when = snap.last_update_posted or snap.fetched_at.date().isoformat()
        if when >= points[-1][0]:
            points.append((when, snap.overall_status, None))
    entries: list[dict] = []
    for date, status, version in points:
        if entries and entries[-1]["status"] == status:
            continue
        if entries:
            entries[-1]["to"] = date
        entries.append({"status": status, "from": date, "to": None, "version": version})
    for e in entries:
        e["duration"] = duration(e["from"], e["to"], today=today)
    state = "ok" if row is not None and row.state == "ok" else ("unavailable" if row is not None else "pending")
    return Timeline(state=state, entries=entries)


def _date(value: str) -> dt.date:
    parts = [int(x) for x in value[:10].split("-")] + [1, 1]
    return dt.date(parts[0], parts[1], parts[2])


def duration(start: str, end: str | None, *, today: dt.date) -> str:
    """``"3 y 7 m"``, ``"5 m"``, ``"12 days"``: from ``start`` to ``end`` (or today)."""
    a, b = _date(start), _date(end) if end else today
    months = (b.year - a.year) * 12 + (b.month - a.month) - (1 if b.day < a.day else 0)
    if months <= 0:
        days = max((b - a).days, 0)
        return f"{days} day{'s' if days != 1 else ''}"
    y, m = divmod(months, 12)
    return " ".join(p for p in (f"{y} y" if y else "", f"{m} m" if m else "") if p)


# -- backfill ----------------------------------------------------------------------------------

@dataclass
class BackfillReport:
    """What ``trialwatch backfill --json`` prints."""

    trials: int = 0
    lists_fetched: int = 0
    versions_stored: int = 0
    versions_skipped: int = 0  # --important-only: changed only minor modules
    changes: int = 0
    requests: int = 0
    bytes_received: int = 0
    unavailable: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    complete: bool = True

    def to_dict(self) -> dict:
        return asdict(self)


def plan(store: "Store", nct_id: str, *, important_only: bool = False) -> tuple[list[dict], int]:
    """(versions still to fetch for ``nct_id``, oldest first; how many are skipped as minor).
    Versions up to the seam: later ones are what live snapshots show."""
    row, versions = store.registry_history(nct_id)
    if row is None or row.state != "ok":
        return [], 0
    stored = store.stored_registry_versions(nct_id)
    seam = row.seam_version if row.seam_version is not None else max((v.version for v in versions), default=-1)
    todo, skipped = [], 0
    # Stored versions are a prefix, or a prefix with gaps that --important-only skipped: a gap
    # stays a gap, because the version after it was already diffed across it.
    highest = max(stored, default=-1)
    for v in versions:
        if v.version > seam or v.version <= highest:
            continue
        modules = json.loads(v.modules or "[]")
        if important_only and v.version not in (0, seam) and modules and set(modules) <= MINOR_MODULES:
            skipped += 1
            continue
        todo.append({"version": v.version, "date": v.date, "seam": v.version == seam})
    return todo, skipped


def backfill(store: "Store", config: "Config", client: "Client", nct_ids: list[str], *,
             important_only: bool = False, progress: "Callable[[str, dict], None] | None" = None) -> BackfillReport:
    """Fetch every registry version of ``nct_ids`` not stored yet, oldest first, and store each
    through the same store and diff as live records (historical changes, no mail). Resumable:
    what is stored is never fetched again, so a rerun fetches only what is missing, and a rerun
    with nothing missing makes no request (a version list is fetched once per trial)."""
    report = BackfillReport(trials=len(nct_ids))
    start_req, start_bytes = client.stats.requests, client.stats.bytes_received
    run = _Run(client, config)
    progress = progress or (lambda event, info: None)
    try:
        need_list = [n for n in nct_ids if (store.registry_history(n)[0] is None
                                             or store.registry_history(n)[0].state != "ok")]
        if need_list:
            lists = fetch_lists(store, config, client, need_list, run=run)
            report.lists_fetched = lists.fetched
            report.unavailable = lists.unavailable
        plans = {}
        for n in nct_ids:
            plans[n], skipped = plan(store, n, important_only=important_only)
            report.versions_skipped += skipped
        progress("start", {"trials": len(nct_ids), "versions": sum(len(p) for p in plans.values())})
        for n in nct_ids:
            for item in plans[n]:
                if run.broken:
                    raise HistoryUnavailable(run.broken)
                v = item["version"]
                try:
                    data = run.call(lambda n=n, v=v: client.history_version(n, v, base_url=run.base))
                    study = parse_version(data, n, v)
                except HistoryUnavailable as e:
                    # Stop this trial here: versions are stored oldest first, so a rerun
                    # resumes at this one and every diff stays between neighbours.
                    run.warn(n, f"version {v}: {e.message}")
                    report.errors.append(f"{n} version {v}: {e.message}")
                    report.complete = False
                    break
                rec = store.record_registry_version(study, version=v, date=item["date"],
                                                    ignore=config.ignore, seam=item["seam"])
                if rec.stored:
                    report.versions_stored += 1
                    report.changes += len(rec.changes)
                progress("version", {"nct_id": n, "version": v})
            progress("trial", {"nct_id": n})
    except HistoryUnavailable as e:
        report.errors.append(e.message)
        report.complete = False
    finally:
        report.requests = client.stats.requests - start_req
        report.bytes_received = client.stats.bytes_received - start_bytes
    return report


def ids_for_backfill(store: "Store", config: "Config", given: list[str], all_: bool) -> list[str]:
    """The trials named, or with ``--all`` every trial the poll follows that has a snapshot."""
    if given:
        return [store.resolve_alias(n) for n in given]
    if not all_:
        raise UsageError("no trial to backfill", hint="Name trials, e.g. 'trialwatch backfill NCT03268603', or use --all.")
    return store.with_live_snapshot(store.watched_ids(config))

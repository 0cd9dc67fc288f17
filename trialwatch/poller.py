"""One poll cycle: ``/version`` → saved searches → batched fetches → store → events → mail.

The cycle costs ClinicalTrials.gov as few requests as the data allows:

* ``/version`` first: when its ``dataTimestamp`` equals the one of the last *complete* poll, the
  registry has not refreshed since, and the poll stops after that one request (unless forced, or
  a trial or search in the config was never fetched).
* Known trials are fetched in ``filter.ids`` batches asking only for records updated since the
  last complete poll's data date (a day of overlap; snapshots are deduplicated by content hash);
  trials never fetched before are fetched in full. For N watched trials that is
  ``1 + ceil(N/100)`` requests plus the pages of saved searches, never one request per trial.
* A batch that fails after the client's retries ends the cycle: what was fetched completely is
  stored, the poll is recorded as incomplete, and its ``dataTimestamp`` is not trusted next time.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

from .errors import (
    BadRecord,
    CtgovError,
    InvalidNctId,
    LockLost,
    MailError,
    PollStopped,
    TrialNotFound,
    TrialwatchError,
    UsageError,
)
from .events import stops_recruiting

if TYPE_CHECKING:
    from .config import Config, SearchConfig
    from .ctgov import Client
    from .diff import Change
    from .store import Store

log = logging.getLogger("trialwatch.poller")
LOCK_NAME = "poll"


@dataclass
class PollReport:
    """What ``trialwatch poll --json`` prints."""

    requests: int = 0
    bytes_received: int = 0
    trials_checked: int = 0
    trials_changed: int = 0
    changes: int = 0
    emails_sent: int = 0
    emails_queued: int = 0
    emails_failed: int = 0
    skipped: bool = False
    complete: bool = False
    full: bool = False          # every followed record fetched, not only those updated lately
    data_timestamp: str | None = None
    events: int = 0
    # Trials whose recruiting alternatives this poll searched for (once each, for every reader),
    # and those whose search failed (nothing is listed for them until a later search succeeds).
    alternatives_searched: int = 0
    alternatives_failed: int = 0
    # What went wrong, typed: the error's class is its outcome (and exit code); an error about
    # one trial carries its nct_id. --json lists them as readable lines (``describe()``).
    errors: list[TrialwatchError] = field(default_factory=list)
    mail_error: MailError | None = None  # mail was left queued or failed; the poll's data is stored
    poll_id: int | None = None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["errors"] = [e.describe() if isinstance(e, TrialwatchError) else str(e) for e in self.errors]
        d["mail_error"] = self.mail_error.describe() if self.mail_error else None
        return d

    def failure(self) -> TrialwatchError | None:
        """The error that decides the poll's exit code, or None: a poll that did not finish
        (lock lost: 5; ClinicalTrials.gov: 4; stopped: 4), else mail left undelivered (6)."""
        if not self.complete and not self.skipped:
            unfinished = [e for e in self.errors if not isinstance(e, MailError)]
            lost = [e for e in unfinished if isinstance(e, LockLost)]
            if lost or unfinished:
                return (lost or unfinished)[0]
        return self.mail_error


class Stopped(Exception):
    """Raised between steps when a stop was requested (SIGTERM): the cycle ends cleanly."""


class LeaseLost(LockLost):
    """Raised between steps when the poll lock could not be renewed (its lease expired and
    another poller took it): this cycle stops rather than poll beside the other one."""


def poll(store: "Store", config: "Config", *, client: "Client | None" = None, force: bool = False,
         send: bool = True, stop: threading.Event | None = None) -> PollReport:
    """Run one cycle and return its report. Takes the database poll lock; raises LockHeld
    when another poller holds it. A lock whose holder is dead (a killed poll on this host, or
    one anywhere that stopped renewing its lease) is taken over at once."""
    from .errors import LockHeld
    from .lease import LEASE_S, Heartbeat, holder_is_dead, make_holder

    holder = make_holder()
    if not store.acquire_lock(LOCK_NAME, holder, ttl_s=LEASE_S, is_dead=holder_is_dead):
        other = store.lock_holder(LOCK_NAME)
        raise LockHeld(f"another poll holds the lock ({other.holder if other else 'unknown'}, "
                       f"until {other.lease_until if other else '?'} UTC)")
    try:
        with Heartbeat(store, LOCK_NAME, holder) as beat:
            return _poll_locked(store, config, client=client, force=force, send=send,
                                stop=stop or threading.Event(), renew=beat.renew, lost=beat.lost)
    finally:
        store.release_lock(LOCK_NAME, holder)


def _poll_locked(store, config, *, client, force, send, stop, renew, lost) -> PollReport:  # noqa: ANN001
    from .ctgov import Client

    own_client = client is None
    # Our own client's waits (throttle, backoff, Retry-After) end at a stop request.
    client = client or Client.from_config(config.ctgov, sleep=_stoppable_sleep(stop))
    report = PollReport()
    start_requests, start_bytes = client.stats.requests, client.stats.bytes_received
    report.poll_id = store.start_poll()
    cycle = _Cycle(store, config, client, report, stop, renew, lost)
    lease_lost = False
    try:
        try:
            with _heap_frozen():
                cycle.run(force=force)
            # Malformed fields stored as unknown are reported but the record is stored; a record
            # that could not be stored at all leaves the poll incomplete, so it is fetched again.
            report.complete = not cycle.unstored
        except LockLost as e:
            lease_lost = True
            report.errors.append(e)
            log.error("poll %s: %s", report.poll_id, e.message)
        except Stopped:
            report.errors.append(PollStopped("stopped by a signal before the poll finished"))
            log.warning("poll %s stopped before it finished; the rest is fetched next time", report.poll_id)
        except CtgovError as e:
            report.errors.append(e)
            log.error("poll %s: %s; stored what was fetched completely, the rest is retried next time",
                      report.poll_id, e.message)
        finally:
            report.requests = client.stats.requests - start_requests
            report.bytes_received = client.stats.bytes_received - start_bytes
            if own_client:
                client.close()
        if send and not stop.is_set() and not lease_lost:
            _send(store, config, report)
    finally:
        # Even when a bug escapes (exit 1), the poll's row says how far it got.
        _finish_row(store, report)
    log.info("poll %s: %s%d requests, %d trials checked, %d changed (%d changes, %d events), "
             "mail: %d sent, %d queued, %d failed%s", report.poll_id,
             "skipped (data unchanged), " if report.skipped else "", report.requests,
             report.trials_checked, report.trials_changed, report.changes, report.events,
             report.emails_sent, report.emails_queued, report.emails_failed,
             "" if report.complete else " — INCOMPLETE: " + "; ".join(_lines(report.errors)))
    return report


@contextlib.contextmanager
def _heap_frozen() -> Iterator[None]:
    """The objects that exist before the cycle (modules, config, mappers, compiled queries:
    ~120,000) kept out of the garbage collector's full passes until it ends. Each page of
    records lives long enough to reach the oldest generation, so a first poll of 10,000
    trials ran ~20 full collections, and each walked that whole heap again: ~1.4 s of CPU.
    ``gc.unfreeze`` hands them back to the oldest generation afterwards (a daemon's next
    cycle freezes them again)."""
    import gc

    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _lines(errors: list) -> list[str]:
    return [e.describe() if isinstance(e, TrialwatchError) else str(e) for e in errors]


def _finish_row(store: "Store", report: PollReport) -> None:
    store.finish_poll(report.poll_id, complete=report.complete, skipped=report.skipped, full=report.full,
                      data_timestamp=report.data_timestamp, requests=report.requests,
                      bytes_received=report.bytes_received, trials_checked=report.trials_checked,
                      trials_changed=report.trials_changed, changes=report.changes,
                      error="; ".join(_lines(report.errors)) or None)


def _send(store: "Store", config: "Config", report: PollReport) -> None:
    if not store.mail_waiting():
        return
    from .notify import send_pending, undelivered

    try:
        res = send_pending(store, config, force=False)
    except (MailError, UsageError) as e:
        # A mail problem (SMTP, a missing TRIALWATCH_SECRET_KEY to sign links) leaves the poll's
        # data stored and its mail queued: exit 6. A bug is not caught here: it ends the command
        # with exit 1 (the poll's row is still finished).
        problem = e if isinstance(e, MailError) else MailError(f"mail could not be sent: {e.message}", hint=e.hint)
        report.errors.append(problem)
        report.mail_error = problem
        log.error("sending mail failed: %s; messages stay queued", e.message)
        return
    report.emails_sent = len(res.sent)
    report.emails_queued = len(res.queued)
    # A digest that cannot be built is mail that fails: counted, so `poll` exits 6.
    report.emails_failed = len(res.failed) + len(res.compose_failed)
    problem = undelivered(store, res)
    if problem is not None:
        report.mail_error = problem
        report.errors.append(problem)
        log.warning("%s", problem.message)


def _stoppable_sleep(stop: threading.Event):  # noqa: ANN202
    def sleep(seconds: float) -> None:
        if stop.wait(seconds):
            raise Stopped()

    return sleep


class _Cycle:
    def __init__(self, store, config, client, report, stop, renew, lost) -> None:  # noqa: ANN001
        self.store = store
        self.config = config
        self.client = client
        self.report = report
        self.stop = stop
        self.renew = renew
        self.lost = lost                 # set by the heartbeat when another poller took the lock
        self.done: set[str] = set()      # fetched (and stored) in this cycle
        self.changed: set[str] = set()
        self.unstored: set[str] = set()  # received but refused by the store (reported in errors)
        self.links: dict[str, str] = {}  # record received -> the expanded-access record it names
        self.closed_now: list[str] = []  # stopped recruiting in this cycle (alternatives searched)
        self.renewed_at = time.monotonic()  # the lease was just taken

    def checkpoint(self) -> None:
        from .lease import RENEW_S

        if self.stop.is_set():
            raise Stopped()
        # The heartbeat renews the short lease in the background; a step boundary also renews
        # when a beat is due, and stops the poll once the lock is someone else's.
        now = time.monotonic()
        due = now - self.renewed_at >= RENEW_S
        if self.lost.is_set() or (due and not self.renew()):
            raise LeaseLost("lost the poll lock (its lease expired and another poller took it); "
                            "stopped so that two polls do not run at once")
        if due:
            self.renewed_at = now

    def run(self, *, force: bool) -> None:
        version = self.client.version()
        self.report.data_timestamp = version.data_timestamp
        last = self.store.last_complete_poll()
        watched = self.store.watched_ids(self.config)
        fresh_ids = self.store.never_fetched(watched)
        fresh_searches = {x.name for x in self.config.searches} - self.store.searches_run()
        # The registry has not refreshed since the last complete poll (and no one forces a poll):
        # only what was never fetched or never run is asked for.
        only_fresh = last is not None and last.data_timestamp == version.data_timestamp and not force
        if only_fresh and not fresh_ids and not fresh_searches:
            self.report.skipped = True
            return
        since = self._since(last, force=force)
        self.report.full = since is None and not only_fresh
        for search in [x for x in self.config.searches if not only_fresh or x.name in fresh_searches]:
            self.checkpoint()
            self._run_search(search)
        fresh = set(fresh_ids)  # a list: 10,000 ids looked up in it cost a first poll 0.4 s
        known = [] if only_fresh else [i for i in watched if i not in fresh and i not in self.done]
        self._fetch(fresh_ids, since=None)
        self._fetch(known, since=since)
        self._follow_links()
        self._registry_history(watched)
        self._alternatives(watched)

    def _registry_history(self, watched: list[str]) -> None:
        """Version lists (status timelines) of up to ``history.per_poll`` trials that have
        none yet, oldest-watched first: a first poll of 10,000 trials does not cost 10,000
        more requests; the timelines fill in over the following polls. Never fails the poll."""
        from .history import fill_for_poll

        fill_for_poll(self.store, self.config, self.client,
                      list(dict.fromkeys(watched + sorted(self.done))), checkpoint=self.checkpoint)

    def _alternatives(self, watched: list[str]) -> None:
        """Recruiting alternatives, searched once per poll (not per reader) for each trial that
        stopped recruiting now, and for up to ``alternatives.per_poll`` others that do not
        recruit and have none found at this data date. Never fails the poll."""
        from .alternatives_cache import refresh_for_poll

        done = refresh_for_poll(self.store, self.config, self.client, closed_now=self.closed_now,
                                watched=list(dict.fromkeys(watched + sorted(self.done))),
                                data_timestamp=self.report.data_timestamp, checkpoint=self.checkpoint)
        self.report.alternatives_searched = len(done.computed) + len(done.failed)
        self.report.alternatives_failed = len(done.failed)

    # -- what needs fetching ----------------------------------------------------------------
    def _since(self, last, *, force: bool) -> dt.date | None:  # noqa: ANN001
        """The update date to ask from: the data date of the last complete poll, with a day of
        overlap; None (fetch everything) when forced, with no such poll, or when a full sweep is due."""
        if last is not None and last.data_timestamp and not force and not self._full_sweep_due():
            return dt.date.fromisoformat(last.data_timestamp[:10]) - dt.timedelta(days=1)
        return None

    def _full_sweep_due(self) -> bool:
        """Every ``full_sweep_days`` a poll fetches every record whatever its update date: the
        incremental listing cannot show a record that was removed (404) or one changed without
        its LastUpdatePostDate moving."""
        from .store import utcnow

        last_full = self.store.last_full_sweep()
        return last_full is None or utcnow() - last_full >= dt.timedelta(days=self.config.full_sweep_days)

    # -- fetching ---------------------------------------------------------------------------
    def _store(self, raw: dict, *, requested: str | None = None, linked_from: str | None = None) -> str:
        rec = self.store.record_fetch(raw, ignore=self.config.ignore, requested_id=requested,
                                      linked_from=linked_from)
        return self._account(raw, rec)

    def _store_all(self, raws: list[dict], requested: list[str | None] | None = None) -> list[str]:
        """A batch of received records, stored in one transaction."""
        recs = self.store.record_fetches(raws, ignore=self.config.ignore, requested_ids=requested)
        return [self._account(raw, rec) for raw, rec in zip(raws, recs)]

    def _account(self, raw: dict, rec) -> str:  # noqa: ANN001
        from .record import get, nct_of, normalize_nct

        nct = nct_of(raw)
        # One bad record is reported by its NCT number, and never stops the others.
        for problem in rec.problems:
            self._report(nct, problem)
        if rec.error is not None:
            self._report(nct, rec.error)
            self.unstored.add(nct)
            self.done.add(nct)  # not asked for again in this cycle: it would fail the same way
            return nct
        ea = get(raw, "protocolSection.statusModule.expandedAccessInfo.nctId")
        if ea:
            try:
                self.links[nct] = normalize_nct(ea)
            except InvalidNctId:
                log.warning("%s names expanded-access record %r, which is not an NCT number", nct, ea)
        if nct not in self.done:
            self.done.add(nct)
            self.report.trials_checked += 1
        if rec.changes and nct not in self.changed:
            self.changed.add(nct)
            self.report.trials_changed += 1
        self.report.changes += len(rec.changes)
        if any(stops_recruiting(c) for c in rec.changes) and nct not in self.closed_now:
            self.closed_now.append(nct)
        return nct

    def _report(self, nct: str, what: str) -> None:
        error = BadRecord(what, nct_id=nct)
        if all(e.describe() != error.describe() for e in self.report.errors if isinstance(e, TrialwatchError)):
            self.report.errors.append(error)
            log.warning("%s", error.describe())

    def _fetch(self, ids: list[str], *, since: dt.date | None) -> None:
        """Batched fetch of ``ids``. Without ``since`` every id must come back; one that does
        not is looked up alone, which tells an alias (301) from a removed record (404)."""
        from .ctgov import record_aliases
        from .record import nct_of
        from .store import utcnow

        if not ids:
            return
        returned: set[str] = set()
        batch = max(1, self.config.ctgov.batch_size)
        # Records received but not stored yet: a steady poll's pages carry a few changed records
        # each, stored together (one read and one write transaction for them all, not one pair a
        # page), while a page of 100 (a first poll) is still stored as it comes.
        pending: tuple[list[dict], list[str | None]] = ([], [])
        for start in range(0, len(ids), batch):
            if len(pending[0]) >= batch:
                returned.update(self._store_all(*pending))
                pending = ([], [])
            self.checkpoint()
            chunk = ids[start:start + batch]
            try:
                raws = list(self.client.studies(chunk, updated_since=since))
            except Exception:
                if pending[0]:  # a failed request keeps what came before it (not a lost lease: above)
                    self._store_all(*pending)
                raise
            # filter.ids matches aliases too: a record that answers for an asked id it lists in
            # nctIdAliases is that id's new home (a merge), remembered as the 301 would be.
            asked = set(chunk)
            requested: list[str | None] = []
            for raw in raws:
                nct = nct_of(raw)
                alias = None if nct in asked else next(iter(sorted(record_aliases(raw) & asked)), None)
                requested.append(alias)
                if alias:
                    log.info("%s is now %s on ClinicalTrials.gov; following the new ID", alias, nct)
                    returned.add(alias)
            pending[0].extend(raws)
            pending[1].extend(requested)
        if pending[0]:
            returned.update(self._store_all(*pending))
        if since is None:
            for missing in [i for i in ids if i not in returned]:
                self.checkpoint()
                self._fetch_alone(missing)
        else:
            # Not updated since the last complete poll: checked, unchanged.
            unchanged = [i for i in ids if i not in returned]
            self.store.mark_checked(unchanged, at=utcnow())
            self.report.trials_checked += len(unchanged)
            self.done.update(unchanged)

    def _fetch_alone(self, nct: str) -> None:
        try:
            got = self.client.study(nct)
        except TrialNotFound:
            if self.store.mark_gone(nct):
                self.report.events += 1
            log.warning("%s: ClinicalTrials.gov answers 404 (not found)", nct)
            return
        if got.nct_id != nct:
            log.info("%s is now %s on ClinicalTrials.gov; following the new ID", nct, got.nct_id)
        self._store(got.record, requested=nct)

    def _follow_links(self) -> None:
        """Expanded-access records named by a record received in this cycle are followed as
        related records. Only received records can name a new link: an unchanged record's
        links were followed when it was last received, and are in ``watched_ids`` since."""
        links = {ea: nct for nct, ea in self.links.items() if ea not in self.done}
        if not links:
            return
        known = self.store.known_trials(links)
        for i in [i for i in links if i not in known]:
            self.checkpoint()
            try:
                got = self.client.study(i)
            except TrialNotFound:
                log.warning("%s links expanded-access record %s, which is not found", links[i], i)
                continue
            self._store(got.record, requested=i, linked_from=f"expanded_access:{links[i]}")

    # -- saved searches ---------------------------------------------------------------------
    def _run_search(self, search: "SearchConfig") -> None:
        from .store import utcnow

        result = self.client.search(search.query_params(), max_results=search.max_results)
        if result.capped:
            log.warning("search %r matched more than max_results=%d; only the first are followed",
                        search.name, search.max_results)
        ids: list[str] = []
        batch = max(1, self.config.ctgov.batch_size)
        for start in range(0, len(result.records), batch):
            ids += self._store_all(result.records[start:start + batch])
        # First run: record membership silently, like a first snapshot. A search that matched
        # nothing at first has still run: what it matches later is news.
        members, has_run = self.store.search_members(search.name)
        joined = [i for i in ids if not members.get(i)]
        # A capped result set cannot tell who left.
        left = [] if result.capped else [i for i, active in members.items() if active and i not in ids]
        # Fetch the leavers now, so the event can say why (their status changed, or gone).
        self._fetch([i for i in left if i not in self.done], since=None)
        make_events = (lambda states: _search_events(search, joined, left, states)) if has_run else None
        self.report.events += self.store.record_search_run(search.name, ids, left, events=make_events, at=utcnow())


def _search_events(search: "SearchConfig", joined: list[str], left: list[str],
                   states: dict) -> list[tuple[str, "Change"]]:
    """Who joined and who left a saved search, as events; ``states`` holds each leaver's
    ``(overall_status, gone_at)``, read in the transaction that stores the events."""
    from . import events

    return ([(i, events.search_joined(search.name)) for i in joined]
            + [(i, events.search_left(search.name, _why_left(search, *states.get(i, (None, None)))))
               for i in left])


def _why_left(search: "SearchConfig", status: str | None, gone: object) -> str:
    from .record import words

    if gone:
        return "the record is no longer on ClinicalTrials.gov"
    if search.status and status and status not in search.status:
        return f"its status is now {words(status)}"
    return "it no longer appears in the search's results"

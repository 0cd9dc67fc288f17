"""``trialwatch run``: the daemon. APScheduler fires the poll on the configured cron schedule.

* one poll at a time (``max_instances=1``), missed runs coalesced into one;
* the database poll lock keeps two daemons (or a daemon and a manual ``trialwatch poll``) on
  the same database from polling at once. A lock whose holder is dead is taken over at once
  (same host: its PID is gone) or when its short lease runs out (any host; waited for, so a
  dead holder never costs a slot); a live holder's run is logged and skipped until the next;
* SIGTERM / SIGINT: the running poll stops at its next step boundary (every stored record is
  its own transaction, so nothing half-written remains), the scheduler shuts down, exit 0.
"""

from __future__ import annotations

import logging
import signal
import threading
from typing import TYPE_CHECKING

from .errors import LockHeld, TrialwatchError

if TYPE_CHECKING:
    from .config import Config
    from .store import Store

log = logging.getLogger("trialwatch.daemon")


class Daemon:
    def __init__(self, store: "Store", config: "Config") -> None:
        self.store = store
        self.config = config
        self.stop = threading.Event()
        self.polls = 0
        self._scheduler = None
        self._client = None

    def poll_once(self) -> None:
        """The scheduled job: one poll; errors are logged, never kill the daemon."""
        from .poller import poll

        if self.stop.is_set():
            return
        client = self.client()
        try:
            self._poll_unless_held(lambda: poll(self.store, self.config, client=client, stop=self.stop))
        except LockHeld as e:
            log.warning("skipping this run: %s", e.message)
        except TrialwatchError as e:
            log.error("poll failed: %s", e)
        except Exception:  # noqa: BLE001 - a bug in one poll must not end months of watching
            log.exception("poll failed unexpectedly; the next run will try again")
        finally:
            self.polls += 1

    def _poll_unless_held(self, run) -> None:  # noqa: ANN001
        """``run()``; when the lock is held by a holder that may be dead on another host (its
        short lease still running), wait for the lease to end and try again: a dead holder
        never costs a scheduled slot. A holder that renews its lease meanwhile is alive, and
        this run is skipped (LockHeld)."""
        from .lease import LEASE_S
        from .poller import LOCK_NAME
        from .store import utcnow

        while True:
            try:
                return run()
            except LockHeld:
                lock = self.store.lock_holder(LOCK_NAME)
                if lock is None:
                    continue  # released meanwhile
                left = (lock.lease_until - utcnow()).total_seconds()
                if left > LEASE_S + 5:
                    raise  # a long lease (an older trialwatch's): not ours to wait out
                log.info("the poll lock is held by %s until %s UTC; waiting to see if it renews",
                         lock.holder, lock.lease_until)
                if self.stop.wait(max(left, 0) + 2):
                    return None
                again = self.store.lock_holder(LOCK_NAME)
                if again is not None and again.holder == lock.holder and again.lease_until > lock.lease_until:
                    raise  # renewed: a live poll elsewhere has this slot
                # The lease ran out (or was released): take it.

    def client(self):  # noqa: ANN201
        """One API client for the daemon's life: its connection pool and TLS context are
        built once, not at every poll."""
        if self._client is None:
            from .ctgov import Client

            self._client = Client.from_config(self.config.ctgov, sleep=self._sleep)
        return self._client

    def _sleep(self, seconds: float) -> None:
        """The client's waits (throttle, backoff, a Retry-After of up to 5 minutes) end at a
        stop request: the poll then stops as at a step boundary, instead of outliving the
        service manager's patience and being killed with the poll lock held."""
        from .poller import Stopped

        if self.stop.wait(seconds):
            raise Stopped()

    def run(self, *, poll_now: bool = False, install_signals: bool = True) -> int:
        from apscheduler.schedulers.background import BackgroundScheduler
        from apscheduler.triggers.cron import CronTrigger

        trigger = CronTrigger.from_crontab(self.config.schedule, timezone=self.config.timezone)
        sched = BackgroundScheduler(timezone=self.config.timezone)
        sched.add_job(self.poll_once, trigger, id="poll", max_instances=1, coalesce=True,
                      misfire_grace_time=6 * 3600)
        if poll_now:
            sched.add_job(self.poll_once, id="poll-now", max_instances=1)
        if install_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, self._on_signal)
        self._scheduler = sched
        sched.start()
        job = sched.get_job("poll")
        log.info("trialwatch daemon started: schedule %r (%s), next poll at %s",
                 self.config.schedule, self.config.timezone, job.next_run_time)
        self.stop.wait()
        log.info("stopping: letting the current step finish")
        sched.shutdown(wait=True)
        if self._client is not None:
            self._client.close()
        log.info("stopped after %d poll(s)", self.polls)
        return 0

    def _on_signal(self, signum: int, _frame) -> None:  # noqa: ANN001
        log.info("received %s", signal.Signals(signum).name)
        self.stop.set()

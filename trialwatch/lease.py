"""The poll lock's lease: who holds it, whether that holder is still alive, and a heartbeat.

A poll holds the database lock ``locks.name == "poll"`` for as long as it runs. A killed poll
(SIGKILL, a power cut) cannot release it, so the lock must never outlive its holder by much:

* the holder is written as ``host:pid:nonce``; a poll on the same host whose PID is gone is
  dead, and its lock is taken over at once;
* the lease is short (``LEASE_S``) and renewed every ``RENEW_S`` by a heartbeat thread, so a
  holder on another host that stopped renewing is taken over once its lease runs out, within
  two minutes, not an hour.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .store import Store

log = logging.getLogger("trialwatch.lease")

LEASE_S = 120.0  # a holder that stopped renewing is presumed dead after this long
RENEW_S = 25.0   # well inside the lease: four renewals can fail before it runs out


def make_holder() -> str:
    """``host:pid:nonce``: the host and PID let a poll on the same machine see that the holder
    is gone; the nonce tells two polls of one process (threads) apart."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


def holder_is_dead(holder: str) -> bool:
    """True when ``holder`` names a process on this host that no longer exists. Anything else
    (another host, an unreadable holder, a live or unknowable PID) counts as alive: only its
    lease running out frees the lock then."""
    host, _, rest = holder.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid <= 0:
        return False
    if pid == os.getpid():
        return False  # this very process: another thread's poll, alive
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except (PermissionError, OSError):
        return False  # exists (another user's), or cannot tell
    return _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    """A killed child not yet reaped by its parent still answers kill(pid, 0); it holds nothing."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            # "pid (comm) S ...": the state follows the last ')', as comm may contain one.
            return f.read().rpartition(b")")[2].split()[0] == b"Z"
    except (OSError, IndexError):
        return False


class Heartbeat:
    """Renews the lease every ``RENEW_S`` in a background thread while a poll runs, so a long
    step (a 5-minute Retry-After, a slow batch) never lets a live poll's lease run out.
    ``lost`` is set when a renewal finds the lock taken by another poller."""

    def __init__(self, store: "Store", name: str, holder: str, *, every: float = RENEW_S,
                 lease: float = LEASE_S) -> None:
        self.store, self.name, self.holder = store, name, holder
        self.every, self.lease = every, lease
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def renew(self) -> bool:
        """One renewal now; False (and ``lost`` set) when another poller holds the lock."""
        try:
            ok = self.store.renew_lock(self.name, self.holder, ttl_s=self.lease)
        except Exception as e:  # noqa: BLE001 - a database hiccup: the next beat tries again
            log.warning("could not renew the poll lock: %s", e)
            return True
        if not ok:
            self.lost.set()
        return ok

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            if not self.renew():
                return

    def __enter__(self) -> "Heartbeat":
        self._thread = threading.Thread(target=self._run, name="trialwatch-lease", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

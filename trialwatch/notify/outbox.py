"""The sender: claims, leases, backoff with a time-based give-up window, delivery by channel.

``send_pending`` claims due messages BATCH (100) at a time with ``UPDATE ... WHERE
state='queued'`` (so two senders never both take one), marking them ``sending`` with a lease in
one committed transaction, hands each one's stored bytes to its channel (one SMTP connection for
the whole send), then settles the batch (``sent``, back to ``queued`` with a backoff, or
``failed``) in one transaction. A crash in between leaves the batch ``sending``; once the lease
has expired the next send re-queues it, and each retry carries the same key (Message-ID,
Idempotency-Key): at worst the messages of that one batch repeat.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from .. import untrusted
from ..errors import MailUndelivered
from ..mailer import PermanentMailError, TransientMailError, Transport
from ..store import Claimed, Store, utcnow
from .channels import Channel, EmailChannel, channel_class, display
from .compose import compose_digests
from .digest import digest_subject, group, pending

if TYPE_CHECKING:
    from ..config import Config

# A claimed message must be sent or released within this time, else another send re-queues it.
LEASE = dt.timedelta(minutes=10)
# Messages claimed (marked sending with one lease) and settled together, in one transaction
# each. A crash between claim and settle re-sends at most this many messages, each under its
# stored Message-ID / Idempotency-Key, once their lease has run out.
BATCH = 100
# The longest wait between two tries of a message, so mail goes out within hours of an outage.
MAX_BACKOFF = dt.timedelta(hours=6)
# Real elapsed time, so a lease runs from its claim even though ``now`` is fixed per call.
_clock = time.monotonic


@dataclass
class SendEntry:
    message_id: int | None
    recipient: str
    subject: str
    state: str               # sent | queued | failed | would_send
    error: str | None = None
    attempts: int = 0
    next_attempt_at: dt.datetime | None = None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["next_attempt_at"] = self.next_attempt_at.isoformat() + "Z" if self.next_attempt_at else None
        return d


@dataclass
class SendReport:
    dry_run: bool = False
    composed: int = 0
    recovered: int = 0       # messages whose 'sending' lease had expired, put back in the queue
    waiting: int = 0         # queued messages not yet due (backoff), left for a later send
    entries: list[SendEntry] = field(default_factory=list)
    # Digests that could not be built (state 'unbuilt'); their changes stay in the outbox.
    compose_failed: list[SendEntry] = field(default_factory=list)

    def _in(self, state: str) -> list[SendEntry]:
        return [e for e in self.entries if e.state == state]

    @property
    def sent(self) -> list[SendEntry]:
        return self._in("sent")

    @property
    def queued(self) -> list[SendEntry]:
        return self._in("queued")

    @property
    def failed(self) -> list[SendEntry]:
        return self._in("failed")

    def describe(self) -> str:
        """What the CLI prints: one line per message, then the totals."""
        one = untrusted.one_line
        lines = [f"{e.state:<10} {one(e.recipient)}  {one(e.subject)}" + (f"  [{one(e.error)}]" if e.error else "")
                 for e in self.entries]
        if self.dry_run:
            lines.append(f"dry run: {len(self.entries)} message(s) would be sent; nothing changed")
            return "\n".join(lines)
        lines.append(f"{len(self.sent)} sent, {len(self.queued)} queued for retry, "
                     f"{len(self.failed)} failed"
                     + (f", {self.waiting} waiting for their retry time" if self.waiting else "")
                     + (f", {self.recovered} recovered from an interrupted send" if self.recovered else ""))
        lines[-1:-1] = [f"{'unbuilt':<10} {one(e.recipient)}  [{one(e.error)}]" for e in self.compose_failed]
        if self.compose_failed:
            lines[-1] += f", {len(self.compose_failed)} digest(s) could not be built"
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"dry_run": self.dry_run, "composed": self.composed, "recovered": self.recovered,
                "waiting": self.waiting, "sent": len(self.sent), "queued": len(self.queued),
                "failed": len(self.failed), "messages": [e.to_dict() for e in self.entries],
                "compose_failed": [e.to_dict() for e in self.compose_failed]}


def undelivered(store: Store, report: SendReport) -> MailUndelivered | None:
    """The error of a send that left mail undelivered, or None when nothing waits after a failure.

    Counts what this send tried and left queued or failed, plus queued messages that an earlier
    send could not deliver and that wait for their retry time; says why (the last error)."""
    if report.dry_run:
        return None
    tried = {e.message_id for e in report.entries}
    earlier = [(mid, err) for mid, err in store.undelivered_earlier() if mid not in tried]
    queued, failed = len(report.queued) + len(earlier), len(report.failed)
    unbuilt = len(report.compose_failed)
    if not queued and not failed and not unbuilt:
        return None
    why = next((e.error for e in report.queued + report.failed + report.compose_failed if e.error), None) \
        or next((err for _, err in earlier if err), "unknown")
    parts = []
    if queued:
        parts.append(f"{queued} message(s) wait in the outbox for a retry")
    if failed:
        parts.append(f"{failed} failed for good")
    if unbuilt:
        parts.append(f"{unbuilt} digest(s) could not be built (their changes stay queued)")
    return MailUndelivered(f"mail could not be delivered: {', '.join(parts)} (last error: {why})",
                           queued=queued, failed=failed)


def send_pending(store: Store, config: "Config", *, transport: Transport | None = None,
                 now: dt.datetime | None = None, force: bool = True, dry_run: bool = False) -> SendReport:
    """Compose due digests, then deliver every queued message that is due.

    ``force`` (explicit ``trialwatch send``) retries every queued message now (a failed try
    before it was due keeps its schedule and counts against nothing); the daemon passes
    ``force=False`` so backoff (``next_attempt_at``) is respected. ``dry_run`` changes nothing and
    lists what would go out. The CLI prints one line per message,
    ``sent|queued|failed  recipient  subject  [error]``, then the totals; ``--json`` prints
    ``to_dict()``. Exit code 6 when any message stays undelivered (``undelivered``).
    ``transport`` replaces the email channel's transport (tests, ``preview``).
    """
    now = now or utcnow()
    started = _clock()
    report = SendReport(dry_run=dry_run)
    if dry_run:
        for p in pending(store, now):
            kept = [c for c, _ in p.split()[0]]
            if kept:
                report.entries.append(SendEntry(None, display(p.subscriber.channel, p.subscriber.address),
                                                digest_subject(group(kept)),
                                                "would_send"))
        for m in store.queued_messages(now, due_only=not force):
            report.entries.append(SendEntry(m.id, display(m.channel, m.recipient), m.subject, "would_send",
                                            m.last_error, m.attempts, m.next_attempt_at))
        return report
    report.recovered = store.recover_leases(now)
    report.composed = len(compose_digests(store, config, now=now, failures=report.compose_failed))
    due = store.queued_message_ids(now, due_only=not force)
    report.waiting = store.count_queued() - len(due)
    if due:
        deliver_all(store, config, transport, due, now, report, started=started)
    return report


class _Channels:
    """The channels of one send, opened on first use and closed together."""

    def __init__(self, config: "Config", transport: Transport | None) -> None:
        self.config, self.transport = config, transport
        self.open: dict[str, Channel] = {}

    def get(self, kind: str) -> Channel:
        if kind not in self.open:
            cls = channel_class(kind)
            self.open[kind] = cls(self.config, self.transport) if cls is EmailChannel else cls(self.config)
        return self.open[kind]

    def close(self) -> None:
        for ch in self.open.values():
            ch.close()


def deliver_all(store: Store, config: "Config", transport: Transport | None, ids: list[int],
                now: dt.datetime, report: SendReport, *, started: float | None = None) -> None:
    """Deliver these queued messages, claimed and settled BATCH at a time, through one
    connection per channel for the whole send (a transport reconnects after a failure)."""
    started = _clock() if started is None else started
    channels = _Channels(config, transport)
    # Routes (the SMTP server, a webhook's host) that could not be reached during this send.
    unreachable: dict[str, TransientMailError] = {}
    todo = list(reversed(ids))  # popped from the end: oldest first
    try:
        while todo:
            batch = [todo.pop() for _ in range(min(BATCH, len(todo)))]
            # Composing and earlier deliveries took time: this batch's lease starts now.
            claimed_at = _clock()
            lease_until = now + dt.timedelta(seconds=max(0.0, claimed_at - started)) + LEASE
            claimed = store.claim_messages(batch, lease_until)  # others' claims are left out
            outcomes: list[tuple[int, dict[str, Any]]] = []
            for i, m in enumerate(claimed):
                if _clock() - claimed_at > LEASE.total_seconds() / 2:
                    # A slow batch: the rest go back to the queue untried and are claimed
                    # again with a fresh lease, so no try starts on a lease about to run out.
                    outcomes += [(r.id, _release(r)) for r in claimed[i:]]
                    todo += [r.id for r in reversed(claimed[i:])]
                    break
                channel = channels.get(m.channel)
                route = channel.route(m.recipient)
                if route in unreachable:
                    # That route cannot be reached: the rest of its messages are left queued
                    # untried, so an outage costs one message an attempt per send, not every one.
                    entry, values = _untried(config, m, channel, unreachable[route], now)
                    report.entries.append(entry)
                    outcomes.append((m.id, values))
                    continue
                entry, values, error = _deliver(config, channel, m, now)
                report.entries.append(entry)
                outcomes.append((m.id, values))
                if isinstance(error, TransientMailError) and error.unreachable:
                    unreachable[route] = error
            store.settle_messages(outcomes)
    finally:
        channels.close()


def _release(m: Claimed) -> dict[str, Any]:
    """Back to the queue as it was before its claim: the try it counted did not happen."""
    return {"state": "queued", "lease_until": None, "attempts": m.attempts - 1}


def _untried(config: "Config", m: Claimed, channel: Channel, unreachable: TransientMailError,
             now: dt.datetime) -> tuple[SendEntry, dict[str, Any]]:
    values = _release(m)
    entry = SendEntry(m.id, channel.display(m.recipient), m.subject, "queued",
                      f"not tried: {unreachable.message}", values["attempts"], m.next_attempt_at)
    if now >= _give_up_at(config, m.created_at):
        # Its whole window passed without the route being reachable: no dial would change that.
        entry.state = "failed"
        entry.error = _gave_up(config, unreachable.message)
        values |= {"state": "failed", "last_error": entry.error}
    return entry, values


def _give_up_at(config: "Config", created_at: dt.datetime) -> dt.datetime:
    return created_at + dt.timedelta(hours=config.email.give_up_after_hours)


def _gave_up(config: "Config", error: str) -> str:
    return f"gave up after {config.email.give_up_after_hours:g} h of failed tries: {error}"


def backoff(config: "Config", waited: dt.timedelta) -> dt.timedelta:
    """The wait before the next try: retry_backoff_s at first, then about as long as the message
    has waited so far (so the waits double), at most MAX_BACKOFF. Time, not a count of tries:
    a `send` run every minute during an outage does not make a message give up sooner."""
    return min(max(dt.timedelta(seconds=config.email.retry_backoff_s), waited), MAX_BACKOFF)


def _try(channel: Channel, m: Claimed) -> Exception | None:
    try:
        channel.deliver(m.body, m.recipient, m.key)
    except (TransientMailError, PermanentMailError) as e:
        return e
    except Exception as e:  # noqa: BLE001 - a channel bug must not strand the message in 'sending'
        return TransientMailError(f"{type(e).__name__}: {e}")
    return None


def _deliver(config: "Config", channel: Channel, m: Claimed,
             now: dt.datetime) -> tuple[SendEntry, dict[str, Any], Exception | None]:
    """Try one claimed message: its report entry, the values that settle it, the error."""
    error = _try(channel, m)
    entry = SendEntry(m.id, channel.display(m.recipient), m.subject, "sent", None, m.attempts)
    if error is None:
        values: dict[str, Any] = {"state": "sent", "sent_at": now, "last_error": None, "next_attempt_at": None}
    else:
        values = _settle_failure(config, m, error, entry, now)
    return entry, {"lease_until": None} | values, error


def _settle_failure(config: "Config", m: Claimed, error: Exception, entry: SendEntry,
                    now: dt.datetime) -> dict[str, Any]:
    """What a failed try leaves: queued with a next try, or failed for good (and why)."""
    entry.error = error.message if hasattr(error, "message") else str(error)
    values: dict[str, Any] = {}
    attempts, created_at, due_at = m.attempts, m.created_at or now, m.next_attempt_at
    due = due_at is None or due_at <= now
    # `attempts` counts tries the server answered, when they were due: a refused connection
    # or an explicit `send` ahead of the backoff does not use up max_attempts.
    if not due or (isinstance(error, TransientMailError) and error.unreachable):
        attempts -= 1
        entry.attempts = values["attempts"] = attempts
    give_up_at = _give_up_at(config, created_at)
    if isinstance(error, PermanentMailError):
        entry.state = "failed"
    elif now >= give_up_at or attempts >= config.email.max_attempts:
        entry.state = "failed"
        entry.error = _gave_up(config, entry.error) if now >= give_up_at else \
            f"gave up after {attempts} tries the server deferred: {entry.error}"
    else:
        entry.state = "queued"
        # A forced try ahead of time keeps the schedule it had; the last try falls on the
        # give-up time itself, so the window is spanned exactly.
        entry.next_attempt_at = due_at if not due else min(now + backoff(config, now - created_at), give_up_at)
        values["next_attempt_at"] = entry.next_attempt_at
    return values | {"state": entry.state, "last_error": entry.error}

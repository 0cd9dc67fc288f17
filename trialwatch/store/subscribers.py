"""Subscribers: the config sync, sign-up, confirmation, preferences, unsubscribe, rate limits.

The rules (an unsubscribe stands over config.yaml; web subscribers are the web's) are decided
in ``notify.subscribers``; these are the transactions that carry them out.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, delete, func, insert, select, text
from sqlalchemy.orm import raiseload

from .models import Message, OutboxRow, RateEvent, Subscriber, Subscription, Trial, utcnow


@dataclass(frozen=True)
class WantedSubscriber:
    """One config.yaml subscriber as the sync wants her."""

    channel: str
    address: str
    name: str | None
    min_severity: str
    digest: str
    subscriptions: frozenset[tuple[str, str]]
    location: str | None = None      # as written in config.yaml ("Rochester, MN"), resolved when used

    @property
    def key(self) -> tuple[str, str]:
        return self.channel, self.address.lower()


class SubscriberOps:
    """Mixed into Store: subscribers and their subscriptions."""

    def subscriber(self, subscriber_id: int) -> Subscriber | None:
        """One subscriber with her subscriptions loaded (usable after the session closes)."""
        with self.session() as s:
            return s.get(Subscriber, subscriber_id)

    def subscriber_by_address(self, address: str) -> Subscriber | None:
        """The subscriber at this address (on any channel: addresses are unique), any case."""
        with self.session() as s:
            return s.scalars(select(Subscriber).where(func.lower(Subscriber.address) == address.lower())).first()

    def trial_titles(self, nct_ids: list[str]) -> dict[str, str | None]:
        """The titles of these trials, for the choices of the preferences form."""
        with self.session() as s:
            return dict(s.execute(select(Trial.nct_id, Trial.title).where(Trial.nct_id.in_(nct_ids))).all())

    def sync_config_subscribers(self, wanted: list[WantedSubscriber], now: dt.datetime) -> dict[str, list[str]]:
        """Make config subscribers match ``wanted``; returns what happened by address (the keys of
        ``notify.SyncReport``). Never reactivates the unsubscribed, never touches web subscribers.

        Subscriptions are read and written as plain rows in bulk, not as ORM objects: every
        command starts with this sync, and one subscriber following 10,000 trials cost ~1 s
        of objects made, compared and flushed one by one."""
        out: dict[str, list[str]] = {k: [] for k in ("created", "updated", "unchanged", "kept_unsubscribed",
                                                      "skipped_web", "removed")}
        with self.session() as s, s.begin():
            existing = {(sub.channel, sub.address.lower()): sub for sub in s.scalars(
                select(Subscriber).options(raiseload(Subscriber.subscriptions)))}
            have: dict[int, set[tuple[str, str]]] = {}
            for sid, kind, target in s.execute(
                    select(Subscription.subscriber_id, Subscription.kind, Subscription.target)
                    .join(Subscriber).where(Subscriber.source == "config").order_by(Subscription.id)):
                have.setdefault(sid, set()).add((kind, target))
            created: list[tuple[Subscriber, WantedSubscriber]] = []
            added: list[dict] = []
            dropped: list[dict] = []
            for w in wanted:
                sub = existing.get(w.key)
                if sub is None:
                    sub = Subscriber(channel=w.channel, address=w.address, name=w.name, state="active",
                                     source="config", min_severity=w.min_severity, digest=w.digest,
                                     location=w.location, created_at=now, confirmed_at=now, token_version=0)
                    s.add(sub)
                    created.append((sub, w))
                    out["created"].append(w.address)
                elif sub.source == "web":
                    out["skipped_web"].append(sub.address)
                elif sub.state == "unsubscribed":
                    out["kept_unsubscribed"].append(sub.address)
                else:
                    mine = have.get(sub.id, set())
                    added += _rows(sub.id, w.subscriptions - mine)
                    dropped += _rows(sub.id, mine - w.subscriptions)
                    changed = _update_config_subscriber(sub, w, now) or mine != w.subscriptions
                    out["updated" if changed else "unchanged"].append(sub.address)
            if created:
                s.flush()  # their ids, for their subscriptions (one INSERT for all of them)
                for sub, w in created:
                    added += _rows(sub.id, w.subscriptions)
            listed = {w.key for w in wanted}
            for key, sub in existing.items():
                if key in listed or sub.source != "config" or sub.state == "unsubscribed":
                    continue
                if have.get(sub.id):
                    dropped += _rows(sub.id, have[sub.id])
                    _drop_unsent(s, sub.id)
                    out["removed"].append(sub.address)
            _write_subscriptions(s, added, dropped)
        return out

    def unsubscribe_subscriber(self, subscriber_id: int, now: dt.datetime) -> Subscriber | None:
        """Mark her unsubscribed (once; old manage links stop working) and drop her unsent mail.
        None when no such subscriber exists."""
        with self.session() as s, s.begin():
            sub = s.get(Subscriber, subscriber_id)
            if sub is None:
                return None
            if sub.state != "unsubscribed":
                sub.state = "unsubscribed"
                sub.unsubscribed_at = now
                sub.token_version += 1
            _drop_unsent(s, sub.id)
            return sub

    def rate_allow(self, kind: str, key: str, limit: int, window: dt.timedelta) -> bool:
        """Count one event against ``limit`` per ``window``; False (and nothing counted) when the
        limit is reached."""
        now = utcnow()
        key = key[:320]
        with self.session() as s, s.begin():
            # Count and insert under one lock per key: otherwise concurrent requests all count
            # below the limit and all insert (40 at once let 12 through a limit of 10).
            _lock_key(s, "rate:" + kind, key)
            s.execute(delete(RateEvent).where(RateEvent.at < now - dt.timedelta(days=1)))
            n = s.scalar(select(func.count()).select_from(RateEvent).where(
                RateEvent.kind == kind, RateEvent.key == key, RateEvent.at >= now - window))
            if n >= limit:
                return False
            s.add(RateEvent(kind=kind, key=key, at=now))
        return True

    def upsert_pending_subscriber(self, address: str, prefs: dict, channel: str = "email") -> Subscriber:
        """A new or not-yet-active address gets these preferences, pending confirmation; an
        active one is left as it is. Every call bumps a non-active row's token version."""
        with self.session() as s, s.begin():
            # Without the lock, concurrent first sign-ups of one address all find no row and all
            # insert: every one but the first hit the UNIQUE constraint (a 503 on PostgreSQL).
            _lock_key(s, "subscriber", address.lower())
            sub = s.scalars(select(Subscriber).where(
                Subscriber.channel == channel, func.lower(Subscriber.address) == address.lower())).first()
            if sub is None:
                sub = Subscriber(channel=channel, address=address, state="pending", source="web", token_version=0)
                s.add(sub)
            if sub.state != "active":
                # An unsubscribed address comes back only through a new opt-in.
                sub.state = "pending"
                set_prefs(sub, **prefs)
                # Only the newest confirmation link confirms: anyone can submit the form for an
                # address, and an older link must not confirm choices made after it was sent.
                sub.token_version = (sub.token_version or 0) + 1
            s.flush()
            s.refresh(sub)
            _ = sub.subscriptions  # load before the session closes
            return sub

    def confirm_subscriber(self, subscriber_id: int, now: dt.datetime) -> None:
        with self.session() as s, s.begin():
            row = s.get(Subscriber, subscriber_id)
            row.state = "active"
            row.confirmed_at = now
            row.unsubscribed_at = None

    def set_subscriber_prefs(self, subscriber_id: int, prefs: dict) -> None:
        with self.session() as s, s.begin():
            set_prefs(s.get(Subscriber, subscriber_id), **prefs)


def _update_config_subscriber(sub: Subscriber, w: WantedSubscriber, now: dt.datetime) -> bool:
    """Her columns as config.yaml says (her subscriptions are the caller's, as rows)."""
    changed = False
    for attr, value in (("name", w.name), ("min_severity", w.min_severity),
                        ("digest", w.digest), ("state", "active"), ("location", w.location)):
        if getattr(sub, attr) != value:
            setattr(sub, attr, value)
            changed = True
    if sub.confirmed_at is None:
        sub.confirmed_at = now
    return changed


def _write_subscriptions(s: Any, added: list[dict], dropped: list[dict]) -> None:
    """Subscription rows out and in: one executemany each."""
    table = Subscription.__table__
    if dropped:
        s.execute(delete(table).where(table.c.subscriber_id == bindparam("sid"),
                                      table.c.kind == bindparam("k"), table.c.target == bindparam("t")),
                  dropped)
    if added:
        s.execute(insert(table), [{"subscriber_id": r["sid"], "kind": r["k"], "target": r["t"]} for r in added])


def _rows(subscriber_id: int, subscriptions: set[tuple[str, str]] | frozenset[tuple[str, str]]) -> list[dict]:
    """Subscription rows in a stable order (sorted, as they were always added)."""
    return [{"sid": subscriber_id, "k": k, "t": t} for k, t in sorted(subscriptions)]


def set_prefs(sub: Subscriber, *, trials: list[str], searches: list[str], min_severity: str,
              digest: str, location: str | None = None) -> None:
    sub.location = location or None
    sub.min_severity = min_severity
    sub.digest = digest
    wanted = {("trial", t) for t in trials} | {("search", n) for n in searches}
    sub.subscriptions = [x for x in sub.subscriptions if (x.kind, x.target) in wanted]
    have = {(x.kind, x.target) for x in sub.subscriptions}
    sub.subscriptions += [Subscription(kind=k, target=t) for k, t in sorted(wanted - have)]


def _drop_unsent(s: Any, subscriber_id: int) -> int:
    """Forget everything not yet handed to a channel for this person; returns messages dropped."""
    queued = list(s.scalars(select(Message.id).where(Message.subscriber_id == subscriber_id,
                                                      Message.state == "queued")))
    s.execute(delete(OutboxRow).where(OutboxRow.subscriber_id == subscriber_id,
                                      OutboxRow.message_id.is_(None)))
    if queued:
        s.execute(delete(OutboxRow).where(OutboxRow.message_id.in_(queued)))
        s.execute(delete(Message).where(Message.id.in_(queued)))
    return len(queued)


def _lock_key(session: Any, kind: str, key: str) -> None:
    """Serialise this transaction with every other one that locks the same (kind, key).

    PostgreSQL: a transaction-scoped advisory lock, released at commit or rollback. SQLite:
    nothing to do, its transactions here begin IMMEDIATE and so already run one at a time.
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(hashtext(:kind), hashtext(:key))"),
                        {"kind": kind, "key": key})

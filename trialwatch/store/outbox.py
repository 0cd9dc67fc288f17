"""The outbox and the messages: what is owed to whom, claims, leases and settling a try.

The rules (when a digest is due, how long to back off, when to give up) are ``notify``'s; the
transactions that make a claim exclusive and a digest's rows belong to one message are here.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, fields
from typing import Any

from sqlalchemy import bindparam, case, delete, func, insert, select, update

from .models import ChangeRow, Message, MessageBody, OutboxRow, SearchMember, Subscriber, Subscription, Trial


@dataclass(frozen=True)
class NewMessage:
    """A rendered notification, ready to be queued."""

    subscriber_id: int | None
    kind: str
    channel: str
    recipient: str
    key: str            # the stable delivery key: Message-ID / Idempotency-Key
    subject: str
    body: bytes


@dataclass(frozen=True)
class Follow:
    kind: str       # trial | search
    target: str


@dataclass(frozen=True)
class Reader:
    """A subscriber as a send reads her: plain data (the ``Subscriber`` columns a digest uses)."""

    id: int
    channel: str
    address: str
    name: str | None
    state: str
    min_severity: str
    digest: str
    last_digest_at: dt.datetime | None
    token_version: int
    location: str | None
    subscriptions: tuple[Follow, ...]

    @property
    def email(self) -> str:  # the older name, as on Subscriber
        return self.address


def _readers(s: Any, ids: list[int]) -> dict[int, Reader]:
    follows: dict[int, list[Follow]] = {}
    for sid, kind, target in s.execute(select(Subscription.subscriber_id, Subscription.kind, Subscription.target)
                                       .where(Subscription.subscriber_id.in_(ids))
                                       .order_by(Subscription.id)):
        follows.setdefault(sid, []).append(Follow(kind, target))
    cols = [getattr(Subscriber, f.name) for f in fields(Reader) if f.name != "subscriptions"]
    return {r[0]: Reader(*r, subscriptions=tuple(follows.get(r[0], ())))
            for r in s.execute(select(*cols).where(Subscriber.id.in_(ids)))}


@dataclass(frozen=True)
class Claimed:
    """A message this sender holds the lease of, as stored."""

    id: int
    channel: str
    recipient: str
    key: str
    subject: str
    body: bytes
    attempts: int
    created_at: dt.datetime
    next_attempt_at: dt.datetime | None


def _undo_contested(c: Any, pairs: list[dict[str, int]]) -> set[int]:
    """Another composer attached some of ``pairs``' outbox rows first: the messages that did not
    get all of theirs are deleted (their rows stay with the other one's message). Returns their ids."""
    outbox, msgs = OutboxRow.__table__, Message.__table__
    got = dict(c.execute(select(outbox.c.id, outbox.c.message_id)
                         .where(outbox.c.id.in_([p["oid"] for p in pairs]))).all())
    taken = {p["mid"] for p in pairs if got.get(p["oid"]) != p["mid"]}
    if taken:
        c.execute(update(outbox).where(outbox.c.message_id.in_(taken)).values(message_id=None))
        c.execute(delete(msgs).where(msgs.c.id.in_(taken)))
    return taken


# Outbox ids bound in one statement (SQLite allows 32,766 parameters, PostgreSQL 65,535).
_IDS_PER_STATEMENT = 5000


def _attach(c: Any, messages: list[tuple[int, list[int], list[int], NewMessage]], mids: list[int],
            pairs: list[dict[str, int]]) -> int:
    """Attach each digest's outbox rows to its new message, unless already attached; how many were.

    One UPDATE per page rather than one per row (an executemany of a page's ~300 rows took
    PostgreSQL ~40 ms): each row takes the new message of its own subscriber (a CASE on her id;
    a correlated subquery made SQLite look the page's messages up once per row)."""
    outbox = OutboxRow.__table__
    subs = [sub_id for sub_id, _, _, _ in messages]
    if len(set(subs)) != len(subs):  # two digests for one person: her id does not name her message
        return c.execute(update(outbox).where(outbox.c.id == bindparam("oid"), outbox.c.message_id.is_(None))
                         .values(message_id=bindparam("mid")), pairs).rowcount
    hers = case(dict(zip(subs, mids)), value=outbox.c.subscriber_id)
    oids = [p["oid"] for p in pairs]
    return sum(c.execute(update(outbox).where(outbox.c.id.in_(oids[i:i + _IDS_PER_STATEMENT]),
                                              outbox.c.subscriber_id.in_(subs), outbox.c.message_id.is_(None))
                         .values(message_id=hers)).rowcount
               for i in range(0, len(oids), _IDS_PER_STATEMENT))


class OutboxOps:
    """Mixed into Store: the outbox rows and the message queue."""

    def unsent_outbox(self) -> list[tuple[int, ChangeRow, Subscriber]]:
        """Unattached outbox rows of active subscribers, by subscriber then change."""
        with self.session() as s:
            return [tuple(r) for r in s.execute(
                select(OutboxRow.id, ChangeRow, Subscriber)
                .join(ChangeRow, OutboxRow.change_id == ChangeRow.id)
                .join(Subscriber, OutboxRow.subscriber_id == Subscriber.id)
                .where(OutboxRow.message_id.is_(None), Subscriber.state == "active")
                .order_by(Subscriber.id, ChangeRow.id)).all()]

    def unsent_outbox_page(self, after: int, limit: int, changes: dict[int, ChangeRow] | None = None
                           ) -> list[tuple[int, ChangeRow, Reader]]:
        """``unsent_outbox`` for the next ``limit`` subscribers with an id above ``after``: a
        send streams through them page by page, in bounded memory however many there are.

        Each subscriber is a plain ``Reader``, and each change is read once per send: ``changes``
        (the send's, by id) keeps those read for earlier pages. A page of 100 readers as ORM
        objects, their subscriptions and a copy of the change on every row took ~3 ms."""
        changes = {} if changes is None else changes
        with self.session() as s:
            # Walk subscribers in id order and probe the outbox per subscriber (its index): a
            # DISTINCT over every unsent row took PostgreSQL 160 ms a page at 5,000 subscribers.
            unsent = select(OutboxRow.id).where(OutboxRow.subscriber_id == Subscriber.id,
                                                OutboxRow.message_id.is_(None)).exists()
            ids = list(s.scalars(select(Subscriber.id)
                                 .where(Subscriber.id > after, Subscriber.state == "active", unsent)
                                 .order_by(Subscriber.id).limit(limit)))
            if not ids:
                return []
            rows = s.execute(select(OutboxRow.id, OutboxRow.change_id, OutboxRow.subscriber_id)
                             .where(OutboxRow.message_id.is_(None), OutboxRow.subscriber_id.in_(ids))).all()
            readers = _readers(s, ids)
            missing = {cid for _, cid, _ in rows if cid not in changes}
            if missing:
                changes.update((c.id, c) for c in s.scalars(select(ChangeRow).where(ChangeRow.id.in_(missing))))
        return sorted(((oid, changes[cid], readers[sid]) for oid, cid, sid in rows),
                      key=lambda r: (r[2].id, r[1].id))

    def trial_context(self, nct_ids: list[str]) -> tuple[dict[str, str | None], dict[str, set[str]]]:
        """Titles and saved-search memberships of these trials, for a digest's view model."""
        with self.session() as s:
            memberships: dict[str, set[str]] = {}
            for search, nct in s.execute(select(SearchMember.search, SearchMember.nct_id)
                                         .where(SearchMember.nct_id.in_(nct_ids))):
                memberships.setdefault(nct, set()).add(search)
            titles = dict(s.execute(select(Trial.nct_id, Trial.title).where(Trial.nct_id.in_(nct_ids))).all())
        return titles, memberships

    def store_digests(self, digests: list[tuple[int, list[int], list[int], NewMessage | None]],
                      now: dt.datetime) -> list[int | None]:
        """For each (subscriber_id, keep, drop, message): drop the outbox rows below her floor,
        and queue ``message`` with ``keep`` attached to it. ONE transaction of a few statements
        for the batch; each digest still stands or falls alone: one whose rows another composer
        attached first is undone inside it (None in its place, as for no message)."""
        messages = [d for d in digests if d[3] is not None]
        drop = [o for d in digests for o in d[2]]
        out: dict[int, int | None] = {}
        outbox, msgs = OutboxRow.__table__, Message.__table__
        with self.session() as s, s.begin():
            c = s.connection()
            if drop:
                c.execute(delete(outbox).where(outbox.c.id.in_(drop), outbox.c.message_id.is_(None)))
            if not messages:
                return [None] * len(digests)
            mids = list(c.execute(insert(msgs).returning(msgs.c.id, sort_by_parameter_order=True), [
                {"subscriber_id": m.subscriber_id, "kind": m.kind, "channel": m.channel, "recipient": m.recipient,
                 "rfc_message_id": m.key, "subject": m.subject, "state": "queued",
                 "attempts": 0, "created_at": now} for _, _, _, m in messages]).scalars())
            c.execute(insert(MessageBody.__table__), [{"message_id": mid, "body": m.body}
                                                      for (_, _, _, m), mid in zip(messages, mids)])
            pairs = [{"oid": o, "mid": mid} for (_, keep, _, _), mid in zip(messages, mids) for o in keep]
            taken = set() if _attach(c, messages, mids, pairs) == len(pairs) else _undo_contested(c, pairs)
            stored = [(sub_id, mid) for (sub_id, _, _, _), mid in zip(messages, mids) if mid not in taken]
            if stored:
                c.execute(update(Subscriber.__table__).where(Subscriber.__table__.c.id.in_([i for i, _ in stored]))
                          .values(last_digest_at=now))
            out = dict(stored)
        return [out.get(d[0]) if d[3] is not None else None for d in digests]

    def queue_message(self, message: NewMessage, now: dt.datetime) -> int:
        with self.session() as s, s.begin():
            return _add_message(s, message, now)

    def recover_leases(self, now: dt.datetime) -> int:
        """Re-queue messages whose sender's lease ran out; returns how many."""
        with self.session() as s, s.begin():
            # A digest stranded by a crashed sender is not re-queued for someone who unsubscribed
            # meanwhile (unsubscribe drops only what is queued): it is dropped like her queued mail.
            gone = list(s.scalars(select(Message.id).join(Subscriber, Message.subscriber_id == Subscriber.id)
                                  .where(Message.state == "sending", Message.lease_until < now,
                                         Message.kind == "digest", Subscriber.state == "unsubscribed")))
            if gone:
                s.execute(delete(OutboxRow).where(OutboxRow.message_id.in_(gone)))
                s.execute(delete(Message).where(Message.id.in_(gone)))
            res = s.execute(update(Message).where(Message.state == "sending", Message.lease_until < now)
                            .values(state="queued", lease_until=None, next_attempt_at=None))
            return res.rowcount or 0

    def queued_messages(self, now: dt.datetime, *, due_only: bool) -> list[Message]:
        with self.session() as s:
            return list(s.scalars(_queued(select(Message), now, due_only=due_only)))

    def count_queued(self) -> int:
        with self.session() as s:
            return s.scalar(select(func.count()).select_from(Message).where(Message.state == "queued"))

    def undelivered_earlier(self) -> list[tuple[int, str | None]]:
        """Queued messages an earlier try could not deliver: (id, last error)."""
        with self.session() as s:
            return [tuple(r) for r in s.execute(select(Message.id, Message.last_error).where(
                Message.state == "queued", Message.last_error.is_not(None)))]

    def message(self, mid: int) -> Message | None:
        with self.session() as s:
            return s.get(Message, mid)

    def queued_message_ids(self, now: dt.datetime, *, due_only: bool) -> list[int]:
        """The ids of queued messages (due ones only when ``due_only``), oldest first: the
        bodies stay in the database until a batch is claimed."""
        with self.session() as s:
            return list(s.scalars(_queued(select(Message.id), now, due_only=due_only)))

    def claim_messages(self, ids: list[int], lease_until: dt.datetime) -> list[Claimed]:
        """Claim a batch in one transaction: the ones still queued move to sending with the lease
        (a try counted); those another sender took are left out."""
        if not ids:
            return []
        with self.session() as s, s.begin():
            mine = list(s.scalars(update(Message).where(Message.id.in_(ids), Message.state == "queued")
                                  .values(state="sending", lease_until=lease_until, attempts=Message.attempts + 1)
                                  .returning(Message.id).execution_options(synchronize_session=False)))
            if not mine:
                return []
            rows = s.execute(select(Message.id, Message.channel, Message.recipient, Message.rfc_message_id,
                                    Message.subject, MessageBody.body, Message.attempts, Message.created_at,
                                    Message.next_attempt_at).join(MessageBody, MessageBody.message_id == Message.id)
                             .where(Message.id.in_(mine)).order_by(Message.id))
            return [Claimed(*r) for r in rows]

    def settle_messages(self, outcomes: list[tuple[int, dict[str, Any]]]) -> None:
        """Record the outcomes of a batch's tries (only of messages still ours) in one
        transaction; messages with the same outcome (every one delivered) in one statement."""
        by_values: dict[tuple, list[int]] = {}
        for mid, values in outcomes:
            by_values.setdefault(tuple(sorted(values.items())), []).append(mid)
        if not by_values:
            return
        with self.session() as s, s.begin():
            for values, mids in by_values.items():
                s.execute(update(Message).where(Message.id.in_(mids), Message.state == "sending")
                          .values(**dict(values)).execution_options(synchronize_session=False))


def _add_message(s: Any, m: NewMessage, now: dt.datetime) -> int:
    mid = s.execute(insert(Message.__table__).values(
        subscriber_id=m.subscriber_id, kind=m.kind, channel=m.channel, recipient=m.recipient,
        rfc_message_id=m.key, subject=m.subject, state="queued", attempts=0,
        created_at=now).returning(Message.__table__.c.id)).scalar_one()
    s.execute(insert(MessageBody.__table__).values(message_id=mid, body=m.body))
    return mid


def _queued(q: Any, now: dt.datetime, *, due_only: bool) -> Any:
    """``q`` narrowed to queued messages (due ones only when ``due_only``), oldest first."""
    q = q.where(Message.state == "queued")
    if due_only:
        q = q.where((Message.next_attempt_at.is_(None)) | (Message.next_attempt_at <= now))
    return q.order_by(Message.id)

"""The tables: SQLAlchemy models of every row trialwatch keeps (see docs/architecture.md)."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from sqlalchemy import (
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    select,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, column_property, mapped_column, relationship, synonym

from ..events import SEVERITY_RANK


def utcnow() -> dt.datetime:
    """Naive UTC, the one time representation in the database (SQLite keeps no zone)."""
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None, microsecond=0)


class Base(DeclarativeBase):
    pass


# -- records ----------------------------------------------------------------------------------

class Trial(Base):
    """A record trialwatch follows: watched, matched by a search, or linked from another."""

    __tablename__ = "trials"
    nct_id: Mapped[str] = mapped_column(String(11), primary_key=True)
    title: Mapped[str | None] = mapped_column(Text)
    overall_status: Mapped[str | None] = mapped_column(String(32))
    first_seen_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    last_checked_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    last_changed_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    # Set when ClinicalTrials.gov answers 404 for a record we had seen; cleared if it returns.
    gone_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    # Why we follow it beyond the watch list: "linked:NCT…" (expanded access) etc.
    linked_from: Mapped[str | None] = mapped_column(String(64))
    # Added to the watch list by the operator with `trialwatch watch` (config.yaml is the other way).
    watched: Mapped[bool] = mapped_column(Boolean, default=False)
    # What was wrong with the latest record as fetched (JSON list of "field: what"), shown on its
    # page; NULL when it was well-formed.
    problems: Mapped[str | None] = mapped_column(Text)


class AlternativesCache(Base):
    """Recruiting alternatives of a trial as found at one registry data date (``trialwatch
    alternatives`` JSON, ranked without a place): computed once per poll, read by pages and
    digests, which rank by each reader's own place without another request."""

    __tablename__ = "alternatives"
    nct_id: Mapped[str] = mapped_column(String(11), primary_key=True)
    data_timestamp: Mapped[str | None] = mapped_column(String(40))
    computed_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    body: Mapped[str] = mapped_column(Text)


class TrialAlias(Base):
    """An ID that ClinicalTrials.gov redirects (301) to another record."""

    __tablename__ = "trial_aliases"
    alias: Mapped[str] = mapped_column(String(11), primary_key=True)
    nct_id: Mapped[str] = mapped_column(String(11), index=True)
    seen_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


class Blob(Base):
    """zlib-compressed JSON keyed by its SHA-256: a version's manifest (keyed by the record's
    content hash) or one of its parts. Identical parts are stored once across all versions."""

    __tablename__ = "blobs"
    hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    body: Mapped[bytes] = mapped_column(LargeBinary)
    raw_size: Mapped[int] = mapped_column(Integer)


class Snapshot(Base):
    __tablename__ = "snapshots"
    __table_args__ = (UniqueConstraint("nct_id", "seq", name="uq_snapshots_nct_seq"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    nct_id: Mapped[str] = mapped_column(String(11), ForeignKey("trials.nct_id"), index=True)
    seq: Mapped[int] = mapped_column(Integer)  # 1, 2, 3 ... per trial: the chain
    blob_hash: Mapped[str] = mapped_column(String(64), ForeignKey("blobs.hash"))
    fetched_at: Mapped[dt.datetime] = mapped_column(DateTime)
    last_update_posted: Mapped[str | None] = mapped_column(String(10))
    overall_status: Mapped[str | None] = mapped_column(String(32))
    # Set for a version backfilled from the registry's history (``trialwatch backfill``): its
    # number and date there. Such snapshots take seq REGISTRY_SEQ_BASE + version (negative),
    # so they sort before the live chain (seq 1, 2, ...) and never become its "latest".
    source: Mapped[str | None] = mapped_column(String(16))  # None: live | "registry"
    registry_version: Mapped[int | None] = mapped_column(Integer)
    registry_date: Mapped[str | None] = mapped_column(String(10))


# Registry versions are numbered from 0; their snapshots sit below the live chain's seq 1.
REGISTRY_SEQ_BASE = -1_000_000


class RegistryVersion(Base):
    """One entry of the registry's version list of a trial (its status timeline)."""

    __tablename__ = "registry_versions"
    nct_id: Mapped[str] = mapped_column(String(11), ForeignKey("trials.nct_id"), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    date: Mapped[str] = mapped_column(String(10))
    overall_status: Mapped[str | None] = mapped_column(String(32))
    modules: Mapped[str] = mapped_column(Text, default="[]")  # JSON list of changed module labels


class RegistryHistory(Base):
    """That a trial's version list was asked for: ``ok`` (its versions are in
    ``registry_versions``) or ``unavailable`` (404, garbage, an unexpected shape)."""

    __tablename__ = "registry_histories"
    nct_id: Mapped[str] = mapped_column(String(11), ForeignKey("trials.nct_id"), primary_key=True)
    state: Mapped[str] = mapped_column(String(16))  # ok | unavailable
    fetched_at: Mapped[dt.datetime] = mapped_column(DateTime)
    # The newest registry version the first live snapshot shows: backfill stops there.
    seam_version: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)


class ChangeRow(Base):
    """One change a person can read. ``snapshot_id`` is null for events that are not a new
    version of a record (a trial newly matches a saved search, a record disappeared)."""

    __tablename__ = "changes"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    nct_id: Mapped[str] = mapped_column(String(11), index=True)
    snapshot_id: Mapped[int | None] = mapped_column(ForeignKey("snapshots.id"), index=True)
    search: Mapped[str | None] = mapped_column(String(64))
    field: Mapped[str] = mapped_column(String(200))
    label: Mapped[str] = mapped_column(Text)
    old: Mapped[str | None] = mapped_column(Text)  # JSON
    new: Mapped[str | None] = mapped_column(Text)  # JSON
    detail: Mapped[str | None] = mapped_column(Text)
    site: Mapped[str | None] = mapped_column(Text)
    severity: Mapped[str] = mapped_column(String(10))
    detected_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    # A change between registry versions found by backfill: history, never news (no outbox
    # row); ``registry_date`` is when the registry recorded it.
    historical: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")
    registry_date: Mapped[str | None] = mapped_column(String(10))

    @property
    def old_value(self) -> Any:
        return None if self.old is None else json.loads(self.old)

    @property
    def new_value(self) -> Any:
        return None if self.new is None else json.loads(self.new)

    @property
    def rank(self) -> int:
        return SEVERITY_RANK.get(self.severity, 0)

    def to_dict(self) -> dict:
        return {"field": self.field, "label": self.label, "old": self.old_value,
                "new": self.new_value, "severity": self.severity, "detail": self.detail,
                "site": self.site, "search": self.search,
                "detected_at": self.detected_at.isoformat() + "Z" if self.detected_at else None,
                **({"historical": True, "registry_date": self.registry_date} if self.historical else {})}


# -- people -----------------------------------------------------------------------------------

class Subscriber(Base):
    __tablename__ = "subscribers"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # Where her digests go: a channel by name (notify.channels) and its address there (a mail
    # address, a webhook URL, an Apprise URL). A mail address and a URL never coincide, so the
    # address alone is unique.
    channel: Mapped[str] = mapped_column(String(16), default="email", server_default="email")
    address: Mapped[str] = mapped_column(String(2000), unique=True)
    email = synonym("address")  # the older name, for the email channel's readers
    name: Mapped[str | None] = mapped_column(String(200))
    state: Mapped[str] = mapped_column(String(16), default="pending")  # pending|active|unsubscribed
    source: Mapped[str] = mapped_column(String(16), default="config")  # config|web
    min_severity: Mapped[str] = mapped_column(String(10), default="important")
    digest: Mapped[str] = mapped_column(String(10), default="each_poll")  # each_poll|daily|weekly
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    confirmed_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    unsubscribed_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    last_digest_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    # Bumped on unsubscribe/resubscribe so old manage links stop working.
    token_version: Mapped[int] = mapped_column(Integer, default=0)
    # Where her patients are (a place as she typed it: "Rochester, MN", "55905", "44.0,-92.5"),
    # resolved offline when used; NULL when she gave none.
    location: Mapped[str | None] = mapped_column(String(200))

    subscriptions: Mapped[list["Subscription"]] = relationship(
        back_populates="subscriber", cascade="all, delete-orphan", lazy="selectin")


class Subscription(Base):
    __tablename__ = "subscriptions"
    __table_args__ = (UniqueConstraint("subscriber_id", "kind", "target", name="uq_subscriptions"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    subscriber_id: Mapped[int] = mapped_column(ForeignKey("subscribers.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(8))  # trial | search
    target: Mapped[str] = mapped_column(String(64))  # NCT id or search name

    subscriber: Mapped[Subscriber] = relationship(back_populates="subscriptions")


class OutboxRow(Base):
    """A change owed to a subscriber. ``message_id`` is set when a digest takes it."""

    __tablename__ = "outbox"
    __table_args__ = (UniqueConstraint("subscriber_id", "change_id", name="uq_outbox"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    subscriber_id: Mapped[int] = mapped_column(ForeignKey("subscribers.id", ondelete="CASCADE"), index=True)
    change_id: Mapped[int] = mapped_column(ForeignKey("changes.id"))
    message_id: Mapped[int | None] = mapped_column(ForeignKey("messages.id"), index=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


class Message(Base):
    """One notification: a digest (or a confirmation) for one channel. Rendered once, sent as
    the same bytes on every attempt under the same stable key (``rfc_message_id``: the email's
    Message-ID, a webhook's Idempotency-Key), so a repeat after a crash or timeout can be dropped."""

    __tablename__ = "messages"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    subscriber_id: Mapped[int | None] = mapped_column(ForeignKey("subscribers.id", ondelete="SET NULL"), index=True)
    kind: Mapped[str] = mapped_column(String(16), default="digest")  # digest | confirm
    channel: Mapped[str] = mapped_column(String(16), default="email", server_default="email")
    recipient: Mapped[str] = mapped_column(String(2000))  # the address on that channel
    rfc_message_id: Mapped[str] = mapped_column(String(255), unique=True)
    subject: Mapped[str] = mapped_column(Text)
    # ``body`` (below): its bytes, kept in message_bodies.
    state: Mapped[str] = mapped_column(String(10), default="queued", index=True)  # queued|sending|sent|failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    lease_until: Mapped[dt.datetime | None] = mapped_column(DateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    sent_at: Mapped[dt.datetime | None] = mapped_column(DateTime)


class MessageBody(Base):
    """What a message's channel sends (RFC 5322 bytes, a JSON body), apart from its delivery
    state: claiming and settling a message then update its small ``messages`` row only, where
    SQLite rewrites a whole row, a digest's ~15 KB, on any update (twice per message sent)."""

    __tablename__ = "message_bodies"
    message_id: Mapped[int] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"), primary_key=True)
    body: Mapped[bytes] = mapped_column(LargeBinary)


# Read as a column of the message (``select(Message.body)``, ``message.body``); written with the
# message by the store (``NewMessage``).
Message.body = column_property(  # type: ignore[attr-defined]
    select(MessageBody.body).where(MessageBody.message_id == Message.id).correlate_except(MessageBody)
    .scalar_subquery())


class RateEvent(Base):
    """Rate-limited actions (confirmation mails per address and per client)."""

    __tablename__ = "rate_events"
    __table_args__ = (Index("ix_rate_events_kind_key_at", "kind", "key", "at"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    key: Mapped[str] = mapped_column(String(320))
    at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


# -- polling ----------------------------------------------------------------------------------

class Poll(Base):
    __tablename__ = "polls"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    started_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    data_timestamp: Mapped[str | None] = mapped_column(String(32))
    complete: Mapped[bool] = mapped_column(Boolean, default=False)
    skipped: Mapped[bool] = mapped_column(Boolean, default=False)
    full: Mapped[bool] = mapped_column(Boolean, default=False)  # a full sweep, not incremental
    requests: Mapped[int] = mapped_column(Integer, default=0)
    bytes_received: Mapped[int] = mapped_column(Integer, default=0)
    trials_checked: Mapped[int] = mapped_column(Integer, default=0)
    trials_changed: Mapped[int] = mapped_column(Integer, default=0)
    changes: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)


class Lock(Base):
    __tablename__ = "locks"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(200))
    lease_until: Mapped[dt.datetime] = mapped_column(DateTime)


class SavedSearchRun(Base):
    """That a saved search has run, so its first result set (even an empty one) is the
    baseline and later joiners are news."""

    __tablename__ = "saved_searches"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    first_run_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    last_run_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    last_count: Mapped[int] = mapped_column(Integer, default=0)


class SearchMember(Base):
    __tablename__ = "search_members"
    search: Mapped[str] = mapped_column(String(64), primary_key=True)
    nct_id: Mapped[str] = mapped_column(String(11), primary_key=True)
    first_seen: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    last_seen: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    active: Mapped[bool] = mapped_column(Boolean, default=True)

"""The snapshot store: every distinct version of every record, the changes between them, and
the mail outbox, in one SQL database (SQLite by default, PostgreSQL when one machine is not enough).

The invariants that make alerts trustworthy live here:

* ``record_fetch`` writes a snapshot only when the canonical content hash differs from the
  trial's latest snapshot, and writes the snapshot, its changes and the outbox rows for every
  matching subscriber in ONE transaction: a change is never stored without its mail, nor mail
  queued for a change that was rolled back.
* ``snapshots`` is a chain per trial with ``UNIQUE(nct_id, seq)``: two writers that both append
  after the same snapshot collide on the constraint instead of writing a duplicate.
* ``outbox`` has ``UNIQUE(subscriber_id, change_id)``: a change is queued once per person.
* identical content is stored once: a record version is split into parts (each protocol module,
  the sites in content-defined chunks, the results section ...), each part a zlib-compressed
  blob keyed by its hash, so a new version stores only the parts that changed (``blobs``).

Nothing here is built at import time: ``open_store(url)`` makes the engine.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Boolean, DateTime, ForeignKey, Index, Integer, LargeBinary, String, Text,
    UniqueConstraint, create_engine, event, select, func, update,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship, sessionmaker

from . import record as rec
from .diff import SEVERITY_RANK, Change, diff
from .errors import StoreError

log = logging.getLogger("trialwatch.store")


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
    email: Mapped[str] = mapped_column(String(320), unique=True)
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
    """One email: a digest (or a confirmation). Rendered once, sent as the same bytes on every
    attempt, so a retry after a crash repeats the same Message-ID."""

    __tablename__ = "messages"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    subscriber_id: Mapped[int | None] = mapped_column(ForeignKey("subscribers.id", ondelete="SET NULL"), index=True)
    kind: Mapped[str] = mapped_column(String(16), default="digest")  # digest | confirm
    recipient: Mapped[str] = mapped_column(String(320))
    rfc_message_id: Mapped[str] = mapped_column(String(255), unique=True)
    subject: Mapped[str] = mapped_column(Text)
    body: Mapped[bytes] = mapped_column(LargeBinary)  # the full RFC 5322 message
    state: Mapped[str] = mapped_column(String(10), default="queued", index=True)  # queued|sending|sent|failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    lease_until: Mapped[dt.datetime | None] = mapped_column(DateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    sent_at: Mapped[dt.datetime | None] = mapped_column(DateTime)


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


# -- engine -----------------------------------------------------------------------------------

def make_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite gets WAL, a busy timeout and foreign keys."""
    try:
        if url.startswith("sqlite"):
            # isolation_level=None hands transaction control to the "begin" hook below.
            engine = create_engine(url, connect_args={"timeout": 30, "isolation_level": None})

            @event.listens_for(engine, "connect")
            def _sqlite_pragmas(dbapi_conn, _record):  # noqa: ANN001
                cur = dbapi_conn.cursor()
                _wal(cur, url)
                cur.execute("PRAGMA synchronous=NORMAL")
                cur.execute("PRAGMA foreign_keys=ON")
                cur.close()

            @event.listens_for(engine, "begin")
            def _sqlite_begin(conn):  # noqa: ANN001
                # A deferred transaction that reads and then writes fails at once with
                # SQLITE_BUSY when another writer got in between (the busy timeout does not
                # apply); IMMEDIATE takes the write lock up front and waits its turn instead.
                # Reads only (a Store session without an explicit begin()) stay DEFERRED: in
                # WAL mode they read a snapshot and never wait on, or hold up, the writer.
                if conn.get_execution_options().get(_READ_ONLY):
                    conn.exec_driver_sql("BEGIN")
                else:
                    conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            engine = _postgresql_engine(url)
    except (SQLAlchemyError, ImportError, ValueError) as e:
        raise StoreError(f"cannot use database {_safe_url(url)}: {e}") from None
    return engine


# A database that accepts connections but never answers must not hang a caller forever: a
# connection gives up after CONNECT_TIMEOUT_S, a statement after STATEMENT_TIMEOUT_S (unless
# the URL sets its own). SQLite's equivalent is the busy timeout (30 s) above.
CONNECT_TIMEOUT_S = 10
STATEMENT_TIMEOUT_S = 120


def _postgresql_engine(url: str) -> Engine:
    from sqlalchemy.engine import make_url

    query = make_url(url).query
    connect_args = {} if "connect_timeout" in query else {"connect_timeout": CONNECT_TIMEOUT_S}
    engine = create_engine(url, pool_pre_ping=True, connect_args=connect_args)
    if "statement_timeout" not in str(query.get("options", "")):
        @event.listens_for(engine, "connect")
        def _statement_timeout(dbapi_conn, _record):  # noqa: ANN001
            # Set per connection, not in the URL's `options`, which may carry a search_path.
            with dbapi_conn.cursor() as cur:
                cur.execute(f"SET statement_timeout = {STATEMENT_TIMEOUT_S * 1000}")
            dbapi_conn.commit()

    return engine


def _wal(cur, url: str = "sqlite") -> None:  # noqa: ANN001
    """Switch a SQLite file to WAL (it stays so). On a brand-new file that another process is
    creating, the switch can answer 'database is locked' at once, without the busy timeout:
    wait and retry briefly."""
    import sqlite3
    import time

    for _ in range(100):
        try:
            if cur.execute("PRAGMA journal_mode").fetchone()[0] == "wal":
                return
            cur.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e):
                raise
            time.sleep(0.05)
        except sqlite3.DatabaseError as e:  # "file is not a database": some other file
            raise StoreError(f"cannot open database {_safe_url(url)}: the file is not a SQLite database ({e})",
                             hint="Check 'database' in config.yaml (or TRIALWATCH_DATABASE_URL): it names a "
                                  "file that is something else. Point it to another file.") from None
    raise StoreError("the SQLite database stayed locked while switching it to WAL mode",
                     hint="Another process holds it; try again.")


def _safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - only for messages
        return "<unparseable URL>"


def migrations_dir() -> Path:
    """The Alembic folder. It is the repository's top-level ``migrations/``, installed as the
    package ``trialwatch.migrations`` (pyproject.toml maps it), so it is found by import the same
    way in an editable install and in a wheel."""
    import importlib.util

    spec = importlib.util.find_spec("trialwatch.migrations")
    locations = list(spec.submodule_search_locations or []) if spec else []
    folder = Path(locations[0]) if locations else None
    if folder is None or not (folder / "env.py").is_file():
        raise StoreError(f"the migrations of trialwatch are missing (trialwatch.migrations: {folder})",
                         hint="Reinstall trialwatch (pip install trialwatch, or pip install -e . in a "
                              "checkout); the package must carry its migrations.")
    return folder


def _alembic_config(connection=None):  # noqa: ANN001
    from alembic.config import Config as AlembicConfig

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(migrations_dir()))
    cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_alembic_config()).get_current_head()


# The migration this code's models match (the head of migrations/versions). Kept here so that
# opening a database reads one row instead of importing Alembic and parsing every migration;
# tests/test_migrations.py checks it equals Alembic's head.
SCHEMA_REVISION = "0002"


def current_revision(engine: Engine) -> str | None:
    """The database's migration stamp, or None for a database trialwatch never touched."""
    from sqlalchemy import inspect, text

    # A read: every command (each poll, too) asks this at start; it must not take SQLite's write lock.
    with engine.execution_options(**{_READ_ONLY: True}).connect() as conn:
        if not inspect(conn).has_table("alembic_version"):
            return None
        return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()


def upgrade(engine: Engine, revision: str = "head") -> tuple[str | None, str]:
    """Run Alembic migrations up to ``revision``; returns (before, after)."""
    from alembic import command

    from alembic.runtime.migration import MigrationContext
    from sqlalchemy import inspect

    with engine.begin() as conn:
        # Two processes starting on a fresh database must not both create it: PostgreSQL
        # serialises on an advisory lock; SQLite transactions here begin IMMEDIATE. What is
        # there is read inside the lock, so the second finds the first's work done.
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql("SELECT pg_advisory_xact_lock(7274201)")
        before = MigrationContext.configure(conn).get_current_revision()
        if before is None and (set(inspect(conn).get_table_names()) - {"alembic_version"}):
            raise StoreError(f"database {_safe_url(str(engine.url))} has tables but no trialwatch "
                             "migration stamp", hint="Point 'database' at an empty database or at trialwatch's own.")
        command.upgrade(_alembic_config(conn), revision)
    return before, current_revision(engine)


_READ_ONLY = "trialwatch_read_only"
# Records stored per write transaction: a changed record costs ~10 ms of diff and compression
# inside it, so 20 hold SQLite's single write lock for a fraction of a second.
WRITE_CHUNK = 20


class _Session(Session):
    """A session that reads until told to write. It starts on a read bind (SQLite: a DEFERRED
    transaction, which never waits for the write lock), and an explicit ``begin()`` (every
    write in trialwatch is ``with store.session() as s, s.begin():``) moves it to the write
    bind first (SQLite: BEGIN IMMEDIATE). Writing without begin() would still work, but on
    SQLite could meet SQLITE_BUSY at once instead of waiting its turn: writes use begin()."""

    def begin(self, nested: bool = False):  # noqa: ANN201
        if not nested and self._writer is not None and not self.in_transaction():
            self.bind = self._writer
        return super().begin(nested=nested)

    _writer: Engine | None = None


class Store:
    """The database, opened. Cheap methods over short transactions."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        writer = type("_WriteSession", (_Session,), {"_writer": engine})
        self.sessions = sessionmaker(engine.execution_options(**{_READ_ONLY: True}),
                                     class_=writer, expire_on_commit=False)

    def session(self) -> Session:
        return self.sessions()

    def close(self) -> None:
        self.engine.dispose()

    # -- snapshots ----------------------------------------------------------------------------
    def record_fetch(self, record: dict, *, fetched_at: dt.datetime | None = None,
                     ignore: Sequence[str] = (), requested_id: str | None = None,
                     linked_from: str | None = None) -> "Recorded":
        """Store one fetched record: a snapshot if its content changed, its changes, and the
        outbox rows for every active subscriber they concern, all in one transaction."""
        return self.record_fetches([record], fetched_at=fetched_at, ignore=ignore,
                                   requested_ids=[requested_id], linked_from=linked_from)[0]

    def record_fetches(self, records: Sequence[dict], *, fetched_at: dt.datetime | None = None,
                       ignore: Sequence[str] = (), requested_ids: Sequence[str | None] | None = None,
                       linked_from: str | None = None) -> list["Recorded"]:
        """``record_fetch`` for a batch (a page of ``filter.ids`` results), in transactions of
        ``WRITE_CHUNK`` records: each chunk's trials and latest snapshots are read in two
        queries instead of two per record, and no transaction holds the write lock for long
        (a web page's write waits behind at most one chunk, not a whole page of 100).

        One record never spoils the others. When the batch fails (another writer appended to
        one of these chains first, the UNIQUE(nct_id, seq) collision; or a record the database
        or the diff refuses), it is rolled back and each record is stored in a transaction of
        its own, a collision once more: the same content is then a no-op, different content a
        version of its own. A record that still cannot be stored comes back with ``error`` set
        (nothing of it written); the others are stored with their changes and mail. Only a
        database that is unavailable (OperationalError) stops the whole batch."""
        requested = list(requested_ids) if requested_ids is not None else [None] * len(records)
        at = fetched_at or utcnow()
        out: list[Recorded | None] = [None] * len(records)
        preps: list[tuple[int, _Prepared]] = []
        for i, r in enumerate(records):
            try:
                preps.append((i, _Prepared.of(r)))
            except StoreError:
                raise  # not a study record at all: the caller passed garbage, before any write
            except Exception as e:  # noqa: BLE001 - one unreadable record is reported, not fatal
                out[i] = Recorded(nct_id=_nct_or_unknown(r), snapshot_id=None, first=False, stored=False,
                                  error=f"not stored: {_reason(e)}")
        for start in range(0, len(preps), WRITE_CHUNK):
            chunk = preps[start:start + WRITE_CHUNK]
            raced = False
            try:
                done = self._store_batch([p for _, p in chunk], [requested[i] for i, _ in chunk], at, ignore,
                                         linked_from)
            except StoreError:
                raise
            except Exception as e:  # noqa: BLE001 - retried record by record below
                raced = isinstance(e, IntegrityError)
                if not raced:
                    log.warning("%d records could not be stored together (%s); storing them one by one",
                                len(chunk), _reason(e))
                done = None
            for n, (i, prep) in enumerate(chunk):
                if done is not None:
                    res = done[n]
                else:
                    res = self._store_alone(prep, requested[i], at, ignore, linked_from, raced=raced)
                res.problems = list(prep.problems)
                out[i] = res
        return out  # type: ignore[return-value]

    def _store_alone(self, prep: "_Prepared", requested: str | None, at: dt.datetime,
                     ignore: Sequence[str], linked_from: str | None, *, raced: bool) -> "Recorded":
        """One record in its own transaction; a collision with another writer is tried once
        more. Whatever else it raises is its own failure, reported in ``error``."""
        for attempt in (1, 2):
            try:
                (res,) = self._store_batch([prep], [requested], at, ignore, linked_from)
                res.raced = raced or attempt == 2
                return res
            except StoreError:
                raise
            except IntegrityError as e:
                if attempt == 2:
                    return Recorded(nct_id=prep.nct_id, snapshot_id=None, first=False, stored=False,
                                    error=f"not stored: the database refused it twice ({_reason(e)}); "
                                          "another trialwatch may be writing the same trial")
            except Exception as e:  # noqa: BLE001 - this record's own problem; the others go on
                log.warning("%s could not be stored", prep.nct_id, exc_info=True)
                return Recorded(nct_id=prep.nct_id, snapshot_id=None, first=False, stored=False,
                                error=f"not stored: {_reason(e)}")
        raise AssertionError("unreachable")

    def _store_batch(self, preps: list["_Prepared"], requested: list[str | None], at: dt.datetime,
                     ignore: Sequence[str], linked_from: str | None) -> list["Recorded"]:
        ids = list({p.nct_id for p in preps})
        try:
            # The costly part (split, compression, diff) before the write lock, not under it.
            work = self._prework(preps, ignore)
            with self.session() as s, s.begin():
                trials = {t.nct_id: t for t in s.scalars(select(Trial).where(Trial.nct_id.in_(ids)))}
                newest = select(Snapshot.nct_id, func.max(Snapshot.seq).label("seq")) \
                    .where(Snapshot.nct_id.in_(ids)).group_by(Snapshot.nct_id).subquery()
                latest = {x.nct_id: x for x in s.scalars(select(Snapshot).join(
                    newest, (Snapshot.nct_id == newest.c.nct_id) & (Snapshot.seq == newest.c.seq)))}
                # Flushes happen where this code asks for them, not before every query.
                with s.no_autoflush:
                    return [self._store_one(s, p, req, at, ignore, linked_from, trials, latest,
                                            work.get(p.nct_id))
                            for p, req in zip(preps, requested)]
        except OperationalError as e:
            raise StoreError(f"database error while storing {', '.join(ids[:3])}: {e.orig}") from None

    def _prework(self, preps: list["_Prepared"], ignore: Sequence[str]) -> dict[str, "_Work"]:
        """For each record whose content differs from its trial's latest snapshot: its new
        blobs, compressed, and its changes, computed in a read transaction (which on SQLite
        takes no lock) so the write transaction that follows only inserts. Valid only while
        the trial's latest snapshot stays the one read here; ``_store_one`` checks that."""
        counts: dict[str, int] = {}
        for p in preps:
            counts[p.nct_id] = counts.get(p.nct_id, 0) + 1
        ids = [i for i, n in counts.items() if n == 1]  # a repeated id depends on its own first copy
        if not ids:
            return {}
        out: dict[str, _Work] = {}
        with self.session() as s:
            newest = select(Snapshot.nct_id, func.max(Snapshot.seq).label("seq")) \
                .where(Snapshot.nct_id.in_(ids)).group_by(Snapshot.nct_id).subquery()
            latest = {x.nct_id: (x.id, x.blob_hash, x.source) for x in s.execute(
                select(Snapshot.nct_id, Snapshot.id, Snapshot.blob_hash, Snapshot.source).join(
                    newest, (Snapshot.nct_id == newest.c.nct_id) & (Snapshot.seq == newest.c.seq)))}
            for p in preps:
                if p.nct_id not in counts or counts[p.nct_id] != 1:
                    continue
                latest_id, latest_hash, latest_source = latest.get(p.nct_id, (None, None, None))
                if latest_hash == p.digest:
                    continue  # unchanged: nothing costly to do
                values: dict[str, Any] = {}
                blobs = _split(p.canon, p.digest, raw_size=len(p.body), values=values)
                old_manifest = _read_blob(s, latest_hash) if latest_hash is not None else None
                old_parts = set(_part_hashes(old_manifest)) if old_manifest is not None else set()
                changes: list[Change] = []
                if old_manifest is not None:
                    old = _join(old_manifest, _part_loader(s, old_parts - values.keys(), values))
                    if latest_source == "registry":  # legacy markup on one side: compare the words
                        changes = seam_diff(old, p.canon, ignore=ignore)
                    else:
                        changes = diff(old, p.canon, ignore=tuple(ignore), assume_canonical=True)
                new = {h: b for h, b in blobs.items() if h not in old_parts}
                have = set(s.scalars(select(Blob.hash).where(Blob.hash.in_(list(new))))) if new else set()
                rows = [{"hash": h, "body": zlib.compress(b, 9), "raw_size": n}
                        for h, (b, n) in new.items() if h not in have]
                out[p.nct_id] = _Work(latest_id=latest_id, blob_rows=rows, changes=changes)
        return out

    def _store_one(self, s: Session, p: "_Prepared", requested_id: str | None, at: dt.datetime,
                   ignore: Sequence[str], linked_from: str | None, trials: dict[str, Trial],
                   latest_by_id: dict[str, Snapshot], work: "_Work | None" = None) -> "Recorded":
        trial = trials.get(p.nct_id)
        if trial is None:
            trial = trials[p.nct_id] = Trial(nct_id=p.nct_id, first_seen_at=at, linked_from=linked_from)
            s.add(trial)
            s.flush()  # before the snapshot that references it (no ORM relationship orders them)
        if requested_id and requested_id != p.nct_id:
            _remember_alias(s, requested_id, p.nct_id)
        previous_checked_at = trial.last_checked_at
        trial.last_checked_at = at
        trial.gone_at = None
        trial.title = p.title
        trial.overall_status = p.status
        latest = latest_by_id.get(p.nct_id)
        if latest is not None and latest.blob_hash == p.digest:
            return Recorded(nct_id=p.nct_id, snapshot_id=latest.id, first=False, stored=False,
                            changes=[], previous_fetched_at=latest.fetched_at,
                            previous_checked_at=previous_checked_at)
        if work is not None and work.latest_id == (latest.id if latest is not None else None):
            # Prepared before the write lock against this very latest snapshot: only inserts.
            _insert_blobs(s, work.blob_rows)
            # max(.., 1): after a backfill the latest may be a registry version (negative seq).
            snap = Snapshot(nct_id=p.nct_id, seq=max(latest.seq + 1, 1) if latest else 1, blob_hash=p.digest,
                            fetched_at=at, overall_status=p.status, last_update_posted=p.last_update_posted)
            s.add(snap)
            s.flush()
            latest_by_id[p.nct_id] = snap
            if latest is not None:
                trial.last_changed_at = at
            rows = self._add_changes(s, p.nct_id, work.changes, snapshot_id=snap.id, at=at)
            return Recorded(nct_id=p.nct_id, snapshot_id=snap.id, first=latest is None, stored=True,
                            changes=rows, previous_fetched_at=latest.fetched_at if latest else None,
                            previous_checked_at=previous_checked_at)
        # Another writer moved the chain since (or nothing was prepared): all of it here.
        values: dict[str, Any] = {}
        blobs = _split(p.canon, p.digest, raw_size=len(p.body), values=values)
        old_manifest = _read_blob(s, latest.blob_hash) if latest is not None else None
        old_parts = set(_part_hashes(old_manifest)) if old_manifest is not None else set()
        _put_blobs(s, blobs, stored=old_parts)  # the previous version's parts are stored
        # max(.., 1): after a backfill without live snapshots, the latest is a registry version
        # (negative seq); the live chain still starts at 1.
        snap = Snapshot(nct_id=p.nct_id, seq=max(latest.seq + 1, 1) if latest else 1, blob_hash=p.digest,
                        fetched_at=at, overall_status=p.status, last_update_posted=p.last_update_posted)
        s.add(snap)
        s.flush()
        latest_by_id[p.nct_id] = snap
        changes: list[Change] = []
        if latest is not None:
            # The previous version, rebuilt from the parts it shares with this one (already in
            # memory) and a read of only those that changed.
            old = _join(old_manifest, _part_loader(s, old_parts - values.keys(), values))
            if latest.source == "registry":  # legacy markup on one side: compare the words
                changes = seam_diff(old, p.canon, ignore=ignore)
            else:
                changes = diff(old, p.canon, ignore=tuple(ignore), assume_canonical=True)
            trial.last_changed_at = at
        rows = self._add_changes(s, p.nct_id, changes, snapshot_id=snap.id, at=at)
        return Recorded(nct_id=p.nct_id, snapshot_id=snap.id, first=latest is None, stored=True,
                        changes=rows, previous_fetched_at=latest.fetched_at if latest else None,
                        previous_checked_at=previous_checked_at)

    def add_events(self, nct_id: str, changes: Iterable[Change], *, search: str | None = None,
                   at: dt.datetime | None = None, session: Session | None = None) -> list[ChangeRow]:
        """Store changes that are not a new snapshot (search membership, a record gone), with
        their outbox rows; inside ``session``'s transaction when one is given."""
        if session is not None:
            return self._add_changes(session, nct_id, list(changes), snapshot_id=None,
                                     at=at or utcnow(), search=search)
        with self.session() as s, s.begin():
            return self._add_changes(s, nct_id, list(changes), snapshot_id=None,
                                     at=at or utcnow(), search=search)

    def _add_changes(self, s: Session, nct_id: str, changes: list[Change], *,
                     snapshot_id: int | None, at: dt.datetime,
                     search: str | None = None, registry_date: str | None = None) -> list[ChangeRow]:
        historical = registry_date is not None
        # Labels, details and generic field paths come from record text: bounded and NUL-free.
        rows = [ChangeRow(nct_id=nct_id, snapshot_id=snapshot_id, search=search, field=_text(c.field)[:_FIELD_MAX],
                          label=_text(c.label), old=_json(c.old), new=_json(c.new), detail=_text(c.detail),
                          site=_text(c.site), severity=c.severity, detected_at=at,
                          historical=historical, registry_date=registry_date) for c in changes]
        if not rows:
            return rows
        s.add_all(rows)
        s.flush()
        if historical:
            return rows  # history is never news: no outbox row, no mail
        # Plain executemany, not ORM objects: a change followed by many physicians makes many rows.
        outbox = [{"subscriber_id": sub_id, "change_id": row.id, "created_at": at}
                  for sub_id, min_severity in self._interested(s, nct_id, search)
                  for row in rows if row.rank >= SEVERITY_RANK[min_severity]]
        if outbox:
            from sqlalchemy import insert

            s.execute(insert(OutboxRow), outbox)
        return rows

    def _interested(self, s: Session, nct_id: str, search: str | None) -> list[tuple[int, str]]:
        """(id, min_severity) of active subscribers to this trial, or to a search it belongs
        (or belonged) to. Columns only: loading Subscriber objects would load every one of
        their subscriptions too."""
        member_of = select(SearchMember.search).where(SearchMember.nct_id == nct_id)
        search_match = Subscription.target.in_(member_of)
        if search:
            search_match = search_match | (Subscription.target == search)
        q = (select(Subscriber.id, Subscriber.min_severity).join(Subscription)
             .where(Subscriber.state == "active")
             .where(((Subscription.kind == "trial") & (Subscription.target == nct_id))
                    | ((Subscription.kind == "search") & search_match))
             .distinct())
        return [(i, m) for i, m in s.execute(q)]

    @staticmethod
    def _load_blob(s: Session, digest: str) -> dict:
        manifest = _read_blob(s, digest)
        return _join(manifest, _part_loader(s, set(_part_hashes(manifest)), {}))

    def snapshot_record(self, snapshot_id: int) -> dict:
        with self.session() as s:
            snap = s.get(Snapshot, snapshot_id)
            return self._load_blob(s, snap.blob_hash)

    def latest_snapshot(self, nct_id: str) -> Snapshot | None:
        with self.session() as s:
            return s.scalars(select(Snapshot).where(Snapshot.nct_id == nct_id)
                             .order_by(Snapshot.seq.desc()).limit(1)).first()

    def latest_record(self, nct_id: str) -> dict | None:
        snap = self.latest_snapshot(nct_id)
        return self.snapshot_record(snap.id) if snap else None

    def history(self, nct_id: str) -> tuple[list[Snapshot], list[ChangeRow]]:
        """Snapshots oldest first, and every change stored for the trial oldest first."""
        with self.session() as s:
            snaps = list(s.scalars(select(Snapshot).where(Snapshot.nct_id == nct_id)
                                   .order_by(Snapshot.seq)))
            changes = list(s.scalars(select(ChangeRow).where(ChangeRow.nct_id == nct_id)
                                     .order_by(ChangeRow.detected_at, ChangeRow.id)))
            return snaps, changes

    # -- the registry's history (trialwatch/history.py drives these) --------------------------
    def save_registry_versions(self, nct_id: str, versions: Sequence[dict], *,
                               at: dt.datetime | None = None) -> int | None:
        """Keep a trial's version list ``[{version, date, status, modules}]`` (replacing an
        earlier one) and return the seam version: the newest one the first live snapshot
        shows, where backfill stops."""
        at = at or utcnow()
        from sqlalchemy import delete

        with self.session() as s, s.begin():
            if s.get(Trial, nct_id) is None:
                s.add(Trial(nct_id=nct_id, first_seen_at=at))
                s.flush()
            first_live = s.scalars(select(Snapshot.fetched_at).where(
                Snapshot.nct_id == nct_id, Snapshot.source.is_(None)).order_by(Snapshot.seq).limit(1)).first()
            s.execute(delete(RegistryVersion).where(RegistryVersion.nct_id == nct_id))
            s.add_all([RegistryVersion(nct_id=nct_id, version=v["version"], date=v["date"],
                                       overall_status=v.get("status"),
                                       modules=json.dumps(v.get("modules") or [], ensure_ascii=False))
                       for v in versions])
            # Versions dated after the first live snapshot are what live snapshots show since.
            cutoff = first_live.date().isoformat() if first_live else None
            shown = [v["version"] for v in versions if cutoff is None or v["date"][:10] <= cutoff]
            seam = max(shown) if shown else None
            row = s.get(RegistryHistory, nct_id)
            if row is None:
                s.add(RegistryHistory(nct_id=nct_id, state="ok", fetched_at=at, seam_version=seam))
            else:
                row.state, row.fetched_at, row.error = "ok", at, None
                row.seam_version = row.seam_version if row.seam_version is not None else seam
                seam = row.seam_version
            return seam

    def mark_history_unavailable(self, nct_id: str, error: str, *, at: dt.datetime | None = None) -> None:
        import re

        # The error quotes the garbage it got: PostgreSQL text refuses NUL, nobody needs controls.
        error = re.sub(r"[\x00-\x08\x0b\x0c\x0e-\x1f]", "\ufffd", error)[:1000]
        with self.session() as s, s.begin():
            if s.get(Trial, nct_id) is None:
                s.add(Trial(nct_id=nct_id, first_seen_at=at or utcnow()))
                s.flush()
            row = s.get(RegistryHistory, nct_id)
            if row is None:
                s.add(RegistryHistory(nct_id=nct_id, state="unavailable", fetched_at=at or utcnow(), error=error))
            elif row.state != "ok":
                row.fetched_at, row.error = at or utcnow(), error

    def registry_history(self, nct_id: str) -> tuple[RegistryHistory | None, list[RegistryVersion]]:
        """The state of a trial's version list, and its versions oldest first."""
        with self.session() as s:
            return (s.get(RegistryHistory, nct_id),
                    list(s.scalars(select(RegistryVersion).where(RegistryVersion.nct_id == nct_id)
                                   .order_by(RegistryVersion.version))))

    def trials_without_registry_history(self, nct_ids: Sequence[str], limit: int) -> list[str]:
        """Of ``nct_ids``, up to ``limit`` stored trials whose version list was never asked
        for, oldest-watched first."""
        if limit <= 0 or not nct_ids:
            return []
        asked = select(RegistryHistory.nct_id)
        with self.session() as s:
            return list(s.scalars(select(Trial.nct_id).where(
                Trial.nct_id.in_(list(nct_ids)), Trial.nct_id.not_in(asked), Trial.gone_at.is_(None),
                Trial.nct_id.in_(select(Snapshot.nct_id))).order_by(Trial.first_seen_at, Trial.nct_id).limit(limit)))

    def stored_registry_versions(self, nct_id: str) -> set[int]:
        with self.session() as s:
            return set(s.scalars(select(Snapshot.registry_version).where(
                Snapshot.nct_id == nct_id, Snapshot.source == "registry")))

    def record_registry_version(self, record: dict, *, version: int, date: str,
                                ignore: Sequence[str] = (), seam: bool = False) -> "Recorded":
        """Store version ``version`` of a trial as the registry served it, diffed against the
        newest stored registry version before it; its changes are historical (no outbox row).
        ``seam``: this is the version the first live snapshot shows, so the first live snapshot
        is diffed against it too (changes there mean the two really differ). Idempotent: a
        version already stored is not stored again (UNIQUE(nct_id, seq))."""
        p = _Prepared.of(record)
        at = utcnow()
        try:
            with self.session() as s, s.begin():
                trial = s.get(Trial, p.nct_id)
                if trial is None:
                    trial = Trial(nct_id=p.nct_id, first_seen_at=at, title=p.title, overall_status=p.status)
                    s.add(trial)
                    s.flush()
                seq = REGISTRY_SEQ_BASE + version
                done = s.scalars(select(Snapshot).where(Snapshot.nct_id == p.nct_id, Snapshot.seq == seq)).first()
                if done is not None:
                    return Recorded(nct_id=p.nct_id, snapshot_id=done.id, first=False, stored=False)
                before = s.scalars(select(Snapshot).where(
                    Snapshot.nct_id == p.nct_id, Snapshot.source == "registry", Snapshot.seq < seq)
                    .order_by(Snapshot.seq.desc()).limit(1)).first()
                _put_blobs(s, _split(p.canon, p.digest, raw_size=len(p.body)))
                snap = Snapshot(nct_id=p.nct_id, seq=seq, blob_hash=p.digest, fetched_at=at,
                                overall_status=p.status, last_update_posted=p.last_update_posted,
                                source="registry", registry_version=version, registry_date=date[:10])
                s.add(snap)
                s.flush()
                changes: list[Change] = []
                if before is not None:
                    # By words too: the registry's legacy markup would otherwise fill the
                    # details with tags and entities.
                    changes = seam_diff(self._load_blob(s, before.blob_hash), p.canon, ignore=ignore)
                rows = self._add_changes(s, p.nct_id, changes, snapshot_id=snap.id,
                                         at=_day_start(date), registry_date=date[:10])
                if seam:
                    live = s.scalars(select(Snapshot).where(Snapshot.nct_id == p.nct_id, Snapshot.source.is_(None))
                                     .order_by(Snapshot.seq).limit(1)).first()
                    if live is not None:
                        seam_changes = seam_diff(p.canon, self._load_blob(s, live.blob_hash), ignore=ignore)
                        # The live record differs from the registry's newest version: that
                        # happened between the two dates; history too, never news now.
                        rows += self._add_changes(s, p.nct_id, seam_changes, snapshot_id=live.id,
                                                  at=live.fetched_at,
                                                  registry_date=(live.last_update_posted or date)[:10])
                return Recorded(nct_id=p.nct_id, snapshot_id=snap.id, first=before is None, stored=True,
                                changes=rows)
        except IntegrityError:
            # Another backfill stored this version first: nothing twice.
            return Recorded(nct_id=p.nct_id, snapshot_id=None, first=False, stored=False, raced=True)
        except OperationalError as e:
            raise StoreError(f"database error while storing {p.nct_id} version {version}: {e.orig}") from None

    def trial(self, nct_id: str) -> Trial | None:
        with self.session() as s:
            return s.get(Trial, nct_id)

    def resolve_alias(self, nct_id: str) -> str:
        with self.session() as s:
            alias = s.get(TrialAlias, nct_id)
            return alias.nct_id if alias else nct_id

    def remember_alias(self, alias: str, nct_id: str) -> None:
        with self.session() as s, s.begin():
            _remember_alias(s, alias, nct_id)

    def mark_checked(self, nct_ids: Iterable[str], at: dt.datetime | None = None) -> None:
        """Records fetched-and-unchanged in bulk (the poller's cheap path)."""
        ids = list(nct_ids)
        if not ids:
            return
        with self.session() as s, s.begin():
            s.execute(update(Trial).where(Trial.nct_id.in_(ids)).values(last_checked_at=at or utcnow()))

    # -- the poll lock ------------------------------------------------------------------------
    def acquire_lock(self, name: str, holder: str, ttl_s: float,
                     is_dead: "Callable[[str], bool] | None" = None) -> bool:
        """Take (or renew) the named lease if it is free, expired or already ours, or when
        ``is_dead(current holder)`` says its holder is gone (a killed poll on this host).
        Atomic on SQLite and PostgreSQL: an INSERT that collides falls back to a conditional
        UPDATE; a takeover only replaces the very holder that was found dead."""
        now = utcnow()
        until = now + dt.timedelta(seconds=ttl_s)
        with self.session() as s:
            # A read first: a poll that finds a live holder (the common case when several are
            # started at once) then takes no write lock at all, which pages would wait behind.
            held = s.execute(select(Lock.holder, Lock.lease_until).where(Lock.name == name)).first()
        if held is not None and held.lease_until >= now and held.holder != holder \
                and (is_dead is None or not is_dead(held.holder)):
            return False
        try:
            with self.session() as s, s.begin():
                s.add(Lock(name=name, holder=holder, lease_until=until))
            return True
        except IntegrityError:
            pass
        with self.session() as s, s.begin():
            res = s.execute(update(Lock).where(Lock.name == name)
                            .where((Lock.lease_until < now) | (Lock.holder == holder))
                            .values(holder=holder, lease_until=until))
            if res.rowcount == 1:
                return True
            if is_dead is None:
                return False
            current = s.scalar(select(Lock.holder).where(Lock.name == name))
            if current is None or not is_dead(current):
                return False
            res = s.execute(update(Lock).where(Lock.name == name, Lock.holder == current)
                            .values(holder=holder, lease_until=until))
            return res.rowcount == 1

    def renew_lock(self, name: str, holder: str, ttl_s: float) -> bool:
        """Extend our own lease; False when another holder has the lock now."""
        until = utcnow() + dt.timedelta(seconds=ttl_s)
        with self.session() as s, s.begin():
            res = s.execute(update(Lock).where(Lock.name == name, Lock.holder == holder)
                            .values(lease_until=until))
            return res.rowcount == 1

    def release_lock(self, name: str, holder: str) -> None:
        from sqlalchemy import delete

        with self.session() as s, s.begin():
            s.execute(delete(Lock).where(Lock.name == name, Lock.holder == holder))

    def lock_holder(self, name: str) -> Lock | None:
        with self.session() as s:
            lock = s.get(Lock, name)
            return lock if lock is not None and lock.lease_until >= utcnow() else None

    def storage_bytes(self) -> dict[str, int]:
        """Bytes of stored record bodies (compressed and raw) and row counts, for reports."""
        with self.session() as s:
            comp = s.scalar(select(func.coalesce(func.sum(func.length(Blob.body)), 0)))
            raw = s.scalar(select(func.coalesce(func.sum(Blob.raw_size), 0)))
            return {"blobs": s.scalar(select(func.count()).select_from(Blob)),
                    "snapshots": s.scalar(select(func.count()).select_from(Snapshot)),
                    "changes": s.scalar(select(func.count()).select_from(ChangeRow)),
                    "compressed_bytes": int(comp), "raw_bytes": int(raw)}


# -- record versions as deduplicated parts ---------------------------------------------------
#
# A 1,148-site record is ~365 KB of canonical JSON (~57 KB compressed). Stored whole, a year of
# daily changes to one site's status costs ~20 MB for that trial alone. Split into parts, a new
# version stores only its changed parts: one chunk of sites and a small manifest.

_PART = "$part"
_MANIFEST = "$manifest"
_CHUNK_MASK = 0x0F  # content-defined chunk boundary on ~1 in 16 sites


def _site_key(site: Any) -> bytes:
    # Chunk boundaries depend on where a site is, not on its status, so a status change
    # rewrites only the chunk that holds it; an added site shifts no other boundary.
    if isinstance(site, dict):
        return "|".join(str(site.get(k, "")) for k in ("facility", "city", "country")).encode()
    return json.dumps(site, sort_keys=True).encode()


def _chunks(items: list) -> list[list]:
    import hashlib

    out: list[list] = [[]]
    for item in items:
        out[-1].append(item)
        if hashlib.sha256(_site_key(item)).digest()[0] & _CHUNK_MASK == 0:
            out.append([])
    return [c for c in out if c]


def _split(canon: dict, digest: str, *, raw_size: int,
           values: dict[str, Any] | None = None) -> dict[str, tuple[bytes, int]]:
    """{hash: (uncompressed body, raw size)} for a version's manifest (under ``digest``) and
    its parts; only the ones not stored yet get compressed, by ``_put_blobs``. ``values``, when
    given, receives each part's value by hash (to rebuild an older version without reading
    the parts it shares with this one)."""
    import hashlib

    blobs: dict[str, tuple[bytes, int]] = {}

    def part(value: Any) -> dict:
        body = rec.canonical_json(value)
        h = hashlib.sha256(body).hexdigest()
        blobs.setdefault(h, (body, len(body)))
        if values is not None:
            values[h] = value
        return {_PART: h}

    manifest: dict[str, Any] = {}
    for key, value in canon.items():
        if key == "protocolSection" and isinstance(value, dict):
            modules: dict[str, Any] = {}
            for name, module in value.items():
                locs = module.get("locations") if isinstance(module, dict) else None
                if isinstance(locs, list) and len(locs) > 16:
                    rest = {k: v for k, v in module.items() if k != "locations"}
                    modules[name] = {**rest, "locations": {_PART + "s": [part(c)[_PART] for c in _chunks(locs)]}}
                else:
                    modules[name] = part(module)
            manifest[key] = modules
        else:
            manifest[key] = part(value)
    body = rec.canonical_json({_MANIFEST: 1, "record": manifest})
    blobs[digest] = (body, raw_size)
    return blobs


def _join(stored: Any, load) -> dict:  # noqa: ANN001
    """The canonical record back from a manifest (or a whole-record blob)."""
    if not (isinstance(stored, dict) and stored.get(_MANIFEST) == 1):
        return stored

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            if set(node) == {_PART}:
                return load(node[_PART])
            if set(node) == {_PART + "s"}:
                return [item for h in node[_PART + "s"] for item in load(h)]
            return {k: resolve(v) for k, v in node.items()}
        return node

    return resolve(stored["record"])


def _part_loader(s: Session, to_read: set[str], known: dict[str, Any]):  # noqa: ANN202
    """A ``load(hash)`` for ``_join``: ``known`` values first, the rest read in one query (a
    version of a 1,000-site trial has ~100 parts)."""
    bodies = dict(s.execute(select(Blob.hash, Blob.body).where(Blob.hash.in_(list(to_read)))).all()) \
        if to_read else {}

    def load(h: str) -> Any:
        if h in known:
            return known[h]
        if h not in bodies:
            raise StoreError(f"stored record part {h[:12]} is missing; the database is damaged")
        return json.loads(zlib.decompress(bodies[h]))

    return load


def _part_hashes(manifest: Any) -> list[str]:
    out: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if set(node) == {_PART}:
                out.append(node[_PART])
            elif set(node) == {_PART + "s"}:
                out.extend(node[_PART + "s"])
            else:
                for v in node.values():
                    walk(v)

    if isinstance(manifest, dict) and manifest.get(_MANIFEST) == 1:
        walk(manifest["record"])
    return out


def _read_blob(s: Session, digest: str) -> Any:
    blob = s.get(Blob, digest)
    if blob is None:
        raise StoreError(f"stored record part {digest[:12]} is missing; the database is damaged")
    return json.loads(zlib.decompress(blob.body))


def _put_blobs(s: Session, blobs: dict[str, tuple[bytes, int]], *, stored: set[str] | None = None) -> None:
    """Insert the blobs not yet stored (``stored``: hashes known to be there, so not asked
    for). ON CONFLICT DO NOTHING: two writers storing different records that share a part
    must not collide on it."""
    if stored is not None:
        blobs = {h: b for h, b in blobs.items() if h not in stored}
    if not blobs:
        return
    have = set(s.scalars(select(Blob.hash).where(Blob.hash.in_(list(blobs)))))
    rows = [{"hash": h, "body": zlib.compress(b, 9), "raw_size": n}
            for h, (b, n) in blobs.items() if h not in have]
    _insert_blobs(s, rows)


def _insert_blobs(s: Session, rows: list[dict]) -> None:
    if not rows:
        return
    dialect = s.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    elif dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:  # pragma: no cover - other databases: plain insert, the read above narrows the race
        from sqlalchemy import insert
        s.execute(insert(Blob), rows)
        return
    s.execute(insert(Blob).on_conflict_do_nothing(index_elements=["hash"]), rows)


def seam_diff(old: dict, new: dict, *, ignore: Sequence[str] = ()) -> list[Change]:
    """``diff`` across the seam between a registry version (legacy HTML-like text, only
    ``protocolSection`` and ``hasResults``) and a live record (Markdown, every section): only
    the sections both carry, and text compared by its words (``markup.plain``)."""
    from .markup import plain_record

    common = set(old) & set(new)
    o = plain_record({k: v for k, v in old.items() if k in common})
    n = plain_record({k: v for k, v in new.items() if k in common})
    return diff(o, n, ignore=tuple(ignore))


def _day_start(date: str) -> dt.datetime:
    """A registry date (``YYYY``, ``YYYY-MM`` or ``YYYY-MM-DD``) as naive UTC midnight."""
    parts = [int(x) for x in date[:10].split("-")] + [1, 1]
    return dt.datetime(parts[0], parts[1], parts[2])


def _remember_alias(s: Session, alias: str, nct_id: str) -> None:
    row = s.get(TrialAlias, alias)
    if row is None:
        s.add(TrialAlias(alias=alias, nct_id=nct_id))
    else:
        row.nct_id = nct_id


def _nct_or_unknown(record: Any) -> str:
    try:
        return rec.nct_of(record)
    except Exception:  # noqa: BLE001 - only for the message
        return "(a record without a readable NCT number)"


def _reason(e: BaseException) -> str:
    """An error in one line: the driver's message for a database error, without the SQL."""
    orig = getattr(e, "orig", None)
    text = str(orig if orig is not None else (getattr(e, "message", None) or e))
    text = " ".join(text.split())
    return f"{type(orig or e).__name__}: {text[:300]}"


def _json(value: Any) -> str | None:
    return None if value is None else json.dumps(value, ensure_ascii=False, sort_keys=True)


@dataclass
class _Prepared:
    """A fetched record made ready to store, outside any transaction. The columns taken from
    it are checked here: record text is untrusted, and one malformed field must neither reach
    the database (a type or size it refuses would fail the whole transaction) nor go unsaid."""

    nct_id: str
    canon: dict
    body: bytes
    digest: str
    status: str | None
    title: str | None
    last_update_posted: str | None
    problems: list[str] = field(default_factory=list)  # what was wrong, said once per fetch

    @classmethod
    def of(cls, record: dict) -> "_Prepared":
        import hashlib

        if not rec.is_study(record):
            raise StoreError("refusing to store a body that is not a study record")
        canon = rec.canonical(record)
        body = rec.canonical_json(canon)
        problems: list[str] = []
        return cls(nct_id=rec.nct_of(record), canon=canon, body=body,
                   digest=hashlib.sha256(body).hexdigest(),
                   status=_status_column(rec.get(canon, "protocolSection.statusModule.overallStatus"), problems),
                   title=_title_column(rec.get(canon, "protocolSection.identificationModule.briefTitle"), problems),
                   last_update_posted=_date_column(
                       rec.get(record, "protocolSection.statusModule.lastUpdatePostDateStruct.date"), problems),
                   problems=problems)


# Column sizes of the values taken from a record (trials.overall_status, snapshots.*).
_STATUS_MAX = 32
_TITLE_MAX = 1000  # the registry caps brief titles at 300 characters
_FIELD_MAX = 200   # changes.field


def _shown(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=True, default=str)
    return repr(text[:40] + "…") if len(text) > 40 else repr(text)


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", bool: "a boolean", int: "a number",
            float: "a number"}.get(type(value), type(value).__name__)


def _status_column(value: Any, problems: list[str]) -> str | None:
    """An enum as the API spells them (RECRUITING, ...): upper case and underscores, short.
    Anything else is stored as unknown (the full record still keeps what was sent)."""
    import re

    if value is None:
        return None
    if isinstance(value, str) and len(value) <= _STATUS_MAX and re.fullmatch(r"[A-Z][A-Z0-9_]*", value):
        return value
    what = f"{_kind(value)}" if not isinstance(value, str) else f"{_shown(value)}"
    problems.append(f"overallStatus is {what}, not a status; stored as unknown")
    return None


def _title_column(value: Any, problems: list[str]) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        problems.append(f"briefTitle is {_kind(value)}, not text; stored without a title")
        return None
    value = _text(value)
    if len(value) > _TITLE_MAX:
        problems.append(f"briefTitle is {len(value)} characters long; stored cut to {_TITLE_MAX}")
        value = value[:_TITLE_MAX]
    return value


def _date_column(value: Any, problems: list[str]) -> str | None:
    """``YYYY``, ``YYYY-MM`` or ``YYYY-MM-DD``; an ISO date-time is read as its date (leniently:
    ``2026-11-30T00:00:00.000Z`` is 2026-11-30). Anything else is stored as unknown."""
    import re

    if value is None:
        return None
    if isinstance(value, str):
        m = re.match(r"(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?(?:$|[T ])", value.strip())
        if m:
            y, mo, d = m.groups()
            try:
                dt.date(int(y), int(mo or 1), int(d or 1))
                return "-".join(x for x in (y, mo, d) if x)
            except ValueError:
                pass
    problems.append(f"lastUpdatePostDate is {_shown(value) if isinstance(value, str) else _kind(value)}, "
                    "not a date; stored as unknown")
    return None


def _text(value: str | None) -> str | None:
    """PostgreSQL text cannot hold NUL; SQLite would, but both should store the same."""
    return value.replace("\x00", "") if value and "\x00" in value else value


@dataclass
class _Work:
    """What ``_prework`` computed for one changed record, against snapshot ``latest_id``."""

    latest_id: int | None
    blob_rows: list[dict]
    changes: list[Change]


@dataclass
class Recorded:
    """What ``record_fetch`` did."""

    nct_id: str
    snapshot_id: int | None
    first: bool
    stored: bool
    changes: list[ChangeRow] = field(default_factory=list)
    # When the latest earlier snapshot was taken (for an unchanged record: since when it is so).
    previous_fetched_at: dt.datetime | None = None
    previous_checked_at: dt.datetime | None = None
    raced: bool = False
    # Fields of the record that were malformed and stored as unknown (the record was stored).
    problems: list[str] = field(default_factory=list)
    # Why the record could NOT be stored (nothing of it was written); None when it was.
    error: str | None = None


def open_store(url: str, *, create: bool = True) -> Store:
    """Open the database at ``url``. A fresh database is created at the current migration; an
    existing one at an older migration is refused until ``trialwatch db upgrade``."""
    engine = make_engine(url)
    try:
        current = current_revision(engine)
        head = SCHEMA_REVISION
        if current is None:
            if not create:
                raise StoreError(f"database {_safe_url(url)} is empty", hint="Run 'trialwatch db upgrade'.")
            upgrade(engine)  # creates it, unless another process just did (checked under a lock)
        elif current != head:
            from alembic.script import ScriptDirectory

            known = {r.revision for r in ScriptDirectory.from_config(_alembic_config()).walk_revisions()}
            if current not in known:
                raise StoreError(f"database {_safe_url(url)} is at migration {current}, newer than this "
                                 f"trialwatch ({head})", hint="Upgrade trialwatch.")
            raise StoreError(f"database {_safe_url(url)} is at migration {current}; this trialwatch needs {head}",
                             hint="Back it up, then run 'trialwatch db upgrade'.")
    except OperationalError as e:
        engine.dispose()
        raise StoreError(f"cannot open database {_safe_url(url)}: {e.orig}") from None
    except StoreError:
        engine.dispose()
        raise
    return Store(engine)

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

from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from ..errors import StoreError
from .engine import (
    READ_ONLY,
    SCHEMA_REVISION,
    CHUNK_BYTES,
    FIRSTS_CHUNK,
    WRITE_CHUNK,
    alembic_config,
    safe_url,
    StoreSession,
    current_revision,
    downgrade,
    head_revision,
    make_engine,
    migrations_dir,
    upgrade,
)
from .alternatives import NOT_RECRUITING, AlternativesOps
from .locks import LockOps
from .models import (
    REGISTRY_SEQ_BASE,
    AlternativesCache,
    Base,
    Blob,
    ChangeRow,
    Lock,
    Message,
    OutboxRow,
    Poll,
    RateEvent,
    RegistryHistory,
    RegistryVersion,
    SavedSearchRun,
    SearchMember,
    Snapshot,
    Subscriber,
    Subscription,
    Trial,
    TrialAlias,
    utcnow,
)
from .pages import IndexPage, IndexRow, PageOps, IndexPageOps, PageStamp, SearchPageData
from .polls import PollOps
from .records import Recorded, Prepared, seam_diff
from .registry import RegistryOps
from .searches import SearchOps
from .outbox import Claimed, Follow, NewMessage, OutboxOps, Reader
from .snapshots import SnapshotOps
from .subscribers import SubscriberOps, WantedSubscriber
from .trials import TrialOps
from .watch import WatchOps

# What a caller outside the store catches as "the database is unavailable", without
# importing SQLAlchemy itself.
DATABASE_ERRORS: tuple[type[Exception], ...] = (StoreError, SQLAlchemyError)

__all__ = [
    "DATABASE_ERRORS", "NOT_RECRUITING", "REGISTRY_SEQ_BASE", "AlternativesCache", "SCHEMA_REVISION", "IndexPage", "IndexRow", "PageStamp", "SearchPageData", "WRITE_CHUNK", "FIRSTS_CHUNK", "CHUNK_BYTES", "Base", "Blob", "ChangeRow", "Lock", "Message",
    "OutboxRow", "Poll", "RateEvent", "Recorded", "RegistryHistory", "RegistryVersion", "SavedSearchRun",
    "SearchMember", "Snapshot", "Store", "Subscriber", "Subscription", "Trial", "TrialAlias", "current_revision", "downgrade",
    "head_revision", "make_engine", "migrations_dir", "open_store", "seam_diff", "upgrade", "utcnow",
    "Prepared", "alembic_config", "safe_url", "Claimed", "Follow", "NewMessage", "Reader", "WantedSubscriber",
]


class Store(SnapshotOps, RegistryOps, TrialOps, LockOps, WatchOps, PollOps, SearchOps, PageOps, IndexPageOps,
            SubscriberOps, OutboxOps, AlternativesOps):
    """The database, opened, and the only place that queries it. Cheap methods over short
    transactions; the named operations live in one module per concern (snapshots, registry,
    trials, locks, watch, polls, searches, pages, subscribers, outbox, alternatives) and are mixed in here."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        writer = type("_WriteSession", (StoreSession,), {"_writer": engine})
        self.sessions = sessionmaker(engine.execution_options(**{READ_ONLY: True}),
                                     class_=writer, expire_on_commit=False)

    def session(self) -> Session:
        return self.sessions()

    def close(self) -> None:
        self.engine.dispose()


def open_store(url: str, *, create: bool = True) -> Store:
    """Open the database at ``url``. A fresh database is created at the current migration; an
    existing one at an older migration is refused until ``trialwatch db upgrade``."""
    engine = make_engine(url)
    try:
        current = current_revision(engine)
        head = SCHEMA_REVISION
        if current is None:
            if not create:
                raise StoreError(f"database {safe_url(url)} is empty", hint="Run 'trialwatch db upgrade'.")
            upgrade(engine)  # creates it, unless another process just did (checked under a lock)
        elif current != head:
            from alembic.script import ScriptDirectory

            known = {r.revision for r in ScriptDirectory.from_config(alembic_config()).walk_revisions()}
            if current not in known:
                raise StoreError(f"database {safe_url(url)} is at migration {current}, newer than this "
                                 f"trialwatch ({head})", hint="Upgrade trialwatch.")
            raise StoreError(f"database {safe_url(url)} is at migration {current}; this trialwatch needs {head}",
                             hint="Back it up, then run 'trialwatch db upgrade'.")
    except OperationalError as e:
        engine.dispose()
        raise StoreError(f"cannot open database {safe_url(url)}: {e.orig}") from None
    except StoreError:
        engine.dispose()
        raise
    return Store(engine)

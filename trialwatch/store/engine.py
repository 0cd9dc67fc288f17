"""Engines and migrations: make_engine (SQLite WAL, PostgreSQL timeouts), the Alembic revision checks, and the session class whose reads never wait on a writer."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import (
    create_engine,
    event,
)
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from ..errors import StoreError

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
                if conn.get_execution_options().get(READ_ONLY):
                    conn.exec_driver_sql("BEGIN")
                else:
                    conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            engine = _postgresql_engine(url)
    except (SQLAlchemyError, ImportError, ValueError) as e:
        raise StoreError(f"cannot use database {safe_url(url)}: {e}") from None
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
            raise StoreError(f"cannot open database {safe_url(url)}: the file is not a SQLite database ({e})",
                             hint="Check 'database' in config.yaml (or TRIALWATCH_DATABASE_URL): it names a "
                                  "file that is something else. Point it to another file.") from None
    raise StoreError("the SQLite database stayed locked while switching it to WAL mode",
                     hint="Another process holds it; try again.")


def safe_url(url: str) -> str:
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


def alembic_config(connection=None):  # noqa: ANN001
    from alembic.config import Config as AlembicConfig

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(migrations_dir()))
    cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config()).get_current_head()


# The migration this code's models match (the head of migrations/versions). Kept here so that
# opening a database reads one row instead of importing Alembic and parsing every migration;
# tests/test_migrations.py checks it equals Alembic's head.
SCHEMA_REVISION = "0005"


def current_revision(engine: Engine) -> str | None:
    """The database's migration stamp, or None for a database trialwatch never touched."""
    from sqlalchemy import inspect, text

    # A read: every command (each poll, too) asks this at start; it must not take SQLite's write lock.
    with engine.execution_options(**{READ_ONLY: True}).connect() as conn:
        if not inspect(conn).has_table("alembic_version"):
            return None
        return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()


def upgrade(engine: Engine, revision: str = "head") -> tuple[str | None, str]:
    """Run Alembic migrations up to ``revision``; returns (before, after)."""
    from alembic import command
    from alembic.runtime.migration import MigrationContext
    from sqlalchemy import inspect

    with _migrating(engine) as conn:
        # Two processes starting on a fresh database must not both create it: PostgreSQL
        # serialises on an advisory lock; SQLite transactions here begin IMMEDIATE. What is
        # there is read inside the lock, so the second finds the first's work done.
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql("SELECT pg_advisory_xact_lock(7274201)")
        before = MigrationContext.configure(conn).get_current_revision()
        if before is None and (set(inspect(conn).get_table_names()) - {"alembic_version"}):
            raise StoreError(f"database {safe_url(str(engine.url))} has tables but no trialwatch "
                             "migration stamp", hint="Point 'database' at an empty database or at trialwatch's own.")
        command.upgrade(alembic_config(conn), revision)
    return before, current_revision(engine)


def downgrade(engine: Engine, revision: str) -> str | None:
    """Run Alembic migrations down to ``revision`` (an older schema, e.g. to go back to an
    older trialwatch); returns the revision now stamped."""
    from alembic import command

    with _migrating(engine) as conn:
        command.downgrade(alembic_config(conn), revision)
    return current_revision(engine)


@contextmanager
def _migrating(engine: Engine) -> Iterator[Connection]:
    """One transaction for a migration. On SQLite, foreign keys are off meanwhile and checked
    before commit (SQLite's own procedure for schema changes): a migration that rebuilds a
    table (copy, drop, rename) would otherwise fail to drop one that rows elsewhere refer to,
    e.g. ``messages`` once mail is queued. The pragma is a no-op inside a transaction, so it is
    set on the driver's connection before ours begins."""
    with engine.connect() as conn:
        sqlite = conn.dialect.name == "sqlite"
        if sqlite:
            conn.connection.driver_connection.execute("PRAGMA foreign_keys=OFF")
        try:
            with conn.begin():
                yield conn
                if sqlite and (broken := conn.exec_driver_sql("PRAGMA foreign_key_check").first()):
                    raise StoreError(f"a migration left a row of {broken[0]} referring to a missing row of "
                                     f"{broken[2]}; nothing was changed", hint="Report this as a bug.")
        finally:
            if sqlite:
                conn.connection.driver_connection.execute("PRAGMA foreign_keys=ON")


READ_ONLY = "trialwatch_read_only"
# Records stored per write transaction: a changed record costs ~10 ms of diff and compression
# inside it, so 20 hold SQLite's single write lock for a fraction of a second.
WRITE_CHUNK = 20
# A trial's first version is only inserts: a chunk holds up to 100 of them (a first poll's page
# of 100 in one transaction, ~7 ms of lock), and up to CHUNK_BYTES of new compressed parts (the
# first version of a 1,000-site trial is ~57 KB of them).
FIRSTS_CHUNK = 100
CHUNK_BYTES = 2_000_000


class StoreSession(Session):
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

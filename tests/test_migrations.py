"""The schema is what the migrations build: models and migrations agree, old databases are
refused with a clear message, and `db upgrade` brings them up."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from trialwatch import store as st
from trialwatch.errors import StoreError


def test_models_and_migrations_agree(db_url):
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    s = st.open_store(db_url)  # a fresh database is created at head by running migrations
    with s.engine.connect() as conn:
        mc = MigrationContext.configure(conn, opts={"compare_type": True})
        assert compare_metadata(mc, st.Base.metadata) == []
    s.close()


def test_the_revision_the_code_expects_is_alembics_head():
    assert st.SCHEMA_REVISION == st.head_revision()


def test_fresh_database_is_created_at_head(db_url):
    s = st.open_store(db_url)
    assert st.current_revision(s.engine) == st.head_revision()
    s.close()


def test_database_at_unknown_revision_is_refused(db_url):
    s = st.open_store(db_url)
    with s.engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = 'ffff'"))
    s.close()
    with pytest.raises(StoreError, match="newer than this trialwatch"):
        st.open_store(db_url)


def test_downgrade_and_upgrade_round_trip(db_url):
    from alembic import command

    s = st.open_store(db_url)
    with s.engine.begin() as conn:
        command.downgrade(st.alembic_config(conn), "base")
    assert st.current_revision(s.engine) is None
    before, after = st.upgrade(s.engine)
    assert (before, after) == (None, st.head_revision())
    s.close()


def test_foreign_tables_are_not_touched(tmp_path):
    import sqlite3

    path = tmp_path / "other.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE patients (id INTEGER)")
    with pytest.raises(StoreError, match="no trialwatch migration stamp"):
        st.open_store(f"sqlite:///{path}")


def test_two_processes_opening_a_fresh_database_at_once_both_succeed(db_url):
    import threading

    barrier = threading.Barrier(3)
    opened, failed = [], []

    def open_it():
        barrier.wait()
        try:
            opened.append(st.open_store(db_url))
        except Exception as e:  # noqa: BLE001 - the assertion below shows it
            failed.append(e)

    threads = [threading.Thread(target=open_it) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failed == [] and len(opened) == 3
    assert st.current_revision(opened[0].engine) == st.head_revision()
    for s in opened:
        s.close()


def test_0003_makes_every_existing_subscriber_and_message_an_email_one(db_url):
    from alembic import command

    s = st.open_store(db_url)
    with s.engine.begin() as conn:
        command.downgrade(st.alembic_config(conn), "0002")
    with s.engine.begin() as conn:
        conn.execute(text("INSERT INTO subscribers (id, email, name, state, source, min_severity, digest, "
                          "created_at, token_version) VALUES (1, 'ana@example.org', 'Ana', 'active', "
                          "'config', 'important', 'each_poll', '2026-11-01 00:00:00', 0)"))
        conn.execute(text("INSERT INTO messages (subscriber_id, kind, recipient, rfc_message_id, subject, body, "
                          "state, attempts, created_at) VALUES (1, 'digest', 'ana@example.org', '<a@x>', 's', "
                          ":body, 'queued', 0, '2026-11-01 00:00:00')"), {"body": b"raw mail"})

    assert st.upgrade(s.engine)[1] == st.head_revision()

    with s.engine.connect() as conn:
        assert conn.execute(text("SELECT channel, address FROM subscribers")).all() == [("email", "ana@example.org")]
        assert conn.execute(text("SELECT channel, recipient FROM messages")).all() == [("email", "ana@example.org")]
    s.close()


def queued_digest(db_url, record, monkeypatch):
    """A store at head with one queued digest that outbox rows point to: (store, message id)."""
    from trialwatch import config as cfgmod
    from trialwatch import notify

    monkeypatch.setenv("TRIALWATCH_SECRET_KEY", "s3cret-key-for-tests-only-0123456789")
    s = st.open_store(db_url)
    cfg = cfgmod.loads("email:\n  from: 'tw <tw@example.org>'\n  public_url: https://tw.example.org\n"
                       "  transport: console\nsubscribers:\n  - {email: ana@example.org, trials: [NCT03268603]}\n")
    notify.sync_subscribers(s, cfg)
    old = record("NCT03268603")
    old["protocolSection"]["statusModule"]["overallStatus"] = "NOT_YET_RECRUITING"
    s.record_fetch(old)
    s.record_fetch(record("NCT03268603"))
    [mid] = notify.compose_digests(s, cfg)
    return s, mid


def test_0005_moves_each_message_s_bytes_to_message_bodies_and_back(db_url, record, monkeypatch):
    from alembic import command

    s, mid = queued_digest(db_url, record, monkeypatch)
    body = s.message(mid).body
    assert body.startswith(b"From: ")

    with s.engine.begin() as conn:
        command.downgrade(st.alembic_config(conn), "0004")
    with s.engine.connect() as conn:
        assert conn.execute(text("SELECT id, body FROM messages")).all() == [(mid, body)]
    # Back up with outbox rows referring to the message (SQLite could not rebuild the table then).
    assert st.upgrade(s.engine)[1] == st.head_revision()
    assert s.message(mid).body == body
    with s.engine.begin() as conn:
        assert conn.execute(text("SELECT message_id FROM message_bodies")).scalars().all() == [mid]
        assert conn.execute(text("SELECT count(*) FROM outbox WHERE message_id = :m"), {"m": mid}).scalar()
        # A message's bytes go with it.
        conn.execute(text("DELETE FROM outbox"))
        conn.execute(text("DELETE FROM messages"))
        assert conn.execute(text("SELECT count(*) FROM message_bodies")).scalar() == 0
    s.close()


def test_a_database_with_queued_mail_upgrades_from_every_older_revision_and_back(db_url, record, monkeypatch):
    """Migrations that rebuild a table on SQLite (copy, drop, rename) must work on a database in
    use: queued mail that outbox rows point to, trials with snapshots. With foreign keys on,
    0004's downgrade failed to drop the old ``trials`` (an operator going back to an older
    trialwatch); the store runs migrations with them off and checked before commit."""
    s, mid = queued_digest(db_url, record, monkeypatch)
    body = s.message(mid).body

    for older in ("0004", "0003", "0002", "0001"):
        assert st.downgrade(s.engine, older) == older
        assert st.upgrade(s.engine) == (older, st.head_revision())
        assert s.message(mid).body == body
        with s.engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM outbox WHERE message_id = :m"), {"m": mid}).scalar() == 1
            assert conn.execute(text("SELECT count(*) FROM snapshots")).scalar() == 2
    s.close()

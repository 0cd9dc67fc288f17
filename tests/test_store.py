"""The snapshot store: a version is stored once, a failed fetch stores nothing, a change is
queued once per interested physician, and the schema matches its migrations."""

from __future__ import annotations

import json
import threading

import pytest
from sqlalchemy import func, select

from trialwatch import store as st
from sqlalchemy.exc import IntegrityError

from trialwatch.errors import StoreError

from corpus import record_params


def counts(store) -> dict[str, int]:
    tables = (st.Trial, st.Blob, st.Snapshot, st.ChangeRow, st.OutboxRow, st.Message)
    with store.session() as s:
        return {t.__tablename__: s.scalar(select(func.count()).select_from(t)) for t in tables}


def add_subscriber(store, email, trials=(), searches=(), min_severity="important", state="active"):
    with store.session() as s, s.begin():
        sub = st.Subscriber(email=email, state=state, min_severity=min_severity, source="config")
        sub.subscriptions = [st.Subscription(kind="trial", target=t) for t in trials] + \
                            [st.Subscription(kind="search", target=x) for x in searches]
        s.add(sub)
    return sub


def test_first_fetch_stores_one_snapshot(store, record):
    res = store.record_fetch(record("NCT03934567"))
    assert res.first and res.stored and res.changes == []
    assert counts(store)["snapshots"] == 1
    assert store.trial("NCT03934567").overall_status == "ACTIVE_NOT_RECRUITING"


def test_unchanged_content_adds_no_row_in_100_checks(store, record):
    rec = record("NCT03934567")
    store.record_fetch(rec)
    before = counts(store)
    for _ in range(100):
        res = store.record_fetch(rec)
        assert not res.stored and res.changes == []
    assert counts(store) == before


def test_noise_pair_is_one_version(store, record):
    """The real pair fetched three weeks apart differs only in derivedSection."""
    store.record_fetch(record("snapshots/NCT02552212.snapshot_A_versionHolder_2023-12-12"))
    res = store.record_fetch(record("snapshots/NCT02552212.snapshot_B_versionHolder_2024-01-03"))
    assert not res.stored
    assert counts(store)["snapshots"] == 1


def test_changed_content_adds_exactly_one_snapshot_with_its_changes(store, record):
    rec = record("NCT03934567")
    store.record_fetch(rec)
    rec["protocolSection"]["statusModule"]["overallStatus"] = "RECRUITING"
    res = store.record_fetch(rec)
    assert res.stored and not res.first
    assert [(c.field, c.old_value, c.new_value) for c in res.changes] == [
        ("overall_status", "ACTIVE_NOT_RECRUITING", "RECRUITING")]
    assert counts(store)["snapshots"] == 2
    again = store.record_fetch(rec)
    assert not again.stored and counts(store)["snapshots"] == 2


def test_garbage_is_never_stored(store):
    for garbage in ({}, {"studies": []}, {"protocolSection": {"identificationModule": {"nctId": "x"}}}, []):
        with pytest.raises(StoreError):
            store.record_fetch(garbage)
    assert set(counts(store).values()) == {0}


def test_identical_content_is_stored_once_across_versions(store, record):
    """A status flip stores a manifest and the one changed module; flipping back stores nothing new."""
    rec = record("NCT03934567")
    store.record_fetch(rec)
    first = counts(store)["blobs"]
    rec["protocolSection"]["statusModule"]["overallStatus"] = "SUSPENDED"
    store.record_fetch(rec)
    assert counts(store)["blobs"] == first + 2
    rec["protocolSection"]["statusModule"]["overallStatus"] = "ACTIVE_NOT_RECRUITING"
    store.record_fetch(rec)
    c = counts(store)
    assert c["snapshots"] == 3 and c["blobs"] == first + 2


@pytest.mark.parametrize("path", record_params(), ids=lambda p: p.stem if p else "no-corpus")
def test_a_stored_version_reads_back_as_its_canonical_record(store, path):
    from trialwatch import record as rec

    raw = json.loads(path.read_text(encoding="utf-8"))
    store.record_fetch(raw)
    assert store.latest_record(rec.nct_of(raw)) == rec.canonical(raw)


def test_a_site_status_change_in_a_1148_site_trial_stores_a_few_kilobytes(store, record):
    raw = record("NCT04267848")
    store.record_fetch(raw)
    before = store.storage_bytes()
    site = raw["protocolSection"]["contactsLocationsModule"]["locations"][500]
    site["status"] = "SUSPENDED" if site.get("status") != "SUSPENDED" else "RECRUITING"
    res = store.record_fetch(raw)
    assert [c.field for c in res.changes] == ["site_status"]
    after = store.storage_bytes()
    assert after["blobs"] - before["blobs"] <= 3
    assert after["compressed_bytes"] - before["compressed_bytes"] < 10_000
    assert store.latest_record("NCT04267848")["protocolSection"]["contactsLocationsModule"]["locations"] \
        == __import__("trialwatch.record", fromlist=["canonical"]).canonical(raw)["protocolSection"]["contactsLocationsModule"]["locations"]


def test_largest_record_is_stored_compressed(store, record):
    rec = record("NCT02513394")  # 1.5 MB with results
    store.record_fetch(rec)
    size = store.storage_bytes()
    assert size["compressed_bytes"] < size["raw_bytes"] / 5


def test_change_is_queued_once_per_interested_active_subscriber(store, record):
    rec = record("NCT03934567")
    add_subscriber(store, "a@example.org", trials=["NCT03934567"])
    add_subscriber(store, "minor@example.org", trials=["NCT03934567"], min_severity="minor")
    add_subscriber(store, "critical-only@example.org", trials=["NCT03934567"], min_severity="critical")
    add_subscriber(store, "other@example.org", trials=["NCT00000102"])
    add_subscriber(store, "gone@example.org", trials=["NCT03934567"], state="unsubscribed")
    add_subscriber(store, "pending@example.org", trials=["NCT03934567"], state="pending")
    store.record_fetch(rec)
    rec["protocolSection"]["statusModule"]["overallStatus"] = "RECRUITING"  # important
    store.record_fetch(rec)
    with store.session() as s:
        got = sorted(s.scalars(select(st.Subscriber.email).join(st.OutboxRow,
                                                                st.OutboxRow.subscriber_id == st.Subscriber.id)))
    assert got == ["a@example.org", "minor@example.org"]


def test_search_subscribers_get_changes_of_member_trials(store, record):
    rec = record("NCT03934567")
    add_subscriber(store, "s@example.org", searches=["als"])
    with store.session() as s, s.begin():
        s.add(st.SearchMember(search="als", nct_id="NCT03934567"))
    store.record_fetch(rec)
    rec["protocolSection"]["statusModule"]["overallStatus"] = "TERMINATED"
    store.record_fetch(rec)
    assert counts(store)["outbox"] >= 1


def test_two_writers_racing_on_one_version_store_it_once(db_url, record):
    """Two processes appending the same new version after the same snapshot collide on
    UNIQUE(nct_id, seq): one stores it, the other reports a no-op."""
    stores = [st.open_store(db_url), st.open_store(db_url)]
    rec = record("NCT03934567")
    stores[0].record_fetch(rec)
    rec["protocolSection"]["statusModule"]["overallStatus"] = "RECRUITING"
    barrier = threading.Barrier(2)
    results = []

    def write(s):
        barrier.wait()
        results.append(s.record_fetch(rec))

    threads = [threading.Thread(target=write, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r.stored for r in results) == [False, True]
    assert counts(stores[0])["snapshots"] == 2
    assert counts(stores[0])["changes"] == 1
    for s in stores:
        s.close()


def test_unique_chain_position(store, record):
    from sqlalchemy.exc import IntegrityError

    store.record_fetch(record("NCT03934567"))
    snap = store.latest_snapshot("NCT03934567")
    with pytest.raises(IntegrityError):
        with store.session() as s, s.begin():
            s.add(st.Snapshot(nct_id=snap.nct_id, seq=snap.seq, blob_hash=snap.blob_hash,
                              fetched_at=snap.fetched_at))


def test_poll_lock_is_exclusive_until_released_or_expired(store):
    assert store.acquire_lock("poll", "a", ttl_s=60)
    assert not store.acquire_lock("poll", "b", ttl_s=60)
    assert store.acquire_lock("poll", "a", ttl_s=60)  # renewal by the holder
    store.release_lock("poll", "a")
    assert store.acquire_lock("poll", "b", ttl_s=-1)  # taken, but already expired
    assert store.acquire_lock("poll", "c", ttl_s=60)


def test_alias_is_remembered(store, record):
    rec = record("NCT03934567")
    store.record_fetch(rec, requested_id="NCT00000001")
    assert store.resolve_alias("NCT00000001") == "NCT03934567"
    assert store.resolve_alias("NCT03934567") == "NCT03934567"


def test_a_writer_that_loses_the_race_with_different_content_stores_its_version_after(store, record, monkeypatch):
    """The collision is retried against the winner's snapshot, so a different version is not lost."""
    rec = record("NCT03934567")
    store.record_fetch(rec)
    winner = record("NCT03934567")
    winner["protocolSection"]["statusModule"]["overallStatus"] = "RECRUITING"
    loser = record("NCT03934567")
    loser["protocolSection"]["statusModule"]["overallStatus"] = "SUSPENDED"
    real = st.Store._store_batch
    calls = []

    def racing(self, preps, requested, at, ignore, linked_from, work=None):
        calls.append(preps)
        if len(calls) == 1:
            # The other writer commits its version between our read and our insert, and our
            # insert meets UNIQUE(nct_id, seq).
            real(self, [st.Prepared.of(winner)], [None], at, ignore, linked_from)
            raise IntegrityError("INSERT INTO snapshots", {}, Exception("UNIQUE constraint failed"))
        return real(self, preps, requested, at, ignore, linked_from, work=work)

    monkeypatch.setattr(st.Store, "_store_batch", racing)
    res = store.record_fetch(loser)
    assert res.raced and res.stored
    assert [(c.field, c.old_value, c.new_value) for c in res.changes] == [
        ("overall_status", "RECRUITING", "SUSPENDED")]
    assert counts(store)["snapshots"] == 3


def test_a_first_version_that_another_writer_stored_first_becomes_the_second(store, record, monkeypatch):
    """A page's first versions are prepared before the write lock; a trial that got its first
    snapshot in between (a `check` beside the poll) is no longer a first: it is diffed."""
    mine = record("NCT03934567")
    theirs = record("NCT03934567")
    theirs["protocolSection"]["statusModule"]["overallStatus"] = "RECRUITING"
    real = st.Store._prework

    def prepared_then_beaten(self, preps, ignore):
        work = real(self, preps, ignore)
        if preps and preps[0].digest != st.Prepared.of(theirs).digest:
            monkeypatch.setattr(st.Store, "_prework", real)
            store.record_fetch(theirs)  # commits between our read and our write
        return work

    monkeypatch.setattr(st.Store, "_prework", prepared_then_beaten)
    res = store.record_fetch(mine)
    assert res.stored and not res.first
    assert [(c.field, c.old_value, c.new_value) for c in res.changes] == [
        ("overall_status", "RECRUITING", "ACTIVE_NOT_RECRUITING")]
    snaps, _ = store.history("NCT03934567")
    assert [x.seq for x in snaps] == [1, 2]


def test_a_record_the_diff_refuses_spoils_no_other_record_of_its_page(store, monkeypatch):
    """A page is prepared in one pass: one record whose diff raises gets no prepared work and
    fails alone, reported; the others are stored with their changes."""
    from corpus import change_status, clones
    from trialwatch.store import snapshots

    records = clones(5)
    store.record_fetches(records)
    bad = records[2]["protocolSection"]["identificationModule"]["nctId"]
    real = snapshots.diff

    def refusing(old, new, **kw):  # noqa: ANN001, ANN003
        if new["protocolSection"]["identificationModule"]["nctId"] == bad:
            raise ValueError("a record this diff cannot read")
        return real(old, new, **kw)

    monkeypatch.setattr(snapshots, "diff", refusing)
    results = store.record_fetches([change_status(r, "SUSPENDED", updated="2026-11-25") for r in records])
    assert [r.nct_id for r in results if r.error] == [bad]
    assert "a record this diff cannot read" in results[2].error
    assert all(r.stored and r.changes for n, r in enumerate(results) if n != 2)
    assert counts(store)["snapshots"] == 5 + 4


def test_a_batch_is_written_in_short_transactions(store, monkeypatch):
    # A page of 100 changed records held SQLite's only write lock for over a second, and every
    # sign-up waited behind it. Each write transaction now carries at most WRITE_CHUNK records
    # that change a trial's chain, or FIRSTS_CHUNK first versions (inserts only, ~7 ms for 100).
    from sqlalchemy import event

    from corpus import change_status, clones

    n = st.FIRSTS_CHUNK + 5
    records = clones(n)
    per_commit: list[int] = []
    pending = [0]

    @event.listens_for(store.engine, "before_cursor_execute")
    def count(conn, cursor, statement, params, context, executemany):  # noqa: ANN001
        if statement.startswith("INSERT INTO snapshots"):
            pending[0] += len(params) if executemany else 1  # rows: first snapshots go in bulk

    @event.listens_for(store.engine, "commit")
    def commit(conn):  # noqa: ANN001
        per_commit.append(pending[0])
        pending[0] = 0

    results = store.record_fetches(records)
    assert all(r.stored and r.first for r in results) and counts(store)["snapshots"] == n
    written = [k for k in per_commit if k]
    assert sum(written) == n and max(written) == st.FIRSTS_CHUNK

    per_commit.clear()
    changed = [change_status(r, "SUSPENDED", updated="2026-11-25") for r in records]
    results = store.record_fetches(changed)
    assert all(r.stored and r.changes for r in results) and counts(store)["snapshots"] == 2 * n
    written = [k for k in per_commit if k]
    assert sum(written) == n and max(written) <= st.WRITE_CHUNK < n


def test_a_page_of_first_versions_costs_the_same_few_statements_whatever_its_size(store):
    # A first poll of 10,000 trials read each chunk of 20 twice (before and under the lock) and
    # wrote it in its own transaction: statements grew with the page. Now a page is read once
    # and its first versions are written in bulk, in one transaction up to FIRSTS_CHUNK.
    from sqlalchemy import event

    from corpus import clones

    records = clones(st.FIRSTS_CHUNK + 20)
    statements: list[str] = []

    @event.listens_for(store.engine, "before_cursor_execute")
    def seen(conn, cursor, statement, params, context, executemany):  # noqa: ANN001
        statements.append(statement.split(None, 1)[0].upper())

    def cost(page: list[dict]) -> int:
        statements.clear()
        assert all(r.first and r.stored for r in store.record_fetches(page))
        return len([x for x in statements if x in ("SELECT", "INSERT", "UPDATE")])

    small, large = cost(records[:20]), cost(records[20:])
    assert small == large <= 8


def test_a_read_session_never_takes_the_write_lock(store, record):
    # Reads see the last committed state while a writer holds the lock (SQLite: DEFERRED, not
    # IMMEDIATE; PostgreSQL: MVCC), so a slow write never stalls a page.
    store.record_fetch(record("NCT03934567"))
    with store.session() as writer, writer.begin():
        writer.add(st.Trial(nct_id="NCT09999998"))
        writer.flush()
        assert store.trial("NCT03934567") is not None
        assert store.latest_record("NCT03934567") is not None
        assert store.trial("NCT09999998") is None
    assert store.trial("NCT09999998") is not None


def test_work_prepared_before_the_write_lock_is_not_used_once_another_writer_moved_the_chain(store, record, monkeypatch):
    # Diffs and compression are computed before the write transaction. If another writer
    # appended a version in between, they are stale: the change must be against the winner's.
    store.record_fetch(record("NCT03934567"))
    winner = record("NCT03934567")
    winner["protocolSection"]["statusModule"]["overallStatus"] = "RECRUITING"
    ours = record("NCT03934567")
    ours["protocolSection"]["statusModule"]["overallStatus"] = "SUSPENDED"
    real = st.Store._prework

    def then_another_writer(self, preps, ignore):
        work = real(self, preps, ignore)
        monkeypatch.setattr(st.Store, "_prework", real)
        store.record_fetch(winner)
        return work

    monkeypatch.setattr(st.Store, "_prework", then_another_writer)
    res = store.record_fetch(ours)
    assert res.stored
    assert [(c.field, c.old_value, c.new_value) for c in res.changes] == [
        ("overall_status", "RECRUITING", "SUSPENDED")]
    assert counts(store)["snapshots"] == 3


class _Gone:
    """A client for which every record answers 404."""

    def study(self, nct_id):
        from trialwatch.errors import TrialNotFound

        raise TrialNotFound(f"{nct_id} is not on ClinicalTrials.gov")


def _removed_events(store, nct_id):
    with store.session() as s:
        return list(s.scalars(select(st.ChangeRow.field).where(st.ChangeRow.nct_id == nct_id,
                                                               st.ChangeRow.field == "record_removed")))


def test_a_crash_between_storing_a_404_and_its_event_loses_neither(store, record, monkeypatch):
    """`gone_at` and the record_removed event are one transaction: when writing the event
    fails (the process dies there), the 404 is not remembered either, so the next check
    stores both; the event is never lost."""
    from trialwatch.check import fetch_records

    store.record_fetch(record("NCT03934567"))
    real, calls = type(store).add_events, []

    def crash_once(self, *args, **kwargs):
        calls.append(args)
        if len(calls) == 1:
            raise RuntimeError("the process died here")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(type(store), "add_events", crash_once)
    with pytest.raises(RuntimeError):
        fetch_records(store, _Gone(), ["NCT03934567"])
    assert _removed_events(store, "NCT03934567") == []
    assert store.trial("NCT03934567").gone_at is None  # rolled back with the event
    _, errors = fetch_records(store, _Gone(), ["NCT03934567"])
    assert "NCT03934567" in errors
    assert _removed_events(store, "NCT03934567") == ["record_removed"]
    fetch_records(store, _Gone(), ["NCT03934567"])  # a third 404 is no news
    assert _removed_events(store, "NCT03934567") == ["record_removed"]


def test_a_first_poll_stores_new_trials_in_bulk_not_record_by_record(store):
    """Twenty trials never seen: a few statements for all of them (trials, blobs, snapshots in
    one write transaction), not several per record; each is a silent baseline (no change, no
    outbox row, even for a physician who follows it)."""
    from sqlalchemy import event

    from corpus import clones

    records = clones(20)
    ids = [r["protocolSection"]["identificationModule"]["nctId"] for r in records]
    add_subscriber(store, "dr@example.org", trials=ids, min_severity="minor")
    statements: list[str] = []
    listener = lambda conn, cursor, sql, params, context, many: statements.append(sql)  # noqa: E731
    event.listen(store.engine, "before_cursor_execute", listener)
    try:
        results = store.record_fetches(records)
    finally:
        event.remove(store.engine, "before_cursor_execute", listener)
    assert [r.nct_id for r in results] == ids
    assert all(r.stored and r.first and not r.changes and r.snapshot_id and r.error is None for r in results)
    assert len({r.snapshot_id for r in results}) == 20
    writes = [x for x in statements if x.lstrip().upper().startswith(("INSERT", "UPDATE", "DELETE"))]
    assert len(writes) <= 3, [w[:60] for w in writes]  # one INSERT per table, whatever the chunk size
    assert len(statements) <= 12, statements
    assert counts(store)["outbox"] == 0
    with store.session() as s:
        assert s.scalar(select(func.count()).select_from(st.Trial)) == 20
    # The stored versions read back as the records (the parts were all written).
    from trialwatch.record import canonical

    assert [store.latest_record(i) for i in ids] == [canonical(r) for r in records]


@pytest.mark.parametrize("path", record_params(), ids=lambda p: p.stem if p else "no-corpus")
def test_a_record_is_dumped_once_and_its_bytes_are_the_canonical_json(path):
    """The stored bytes (and so the content hash of every version already stored) are those of
    ``canonical_json``, though they are now composed from the parts' own dumps."""
    from trialwatch import record as rec
    from trialwatch.store.parts import encode_parts, split_parts

    canon = rec.canonical(json.loads(path.read_text(encoding="utf-8")))
    body, parts = encode_parts(canon)
    assert body == rec.canonical_json(canon)
    assert split_parts(canon, "d", raw_size=1, encoded=parts) == split_parts(canon, "d", raw_size=1)


@pytest.mark.parametrize("canon", [
    {}, {"protocolSection": {}}, {"protocolSection": "not a dict", "b": [1, {"é": None}]},
    {"zz": 1, "protocolSection": {"ä": {"x": "ü\u2028"}, "a": []}, "A": True},
])
def test_composed_bytes_match_for_odd_shapes(canon):
    from trialwatch import record as rec
    from trialwatch.store.parts import encode_parts

    assert encode_parts(canon)[0] == rec.canonical_json(canon)


def test_a_chunk_of_changed_records_is_written_in_a_few_statements_with_its_mail_once(store):
    """Twenty trials that changed since their stored version: the new versions, their changes
    and the outbox rows go in bulk (a few statements for all of them), not through the ORM's
    unit of work at ~5 statements a record; every change is owed once to each subscriber who
    follows its trial, directly or through a search, and its id is its own."""
    from sqlalchemy import event

    from corpus import change_status, clones

    records = clones(20)
    ids = [r["protocolSection"]["identificationModule"]["nctId"] for r in records]
    store.record_fetches(records)
    add_subscriber(store, "dr@example.org", trials=ids, searches=["mine"], min_severity="minor")
    add_subscriber(store, "other@example.org", trials=ids[:5], min_severity="minor")
    with store.session() as s, s.begin():
        s.add_all([st.SearchMember(search="mine", nct_id=i) for i in ids[:10]])
    statements: list[str] = []
    listener = lambda conn, cursor, sql, params, context, many: statements.append(sql)  # noqa: E731
    event.listen(store.engine, "before_cursor_execute", listener)
    try:
        results = store.record_fetches([change_status(r, "SUSPENDED", updated="2026-11-25") for r in records])
    finally:
        event.remove(store.engine, "before_cursor_execute", listener)
    assert [r.nct_id for r in results] == ids
    assert all(r.stored and not r.first and r.changes and r.error is None for r in results)
    writes = [x for x in statements if x.lstrip().upper().startswith(("INSERT", "UPDATE", "DELETE"))]
    assert len(writes) <= 5, [w[:60] for w in writes]  # one a table: trials, blobs, snapshots, changes, outbox
    # Reading each record's stored version before the lock is two queries a record; the rest is a few.
    assert len(statements) <= 2 * len(records) + 16, [x[:60] for x in statements]
    c = counts(store)
    changes = sum(len(r.changes) for r in results)
    assert c["snapshots"] == 40 and c["changes"] == changes
    assert c["outbox"] == changes + sum(len(r.changes) for r in results[:5])
    with store.session() as s:
        stored = {x.id: (x.nct_id, x.snapshot_id, x.field, x.new) for x in s.scalars(select(st.ChangeRow))}
        owed = s.execute(select(st.OutboxRow.subscriber_id, st.OutboxRow.change_id)).all()
    assert len(set(owed)) == len(owed)
    for r in results:
        assert [stored[x.id] for x in r.changes] == [(r.nct_id, r.snapshot_id, x.field, x.new) for x in r.changes]
        assert store.trial(r.nct_id).overall_status == "SUSPENDED"

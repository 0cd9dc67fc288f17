"""One malformed record is reported by its NCT number and never keeps another trial's change
from being stored and mailed (on SQLite and PostgreSQL alike)."""

from __future__ import annotations

import copy
import json

import pytest
from sqlalchemy import func, select, text

from trialwatch import ctgov, poller, store as st
from trialwatch.cli import main
from trialwatch.config import loads

from corpus import change_status, clones, ids_of, set_updated
from standin import StandIn

DAY1 = "2026-11-24T09:00:05"
DAY2 = "2026-11-25T09:00:05"


@pytest.fixture(autouse=True)
def _fast_backoff(monkeypatch):
    monkeypatch.setattr(ctgov, "BACKOFF_BASE_S", 0.01)


def config_text(api, db_url, ids, subscriber_trial) -> str:
    return (f"database: {db_url}\nctgov: {{base_url: '{api.base_url}', requests_per_minute: 60000, max_retries: 1}}\n"
            f"trials: [{', '.join(ids)}]\n"
            f"subscribers:\n  - email: dr.neuro@example.org\n    trials: [{subscriber_trial}]\n")


def malformed(r: dict) -> dict:
    """The record shapes that stopped whole polls: an object where text or an enum belongs,
    a status longer than its column, an update date given as a date-time."""
    r = set_updated(copy.deepcopy(r), "2026-11-25")
    r["protocolSection"]["identificationModule"]["briefTitle"] = {"textblock": "not a string"}
    r["protocolSection"]["statusModule"]["overallStatus"] = {"value": "RECRUITING"}
    return r


def long_status(r: dict) -> dict:
    r = copy.deepcopy(r)
    r["protocolSection"]["statusModule"]["overallStatus"] = "RECRUITING_" + "X" * 40
    r["protocolSection"]["statusModule"]["lastUpdatePostDateStruct"] = {"date": "2026-11-30T00:00:00.000Z"}
    return r


def outbox_for(store, nct: str) -> list[str]:
    with store.session() as s:
        return list(s.scalars(select(st.ChangeRow.field).join(st.OutboxRow, st.OutboxRow.change_id == st.ChangeRow.id)
                              .where(st.ChangeRow.nct_id == nct)))


def refuse_snapshots_of(store, nct: str) -> None:
    """A record the database itself refuses (as PostgreSQL refused over-long or mistyped
    values): a trigger that fails every snapshot insert for ``nct``."""
    with store.engine.begin() as conn:
        if conn.dialect.name == "sqlite":
            conn.execute(text(f"CREATE TRIGGER refuse BEFORE INSERT ON snapshots WHEN NEW.nct_id = '{nct}' "
                              "BEGIN SELECT RAISE(ABORT, 'value too long for this column'); END"))
        else:
            conn.execute(text("CREATE FUNCTION refuse() RETURNS trigger AS $$ BEGIN "
                              f"IF NEW.nct_id = '{nct}' THEN RAISE EXCEPTION 'value too long for this column' "
                              "USING ERRCODE = '22001'; END IF; RETURN NEW; END $$ LANGUAGE plpgsql"))
            conn.execute(text("CREATE TRIGGER refuse BEFORE INSERT ON snapshots FOR EACH ROW EXECUTE FUNCTION refuse()"))


def test_a_malformed_record_is_stored_as_far_as_it_can_be_and_reported_by_its_nct(store, db_url):
    records = clones(4)
    ids = ids_of(records)
    with StandIn(records, data_timestamp=DAY1) as api:
        config = loads(config_text(api, db_url, ids, ids[0]))
        from trialwatch.notify import sync_subscribers

        sync_subscribers(store, config)
        assert poller.poll(store, config, send=False).complete
        # In one filter.ids batch: a real change to the subscriber's trial, and two bad records.
        api.put(change_status(records[0], "SUSPENDED", updated="2026-11-25"))
        api.put(malformed(records[1]))
        api.put(long_status(set_updated(records[2], "2026-11-25")))
        api.set_data_timestamp(DAY2)
        report = poller.poll(store, config, send=False)

    assert report.complete  # every record was stored; the bad fields as unknown
    errors = report.to_dict()["errors"]  # one readable line each, "NCT…: what is wrong"
    assert any(e.startswith(f"{ids[1]}: briefTitle is an object") for e in errors), errors
    assert any(e.startswith(f"{ids[1]}: overallStatus is an object") for e in errors), errors
    assert any(e.startswith(f"{ids[2]}: overallStatus is 'RECRUITING_XXX") for e in errors), errors
    assert not any(e.startswith(ids[0]) for e in errors)
    # The good change is stored and queued for mail.
    assert "overall_status" in outbox_for(store, ids[0])
    assert store.trial(ids[0]).overall_status == "SUSPENDED"
    bad = store.trial(ids[1])
    assert bad.title is None and bad.overall_status is None
    # The malformed record's changes are still diffed from the whole record.
    _, changes = store.history(ids[1])
    assert {"brief_title", "overall_status"} <= {c.field for c in changes}
    snap = store.latest_snapshot(ids[2])
    assert snap.overall_status is None and snap.last_update_posted == "2026-11-30"


def test_a_record_the_database_refuses_spoils_no_other_record_of_its_batch(store, db_url, tmp_path, capsys):
    records = clones(4)
    ids = ids_of(records)
    with StandIn(records, data_timestamp=DAY1) as api:
        cfg = tmp_path / "config.yaml"
        cfg.write_text(config_text(api, db_url, ids, ids[0]))
        assert main(["--config", str(cfg), "poll", "--no-send"]) == 0
        refuse_snapshots_of(store, ids[1])
        api.put(change_status(records[0], "SUSPENDED", updated="2026-11-25"))
        api.put(change_status(records[1], "TERMINATED", updated="2026-11-25"))
        api.set_data_timestamp(DAY2)
        capsys.readouterr()
        code = main(["--config", str(cfg), "poll", "--no-send", "--json"])
        out, err = capsys.readouterr()

    report = json.loads(out)
    # The refused record is named, with what is wrong; the poll is incomplete so it is fetched again.
    (entry,) = [e for e in report["errors"] if e.startswith(ids[1])]
    assert "not stored" in entry and "value too long" in entry
    assert not report["complete"] and code == 4
    assert ids[1] in err
    # ... and the other trial's change is stored and queued for mail all the same.
    assert "overall_status" in outbox_for(store, ids[0])
    assert store.trial(ids[0]).overall_status == "SUSPENDED"
    assert store.trial(ids[1]).overall_status != "TERMINATED"  # nothing of it written


def test_check_reports_a_malformed_record_and_still_checks_the_others(db_url, tmp_path, capsys):
    records = clones(3)
    ids = ids_of(records)
    with StandIn(records, data_timestamp=DAY1) as api:
        cfg = tmp_path / "config.yaml"
        cfg.write_text(f"database: {db_url}\nctgov: {{base_url: '{api.base_url}', requests_per_minute: 60000}}\n")
        api.put(malformed(records[1]))
        assert main(["--config", str(cfg), "check", "--json", *ids]) == 0
        out, err = capsys.readouterr()
        assert [json.loads(line)["nct_id"] for line in out.splitlines()] == ids
        assert f"warning: {ids[1]}: briefTitle is an object" in err

        # One the database refuses: the others are still checked and printed; the exit code says one failed.
        store = st.open_store(db_url)
        refuse_snapshots_of(store, ids[2])
        api.put(change_status(records[0], "SUSPENDED", updated="2026-11-25"))
        api.put(change_status(records[2], "SUSPENDED", updated="2026-11-25"))
        code = main(["--config", str(cfg), "check", "--json", *ids])
        out, err = capsys.readouterr()
        assert code == 4
        printed = [json.loads(line) for line in out.splitlines()]
        assert [p["nct_id"] for p in printed] == ids[:2]
        assert printed[0]["changed"] and printed[0]["changes"][0]["field"] == "overall_status"
        assert f"error: {ids[2]}: " in err and "not stored" in err
        with store.session() as s:
            assert s.scalar(select(func.count()).select_from(st.Snapshot).where(st.Snapshot.nct_id == ids[2])) == 1
        store.close()


@pytest.mark.parametrize("given, stored", [
    ("2026-11-30", "2026-11-30"), ("2026-11", "2026-11"), ("2026", "2026"),
    ("2026-11-30T00:00:00.000Z", "2026-11-30"), ("2026-11-30 08:00", "2026-11-30"),
    ("2026-13-01", None), ("soon", None), (20261130, None), ({"date": "2026-11-30"}, None),
])
def test_update_dates_are_read_leniently_and_never_passed_through_unchecked(given, stored, record):
    r = record("NCT03934567")
    r["protocolSection"]["statusModule"]["lastUpdatePostDateStruct"] = {"date": given}
    prep = st.Prepared.of(r)
    assert prep.last_update_posted == stored
    assert bool(prep.problems) == (stored is None)


@pytest.mark.parametrize("status, stored", [
    ("RECRUITING", "RECRUITING"), ("A_NEW_STATUS_THE_API_ADDED", "A_NEW_STATUS_THE_API_ADDED"),
    ("recruiting", None), ("X" * 33, None), ({"v": 1}, None), (["RECRUITING"], None), (7, None),
    ("RECRUITING\x00", None),
])
def test_a_status_must_be_a_short_enum_word(status, stored, record):
    r = record("NCT03934567")
    r["protocolSection"]["statusModule"]["overallStatus"] = status
    prep = st.Prepared.of(r)
    assert prep.status == stored
    assert bool(prep.problems) == (stored is None)


def test_a_title_with_a_nul_or_too_long_is_stored_cleaned(store, record):
    r = record("NCT03934567")
    r["protocolSection"]["identificationModule"]["briefTitle"] = "A\x00B" + "x" * 5000
    res = store.record_fetch(r)
    assert res.stored and res.error is None
    title = store.trial("NCT03934567").title
    assert "\x00" not in title and len(title) <= 1000 and res.problems

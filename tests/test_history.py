"""The registry's own history of a trial (issue 15): the status timeline from one request on
the first look, `backfill` of every version with the changes between them, never mailed, no
false change where registry markup meets the live record, resumable, and "unavailable" when
the undocumented internal API fails.

Version sequences here are SYNTHETIC (tests/history_corpus.py); the real excerpts in
../shared/ctgov/history are used where they exist (markup, the version-list shape)."""

from __future__ import annotations

import datetime as dt
import json
import re
import sys

import pytest
from sqlalchemy import func, select

from trialwatch import ctgov, history
from trialwatch.errors import HistoryUnavailable
from trialwatch import store as st
from trialwatch.cli import main
from trialwatch.config import loads
from trialwatch.markup import plain
from trialwatch.store import seam_diff

from conftest import CTGOV, load_record
from history_corpus import legacy, sequence, set_nct
from standin import StandIn

NCT = "NCT03268603"
HIST = CTGOV / "history" if CTGOV is not None else None
# Without a corpus: the one corpus skip reason. A fetched corpus has no history excerpts.
def needs_history(test):
    return pytest.mark.corpus(pytest.mark.skipif(
        CTGOV is not None and not HIST.is_dir(),
        reason="the corpus has no history/ excerpts (python -m tests.corpus fetch does not download them)")(test))
needs_records = pytest.mark.corpus


def count(store, model, *where):
    with store.session() as s:
        return s.scalar(select(func.count()).select_from(model).where(*where))


# -- markup: the same words in two markups compare equal ----------------------------------------

@needs_history
def test_real_legacy_text_reads_as_plain_words():
    v0 = json.loads((HIST / "NCT04280705" / "v0.json").read_text(encoding="utf-8"))["study"]
    criteria = v0["protocolSection"]["eligibilityModule"]["eligibilityCriteria"]
    assert "<li>" in criteria and "&#x2F;" in criteria  # the real legacy markup
    text = plain(criteria)
    assert not re.search(r"</?[a-z]+>", text) and not re.search(r"&#?\w+;", text)  # no tag, no entity
    assert "SpO2 </= 94%" in text and "(eGFR) < 30)" in text  # entities read as characters
    assert text.startswith("Inclusion Criteria: Subject (or legally authorized representative)")
    assert "adult >/=18 years of age" in text


def test_markdown_and_legacy_of_the_same_list_are_the_same_words():
    md = "Inclusion Criteria:\n\n1. Age \\>= 18 years\n2. ECOG 0/1\n\nExclusion Criteria:\n\n* Pregnancy"
    old = "<p>Inclusion Criteria:</p><ol><li>Age &gt;= 18 years</li><li>ECOG 0&#x2F;1</li></ol>" \
          "<p>Exclusion Criteria:</p><ul><li>Pregnancy</li></ul>"
    assert plain(md) == plain(old) == "Inclusion Criteria: Age >= 18 years ECOG 0/1 Exclusion Criteria: Pregnancy"
    assert plain("Age >= 21 years") != plain(old)


@needs_records
@pytest.mark.parametrize("name", ["NCT03934567", "NCT04267848", "NCT02513394"])
def test_a_real_record_and_its_registry_rendering_show_no_change(name):
    live = load_record(name)
    registry = legacy(live)  # the registry-history rendering of the same state (synthetic markup)
    assert registry != {k: live[k] for k in registry}  # the markup really differs
    assert seam_diff(registry, live) == []
    assert seam_diff(live, registry) == []


@needs_records
def test_a_real_difference_across_the_seam_is_still_reported():
    live = load_record("NCT03934567")
    registry = legacy(live)
    registry["protocolSection"]["designModule"]["enrollmentInfo"]["count"] = 1
    criteria = registry["protocolSection"]["eligibilityModule"]["eligibilityCriteria"]
    registry["protocolSection"]["eligibilityModule"]["eligibilityCriteria"] = criteria.replace("3 months", "6 months")
    fields = {c.field for c in seam_diff(registry, live)}
    assert fields == {"enrollment", "eligibility_criteria"}


# -- the version list --------------------------------------------------------------------------

@needs_history
def test_the_real_version_list_gives_the_status_timeline(store):
    data = json.loads((HIST / "NCT03690141.history_true_excerpt.json").read_text(encoding="utf-8"))
    versions = history.parse_versions(data)
    assert [v["version"] for v in versions] == list(range(10))
    store.save_registry_versions("NCT03690141", versions)
    tl = history.timeline(store, "NCT03690141", today=dt.date(2026, 11, 29))
    assert tl.state == "ok"
    assert tl.to_json() == [
        {"status": "NOT_YET_RECRUITING", "from": "2018-09-27", "to": "2018-10-16", "version": 0},
        {"status": "RECRUITING", "from": "2018-10-16", "to": "2019-07-16", "version": 1},
        {"status": "ACTIVE_NOT_RECRUITING", "from": "2019-07-16", "to": "2020-04-27", "version": 7},
        {"status": "COMPLETED", "from": "2020-04-27", "to": None, "version": 9},
    ]
    assert [e["duration"] for e in tl.entries][:3] == ["19 days", "9 m", "9 m"]


@pytest.mark.parametrize("body", [
    None, [], {"changes": []}, {"changes": [{"version": "0", "date": "2020-01-01"}]},
    {"changes": [{"version": 0, "date": "yesterday"}]}, {"changes": [{"version": 0, "date": "2020-01-01"}] * 2},
    {"changes": [{"version": 0, "date": "2020-01-01", "moduleLabels": "Study Status"}]},
    {"changes": [{"version": 0, "date": "2020-01-01", "status": "RECRUITING\u0000"}]},
])
def test_an_unexpected_version_list_is_unavailable(body):
    with pytest.raises(HistoryUnavailable):
        history.parse_versions(body)


@pytest.mark.parametrize("start,end,expected", [
    ("2017-10-03", "2021-05-14", "3 y 7 m"), ("2020-01-01", "2020-01-13", "12 days"),
    ("2020-01", "2022-01", "2 y"), ("2020-03-31", "2020-04-01", "1 day"),
])
def test_durations_read_like_a_person_would_say_them(start, end, expected):
    assert history.duration(start, end, today=dt.date(2026, 1, 1)) == expected


# -- end to end through the CLI and the stand-in -----------------------------------------------

@pytest.fixture
def seq(record):
    versions, live = sequence(record(NCT), 12)
    return versions, live


@pytest.fixture
def api(seq):
    versions, live = seq
    with StandIn([live]) as server:
        server.put_history(NCT, versions)
        yield server


@pytest.fixture
def cfg_path(api, db_url, tmp_path, monkeypatch):
    monkeypatch.setattr(ctgov, "BACKOFF_BASE_S", 0.001)
    p = tmp_path / "config.yaml"
    p.write_text(f"database: {db_url}\nctgov:\n  base_url: {api.base_url}\n  requests_per_minute: 60000\n"
                 f"  max_retries: 1\n  timeout_s: 5\ntrials: [{NCT}]\n"
                 f"subscribers:\n  - email: dr.neuro@example.org\n    trials: [{NCT}]\n    min_severity: minor\n")
    return p


@pytest.fixture
def run(cfg_path, capsys, monkeypatch):
    monkeypatch.setenv("TRIALWATCH_SECRET_KEY", "k" * 40)

    def invoke(*args: str):
        code = main(["--config", str(cfg_path), *args])
        out, err = capsys.readouterr()
        return code, out, err

    return invoke


@pytest.fixture
def db(cfg_path):
    from trialwatch.config import load

    s = st.open_store(load(cfg_path).database_url)
    yield s
    s.close()


def hist_json(run):
    code, out, err = run("history", NCT, "--json")
    assert code == 0, err
    return json.loads(out)


def int_requests(api):
    return [p for _, p, _ in api.requests if p.startswith("/api/int/")]


def test_first_check_gives_the_registry_timeline_for_one_request(run, api):
    code, out, err = run("check", NCT)
    assert code == 0, err
    assert int_requests(api) == [f"/api/int/studies/{NCT}/history"]
    h = hist_json(run)
    assert h["registry_history"] == "ok"
    assert h["timeline"] == [
        {"status": "NOT_YET_RECRUITING", "from": "2017-09-01", "to": "2017-10-16", "version": 0},
        {"status": "RECRUITING", "from": "2017-10-16", "to": "2018-08-27", "version": 1},
        {"status": "ACTIVE_NOT_RECRUITING", "from": "2018-08-27", "to": "2019-01-09", "version": 8},
        {"status": "COMPLETED", "from": "2019-01-09", "to": None, "version": 11},
    ]
    code, out, _ = run("history", NCT)
    assert "Recruiting               2017-10-16 → 2018-08-27, 10 m" in out
    # A second check asks the registry's history nothing more.
    api.reset_requests()
    run("check", NCT)
    assert int_requests(api) == []


def test_backfill_stores_every_version_with_its_changes_and_mails_nobody(run, api, db):
    run("check", NCT)
    api.reset_requests()
    code, out, err = run("backfill", NCT, "--json")
    assert code == 0, err
    rep = json.loads(out)
    assert rep["versions_stored"] == 12 and rep["requests"] == 12 and rep["complete"]
    assert int_requests(api) == [f"/api/int/studies/{NCT}/history/{v}" for v in range(12)]
    h = hist_json(run)
    reg = [s for s in h["snapshots"] if s["source"] == "registry"]
    assert [s["version"] for s in reg] == list(range(12))
    assert reg[0]["registry_date"] == "2017-09-01" and h["snapshots"][-1]["source"] == "live"
    # Ordered by the registry's versions, then the live chain.
    assert [s["source"] for s in h["snapshots"]] == ["registry"] * 12 + ["live"]
    by_version = {s["version"]: {c["field"] for c in s["changes"]} for s in reg}
    assert by_version[0] == set()
    assert "overall_status" in by_version[1] and "overall_status" in by_version[8]
    assert "enrollment" in by_version[3] and "site_added" in by_version[4]
    status = [(c["old"], c["new"], c["registry_date"]) for c in h["changes"] if c["field"] == "overall_status"]
    assert status == [("NOT_YET_RECRUITING", "RECRUITING", "2017-10-16"),
                      ("RECRUITING", "ACTIVE_NOT_RECRUITING", "2018-08-27"),
                      ("ACTIVE_NOT_RECRUITING", "COMPLETED", "2019-01-09")]
    assert all(c["historical"] is True for c in h["changes"])
    # The seam: the newest registry version and the live record are the same state.
    assert h["snapshots"][-1]["changes"] == []
    assert count(db, st.OutboxRow) == 0
    code, out, err = run("send", "--json")
    assert code == 0 and json.loads(out)["composed"] == 0 and json.loads(out)["sent"] == 0


def test_history_is_not_in_the_feed(run, api, db, cfg_path):
    from trialwatch import feeds
    from trialwatch.config import load

    run("check", NCT)
    run("backfill", NCT)
    assert count(db, st.ChangeRow, st.ChangeRow.historical.is_(True)) > 10
    assert b"<entry>" not in feeds.trial_feed(db, load(cfg_path), NCT)


def test_a_live_change_after_the_backfill_is_news_again(run, api, db, seq):
    run("check", NCT)
    run("backfill", NCT)
    live = seq[1]
    live["protocolSection"]["designModule"]["enrollmentInfo"] = {"count": 99, "type": "ACTUAL"}
    api.put(live)
    code, out, err = run("check", NCT, "--json")
    res = json.loads(out)
    assert [c["field"] for c in res["changes"]] == ["enrollment"] and "historical" not in res["changes"][0]
    assert count(db, st.OutboxRow) == 1


def test_killed_half_way_a_rerun_fetches_only_what_is_missing(run, api, db):
    run("check", NCT)
    api.reset_requests()
    # Version 5 fails on every attempt (the client's retries included): the backfill stops there.
    original = api._int

    def failing(route):
        if route.endswith("/history/5"):
            return 503, {"Content-Type": "text/plain"}, b"Service Unavailable"
        return original(route)

    api._int = failing
    code, out, err = run("backfill", NCT, "--json")
    assert code == 4 and json.loads(out)["versions_stored"] == 5
    assert count(db, st.Snapshot, st.Snapshot.source == "registry") == 5
    api._int = original
    api.reset_requests()
    code, out, err = run("backfill", NCT, "--json")
    assert code == 0, err
    assert int_requests(api) == [f"/api/int/studies/{NCT}/history/{v}" for v in range(5, 12)]
    assert count(db, st.Snapshot, st.Snapshot.source == "registry") == 12
    with db.session() as s:
        per_version = s.execute(select(st.Snapshot.registry_version, func.count()).where(
            st.Snapshot.source == "registry").group_by(st.Snapshot.registry_version)).all()
    assert all(n == 1 for _, n in per_version)
    h = hist_json(run)
    assert sum(1 for c in h["changes"] if c["field"] == "overall_status") == 3  # nothing twice
    # Nothing new: the rerun makes no request at all.
    api.reset_requests()
    code, out, _ = run("backfill", NCT, "--json")
    assert code == 0 and json.loads(out)["requests"] <= 1 and json.loads(out)["versions_stored"] == 0


def test_backfill_after_several_live_snapshots_leaves_the_live_chain_alone(run, api, db, seq):
    run("check", NCT)
    live = seq[1]
    live["protocolSection"]["designModule"]["enrollmentInfo"] = {"count": 77, "type": "ACTUAL"}
    api.put(live)
    run("check", NCT)
    before = hist_json(run)
    code, _, err = run("backfill", NCT)
    assert code == 0, err
    after = hist_json(run)
    live_after = [s for s in after["snapshots"] if s["source"] == "live"]
    assert [(s["seq"], s["content_hash"]) for s in live_after] == [
        (s["seq"], s["content_hash"]) for s in before["snapshots"]]
    # The second live snapshot's change is still the one live change; the first has none.
    assert [c["field"] for c in live_after[1]["changes"]] == ["enrollment"]
    assert live_after[0]["changes"] == []


def test_first_live_snapshot_after_a_backfill_reports_no_change(run, api, db):
    # Backfill a trial trialwatch has never checked: the registry versions come first.
    code, out, err = run("backfill", NCT, "--json")
    assert code == 0, err and json.loads(out)["versions_stored"] == 12
    code, out, err = run("check", NCT, "--json")
    assert code == 0, err
    res = json.loads(out)
    assert res["changes"] == [] and res["first_snapshot"] is False
    h = hist_json(run)
    assert [s["seq"] for s in h["snapshots"] if s["source"] == "live"] == [1]
    assert count(db, st.OutboxRow) == 0


@pytest.mark.parametrize("fault", ["404", "garbage", "shape"])
def test_history_unavailable_warns_once_and_the_check_succeeds(run, api, fault, caplog):
    api.history_fault(NCT, fault)
    code, out, err = run("check", NCT)
    assert code == 0, err
    assert "First snapshot" in out
    warnings = [r for r in caplog.records if r.name == "trialwatch.history" and r.levelname == "WARNING"]
    assert len(warnings) == 1 and "registry history unavailable" in warnings[0].getMessage()
    h = hist_json(run)
    assert h["registry_history"] == "unavailable"
    assert [e["status"] for e in h["timeline"]] == ["COMPLETED"]  # what trialwatch saw itself


def test_a_poll_fetches_at_most_per_poll_version_lists_oldest_first(store, db_url, record):
    base = record(NCT)
    records = [set_nct(base, f"NCT9{i:07d}") for i in range(7)]
    with StandIn(records) as api:
        for r in records:
            versions, _ = sequence(r, 3)
            api.put_history(r["protocolSection"]["identificationModule"]["nctId"], versions)
        ids = [r["protocolSection"]["identificationModule"]["nctId"] for r in records]
        config = loads(f"database: {db_url}\nctgov:\n  base_url: {api.base_url}\n  requests_per_minute: 60000\n"
                       f"trials: [{', '.join(ids)}]\nhistory:\n  per_poll: 3\n"
                       "alternatives:\n  per_poll: 0\n")  # counted in their own tests
        from trialwatch import poller

        first = poller.poll(store, config, send=False)
        assert first.complete and first.requests == 2 + 3
        asked = [p.split("/")[4] for p in int_requests(api)]
        assert asked == ids[:3]
        assert history.timeline(store, ids[5]).state == "pending"
        api.set_data_timestamp("2026-11-26T09:00:05")
        api.reset_requests()
        poller.poll(store, config, send=False)
        assert [p.split("/")[4] for p in int_requests(api)] == ids[3:6]
        assert history.timeline(store, ids[5]).state == "ok"


def test_the_trial_page_shows_the_registry_timeline_or_that_it_is_still_to_come(run, api, cfg_path, db):
    from starlette.testclient import TestClient

    from trialwatch.config import load
    from trialwatch.web import create_app

    api.history_fault(NCT, "shape")
    run("check", NCT)
    with TestClient(create_app(load(cfg_path), db)) as c:
        page = c.get(f"/trials/{NCT}").text
    assert "unavailable" in page
    with db.session() as s, s.begin():
        s.delete(s.get(st.RegistryHistory, NCT))
    with TestClient(create_app(load(cfg_path), db)) as c:
        page = c.get(f"/trials/{NCT}").text
    assert "still to come" in page
    api.history_fault(NCT, None)
    history.fetch_lists(db, load(cfg_path), ctgov.Client.from_config(load(cfg_path).ctgov), [NCT])
    with TestClient(create_app(load(cfg_path), db)) as c:
        page = c.get(f"/trials/{NCT}").text
    assert "2017-10-16 → 2018-08-27, 10 m" in page and "still to come" not in page


def test_important_only_skips_versions_that_changed_only_minor_modules_and_says_so(run, api):
    run("check", NCT)
    code, out, err = run("backfill", NCT, "--important-only")
    assert code == 0, err
    assert "skipped" in out and "never important or critical" in out
    h = hist_json(run)
    versions = [s["version"] for s in h["snapshots"] if s["source"] == "registry"]
    assert 0 in versions and 11 in versions and len(versions) < 12
    statuses = [(c["old"], c["new"]) for c in h["changes"] if c["field"] == "overall_status"]
    assert len(statuses) == 3
    # A later full backfill leaves the gaps: the versions after them were diffed across them.
    code, out, err = run("backfill", NCT, "--json")
    assert code == 0 and json.loads(out)["requests"] == 0
    assert len(hist_json(run)["changes"]) == len(h["changes"])


def test_the_internal_api_sits_beside_v2_unless_the_config_says_otherwise():
    from trialwatch.errors import ConfigError

    assert ctgov.int_base_url("https://clinicaltrials.gov/api/v2") == "https://clinicaltrials.gov/api/int"
    assert history.history_base(loads("ctgov:\n  base_url: http://127.0.0.1:9/api/v2\n")) == "http://127.0.0.1:9/api/int"
    cfg = loads("history:\n  url: http://mirror.example.org/int/\n  per_poll: 0\n")
    assert history.history_base(cfg) == "http://mirror.example.org/int" and cfg.history.per_poll == 0
    with pytest.raises(ConfigError, match="history.per_pol"):
        loads("history:\n  per_pol: 5\n")


def test_history_url_overrides_where_version_lists_are_asked_for(api, db_url, db, cfg_path):
    cfg = loads(f"database: {db_url}\nctgov:\n  base_url: http://127.0.0.1:9/api/v2\n"
                f"history:\n  url: {api.base_url.replace('/api/v2', '/api/int')}\n")
    with ctgov.Client.from_config(cfg.ctgov) as client:
        rep = history.fetch_lists(db, cfg, client, [NCT])
    assert rep.fetched == 1 and int_requests(api) == [f"/api/int/studies/{NCT}/history"]


def test_a_status_seen_live_after_the_version_list_continues_the_timeline(run, api, seq):
    run("check", NCT)
    live = seq[1]
    live["protocolSection"]["statusModule"]["overallStatus"] = "TERMINATED"
    live["protocolSection"]["statusModule"]["lastUpdatePostDateStruct"] = {"date": "2026-11-20", "type": "ACTUAL"}
    api.put(live)
    run("check", NCT)
    tl = hist_json(run)["timeline"]
    assert tl[-2:] == [{"status": "COMPLETED", "from": "2019-01-09", "to": "2026-11-20", "version": 11},
                       {"status": "TERMINATED", "from": "2026-11-20", "to": None, "version": None}]


def _two_trials(record, api):
    other = set_nct(record(NCT), "NCT90000001")
    api.put(other)
    api.put_history("NCT90000001", sequence(other, 3)[0])
    return "NCT90000001"


def test_a_404_is_about_one_trial_and_the_next_is_still_asked(api, db, cfg_path, record):
    other = _two_trials(record, api)
    api.history_fault(NCT, "404")
    cfg = loads(cfg_path.read_text())
    with ctgov.Client.from_config(cfg.ctgov) as client:
        rep = history.fetch_lists(db, cfg, client, [NCT, other])
    assert rep.unavailable == [NCT] and rep.fetched == 1
    assert history.timeline(db, other).state == "ok"


def test_garbage_stops_asking_for_the_rest_of_the_run(api, db, cfg_path, record):
    other = _two_trials(record, api)
    api.history_fault(NCT, "garbage")
    cfg = loads(cfg_path.read_text())
    with ctgov.Client.from_config(cfg.ctgov) as client:
        rep = history.fetch_lists(db, cfg, client, [NCT, other])
    # One trial's retries (max_retries: 1 -> 2 attempts), then no more requests this run.
    assert rep.unavailable == [NCT] and rep.asked == 1
    assert int_requests(api) == [f"/api/int/studies/{NCT}/history"] * 2
    assert history.timeline(db, other).state == "pending"  # asked for next time


def test_backfill_progress_is_drawn_on_a_terminal_only(run, api, capsys):
    from rich.console import Console

    from trialwatch.cli_trials import BackfillProgress

    run("check", NCT)
    code, out, err = run("backfill", NCT)
    assert code == 0 and "versions" not in err  # not a terminal: quiet
    with BackfillProgress(enabled=True, console=Console(file=sys.stderr, force_terminal=True, width=100)) as bar:
        bar("start", {"trials": 1, "versions": 3})
        for v in range(3):
            bar("version", {"nct_id": NCT, "version": v})
        bar("trial", {"nct_id": NCT})
    err = capsys.readouterr().err
    assert "trials" in err and "versions" in err and "3/3" in err

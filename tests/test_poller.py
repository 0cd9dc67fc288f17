"""`trialwatch poll`: cheap, complete-or-honest poll cycles against a local stand-in of the API."""

from __future__ import annotations

import json
import math
import threading

import httpx
import pytest
from sqlalchemy import func, select

from trialwatch import ctgov, poller, store as st
from trialwatch.cli import main
from trialwatch.config import loads
from trialwatch.errors import LockHeld, LockLost

from corpus import change_status, clones, ids_of, set_updated
from standin import StandIn

DAY1 = "2026-11-24T09:00:05"
DAY2 = "2026-11-25T09:00:05"


@pytest.fixture(autouse=True)
def _fast_backoff(monkeypatch):
    monkeypatch.setattr(ctgov, "BACKOFF_BASE_S", 0.01)


def make_config(api, db_url, trials, extra=""):
    return loads(f"database: {db_url}\nctgov:\n  base_url: {api.base_url}\n  requests_per_minute: 60000\n"
                 f"  max_retries: 2\n  timeout_s: 5\ntrials: [{', '.join(trials)}]\n{extra}")


def client_for(config, **kw):
    return ctgov.Client.from_config(config.ctgov, **kw)


def count(store, model):
    with store.session() as s:
        return s.scalar(select(func.count()).select_from(model))


def test_requests_stay_within_the_budget(store, db_url):
    n, c = 250, 20
    records = clones(n)
    with StandIn(records, data_timestamp=DAY1) as api:
        # The clones do not recruit: alternatives (issue 14) have their own budget test.
        config = make_config(api, db_url, ids_of(records), "alternatives:\n  per_poll: 0\n")
        first = poller.poll(store, config, send=False)
        assert first.complete and first.trials_checked == n
        # The v2 part as before, plus at most history.per_poll version lists (issue 15).
        assert first.requests == 1 + math.ceil(n / 100) + config.history.per_poll
        assert count(store, st.Snapshot) == n

        # Same dataTimestamp: one request, nothing else.
        again = poller.poll(store, config, send=False)
        assert again.skipped and again.requests == 1 and count(store, st.Snapshot) == n

        # The registry refreshed; C trials changed.
        api.set_data_timestamp(DAY2)
        for r in records[:c]:
            api.put(change_status(r, "ENROLLING_BY_INVITATION", updated="2026-11-25"))
        api.reset_requests()
        report = poller.poll(store, config, send=False)
        assert report.complete and not report.skipped
        assert report.trials_changed == c and report.changes >= c
        assert report.trials_checked == n
        assert report.requests <= 1 + math.ceil(n / 100) + math.ceil(c / 100) + config.history.per_poll
        assert count(store, st.Snapshot) == n + c
        # Only records updated since the last complete poll's data date were asked for.
        advanced = [q.get("filter.advanced") for _, path, q in api.requests if path.endswith("/studies")]
        assert advanced and all(a == "AREA[LastUpdatePostDate]RANGE[2026-11-23,MAX]" for a in advanced)


def test_the_heap_from_before_a_cycle_is_out_of_full_collections_until_it_ends(store, db_url, monkeypatch):
    # Every page of records reaches the oldest generation, so a first poll of 10,000 trials ran
    # ~20 full collections, each walking the whole start-up heap again (~1.4 s of CPU).
    import gc

    records = clones(3)
    frozen: list[int] = []
    run = poller._Cycle.run

    def watched(self, **kw):  # noqa: ANN001, ANN003
        frozen.append(gc.get_freeze_count())
        return run(self, **kw)

    monkeypatch.setattr(poller._Cycle, "run", watched)
    with StandIn(records, data_timestamp=DAY1) as api:
        report = poller.poll(store, make_config(api, db_url, ids_of(records)), send=False)
    assert report.complete
    assert frozen[0] > 10_000 and gc.get_freeze_count() == 0


def test_forced_poll_fetches_everything_and_stores_nothing_new(store, db_url):
    records = clones(30)
    with StandIn(records, data_timestamp=DAY1) as api:
        config = make_config(api, db_url, ids_of(records))
        poller.poll(store, config, send=False)
        report = poller.poll(store, config, send=False, force=True)
        assert not report.skipped and report.trials_checked == 30 and report.trials_changed == 0
        assert count(store, st.Snapshot) == 30 and count(store, st.ChangeRow) == 0


def test_a_trial_added_to_the_config_is_fetched_even_when_data_is_unchanged(store, db_url):
    records = clones(3)
    ids = ids_of(records)
    with StandIn(records, data_timestamp=DAY1) as api:
        poller.poll(store, make_config(api, db_url, ids[:2]), send=False)
        report = poller.poll(store, make_config(api, db_url, ids), send=False)
        assert report.trials_checked == 1 and count(store, st.Snapshot) == 3


class FailFrom(httpx.BaseTransport):
    """Answers 503 from the k-th request on: a poll that fails part-way."""

    def __init__(self, k: int) -> None:
        self.inner, self.k, self.n = httpx.HTTPTransport(), k, 0

    def handle_request(self, request):
        self.n += 1
        if self.n >= self.k:
            return httpx.Response(503, text="Service Unavailable")
        return self.inner.handle_request(request)


def test_a_poll_that_fails_part_way_keeps_what_it_fetched_and_retries_the_rest(store, db_url):
    records = clones(250)
    ids = ids_of(records)
    with StandIn(records, data_timestamp=DAY1) as api:
        config = make_config(api, db_url, ids)
        # request 1 = /version, 2 and 3 = the first two batches; the third batch fails for good.
        report = poller.poll(store, config, send=False, client=client_for(config, transport=FailFrom(4)))
        assert not report.complete and report.errors
        assert count(store, st.Snapshot) == 200 and count(store, st.ChangeRow) == 0
        assert store.last_complete_poll() is None
        # Same dataTimestamp, but the last poll was not complete: no skip, the rest is fetched.
        report = poller.poll(store, config, send=False)
        assert report.complete and not report.skipped
        assert count(store, st.Snapshot) == 250 and count(store, st.ChangeRow) == 0


def test_poll_cli_json_and_exit_code_when_incomplete(db_url, tmp_path, capsys):
    records = clones(5)
    ids = ids_of(records)
    with StandIn(records, data_timestamp=DAY1) as api:
        cfg = tmp_path / "config.yaml"
        cfg.write_text(f"database: {db_url}\nctgov:\n  base_url: {api.base_url}\n  requests_per_minute: 60000\n"
                       f"  max_retries: 1\ntrials: [{', '.join(ids)}]\nalternatives:\n  per_poll: 0\n")
        assert main(["--config", str(cfg), "poll", "--json"]) == 0
        out = json.loads(capsys.readouterr().out)
        assert {"requests", "trials_checked", "trials_changed", "changes", "emails_sent",
                "emails_queued", "skipped"} <= out.keys()
        # 2 v2 requests, and the 5 trials' version lists (issue 15)
        assert out["trials_checked"] == 5 and out["skipped"] is False and out["requests"] == 2 + 5
        assert main(["--config", str(cfg), "poll", "--json"]) == 0
        out = json.loads(capsys.readouterr().out)
        assert out["skipped"] is True and out["requests"] == 1
        api.set_data_timestamp(DAY2)
        api.fail_next("500", times=50)
        assert main(["--config", str(cfg), "poll", "--json"]) == 4
        captured = capsys.readouterr()
        assert json.loads(captured.out)["skipped"] is False and "did not finish" in captured.err


def test_saved_search_membership_events(store, db_url):
    records = clones(6)
    for r in records:
        r["protocolSection"].setdefault("conditionsModule", {})["conditions"] = ["Amyotrophic Lateral Sclerosis"]
    ids = ids_of(records)
    for r in records[:4]:
        r["protocolSection"]["statusModule"]["overallStatus"] = "RECRUITING"
    for r in records[4:]:
        r["protocolSection"]["statusModule"]["overallStatus"] = "COMPLETED"
    search = ("searches:\n  - name: als\n    condition: amyotrophic lateral sclerosis\n"
              "    status: [RECRUITING, NOT_YET_RECRUITING]\n")
    with StandIn(records, data_timestamp=DAY1) as api:
        config = make_config(api, db_url, [], search)
        first = poller.poll(store, config, send=False)
        assert first.complete and first.trials_checked == 4 and first.events == 0  # baseline is silent
        api.set_data_timestamp(DAY2)
        api.put(change_status(records[4], "RECRUITING", updated="2026-11-25"))   # joins
        api.put(change_status(records[0], "SUSPENDED", updated="2026-11-25"))    # leaves: status
        api.remove(ids[1])                                                        # leaves: gone
        report = poller.poll(store, config, send=False)
        assert report.complete
        with store.session() as s:
            events = {(c.nct_id, c.field): c for c in s.scalars(
                select(st.ChangeRow).where(st.ChangeRow.field.like("search_%")))}
        assert set(events) == {(ids[4], "search_match"), (ids[0], "search_unmatch"), (ids[1], "search_unmatch")}
        assert events[(ids[0], "search_unmatch")].detail == "its status is now Suspended"
        assert "no longer on ClinicalTrials.gov" in events[(ids[1], "search_unmatch")].detail
        # Members that left are no longer followed; the new one is.
        assert set(store.watched_ids(config)) == {ids[2], ids[3], ids[4]}


def test_search_over_max_results_is_capped_with_a_warning(store, db_url, caplog):
    records = clones(12)
    for r in records:
        r["protocolSection"].setdefault("conditionsModule", {})["conditions"] = ["ALS"]
    with StandIn(records, data_timestamp=DAY1) as api:
        config = make_config(api, db_url, [], "searches:\n  - name: als\n    condition: ALS\n    max_results: 5\n")
        report = poller.poll(store, config, send=False)
        assert report.trials_checked == 5
        assert "max_results=5" in caplog.text


def test_expanded_access_record_is_followed(store, db_url, record):
    with StandIn([record("NCT03268603"), record("NCT03268603_EA")], data_timestamp=DAY1) as api:
        config = make_config(api, db_url, ["NCT03268603"])
        report = poller.poll(store, config, send=False)
        assert report.complete and report.trials_checked == 2
        ea = store.trial("NCT99268603")
        assert ea is not None and ea.linked_from == "expanded_access:NCT03268603"
        assert "NCT99268603" in store.watched_ids(config)


def test_alias_merges_into_the_new_id(store, db_url):
    (rec,) = clones(1)
    new_id = rec["protocolSection"]["identificationModule"]["nctId"]
    with StandIn([rec], data_timestamp=DAY1) as api:
        api.alias("NCT00000042", new_id)
        config = make_config(api, db_url, ["NCT00000042"])
        report = poller.poll(store, config, send=False)
        assert report.complete and store.trial(new_id) is not None
        assert store.resolve_alias("NCT00000042") == new_id
        assert store.watched_ids(config) == [new_id]
        api.set_data_timestamp(DAY2)
        assert poller.poll(store, config, send=False, force=True).complete
        assert count(store, st.Snapshot) == 1


def test_a_record_that_disappears_is_an_event_not_a_crash(store, db_url):
    records = clones(3)
    ids = ids_of(records)
    with StandIn(records, data_timestamp=DAY1) as api:
        config = make_config(api, db_url, ids)
        poller.poll(store, config, send=False)
        api.remove(ids[0])
        api.set_data_timestamp(DAY2)
        report = poller.poll(store, config, send=False, force=True)
        assert report.complete and report.events == 1
        assert store.trial(ids[0]).gone_at is not None
        again = poller.poll(store, config, send=False, force=True)
        assert again.events == 0  # said once


def test_rerunning_a_poll_creates_no_duplicates(store, db_url):
    records = clones(10)
    ids = ids_of(records)
    with StandIn(records, data_timestamp=DAY1) as api:
        config = make_config(api, db_url, ids)
        poller.poll(store, config, send=False)
        api.put(change_status(records[0], "ENROLLING_BY_INVITATION", updated="2026-11-25"))
        api.set_data_timestamp(DAY2)
        for _ in range(3):
            poller.poll(store, config, send=False, force=True)
        assert count(store, st.Snapshot) == 11 and count(store, st.ChangeRow) == 1


def test_two_pollers_at_once_produce_no_duplicates(db_url):
    records = clones(120)
    ids = ids_of(records)
    stores = [st.open_store(db_url), st.open_store(db_url)]
    with StandIn(records, data_timestamp=DAY1) as api:
        config = make_config(api, db_url, ids)
        barrier = threading.Barrier(2)
        outcomes = []

        def run(s):
            barrier.wait()
            try:
                outcomes.append(poller.poll(s, config, send=False))
            except LockHeld as e:
                outcomes.append(e)

        threads = [threading.Thread(target=run, args=(s,)) for s in stores]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(outcomes) == 2
        assert count(stores[0], st.Snapshot) == 120 and count(stores[0], st.ChangeRow) == 0
        # Either the second found the lock held, or it ran after the first and had nothing to do.
        assert all(isinstance(o, LockHeld) or o.complete for o in outcomes)
    for s in stores:
        s.close()


def test_a_weekly_full_sweep_notices_a_removed_record_that_incremental_polls_cannot(store, db_url):
    import datetime as dt

    from sqlalchemy import update

    records = clones(3)
    ids = ids_of(records)
    with StandIn(records, data_timestamp=DAY1) as api:
        config = make_config(api, db_url, ids)
        assert poller.poll(store, config, send=False).full
        api.remove(ids[0])
        api.set_data_timestamp(DAY2)
        incremental = poller.poll(store, config, send=False)
        assert incremental.complete and not incremental.full and incremental.events == 0
        with store.session() as s, s.begin():
            s.execute(update(st.Poll).values(started_at=st.utcnow() - dt.timedelta(days=config.full_sweep_days)))
        api.set_data_timestamp("2026-11-26T09:00:05")
        sweep = poller.poll(store, config, send=False)
        assert sweep.complete and sweep.full and sweep.events == 1
        assert store.trial(ids[0]).gone_at is not None


def test_two_poll_processes_started_together_produce_no_duplicates(db_url, tmp_path):
    import subprocess
    import sys

    records = clones(150)
    ids = ids_of(records)
    with StandIn(records, data_timestamp=DAY1) as api:
        cfg = tmp_path / "config.yaml"
        cfg.write_text(f"database: {db_url}\nctgov: {{base_url: '{api.base_url}', requests_per_minute: 60000}}\n"
                       f"trials: [{', '.join(ids)}]\n")
        st.open_store(db_url).close()  # created once, as `trialwatch db upgrade` would
        cmd = [sys.executable, "-m", "trialwatch.cli", "--config", str(cfg), "poll", "--json"]
        procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
        results = [(p.wait(timeout=120), p.stdout.read(), p.stderr.read()) for p in procs]
        codes = sorted(code for code, _, _ in results)
        assert codes in ([0, 0], [0, 5]), results
        if codes == [0, 5]:
            assert any("another poll holds the lock" in err for _, _, err in results)
        store = st.open_store(db_url)
        assert count(store, st.Snapshot) == 150 and count(store, st.ChangeRow) == 0
        store.close()


def test_a_search_that_matched_nothing_at_first_reports_its_first_match(store, db_url):
    records = clones(2)
    for r in records:
        r["protocolSection"].setdefault("conditionsModule", {})["conditions"] = ["Amyotrophic Lateral Sclerosis"]
        r["protocolSection"]["statusModule"]["overallStatus"] = "COMPLETED"
    search = ("searches:\n  - name: als\n    condition: amyotrophic lateral sclerosis\n"
              "    status: [RECRUITING]\n")
    with StandIn(records, data_timestamp=DAY1) as api:
        config = make_config(api, db_url, [], search)
        first = poller.poll(store, config, send=False)
        assert first.complete and first.trials_checked == 0 and first.events == 0
        # An empty result set is still a run: the next poll on the same data is one request.
        assert poller.poll(store, config, send=False).skipped
        api.put(change_status(records[1], "RECRUITING", updated="2026-11-25"))
        api.set_data_timestamp(DAY2)
        report = poller.poll(store, config, send=False)
        assert report.events == 1
        with store.session() as s:
            (event,) = s.scalars(select(st.ChangeRow).where(st.ChangeRow.field == "search_match"))
        assert event.nct_id == records[1]["protocolSection"]["identificationModule"]["nctId"]


def test_a_merge_seen_in_an_incremental_poll_is_remembered_as_an_alias(store, db_url):
    # The registry merges a watched record into another: filter.ids=old now answers the new
    # record, which lists the old id in nctIdAliases. An incremental poll must remember the
    # alias (as the 301 of a lone lookup would), not store a stranger and call the old one unchanged.
    records = clones(2)
    old_id, new_id = (r["protocolSection"]["identificationModule"]["nctId"] for r in records)
    with StandIn(records[:1], data_timestamp=DAY1) as api:
        config = make_config(api, db_url, [old_id])
        assert poller.poll(store, config, send=False).complete
        merged = set_updated(records[1], "2026-11-25")
        merged["protocolSection"]["identificationModule"]["nctIdAliases"] = [old_id]
        api.remove(old_id)
        api.put(merged)
        api.set_data_timestamp(DAY2)
        report = poller.poll(store, config, send=False)
        assert report.complete and not report.full
        assert store.resolve_alias(old_id) == new_id
        assert store.watched_ids(config) == [new_id]


def test_a_lost_lease_stops_the_poll(store, db_url, monkeypatch):
    # The lease expired during a long step and another poller took the lock: renewing fails,
    # and this poll must stop instead of polling on beside the other one.
    from sqlalchemy import update

    records = clones(250)
    ids = ids_of(records)
    clock = [1000.0]
    monkeypatch.setattr(poller.time, "monotonic", lambda: clock[0])

    class Steal(httpx.BaseTransport):
        def __init__(self, inner):
            self.inner, self.n = inner, 0

        def handle_request(self, request):
            self.n += 1
            if self.n == 2:  # after /version: the lock passes to another poller, time runs on
                with store.session() as s, s.begin():
                    s.execute(update(st.Lock).values(holder="other:1:1",
                                                     lease_until=st.utcnow() + __import__("datetime").timedelta(hours=1)))
                clock[0] += 120
            return self.inner.handle_request(request)

    with StandIn(records, data_timestamp=DAY1) as api:
        config = make_config(api, db_url, ids)
        report = poller.poll(store, config, send=False,
                             client=client_for(config, transport=Steal(httpx.HTTPTransport())))
        assert not report.complete and isinstance(report.failure(), LockLost)
        assert report.failure().exit_code == 5
        assert "lost the poll lock" in report.to_dict()["errors"][0]
        assert count(store, st.Snapshot) < 250
        # The other poller's lock is left alone.
        assert store.lock_holder(poller.LOCK_NAME).holder == "other:1:1"


def test_a_watched_id_that_never_existed_does_not_defeat_the_one_request_skip(store, db_url):
    records = clones(2)
    ids = ids_of(records)
    with StandIn(records, data_timestamp=DAY1) as api:
        config = make_config(api, db_url, ids + ["NCT09999999"])  # e.g. a typo in config.yaml
        first = poller.poll(store, config, send=False)
        assert first.complete and first.trials_checked == 2
        again = poller.poll(store, config, send=False)
        assert again.skipped and again.requests == 1


def test_poll_exits_6_when_its_mail_cannot_be_sent(db_url, tmp_path, capsys, record):
    """A web subscriber's digest needs the signing key; without it the poll's data is stored and
    the command says mail failed instead of exiting 0."""
    records = clones(1)
    nct = records[0]["protocolSection"]["identificationModule"]["nctId"]
    with StandIn(records, data_timestamp=DAY1) as api:
        cfg = tmp_path / "config.yaml"
        cfg.write_text(f"database: {db_url}\nctgov: {{base_url: '{api.base_url}', requests_per_minute: 60000}}\n"
                       f"trials: [{nct}]\n")
        assert main(["--config", str(cfg), "poll"]) == 0
        store = st.open_store(db_url)
        with store.session() as s, s.begin():
            sub = st.Subscriber(email="web@example.org", state="active", source="web", min_severity="minor")
            sub.subscriptions = [st.Subscription(kind="trial", target=nct)]
            s.add(sub)
        store.close()
        api.put(change_status(records[0], "ENROLLING_BY_INVITATION", updated="2026-11-25"))
        api.set_data_timestamp(DAY2)
        capsys.readouterr()
        assert main(["--config", str(cfg), "poll", "--json"]) == 6
        captured = capsys.readouterr()
        out = json.loads(captured.out)
        assert out["trials_changed"] == 1 and out["complete"] is True
        assert "TRIALWATCH_SECRET_KEY" in captured.err


def test_a_steady_poll_stores_the_changed_records_of_all_its_pages_together(store, db_url, monkeypatch):
    # Each page of a steady poll carries a few changed records; stored page by page, every page
    # paid its own read and write transactions (most of an in-daemon poll's time).
    n = 250
    records = clones(n)
    with StandIn(records, data_timestamp=DAY1) as api:
        config = make_config(api, db_url, ids_of(records), "alternatives:\n  per_poll: 0\n")
        poller.poll(store, config, send=False)
        api.set_data_timestamp(DAY2)
        changed = [records[0], records[120], records[240]]  # one on each page of 100
        for r in changed:
            api.put(change_status(r, "ENROLLING_BY_INVITATION", updated="2026-11-25"))
        calls: list[int] = []
        real = st.Store.record_fetches

        def counted(self, recs, **kw):
            calls.append(len(recs))
            return real(self, recs, **kw)

        monkeypatch.setattr(st.Store, "record_fetches", counted)
        report = poller.poll(store, config, send=False)
        assert report.complete and report.trials_changed == 3 and report.trials_checked == n
        assert calls == [3]


def test_a_steady_poll_that_fails_part_way_keeps_the_changes_it_received(store, db_url):
    records = clones(250)
    with StandIn(records, data_timestamp=DAY1) as api:
        config = make_config(api, db_url, ids_of(records), "alternatives:\n  per_poll: 0\n")
        poller.poll(store, config, send=False)
        api.set_data_timestamp(DAY2)
        for r in (records[0], records[120], records[240]):
            api.put(change_status(r, "ENROLLING_BY_INVITATION", updated="2026-11-25"))
        # request 1 = /version, 2 and 3 = the first two pages; the third fails for good.
        report = poller.poll(store, config, send=False, client=client_for(config, transport=FailFrom(4)))
        assert not report.complete and report.errors
        assert report.trials_changed == 2
        assert count(store, st.Snapshot) == 252 and count(store, st.ChangeRow) >= 2

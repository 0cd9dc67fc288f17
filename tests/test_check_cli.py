"""`trialwatch check` and `trialwatch history`, end to end: the real CLI and client against a
local stand-in of the API on 127.0.0.1, storing into a real database."""

from __future__ import annotations

import json

import pytest


from standin import StandIn
from conftest import cli_against

NCT = "NCT03268603"


@pytest.fixture
def api(record):
    with StandIn([record(NCT)]) as server:
        yield server


@pytest.fixture
def run(api, db_url, tmp_path, capsys, monkeypatch):
    """run("check", NCT, "--json") -> (exit code, stdout, stderr)."""
    return cli_against(api.base_url, db_url, tmp_path, capsys, monkeypatch, max_retries=3,
                       extra=f"trials: [{NCT}]\n")


def check_json(run, *ids):
    code, out, err = run("check", *(ids or (NCT,)), "--json")
    assert code == 0, err
    return [json.loads(line) for line in out.splitlines()]


def snapshot_count(run):
    code, out, _ = run("history", NCT, "--json")
    return len(json.loads(out)["snapshots"]) if code == 0 else 0


def test_first_check_prints_the_state_a_physician_needs(run):
    code, out, err = run("check", NCT)
    assert code == 0, err
    for expected in ("Active, not recruiting", "Mayo Clinic", "Phase 2", "75",
                     f"https://clinicaltrials.gov/study/{NCT}", "First snapshot"):
        assert expected in out
    code, out, _ = run("check", NCT)
    assert "No change since" in out


def test_json_object_is_stable_and_alone_on_stdout(run):
    (obj,) = check_json(run)
    assert {"nct_id", "title", "status", "enrollment", "changes", "first_snapshot"} <= obj.keys()
    assert obj["nct_id"] == NCT and obj["status"] == "ACTIVE_NOT_RECRUITING"
    assert obj["enrollment"] == {"count": 75, "type": "ESTIMATED"} or obj["enrollment"]["count"] == 75
    assert obj["first_snapshot"] is True and obj["changes"] == []
    assert obj["central_contacts"] == [{"name": "Synthetic Study Coordinator", "role": "CONTACT",
                                        "phone": "507-555-0142", "email": "als-msc-study@example.org"}]
    assert obj["expanded_access"] == {"has_expanded_access": True, "nct_id": "NCT99268603", "status": "AVAILABLE"}


def test_status_and_enrollment_change_is_reported_once(run, api, record):
    check_json(run)
    changed = record(NCT)
    changed["protocolSection"]["statusModule"]["overallStatus"] = "RECRUITING"
    changed["protocolSection"]["designModule"]["enrollmentInfo"]["count"] = 90
    api.put(changed)
    (obj,) = check_json(run)
    fields = {c["field"]: c for c in obj["changes"]}
    assert set(fields) == {"overall_status", "enrollment"}
    assert (fields["overall_status"]["old"], fields["overall_status"]["new"]) == ("ACTIVE_NOT_RECRUITING", "RECRUITING")
    assert fields["overall_status"]["severity"] == "important"
    assert "75" in json.dumps(fields["enrollment"]["old"]) and "90" in json.dumps(fields["enrollment"]["new"])
    (again,) = check_json(run)
    assert again["changes"] == [] and again["first_snapshot"] is False
    code, out, _ = run("check", NCT)
    assert "No change since" in out


def test_human_output_lists_changes_most_severe_first(run, api, record):
    check_json(run)
    changed = record(NCT)
    changed["protocolSection"]["statusModule"]["overallStatus"] = "SUSPENDED"
    changed["protocolSection"]["statusModule"]["whyStopped"] = "Manufacturing hold"
    changed["protocolSection"]["identificationModule"]["briefTitle"] += " (revised)"
    api.put(changed)
    code, out, _ = run("check", NCT)
    lines = [ln for ln in out.splitlines() if "[critical]" in ln or "[minor]" in ln]
    assert "[critical]" in lines[0] and "[minor]" in lines[-1]
    assert "Active, not recruiting → Suspended" in out


@pytest.mark.parametrize("bad", ["NCT123X", "12345", "NCT", "NCT123456789"])
def test_bad_nct_is_a_usage_error_before_any_request(run, api, bad):
    code, out, err = run("check", bad)
    assert code == 2 and out == ""
    assert "is not an NCT number" in err
    assert api.requests == []


def test_sloppy_nct_is_normalised(run):
    (obj,) = check_json(run, " nct3268603 ")
    assert obj["nct_id"] == NCT


def test_unknown_trial_exits_3(run):
    code, out, err = run("check", "NCT09999999")
    assert code == 3 and "NCT09999999" in err


@pytest.mark.parametrize("fault,times,kw", [
    ("429", 1, {"retry_after": 1}), ("503", 2, {}), ("drop", 1, {}), ("truncate", 1, {}), ("html", 1, {}),
])
def test_transient_faults_end_in_success(run, api, fault, times, kw):
    api.fail_next(fault, times=times, **kw)
    (obj,) = check_json(run)
    assert obj["first_snapshot"] is True
    assert snapshot_count(run) == 1


def test_endless_500_exits_4_and_stores_nothing(run, api, record):
    check_json(run)
    changed = record(NCT)
    changed["protocolSection"]["statusModule"]["overallStatus"] = "RECRUITING"
    api.put(changed)
    api.fail_next("500", times=50)
    code, out, err = run("check", NCT)
    assert code == 4 and "500" in err and out == ""
    assert snapshot_count(run) == 1
    api.clear_faults()
    (obj,) = check_json(run)  # recovered: the real change, once, and no false one
    assert [c["field"] for c in obj["changes"]] == ["overall_status"]


def test_truncated_body_every_time_exits_4_and_stores_nothing(run, api):
    api.fail_next("truncate", times=50)
    code, _, err = run("check", NCT)
    assert code == 4
    api.clear_faults()
    assert snapshot_count(run) == 0


def test_alias_is_followed_and_remembered(run, api):
    api.alias("NCT00000042", NCT)
    (obj,) = check_json(run, "NCT00000042")
    assert obj["nct_id"] == NCT and obj["requested_id"] == "NCT00000042"
    code, out, _ = run("history", "NCT00000042", "--json")
    assert json.loads(out)["nct_id"] == NCT


def test_several_trials_are_fetched_in_one_batch(run, api, record):
    api.put(record("NCT03934567"))
    api.reset_requests()
    objs = check_json(run, NCT, "NCT03934567")
    assert [o["nct_id"] for o in objs] == [NCT, "NCT03934567"]
    v2 = [r for r in api.requests if r[1].startswith("/api/v2/")]
    assert len(v2) == 1 and "filter.ids" in v2[0][2]
    # Plus one version-list request for each trial stored for the first time (issue 15).
    assert sorted(p for _, p, _ in api.requests if p.startswith("/api/int/")) == [
        f"/api/int/studies/{n}/history" for n in sorted([NCT, "NCT03934567"])]


def test_history_lists_every_snapshot_oldest_first(run, api, record):
    check_json(run)
    for status in ("RECRUITING", "COMPLETED"):
        changed = record(NCT)
        changed["protocolSection"]["statusModule"]["overallStatus"] = status
        api.put(changed)
        check_json(run)
    code, out, _ = run("history", NCT, "--json")
    hist = json.loads(out)
    assert [s["overall_status"] for s in hist["snapshots"]] == ["ACTIVE_NOT_RECRUITING", "RECRUITING", "COMPLETED"]
    assert all(len(s["content_hash"]) == 64 for s in hist["snapshots"])
    assert [(c["old"], c["new"]) for c in hist["changes"] if c["field"] == "overall_status"] == [
        ("ACTIVE_NOT_RECRUITING", "RECRUITING"), ("RECRUITING", "COMPLETED")]
    code, out, _ = run("history", NCT)
    assert code == 0 and "3 stored versions" in out


def test_history_of_an_unchecked_trial_says_what_to_do(run):
    code, _, err = run("history", "NCT00000102")
    assert code == 3 and "trialwatch check NCT00000102" in err


def test_record_that_disappears_is_an_event(run, api):
    check_json(run)
    api.remove(NCT)
    code, _, err = run("check", NCT)
    assert code == 3
    code, out, _ = run("history", NCT, "--json")
    assert [c["field"] for c in json.loads(out)["changes"]] == ["record_removed"]


def test_watch_adds_a_trial_the_poll_then_follows_and_unwatch_takes_it_off(run, api, record, db_url):
    from trialwatch.config import loads
    from trialwatch.store import open_store

    api.put(record("NCT03934567"))
    code, out, err = run("watch", "nct3934567")
    assert code == 0, err
    assert "NCT03934567: watched (Active, not recruiting)" in out
    code, out, _ = run("watch")
    listed = dict(line.split("  ", 1) for line in out.splitlines())
    assert listed["NCT03934567"] == "trialwatch watch" and listed[NCT] == "config.yaml trials"
    store = open_store(db_url)
    config = loads(f"database: {db_url}\ntrials: [{NCT}]\n")
    assert "NCT03934567" in store.watched_ids(config)
    code, out, _ = run("unwatch", "NCT03934567", NCT)
    assert "NCT03934567: no longer watched" in out
    assert f"{NCT}: no longer on the `trialwatch watch` list, but still followed: config.yaml trials" in out
    assert "NCT03934567" not in store.watched_ids(config)
    store.close()


def test_watch_of_an_unknown_trial_exits_3_and_watches_nothing(run):
    code, out, err = run("watch", "NCT09999999")
    assert code == 3 and "NCT09999999" in err
    code, out, _ = run("watch")
    assert "NCT09999999" not in out

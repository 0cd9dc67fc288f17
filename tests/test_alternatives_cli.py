"""`trialwatch alternatives`, end to end: the real CLI against the local stand-in serving the
SYNTHETIC scene of tests/alt_records.py (a closed ALS cell-therapy trial, recruiting ALS
cell-therapy trials near and far, an ALS drug trial, a cell-therapy trial of another disease,
expanded-access records). The stand-in counts every request."""

from __future__ import annotations

import json

import pytest


from alt_records import CLOSED, OWN_EA, ROCHESTER, nct, scene, trial
from standin import StandIn
from conftest import cli_against

HER = f"{ROCHESTER[0]},{ROCHESTER[1]}"


@pytest.fixture
def records():
    return scene()


@pytest.fixture
def api(records):
    with StandIn(list(records.values())) as server:
        yield server


@pytest.fixture
def run(api, db_url, tmp_path, capsys, monkeypatch):
    return cli_against(api.base_url, db_url, tmp_path, capsys, monkeypatch)


def alternatives_json(run, *args):
    code, out, err = run("alternatives", *args, "--json")
    assert code == 0, err
    return json.loads(out)


def listed(obj, key="alternatives"):
    return [a["nct_id"] for a in obj[key]]


def test_near_her_lists_closest_intervention_first_then_nearest_site_and_never_the_unrelated(run, records, api):
    obj = alternatives_json(run, CLOSED, "--near", HER)
    r = records
    # Same condition and same kind of product (BIOLOGICAL mesenchymal cells), nearest site first;
    # then the GENETIC product, although its site is the nearest of all; Boston is beyond 500 mi.
    assert listed(obj) == [nct(r["near_cell"]), nct(r["chicago_cell"]), nct(r["nearest_genetic"])]
    absent = {nct(r[k]) for k in ("closed", "far_cell", "als_drug", "other_disease_cell", "completed_cell")}
    assert not absent & set(listed(obj))
    first = obj["alternatives"][0]
    assert first["why"] == "same condition: amyotrophic lateral sclerosis; intervention: mesenchymal stem cells"
    assert first["status"] == "RECRUITING" and first["phases"] == ["PHASE2"]
    assert first["url"] == f"https://clinicaltrials.gov/study/{first['nct_id']}"
    assert first["nearest_site"]["facility"] == f"Synthetic site 1 of {first['nct_id']}"
    assert 110 < first["nearest_site"]["distance_km"] < 140  # Rochester -> Minneapolis
    # Chicago's nearest open site is its not-yet-recruiting one, not Boston's
    assert obj["alternatives"][1]["nearest_site"]["distance_km"] < 500
    assert obj["near"]["within_miles"] == 500
    assert "not a recommendation" in obj["notice"] and "eligibility" in obj["notice"]


def test_expanded_access_lists_the_trials_own_record_first_and_only_available_matching_ones(run, records):
    obj = alternatives_json(run, CLOSED, "--near", HER)
    assert listed(obj, "expanded_access") == [OWN_EA, nct(records["other_ea"])]
    own = obj["expanded_access"][0]
    assert own["status"] == "AVAILABLE" and own["why"].startswith("this trial's own expanded-access record")
    assert set(obj["expanded_access"][0]) == {"nct_id", "title", "status", "why", "url"}


def test_without_a_place_far_trials_are_listed_too_and_no_site_is_named(run, records):
    obj = alternatives_json(run, CLOSED)
    r = records
    assert listed(obj) == [nct(r["near_cell"]), nct(r["chicago_cell"]), nct(r["far_cell"]), nct(r["nearest_genetic"])]
    assert all(a["nearest_site"] is None for a in obj["alternatives"])
    assert "near" not in obj


def test_requests_per_call_one_fetch_when_not_stored_none_when_stored(run, api):
    obj = alternatives_json(run, CLOSED, "--near", HER)
    paths = [p for _, p, _ in api.requests]
    assert paths == [f"/api/v2/studies/{CLOSED}", "/api/v2/studies", "/api/v2/studies"]
    assert obj["requests"] == 3
    search, ea = api.requests[1][2], api.requests[2][2]
    assert search["query.cond"] == '"amyotrophic lateral sclerosis"'
    assert search["query.intr"] == '"mesenchymal stromal cells" OR "mesenchymal stem cells"'
    assert search["filter.overallStatus"] == "RECRUITING,NOT_YET_RECRUITING,ENROLLING_BY_INVITATION"
    assert search["filter.geo"] == "distance(44.0200,-92.4700,500mi)"
    assert ea["filter.overallStatus"] == "AVAILABLE" and ea["filter.advanced"] == "AREA[StudyType]EXPANDED_ACCESS"
    assert "filter.geo" not in ea

    code, _, err = run("check", CLOSED)
    assert code == 0, err
    api.reset_requests()
    obj = alternatives_json(run, CLOSED, "--near", HER, "--within", "100")
    assert [p for _, p, _ in api.requests] == ["/api/v2/studies", "/api/v2/studies"]  # the stored record
    assert obj["requests"] == 2
    assert listed(obj) == ["NCT90000001", "NCT90000003"]  # Chicago is beyond 100 mi


def test_limit_cuts_the_alternatives_not_the_expanded_access(run):
    obj = alternatives_json(run, CLOSED, "--limit", "1")
    assert listed(obj) == ["NCT90000001"]
    assert listed(obj, "expanded_access") == [OWN_EA, "NCT90000008"]


def test_no_similar_intervention_recruiting_falls_back_to_the_condition_and_says_so(run, api):
    api.put(trial("NCT90000020", status="TERMINATED", intervention="Zorbatinib", itype="DRUG"))
    obj = alternatives_json(run, "NCT90000020", "--near", HER)
    assert obj["condition_only"] is True
    ids = listed(obj)
    # Every recruiting ALS trial within 500 mi, nearest open site first; other diseases absent.
    assert ids == ["NCT90000003", "NCT90000001", "NCT90000005", "NCT90000002"]
    assert all(a["why"].startswith("same condition: amyotrophic lateral sclerosis; no recruiting trial of a "
                                   "similar intervention") for a in obj["alternatives"])
    assert obj["requests"] == 4  # the record, the intervention search, the condition search, expanded access
    assert obj["expanded_access"] == []


def test_terminal_output_names_the_notice_each_link_and_the_nearest_site(run):
    code, out, err = run("alternatives", CLOSED, "--near", HER)
    assert code == 0, err
    assert "not a recommendation and not an eligibility judgement" in out
    for n in ("NCT90000001", "NCT90000002", "NCT90000003", OWN_EA, "NCT90000008"):
        assert f"https://clinicaltrials.gov/study/{n}" in out
    assert "nearest open site: Synthetic site 1 of NCT90000001" in out
    assert "NCT90000005" not in out and "NCT90000006" not in out and "NCT90000004" not in out


def test_a_failed_search_lists_nothing_and_exits_4(run, api):
    code, _, err = run("check", CLOSED)
    assert code == 0, err
    assert alternatives_json(run, CLOSED)["alternatives"]  # it worked a moment ago
    api.fail_next("503", times=2)  # the first search, and its one retry
    code, out, err = run("alternatives", CLOSED, "--json")
    assert code == 4
    assert out == ""  # no list at all, and never the earlier one
    assert "ClinicalTrials.gov" in err and "hint:" in err


def test_usage_errors_cost_no_request(run, api):
    code, _, err = run("alternatives", CLOSED, "--within", "50")
    assert code == 2 and "--near" in err
    code, _, err = run("alternatives", "NCT12X")
    assert code == 2
    assert api.requests == []


def test_an_unknown_trial_exits_3(run):
    code, out, err = run("alternatives", "NCT00000042")
    assert code == 3 and out == ""


def test_a_trial_whose_record_names_no_condition_says_so_and_searches_nothing(run, api):
    r = trial("NCT90000021", status="TERMINATED")
    r["protocolSection"]["conditionsModule"] = {}
    api.put(r)
    code, out, err = run("alternatives", "NCT90000021")
    assert code == 0, err
    assert "names no condition" in out
    assert [p for _, p, _ in api.requests] == ["/api/v2/studies/NCT90000021"]

"""The alternatives library: the query built from a record, the ranking, the expanded-access
list, failures and the per-poll cache. HTTP is faked with httpx.MockTransport; the records are
the SYNTHETIC ones of tests/alt_records.py."""

from __future__ import annotations

import httpx
import pytest

from trialwatch import alternatives as alt
from trialwatch.ctgov import Client
from trialwatch.errors import CtgovError
from trialwatch.places import Place

from alt_records import CLOSED, OWN_EA, ROCHESTER, nct, scene, trial

HER = Place(*ROCHESTER, "Rochester, MN")


class FakeApi:
    """Answers /studies searches from a function of the query; records every request."""

    def __init__(self, answer):
        self.answer = answer
        self.requests: list[dict[str, str]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        params = dict(request.url.params)
        self.requests.append(params)
        got = self.answer(params)
        if isinstance(got, httpx.Response):
            return got
        return httpx.Response(200, json={"studies": got})


def client(api: FakeApi) -> Client:
    return Client("https://ctgov.test/api/v2", transport=httpx.MockTransport(api), requests_per_minute=1e6,
                  max_retries=0, sleep=lambda s: None)


def by_kind(alternatives, expanded, *, empty_intr=False):
    """An answer: recruiting search -> ``alternatives``, expanded access -> ``expanded``."""
    def answer(p):
        if p.get("filter.overallStatus") == "AVAILABLE":
            return expanded
        if empty_intr and "query.intr" in p:
            return []
        return alternatives
    return answer


# -- the query ----------------------------------------------------------------------------------

@pytest.mark.parametrize("name, phrase", [
    ("Autologous adipose-derived mesenchymal stromal cells", "mesenchymal stromal cells"),
    ("Allogeneic bone marrow-derived mesenchymal stem cells", "mesenchymal stem cells"),
    ("Intrathecal injection of MSC-NTF cells (NurOwn®)", "msc ntf cells"),
    ("Tofersen 100 mg", "tofersen"),
])
def test_key_phrase_drops_source_route_and_dose(name, phrase):
    assert alt.key_phrase(name) == phrase


def test_the_query_of_the_closed_trial_names_its_condition_and_both_spellings_of_its_cells():
    q = alt.build_query(scene()["closed"])
    assert q.conditions == ["amyotrophic lateral sclerosis"]
    assert q.phrases == ["mesenchymal stromal cells", "mesenchymal stem cells"]
    assert q.types == {"BIOLOGICAL"}
    assert q.cond_param() == '"amyotrophic lateral sclerosis"'
    assert q.intr_param() == '"mesenchymal stromal cells" OR "mesenchymal stem cells"'


def test_placebo_and_behavioural_arms_are_not_the_intervention_searched_for():
    r = trial("NCT90000030", intervention="Riluzole", itype="DRUG")
    r["protocolSection"]["armsInterventionsModule"]["interventions"] += [
        {"type": "OTHER", "name": "Placebo"}, {"type": "BEHAVIORAL", "name": "Exercise counselling"}]
    assert alt.build_query(r).phrases == ["riluzole"]


# -- ranking, expanded access, requests ------------------------------------------------------------

def test_find_ranks_by_closeness_then_distance_and_never_lists_the_trial_itself():
    s = scene()
    candidates = [s["far_cell"], s["nearest_genetic"], s["closed"], s["chicago_cell"], s["near_cell"],
                  s["completed_cell"]]
    api = FakeApi(by_kind(candidates, []))
    res = alt.find(client(api), s["closed"], HER, within_miles=2000)
    assert [a.nct_id for a in res.alternatives] == [
        nct(s["near_cell"]), nct(s["chicago_cell"]), nct(s["far_cell"]), nct(s["nearest_genetic"])]
    assert res.alternatives[0].closeness == 5 and res.alternatives[-1].closeness == 4
    assert res.requests == 2 and len(api.requests) == 2
    assert api.requests[0]["filter.geo"] == "distance(44.0200,-92.4700,2000mi)"


def test_the_trials_own_expanded_access_record_comes_first_even_when_the_search_misses_it():
    s = scene()
    api = FakeApi(by_kind([s["near_cell"]], [s["other_ea"], s["ea_gone"]]))
    res = alt.find(client(api), s["closed"])
    # NCT99268603 was not in the answer: listed from the trial's own record, status as it states it
    # ... and one no longer available is not listed even when an answer carries it
    assert [e.nct_id for e in res.expanded_access] == [OWN_EA, nct(s["other_ea"])]
    assert res.expanded_access[0].title is None and res.expanded_access[0].status == "AVAILABLE"
    assert "as its record names it" in res.expanded_access[0].why


def test_a_failed_expanded_access_search_fails_the_whole_answer():
    s = scene()

    def answer(p):
        if p.get("filter.overallStatus") == "AVAILABLE":
            return httpx.Response(503, text="Service Unavailable")
        return [s["near_cell"]]

    with pytest.raises(CtgovError):
        alt.find(client(FakeApi(answer)), s["closed"])


def test_condition_only_fallback_costs_one_more_request_and_says_why():
    s = scene()
    api = FakeApi(by_kind([s["als_drug"]], [], empty_intr=True))
    res = alt.find(client(api), s["closed"])
    assert res.condition_only is True
    assert [p.get("query.intr") for p in api.requests[:2]] == [res.query.intr_param(), None]
    assert res.requests == 3
    assert "no recruiting trial of a similar intervention" in res.alternatives[0].why


def test_a_record_without_a_condition_asks_nothing():
    r = trial(CLOSED)
    r["protocolSection"]["conditionsModule"] = {}
    api = FakeApi(by_kind([], []))
    res = alt.find(client(api), r)
    assert res.alternatives == [] and api.requests == []

"""The local API stand-in (tests/standin.py), the real Client against it with faults injected,
and the synthetic NCT03268603 fixtures. Everything runs on 127.0.0.1; nothing waits for real."""

from __future__ import annotations

import copy
import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from trialwatch.ctgov import Client
from trialwatch.errors import CtgovBadResponse, CtgovUnavailable, TrialNotFound
from trialwatch.record import is_study, nct_of

sys.path.insert(0, str(Path(__file__).resolve().parent))
from corpus import RECORDS, record_path  # noqa: E402
from standin import StandIn, load_records  # noqa: E402

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def load(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


def variant(nct: str, *, status="RECRUITING", condition="Amyotrophic Lateral Sclerosis", updated="2025-10-22",
            sponsor="Mayo Clinic", intervention="Autologous adipose-derived mesenchymal stromal cells",
            title="A synthetic trial", geo=(44.02163, -92.4699)) -> dict:
    """A copy of the synthetic fixture with the fields the stand-in filters on replaced."""
    r = copy.deepcopy(BASE_RECORD)
    ps = r["protocolSection"]
    ps["identificationModule"].update(nctId=nct, briefTitle=title, officialTitle=title)
    ps["statusModule"]["overallStatus"] = status
    ps["statusModule"]["lastUpdatePostDateStruct"]["date"] = updated
    ps["conditionsModule"] = {"conditions": [condition]}
    r.get("derivedSection", {}).pop("conditionBrowseModule", None)  # its MeSH terms name the old condition
    ps["sponsorCollaboratorsModule"]["leadSponsor"]["name"] = sponsor
    ps["armsInterventionsModule"]["interventions"][0]["name"] = intervention
    ps["contactsLocationsModule"]["locations"][0]["geoPoint"] = {"lat": geo[0], "lon": geo[1]}
    return r


BASE_RECORD = load("NCT03268603.json")


def ids_of(body: dict) -> list[str]:
    return [nct_of(s) for s in body["studies"]]


@pytest.fixture
def api():
    with StandIn([BASE_RECORD]) as server:
        yield server


@pytest.fixture
def http(api):
    with httpx.Client(base_url=api.base_url + "/") as c:
        yield c


class Recorder:
    """An injected sleep that records and returns at once."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


@pytest.fixture
def client(api):
    sleep = Recorder()
    with Client(api.base_url, requests_per_minute=6000, max_retries=5, sleep=sleep, timeout_s=5) as c:
        c.slept = sleep.calls
        yield c


# -- the endpoints ----------------------------------------------------------------------------------

def test_version_reports_the_data_timestamp_which_can_move(api, http):
    assert http.get("version").json() == {"apiVersion": "2.0.5", "dataTimestamp": "2026-11-25T09:00:05"}
    api.set_data_timestamp("2026-11-26T09:00:07")
    assert http.get("version").json()["dataTimestamp"] == "2026-11-26T09:00:07"


@pytest.mark.parametrize("spelled", ["NCT03268603", "nct03268603", "NCT3268603", "Nct0003268603"])
def test_a_study_is_found_case_insensitively_with_optional_leading_zeros(http, spelled):
    r = http.get(f"studies/{spelled}")
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    assert r.json() == BASE_RECORD


def test_an_unknown_or_removed_study_is_a_plain_text_404(api, http):
    r = http.get("studies/NCT00000001")
    assert (r.status_code, r.headers["content-type"], r.text) == (404, "text/plain", "Study NCT00000001 not found")
    api.remove("nct3268603")
    assert http.get("studies/NCT03268603").status_code == 404


def test_a_malformed_id_is_a_plain_text_400(http):
    r = http.get("studies/NCT12X")
    assert r.status_code == 400 and "nctId" in r.text


def test_put_replaces_a_study(api, http):
    api.put(variant("NCT03268603", status="COMPLETED"))
    assert http.get("studies/NCT03268603").json()["protocolSection"]["statusModule"]["overallStatus"] == "COMPLETED"


def test_an_alias_answers_301_and_filter_ids_finds_it(api, http):
    api.alias("NCT01111111", "NCT03268603")
    r = http.get("studies/nct1111111")
    assert r.status_code == 301 and r.headers["location"] == "/api/v2/studies/NCT03268603"
    assert ids_of(http.get("studies", params={"filter.ids": "NCT01111111"}).json()) == ["NCT03268603"]


def test_nct_id_aliases_inside_a_record_are_aliases_too(api, http):
    rec = variant("NCT00000006")
    rec["protocolSection"]["identificationModule"]["nctIdAliases"] = ["NCT00000007"]
    api.put(rec)
    assert http.get("studies/NCT00000007").headers["location"] == "/api/v2/studies/NCT00000006"


@pytest.mark.parametrize("sep", [",", "|"])
def test_filter_ids_takes_commas_or_pipes_and_skips_unknown_ids(api, http, sep):
    api.put(variant("NCT00000002"))
    body = http.get("studies", params={"filter.ids": sep.join(["NCT00000002", "NCT09999999", "nct3268603"]),
                                       "pageSize": "10"}).json()
    assert sorted(ids_of(body)) == ["NCT00000002", "NCT03268603"] and "nextPageToken" not in body


def test_unknown_parameters_are_refused_like_the_real_api(http):
    r = http.get("studies", params={"filter.phase": "PHASE2"})
    assert (r.status_code, r.headers["content-type"], r.text) == \
        (400, "text/plain", "`filter.phase` is unknown parameter")


def test_real_parameters_the_stand_in_lacks_are_refused_not_ignored(http):
    r = http.get("studies", params={"query.locn": "Rochester"})
    assert r.status_code == 400 and "not implemented" in r.text


def test_pages_follow_opaque_tokens_bound_to_the_same_parameters(api, http):
    for n in range(1, 26):
        api.put(variant(f"NCT{n:08d}"))
    seen, token, pages = [], None, 0
    while True:
        params = {"query.cond": "sclerosis", "pageSize": "10", **({"pageToken": token} if token else {})}
        body = http.get("studies", params=params).json()
        seen += ids_of(body)
        pages += 1
        token = body.get("nextPageToken")
        if not token:
            break
        assert not token.isdigit()
    assert pages == 3 and len(seen) == len(set(seen)) == 26
    first = http.get("studies", params={"query.cond": "sclerosis", "pageSize": "10"}).json()
    r = http.get("studies", params={"query.cond": "lymphoma", "pageToken": first["nextPageToken"]})
    assert r.status_code == 400 and "pageToken" in r.text


@pytest.mark.parametrize("size, expected", [(None, 10), ("0", 10), ("3", 3), ("5000", 30)])
def test_page_size_follows_the_api_rules(api, http, size, expected):
    for n in range(1, 30):
        api.put(variant(f"NCT{n:08d}"))
    params = {"pageSize": size} if size else {}
    assert len(http.get("studies", params=params).json()["studies"]) == expected


def test_an_empty_last_page_can_be_asked_for():
    with StandIn([variant("NCT00000001"), variant("NCT00000002")], empty_last_page=True) as server:
        with httpx.Client(base_url=server.base_url + "/") as h:
            first = h.get("studies", params={"pageSize": "2"}).json()
            last = h.get("studies", params={"pageSize": "2", "pageToken": first["nextPageToken"]}).json()
    assert len(first["studies"]) == 2 and last == {"studies": []}


def test_count_total_is_on_the_first_page_only(api, http):
    api.put(variant("NCT00000002"))
    first = http.get("studies", params={"pageSize": "1", "countTotal": "true"}).json()
    assert first["totalCount"] == 2
    second = http.get("studies", params={"pageSize": "1", "countTotal": "true", "pageToken": first["nextPageToken"]})
    assert "totalCount" not in second.json()


def test_queries_and_filters_narrow_the_listing(api, http):
    api.put(variant("NCT00000002", condition="Follicular Lymphoma", sponsor="Xynomic", intervention="Abexinostat",
                    status="COMPLETED", updated="2024-01-10", title="Oral abexinostat", geo=(39.9, 116.4)))
    q = lambda **p: sorted(ids_of(http.get("studies", params=p).json()))  # noqa: E731
    assert q(**{"query.cond": "lateral SCLEROSIS"}) == ["NCT03268603"]
    assert q(**{"query.intr": "abexinostat"}) == ["NCT00000002"]
    assert q(**{"query.spons": "mayo"}) == ["NCT03268603"]
    assert q(**{"query.term": "oral abexinostat"}) == ["NCT00000002"]
    assert q(**{"filter.overallStatus": "COMPLETED|WITHDRAWN"}) == ["NCT00000002"]
    assert q(**{"filter.advanced": "AREA[LastUpdatePostDate]RANGE[2025-01-01,MAX]"}) == ["NCT03268603"]
    assert q(**{"filter.advanced": "AREA[LastUpdatePostDate]RANGE[2024-01-10,MAX]"}) == ["NCT00000002", "NCT03268603"]
    assert q(**{"filter.geo": "distance(44.0,-92.5,50mi)"}) == ["NCT03268603"]
    assert http.get("studies", params={"filter.overallStatus": "OPEN"}).status_code == 400
    assert http.get("studies", params={"filter.advanced": "AREA[Phase]PHASE2"}).status_code == 400


def test_essie_subset_or_phrases_mesh_terms_and_study_type(api, http):
    api.put(variant("NCT00000002", intervention="Allogeneic mesenchymal stem cells"))
    api.put(variant("NCT00000003", intervention="Mesenchymal stromal cell secretome", condition="Motor Neuron Disease"))
    ea = variant("NCT00000004", status="AVAILABLE")
    ea["protocolSection"]["designModule"]["studyType"] = "EXPANDED_ACCESS"
    api.put(ea)
    q = lambda **p: sorted(ids_of(http.get("studies", params=p).json()))  # noqa: E731
    # a quoted phrase matches whole words, a plural "s" aside; OR joins alternatives
    assert q(**{"query.intr": '"mesenchymal stem cells"'}) == ["NCT00000002"]
    assert q(**{"query.intr": '"mesenchymal stromal cells"'}) == ["NCT00000003", "NCT00000004", "NCT03268603"]
    assert q(**{"query.intr": '"stem mesenchymal"'}) == []  # words in another order
    assert q(**{"query.intr": '"mesenchymal stem cells" OR secretome'}) == ["NCT00000002", "NCT00000003"]
    # query.cond reads the MeSH condition terms as well (the fixture's derivedSection)
    api.put(variant("NCT00000005", condition="ALS, motor neuron"))
    assert q(**{"query.cond": '"amyotrophic lateral sclerosis"'}) == ["NCT00000002", "NCT00000004", "NCT03268603"]
    assert q(**{"filter.advanced": "AREA[StudyType]EXPANDED_ACCESS"}) == ["NCT00000004"]
    assert q(**{"filter.advanced": "AREA[StudyType]EXPANDED_ACCESS AND "
                                   "AREA[LastUpdatePostDate]RANGE[2026-01-01,MAX]"}) == []
    assert http.get("studies", params={"filter.advanced": "AREA[StudyType]EXPANDED_ACCESS OR AREA[Phase]PHASE2"}
                    ).status_code == 400


def test_requests_are_recorded_and_can_be_reset(api, http):
    http.get("studies", params={"filter.ids": "NCT03268603"})
    assert api.requests == [("GET", "/api/v2/studies", {"filter.ids": "NCT03268603"})]
    assert api.bytes_sent > 1000
    api.reset_requests()
    assert api.requests == [] and api.bytes_sent == 0


# -- faults, as raw HTTP ---------------------------------------------------------------------------------

def test_faults_run_in_order_then_normal_service_resumes(api, http):
    api.fail_next("429", retry_after=3)
    api.fail_next("503", times=2)
    api.fail_next("html")
    api.fail_next("plain404")
    r = http.get("version")
    assert (r.status_code, r.headers["retry-after"]) == (429, "3")
    assert [http.get("version").status_code for _ in range(2)] == [503, 503]
    r = http.get("version")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    r = http.get("version")
    assert (r.status_code, r.text) == (404, "Not Found")
    assert http.get("version").json()["apiVersion"] == "2.0.5"


def test_drop_closes_the_connection_without_a_response(api, http):
    api.fail_next("drop")
    with pytest.raises(httpx.RemoteProtocolError):
        http.get("version")
    assert http.get("version").status_code == 200


def test_truncate_sends_half_of_the_real_body(api, http):
    whole = http.get("studies/NCT03268603").content
    api.fail_next("truncate")
    r = http.get("studies/NCT03268603")
    assert r.status_code == 200 and r.content == whole[: len(whole) // 2]
    with pytest.raises(ValueError):
        r.json()


def test_queued_faults_can_be_cleared(api, http):
    api.fail_next("500", times=5)
    api.clear_faults()
    assert http.get("version").status_code == 200


def test_an_unknown_fault_kind_is_refused(api):
    with pytest.raises(ValueError):
        api.fail_next("teapot")


# -- the real Client against the stand-in --------------------------------------------------------------

def test_client_rides_out_429_503_drop_and_truncate(api, client):
    api.fail_next("429", retry_after=2)
    api.fail_next("503", times=2)
    api.fail_next("drop")
    api.fail_next("truncate")
    api.fail_next("html")
    client.max_retries = 6  # six faults queued: the seventh attempt is the first to get through
    got = client.study("nct3268603")
    assert got.record == BASE_RECORD and not got.redirected
    assert client.stats.requests == 7 and client.stats.retries == 6
    assert client.slept[0] == 2.0  # Retry-After honoured
    assert len(api.requests) == 7


def test_client_gives_up_on_endless_500_after_max_retries(api, client):
    api.fail_next("500", times=100)
    with pytest.raises(CtgovUnavailable, match="HTTP 500"):
        client.version()
    assert len(api.requests) == client.max_retries + 1


def test_client_gives_up_on_endless_garbage_with_a_bad_response(api, client):
    api.fail_next("truncate", times=100)
    with pytest.raises(CtgovBadResponse, match="not JSON"):
        client.study("NCT03268603")
    assert len(api.requests) == client.max_retries + 1


def test_client_follows_an_alias_and_sees_a_404(api, client):
    api.alias("NCT01111111", "NCT03268603")
    got = client.study("NCT01111111")
    assert (got.nct_id, got.requested_id, got.redirected) == ("NCT03268603", "NCT01111111", True)
    with pytest.raises(TrialNotFound, match="Study NCT00000009 not found"):
        client.study("NCT00000009")
    api.fail_next("plain404")
    with pytest.raises(TrialNotFound):
        client.study("NCT03268603")


def test_client_batches_updated_since_and_search(api, client):
    for n in range(1, 31):
        api.put(variant(f"NCT{n:08d}", updated="2025-11-01" if n % 2 else "2024-05-05"))
    api.reset_requests()
    ids = [f"NCT{n:08d}" for n in range(1, 31)]
    client.batch_size = 12
    fresh = [nct_of(s) for s in client.studies(ids, updated_since=dt.date(2025, 1, 1))]
    assert fresh == [f"NCT{n:08d}" for n in range(1, 31, 2)]
    assert len(api.requests) == 3  # 12 + 12 + 6 ids, one page each
    result = client.search({"query.cond": "lateral sclerosis", "filter.overallStatus": "RECRUITING"}, max_results=20)
    assert len(result.records) == 20 and result.capped and result.total_count == 30


def test_client_fetches_2500_studies_in_batches():
    records = [variant(f"NCT{n:08d}") for n in range(1, 2501)]
    with StandIn(records) as big:
        with Client(big.base_url, requests_per_minute=6000, sleep=lambda s: None, batch_size=100) as c:
            got = [nct_of(s) for s in c.studies(nct_of(r) for r in records)]
        assert got == [nct_of(r) for r in records]
        assert len(big.requests) == 25


# -- the script and the fixtures ------------------------------------------------------------------------

@pytest.mark.corpus
def test_load_records_reads_every_real_record():
    records = load_records(RECORDS)
    assert len(records) >= 19 and all(is_study(r) for r in records)


def test_the_synthetic_fixture_says_what_it_is_and_links_its_expanded_access_record():
    trial, ea = load("NCT03268603.json"), load("NCT03268603_EA.json")
    assert is_study(trial) and is_study(ea)
    ps, ea_ps = trial["protocolSection"], ea["protocolSection"]
    assert ps["identificationModule"]["orgStudyIdInfo"]["id"].startswith("SYNTHETIC")
    assert ps["descriptionModule"]["briefSummary"].startswith("SYNTHETIC FIXTURE derived from NCT03934567")
    assert (ps["statusModule"]["overallStatus"], ps["designModule"]["phases"],
            ps["sponsorCollaboratorsModule"]["leadSponsor"]["name"],
            ps["designModule"]["enrollmentInfo"]["count"], ps["statusModule"]["completionDateStruct"]) == \
        ("ACTIVE_NOT_RECRUITING", ["PHASE2"], "Mayo Clinic", 75, {"date": "2026-12", "type": "ESTIMATED"})
    assert ps["contactsLocationsModule"]["locations"][0]["city"] == "Rochester"
    link = ps["statusModule"]["expandedAccessInfo"]
    assert link["hasExpandedAccess"] is True and link["nctId"] == nct_of(ea)
    assert (ea_ps["designModule"]["studyType"], ea_ps["statusModule"]["overallStatus"]) == \
        ("EXPANDED_ACCESS", "AVAILABLE")
    assert "SYNTHETIC FIXTURE" in ea_ps["descriptionModule"]["briefSummary"]


def test_the_fixture_files_are_exactly_what_the_generator_writes(tmp_path):
    source = record_path("NCT03934567")  # skipped without a corpus
    subprocess.run([sys.executable, str(FIXTURES / "make_nct03268603.py"), "--source", str(source),
                    "--out", str(tmp_path)],
                   check=True, capture_output=True)
    for name in ("NCT03268603.json", "NCT03268603_EA.json"):
        assert (tmp_path / name).read_bytes() == (FIXTURES / name).read_bytes(), name

"""The ClinicalTrials.gov client, against scripted httpx transports: no network, no real waiting
(the sleep and the clock are fakes that record what the client asked for)."""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
from urllib.parse import parse_qsl

import httpx
import pytest

import trialwatch
from trialwatch.config import CtgovConfig
from trialwatch.ctgov import Client, Fetched, SearchResult, Version, parse_retry_after
from trialwatch.errors import CtgovBadResponse, CtgovUnavailable, InvalidNctId, TrialNotFound

BASE = "https://ctgov.test/api/v2"


def study(nct: str, status: str = "RECRUITING", **ident) -> dict:
    return {"protocolSection": {"identificationModule": {"nctId": nct, **ident},
                                "statusModule": {"overallStatus": status}},
            "hasResults": False}


def ok(body) -> callable:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return lambda req: httpx.Response(200, content=data, headers={"Content-Type": "application/json"})


def answer(code: int, text: str = "", headers: dict | None = None, ctype: str = "text/plain") -> callable:
    return lambda req: httpx.Response(code, content=text.encode(), headers={"Content-Type": ctype, **(headers or {})})


def fail(exc: Exception) -> callable:
    def raise_(req):
        raise exc
    return raise_


class Script:
    """A transport handler answering with ``steps`` in order; the last step repeats forever."""

    def __init__(self, *steps, time=None) -> None:
        self.steps = list(steps)
        self.requests: list[httpx.Request] = []
        self.started_at: list[float] = []
        self.time = time

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.time:
            self.started_at.append(self.time.now)
        step = self.steps.pop(0) if len(self.steps) > 1 else self.steps[0]
        return step(request)

    def params(self, i: int = -1) -> dict[str, str]:
        return dict(parse_qsl(self.requests[i].url.query.decode()))


class FakeTime:
    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def fake_time() -> FakeTime:
    return FakeTime()


@pytest.fixture
def client_for(fake_time):
    made = []

    def make(script: Script, **kw) -> Client:
        script.time = fake_time
        kw.setdefault("requests_per_minute", 60)
        kw.setdefault("jitter", lambda: 1.0)  # the top of the jitter range: waits are exact
        c = Client(BASE, transport=httpx.MockTransport(script), sleep=fake_time.sleep, clock=fake_time.clock, **kw)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


# -- NCT numbers -------------------------------------------------------------------------------

@pytest.mark.parametrize("bad", ["NCT123X", "", "12345678", "NCT000000000", "NCT123456789"])
def test_an_invalid_nct_id_raises_before_any_request(client_for, bad):
    script = Script(ok(study("NCT03268603")))
    client = client_for(script)
    with pytest.raises(InvalidNctId):
        client.study(bad)
    with pytest.raises(InvalidNctId):
        client.studies(["NCT03268603", bad])  # raised at the call; the valid id is not fetched either
    assert script.requests == [] and client.stats.requests == 0


def test_ids_are_normalised_before_the_request(client_for):
    script = Script(ok(study("NCT03268603")))
    got = client_for(script).study(" nct3268603 ")
    assert script.requests[0].url.path == "/api/v2/studies/NCT03268603"
    assert got == Fetched(nct_id="NCT03268603", requested_id="NCT03268603", record=study("NCT03268603"),
                          redirected=False)


# -- retries -------------------------------------------------------------------------------------

def test_429_waits_for_retry_after_then_succeeds(client_for, fake_time):
    script = Script(answer(429, "Too Many Requests", {"Retry-After": "7"}), ok(study("NCT03268603")))
    client = client_for(script)
    assert client.study("NCT03268603").nct_id == "NCT03268603"
    assert fake_time.sleeps == [7.0]
    assert (client.stats.requests, client.stats.retries) == (2, 1)


def test_retry_after_as_http_date_is_measured_from_the_response_date(client_for, fake_time):
    headers = {"Date": "Tue, 25 Nov 2025 10:00:00 GMT", "Retry-After": "Tue, 25 Nov 2025 10:00:42 GMT"}
    client = client_for(Script(answer(503, "busy", headers), ok(study("NCT03268603"))))
    client.study("NCT03268603")
    assert fake_time.sleeps == [42.0]


def test_an_excessive_retry_after_is_capped(client_for, fake_time):
    client = client_for(Script(answer(429, "", {"Retry-After": "86400"}), ok(study("NCT03268603"))))
    client.study("NCT03268603")
    assert fake_time.sleeps == [300.0]


@pytest.mark.parametrize("value, expected", [
    ("12", 12.0), ("0", 0.0), ("-5", 0.0), ("1.5", 1.5), ("999999", 300.0),
    ("soon", None), ("", None), (None, None), ("nan", None),
])
def test_parse_retry_after(value, expected):
    assert parse_retry_after(value) == expected


def test_503_twice_then_success_backs_off_exponentially(client_for, fake_time):
    script = Script(answer(503, "Service Unavailable"), answer(503, "Service Unavailable"),
                    ok(study("NCT03268603")))
    client = client_for(script)
    assert client.study("NCT03268603").record == study("NCT03268603")
    assert fake_time.sleeps == [1.0, 2.0]
    assert len(script.requests) == 3 and client.stats.retries == 2


def test_backoff_jitter_stays_within_half_to_full_step(client_for, fake_time):
    client = client_for(Script(answer(500), answer(500), answer(500), ok(study("NCT03268603"))),
                        jitter=lambda: 0.0, requests_per_minute=600)  # throttle gap 0.1 s < every wait
    client.study("NCT03268603")
    assert fake_time.sleeps == [0.5, 1.0, 2.0]


@pytest.mark.parametrize("exc", [
    httpx.RemoteProtocolError("Server disconnected without sending a response."),
    httpx.ConnectError("[Errno 111] Connection refused"),
    httpx.ReadTimeout("timed out"),
])
def test_a_dropped_or_failed_connection_is_retried(client_for, exc):
    script = Script(fail(exc), ok(study("NCT03268603")))
    client = client_for(script)
    assert client.study("NCT03268603").nct_id == "NCT03268603"
    assert len(script.requests) == 2 and client.stats.retries == 1


def test_a_truncated_json_body_is_retried_and_never_returned(client_for):
    whole = json.dumps(study("NCT03268603")).encode()
    script = Script(ok(whole[: len(whole) // 2]), ok(whole))
    assert client_for(script).study("NCT03268603").record == study("NCT03268603")
    assert len(script.requests) == 2


def test_an_html_page_with_status_200_is_retried(client_for):
    html = answer(200, "<html><body>We'll be right back</body></html>", ctype="text/html")
    script = Script(html, ok(study("NCT03268603")))
    assert client_for(script).study("NCT03268603").nct_id == "NCT03268603"
    assert len(script.requests) == 2


def test_garbage_on_every_attempt_is_a_bad_response_naming_what_came(client_for):
    html = answer(200, "<html><body>We'll be right back</body></html>", ctype="text/html")
    script = Script(html)
    with pytest.raises(CtgovBadResponse, match="HTML.*We'll be right back"):
        client_for(script, max_retries=2).study("NCT03268603")
    assert len(script.requests) == 3


def test_endless_500_gives_up_after_exactly_max_retries_plus_one_attempts(client_for, fake_time):
    script = Script(answer(500, "Internal Server Error"))
    client = client_for(script, max_retries=4)
    with pytest.raises(CtgovUnavailable) as e:
        client.study("NCT03268603")
    assert len(script.requests) == 5 and client.stats.requests == 5 and client.stats.retries == 4
    assert len(fake_time.sleeps) == 4  # no pointless wait after the last attempt
    assert "HTTP 500" in str(e.value) and "Internal Server Error" in str(e.value)
    assert "5 time(s)" in str(e.value)


def test_max_retries_zero_means_one_attempt(client_for):
    script = Script(fail(httpx.ConnectError("refused")))
    with pytest.raises(CtgovUnavailable, match="connection error"):
        client_for(script, max_retries=0).version()
    assert len(script.requests) == 1


def test_each_retry_is_logged_as_a_warning(client_for, caplog):
    client = client_for(Script(answer(503, "Service Unavailable"), ok(study("NCT03268603"))), max_retries=3)
    with caplog.at_level(logging.WARNING, logger="trialwatch.ctgov"):
        client.study("NCT03268603")
    [rec] = [r for r in caplog.records if r.name == "trialwatch.ctgov"]
    assert rec.levelno == logging.WARNING
    assert "HTTP 503" in rec.getMessage() and "1.0 s" in rec.getMessage() and "attempt 2/4" in rec.getMessage()


# -- answers that are not retried -------------------------------------------------------------------

def test_404_is_trial_not_found_with_the_id_and_the_body(client_for):
    script = Script(answer(404, "Study NCT03268603 not found"))
    with pytest.raises(TrialNotFound) as e:
        client_for(script).study("nct3268603")
    assert "NCT03268603" in str(e.value) and "not found" in str(e.value)
    assert len(script.requests) == 1


def test_400_shows_the_plain_text_reason_without_retrying(client_for):
    script = Script(answer(400, "`filter.phase` is unknown parameter"))
    with pytest.raises(CtgovBadResponse, match="`filter.phase` is unknown parameter"):
        client_for(script).search({"filter.phase": "PHASE2"}, max_results=10)
    assert len(script.requests) == 1


def test_json_that_is_not_a_study_is_refused_at_once(client_for):
    script = Script(ok({"error": "nope"}))
    with pytest.raises(CtgovBadResponse, match="not a study"):
        client_for(script).study("NCT03268603")
    assert len(script.requests) == 1


def test_a_different_trial_without_a_redirect_is_refused(client_for):
    with pytest.raises(CtgovBadResponse, match="NCT03268603.*NCT01111111"):
        client_for(Script(ok(study("NCT01111111")))).study("NCT03268603")


def test_a_301_alias_is_followed_and_keyed_by_the_canonical_id(client_for):
    script = Script(answer(301, "", {"Location": "/api/v2/studies/NCT03268603"}),
                    ok(study("NCT03268603", nctIdAliases=["NCT01111111"])))
    client = client_for(script)
    got = client.study("NCT1111111")
    assert (got.nct_id, got.requested_id, got.redirected) == ("NCT03268603", "NCT01111111", True)
    assert [str(r.url) for r in script.requests] == [f"{BASE}/studies/NCT01111111", f"{BASE}/studies/NCT03268603"]
    assert client.stats.requests == 2 and client.stats.retries == 0


def test_a_redirect_loop_ends(client_for):
    script = Script(answer(301, "", {"Location": "/api/v2/studies/NCT01111111"}))
    with pytest.raises(CtgovBadResponse, match="redirects"):
        client_for(script).study("NCT01111111")
    assert len(script.requests) == 6


# -- batches and pages --------------------------------------------------------------------------------

def _echo_ids(req: httpx.Request) -> httpx.Response:
    ids = dict(parse_qsl(req.url.query.decode()))["filter.ids"].split(",")
    return ok({"studies": [study(i) for i in ids]})(req)


def test_studies_fetches_250_ids_in_3_batches_of_at_most_100(client_for):
    ids = [f"NCT{n:08d}" for n in range(1, 251)]
    script = Script(_echo_ids)
    client = client_for(script, batch_size=100)
    got = [s["protocolSection"]["identificationModule"]["nctId"] for s in client.studies(ids)]
    assert got == ids
    sent = [script.params(i) for i in range(len(script.requests))]
    assert [len(p["filter.ids"].split(",")) for p in sent] == [100, 100, 50]
    assert [p["pageSize"] for p in sent] == ["100", "100", "50"]
    assert all(r.url.path == "/api/v2/studies" for r in script.requests)


def test_studies_sends_each_id_once_however_it_was_spelled(client_for):
    script = Script(_echo_ids)
    list(client_for(script).studies(["nct3268603", "NCT03268603", "NCT0003268603"]))
    assert script.params()["filter.ids"] == "NCT03268603"


def test_studies_follows_page_tokens_with_the_same_params_through_an_empty_last_page(client_for):
    script = Script(ok({"studies": [study("NCT00000001"), study("NCT00000002")], "nextPageToken": "NF0g5JaGmg"}),
                    ok({"studies": [study("NCT00000003")], "nextPageToken": "NF0g5JCG"}),
                    ok({"studies": []}))
    got = list(client_for(script).studies(["NCT00000001", "NCT00000002", "NCT00000003"],
                                          updated_since=dt.date(2025, 1, 5)))
    assert [s["protocolSection"]["identificationModule"]["nctId"] for s in got] == \
        ["NCT00000001", "NCT00000002", "NCT00000003"]
    first, second, third = (script.params(i) for i in range(3))
    assert "pageToken" not in first
    assert second == dict(first, pageToken="NF0g5JaGmg") and third == dict(first, pageToken="NF0g5JCG")


def test_updated_since_becomes_a_last_update_post_date_range(client_for):
    script = Script(ok({"studies": []}))
    list(client_for(script).studies(["NCT03268603"], updated_since=dt.date(2025, 1, 5)))
    assert script.params()["filter.advanced"] == "AREA[LastUpdatePostDate]RANGE[2025-01-05,MAX]"


def test_a_page_with_a_non_study_is_refused_whole(client_for):
    script = Script(ok({"studies": [study("NCT00000001"), {"protocolSection": {}}]}))
    got = []
    with pytest.raises(CtgovBadResponse, match="element 1"):
        for s in client_for(script).studies(["NCT00000001", "NCT00000002"]):
            got.append(s)
    assert got == []  # not even the good first element of the page


@pytest.mark.parametrize("body", [{"data": []}, [], {"studies": {"a": 1}}, {"studies": [], "nextPageToken": 5}])
def test_a_list_body_of_the_wrong_shape_is_a_bad_response(client_for, body):
    with pytest.raises(CtgovBadResponse):
        list(client_for(Script(ok(body))).studies(["NCT00000001"]))


def test_a_page_token_seen_twice_stops_instead_of_paging_forever(client_for):
    script = Script(ok({"studies": [], "nextPageToken": "same"}))
    with pytest.raises(CtgovBadResponse, match="twice"):
        list(client_for(script).studies(["NCT00000001"]))
    assert len(script.requests) == 2


# -- search ------------------------------------------------------------------------------------------

def _pages_of(n_total: int, size: int):
    def handler(req: httpx.Request) -> httpx.Response:
        p = dict(parse_qsl(req.url.query.decode()))
        start = int(p.get("pageToken", "0"))
        chunk = [study(f"NCT{i:08d}") for i in range(start + 1, min(start + size, n_total) + 1)]
        body = {"studies": chunk}
        if start + size < n_total:
            body["nextPageToken"] = str(start + size)
        if "pageToken" not in p:
            body["totalCount"] = n_total
        return ok(body)(req)
    return handler


def test_search_stops_at_max_results_and_says_it_was_capped(client_for, caplog):
    script = Script(_pages_of(n_total=10, size=3))
    with caplog.at_level(logging.WARNING, logger="trialwatch.ctgov"):
        result = client_for(script).search({"query.cond": "ALS", "filter.overallStatus": "RECRUITING"},
                                           max_results=5)
    assert [s["protocolSection"]["identificationModule"]["nctId"] for s in result.records] == \
        [f"NCT{i:08d}" for i in range(1, 6)]
    assert (result.capped, result.total_seen, result.total_count) == (True, 6, 10)
    assert len(script.requests) == 2
    assert script.params(0)["pageSize"] == "5" and script.params(0)["query.cond"] == "ALS"
    assert any("10" in r.getMessage() and "5" in r.getMessage() for r in caplog.records
               if r.name == "trialwatch.ctgov" and r.levelno == logging.WARNING)


def test_search_that_fits_is_not_capped(client_for, caplog):
    script = Script(_pages_of(n_total=5, size=2))
    with caplog.at_level(logging.WARNING, logger="trialwatch.ctgov"):
        result = client_for(script).search({"query.intr": "stem cells"}, max_results=5)
    assert result == SearchResult(records=result.records, total_seen=5, capped=False, total_count=5)
    assert len(result.records) == 5 and not caplog.records


def test_search_page_size_is_at_most_1000(client_for):
    script = Script(ok({"studies": []}))
    client_for(script).search({"query.term": "x"}, max_results=5000)
    assert script.params()["pageSize"] == "1000"


# -- throttle, headers, version, config --------------------------------------------------------------

def test_request_starts_are_spaced_by_the_rate_limit(client_for, fake_time):
    script = Script(ok({"apiVersion": "2.0.5", "dataTimestamp": "2026-11-25T09:00:05"}))
    client = client_for(script, requests_per_minute=30)  # one start every 2 s
    for _ in range(4):
        client.version()
    assert [t - script.started_at[0] for t in script.started_at] == [0.0, 2.0, 4.0, 6.0]


def test_the_throttle_does_not_wait_when_requests_are_already_far_apart(client_for, fake_time):
    script = Script(ok({"apiVersion": "2.0.5", "dataTimestamp": "2026-11-25T09:00:05"}))
    client = client_for(script, requests_per_minute=30)
    client.version()
    fake_time.now += 10
    client.version()
    assert fake_time.sleeps == []


def test_user_agent_names_trialwatch_and_its_version(client_for):
    script = Script(ok({"apiVersion": "2.0.5", "dataTimestamp": "2026-11-25T09:00:05"}))
    client_for(script).version()
    ua = script.requests[0].headers["User-Agent"]
    assert ua.startswith(f"trialwatch/{trialwatch.__version__} ")
    assert re.search(r"python-httpx/\d", ua) and "https://" in ua


def test_version(client_for):
    script = Script(ok({"apiVersion": "2.0.5", "dataTimestamp": "2026-11-25T09:00:05"}))
    assert client_for(script).version() == Version("2.0.5", "2026-11-25T09:00:05")
    assert script.requests[0].url.path == "/api/v2/version"


def test_a_version_without_a_timestamp_is_a_bad_response(client_for):
    with pytest.raises(CtgovBadResponse, match="version"):
        client_for(Script(ok({"apiVersion": "2.0.5"}))).version()


def test_a_version_whose_timestamp_is_not_a_date_is_a_bad_response(client_for):
    with pytest.raises(CtgovBadResponse, match="not a date"):
        client_for(Script(ok({"apiVersion": "2.0.5", "dataTimestamp": "soon"}))).version()


def test_bytes_received_are_counted(client_for):
    body = json.dumps({"apiVersion": "2.0.5", "dataTimestamp": "2026-11-25T09:00:05"}).encode()
    client = client_for(Script(ok(body)))
    client.version()
    assert client.stats.bytes_received == len(body)


def test_from_config_takes_every_setting():
    cfg = CtgovConfig(base_url="http://localhost:1/api/v2/", requests_per_minute=120, timeout_s=7,
                      max_retries=2, batch_size=40)
    with Client.from_config(cfg, transport=httpx.MockTransport(lambda r: httpx.Response(500))) as c:
        assert (c.base_url, c.min_interval_s, c.timeout_s, c.max_retries, c.batch_size) == \
            ("http://localhost:1/api/v2", 0.5, 7, 2, 40)


# -- what retrying cannot fix (faked with respx) ----------------------------------------------------

def _dns_failure(request):
    # As httpx raises it: ConnectError caused by the resolver's socket.gaierror.
    import socket

    raise httpx.ConnectError("[Errno -2] Name or service not known", request=request) \
        from socket.gaierror(-2, "Name or service not known")


def _refused(request):
    raise httpx.ConnectError("[Errno 111] Connection refused", request=request) \
        from ConnectionRefusedError(111, "Connection refused")


@pytest.fixture
def respx_client(fake_time):
    import respx

    with respx.mock(base_url=BASE, assert_all_called=False) as router:
        client = Client(BASE, requests_per_minute=60, max_retries=5, jitter=lambda: 1.0,
                        sleep=fake_time.sleep, clock=fake_time.clock)
        yield router, client
        client.close()


@pytest.mark.parametrize("failure", [_dns_failure, _refused], ids=["dns", "refused"])
def test_a_host_that_cannot_be_reached_fails_after_one_quick_retry(respx_client, fake_time, failure):
    from trialwatch.errors import CtgovUnreachable

    router, client = respx_client
    route = router.get("/studies/NCT03268603").mock(side_effect=failure)
    with pytest.raises(CtgovUnreachable) as e:
        client.study("NCT03268603")
    assert route.call_count == 2  # one quick retry, not max_retries + 1
    assert fake_time.sleeps == [0.5]  # the one quick retry: no backoff, no throttle slot spent
    assert "ctgov.base_url" in e.value.hint and e.value.exit_code == 4


def test_a_refused_connection_after_the_server_answered_keeps_its_retries(respx_client, fake_time):
    from trialwatch.errors import CtgovUnreachable

    router, client = respx_client
    router.get("/version").respond(json={"apiVersion": "2.0.3", "dataTimestamp": "2026-11-25T09:00:05"})
    route = router.get("/studies/NCT03268603").mock(side_effect=_refused)
    client.version()
    with pytest.raises(CtgovUnavailable) as e:
        client.study("NCT03268603")
    assert not isinstance(e.value, CtgovUnreachable)
    assert route.call_count == 6  # max_retries + 1: a server that answered may be restarting


def test_timeouts_and_5xx_keep_their_bounded_retries(respx_client):
    router, client = respx_client
    timeouts = router.get("/studies/NCT03268603").mock(side_effect=httpx.ConnectTimeout("timed out"))
    with pytest.raises(CtgovUnavailable):
        client.study("NCT03268603")
    assert timeouts.call_count == 6
    errors_5xx = router.get("/studies/NCT03934567").respond(503, text="busy")
    with pytest.raises(CtgovUnavailable):
        client.study("NCT03934567")
    assert errors_5xx.call_count == 6


def test_a_quick_retry_that_succeeds_returns_the_record(respx_client):
    router, client = respx_client
    route = router.get("/studies/NCT03268603").mock(side_effect=[_dns_failure, httpx.Response(200, json=study("NCT03268603"))])
    assert client.study("NCT03268603").nct_id == "NCT03268603"
    assert route.call_count == 2


# -- bounded bodies ----------------------------------------------------------------------------

def streamed(chunks_sent: list, chunk: bytes, n: int, headers: dict | None = None) -> callable:
    """A 200 whose body is ``n`` chunks produced on demand, counting how many were produced."""
    def body():
        for _ in range(n):
            chunks_sent.append(1)
            yield chunk

    return lambda req: httpx.Response(200, content=body(), headers={"Content-Type": "application/json",
                                                                     **(headers or {})})


def test_an_oversized_record_is_refused_while_streaming_and_not_retried(client_for):
    # A 400 MB body used to be read whole (896 MB RSS). Now reading stops at the cap.
    sent: list = []
    script = Script(streamed(sent, b" " * 1024 * 1024, 400))
    c = client_for(script, max_retries=3)
    with pytest.raises(CtgovBadResponse, match=r"too large.*cap is 16 MB, ctgov.max_record_mb"):
        c.study("NCT03268603")
    assert len(script.requests) == 1          # the same request would get the same body
    assert 16 <= len(sent) <= 18              # stopped just past the cap, not at 400 MB


def test_an_announced_oversized_body_is_refused_before_it_is_read(client_for):
    sent: list = []
    script = Script(streamed(sent, b"{}", 1, headers={"Content-Length": str(500 * 1024 * 1024)}))
    with pytest.raises(CtgovBadResponse, match="too large"):
        client_for(script).study("NCT03268603")
    assert sent == []


def test_a_listing_page_has_its_own_larger_cap(client_for):
    page = {"studies": [study(f"NCT0000000{i}", briefTitle="x" * 3000) for i in range(1, 6)]}
    size = len(json.dumps(page))
    # Larger than a record may be, smaller than a page may be: read.
    c = client_for(Script(ok(page)), max_record_bytes=size // 2, max_page_bytes=size * 2)
    assert len(list(c.studies([f"NCT0000000{i}" for i in range(1, 6)]))) == 5
    c = client_for(Script(ok(page)), max_record_bytes=size * 2, max_page_bytes=size // 2)
    with pytest.raises(CtgovBadResponse, match="ctgov.max_page_mb"):
        list(c.studies([f"NCT0000000{i}" for i in range(1, 6)]))


def test_the_caps_are_config_keys_with_defaults():
    from trialwatch.config import loads

    assert (CtgovConfig().max_record_mb, CtgovConfig().max_page_mb) == (16, 64)
    cfg = loads("ctgov: {max_record_mb: 2, max_page_mb: 8}\n").ctgov
    c = Client.from_config(cfg)
    assert (c.max_record_bytes, c.max_page_bytes) == (2 * 1024 * 1024, 8 * 1024 * 1024)
    c.close()

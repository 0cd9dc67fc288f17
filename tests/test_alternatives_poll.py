"""Alternatives per poll (issue 14, item 2): a poll that sees a followed trial stop recruiting
searches the registry ONCE for it, stores the answer, and every digest (and the trial page)
ranks it by the reader's own place without another request. Against the local stand-in serving
the SYNTHETIC scene of tests/alt_records.py, with a real SMTP server."""

from __future__ import annotations

import copy
from email import message_from_bytes, policy

import pytest

from smtp_server import SmtpServer, smtp_server  # noqa: F401 - the fixture
from trialwatch import config as cfgmod
from trialwatch import ctgov, notify, poller
from trialwatch.errors import CtgovError

from alt_records import BOSTON, CHICAGO, CLOSED, OWN_EA, ROCHESTER, scene
from corpus import set_updated
from standin import StandIn

DAY1 = "2026-11-24T09:00:05"
DAY2 = "2026-11-25T09:00:05"
SECRET = "s3cret-key-for-tests-only-0123456789"
HONEST = "a starting point from the registry's search, not a recommendation or an eligibility judgement"
PEOPLE = [("ana@example.org", ROCHESTER), ("bo@example.org", BOSTON), ("cy@example.org", CHICAGO)]


@pytest.fixture(autouse=True)
def _env(monkeypatch):
    monkeypatch.setenv("TRIALWATCH_SECRET_KEY", SECRET)
    monkeypatch.setattr(ctgov, "BACKOFF_BASE_S", 0.01)


def with_status(r: dict, status: str, updated: str) -> dict:
    r = copy.deepcopy(r)
    r["protocolSection"]["statusModule"]["overallStatus"] = status
    return set_updated(r, updated)


@pytest.fixture
def records():
    s = scene()
    s["closed"] = with_status(s["closed"], "RECRUITING", "2026-11-20")  # it still recruits on day 1
    return s


@pytest.fixture
def api(records):
    with StandIn(list(records.values()), data_timestamp=DAY1) as server:
        yield server


def make_config(api, db_url, server: SmtpServer, people, per_poll: int = 20, store=None) -> cfgmod.Config:
    subs = "".join(f"  - {{email: {who}, trials: [{CLOSED}], location: '{lat},{lon}'}}\n"
                   for who, (lat, lon) in people)
    return cfgmod.loads(
        f"database: {db_url}\nctgov:\n  base_url: {api.base_url}\n  requests_per_minute: 60000\n"
        f"  max_retries: 1\n  timeout_s: 5\nhistory:\n  per_poll: 0\nalternatives:\n  per_poll: {per_poll}\n"
        f"trials: [{CLOSED}]\n"
        "email:\n  from: 'trialwatch <alerts@tw.example.org>'\n  public_url: https://tw.example.org\n"
        f"  transport: smtp\n  smtp: {server.config_yaml()}\nsubscribers:\n{subs}")


def started(store, config: cfgmod.Config) -> cfgmod.Config:
    notify.sync_subscribers(store, config)  # as every command does at start-up
    return config


def searches(api) -> list[dict]:
    """The registry searches made (a search names a condition; fetches by id do not)."""
    return [q for _, path, q in api.requests if path.endswith("/studies") and "query.cond" in q]


def close_it(api, records, status: str = "ACTIVE_NOT_RECRUITING") -> None:
    api.put(with_status(records["closed"], status, "2026-11-25"))
    api.set_data_timestamp(DAY2)
    api.reset_requests()


def digests(server: SmtpServer) -> dict[str, tuple[str, str]]:
    out = {}
    for m in server.messages:
        msg = message_from_bytes(m.data, policy=policy.default)
        out[m.recipients[0]] = (msg.get_body(("plain",)).get_content(), msg.get_body(("html",)).get_content())
    return out


def listed(text: str) -> list[str]:
    """NCT numbers of the alternatives block's entries, in order (text part)."""
    block = text.split("* Recruiting alternatives", 1)[1].split("Expanded access:", 1)[0]
    return [line.strip()[2:13] for line in block.splitlines() if line.strip().startswith("- NCT")]


def test_a_trial_that_stops_recruiting_gets_alternatives_near_her_and_the_expanded_access_route(
        store, db_url, api, records, smtp_server):
    config = started(store, make_config(api, db_url, smtp_server, PEOPLE[:1]))
    assert poller.poll(store, config).complete
    assert smtp_server.messages == []  # a first snapshot is no news
    close_it(api, records)

    report = poller.poll(store, config)

    assert report.complete and report.alternatives_searched == 1 and report.alternatives_failed == 0
    text, html = digests(smtp_server)["ana@example.org"]
    # Rochester: the same product nearest first; the GENETIC one (on her doorstep) after the
    # closer matches; Boston's far trial not near her; the drug and the other disease never.
    assert listed(text) == ["NCT90000001", "NCT90000002", "NCT90000003"]
    assert "Nearest open site: Synthetic site 1 of NCT90000001" in text
    for absent in ("NCT90000004", "NCT90000005", "NCT90000006", "NCT90000007"):
        assert absent not in text and absent not in html
    # The expanded-access route: the trial's own record first, then the AVAILABLE one.
    ea = text.split("Expanded access:", 1)[1]
    assert ea.index(OWN_EA) < ea.index("NCT90000008") and "NCT90000010" not in ea
    assert HONEST in text.lower() and HONEST in html.replace("&#39;", "'").lower()
    assert "Why listed: same condition: amyotrophic lateral sclerosis" in text
    assert 'href="https://clinicaltrials.gov/study/NCT90000001"' in html
    assert f"data of {DAY2[:10]}" in text


@pytest.mark.parametrize("people", [PEOPLE[:1], PEOPLE], ids=["1 subscriber", "3 subscribers"])
def test_the_registry_is_searched_once_per_closed_trial_not_once_per_subscriber(
        store, db_url, api, records, smtp_server, people):
    config = started(store, make_config(api, db_url, smtp_server, people))
    poller.poll(store, config)
    close_it(api, records)

    report = poller.poll(store, config)

    # One search for similar recruiting trials and one for expanded access, whoever reads them.
    assert len(searches(api)) == 2
    assert report.emails_sent == len(people)
    got = digests(smtp_server)
    # Each digest is ranked by her own place, from the same stored answer.
    assert listed(got["ana@example.org"][0])[0] == "NCT90000001"      # Minneapolis, near Rochester
    if len(people) == 3:
        # Boston: two same-product trials with a site there (ties by NCT number); nothing in the Midwest.
        assert listed(got["bo@example.org"][0]) == ["NCT90000002", "NCT90000004"]
        assert listed(got["cy@example.org"][0])[0] == "NCT90000002"   # its Chicago site


def test_a_failed_search_lists_nothing_and_warns_never_an_older_list(store, db_url, api, records, smtp_server,
                                                                    monkeypatch):
    config = started(store, make_config(api, db_url, smtp_server, PEOPLE[:1]))
    poller.poll(store, config)
    # An earlier answer is stored (as a previous poll's backfill would have)...
    close_it(api, records, "SUSPENDED")
    poller.poll(store, config)
    assert store.alternatives_of([CLOSED])
    smtp_server.messages.clear()
    # ...then the trial changes again, and the registry's search fails.
    api.put(with_status(records["closed"], "TERMINATED", "2026-11-26"))
    api.set_data_timestamp("2026-11-26T09:00:05")
    api.reset_requests()
    fetched = {"n": 0}
    # The fetch of the record succeeds; every search after it fails (and its retry).
    real_search = ctgov.Client.search

    def failing_search(self, params, **kw):  # noqa: ANN001, ANN003
        if "query.cond" in params:
            fetched["n"] += 1
            raise CtgovError("ClinicalTrials.gov answers 503 (service unavailable)")
        return real_search(self, params, **kw)

    monkeypatch.setattr(ctgov.Client, "search", failing_search)
    report = poller.poll(store, config)

    assert fetched["n"] == 1 and report.alternatives_failed == 1 and report.complete
    assert store.alternatives_of([CLOSED]) == {}  # the older list is gone
    text, html = digests(smtp_server)["ana@example.org"]
    assert "WARNING: the registry's search for alternatives" in text and "<strong>Warning:</strong>" in html
    assert listed(text) == [] and "NCT90000001" not in text and "NCT90000001" not in html
    assert OWN_EA in text  # the trial's own expanded-access link needs no search


def test_non_recruiting_trials_are_filled_in_at_most_per_poll_a_poll(store, db_url, api, records, smtp_server):
    config = started(store, make_config(api, db_url, smtp_server, PEOPLE[:1], per_poll=0))
    api.put(with_status(records["closed"], "COMPLETED", "2026-11-20"))
    poller.poll(store, config)
    assert searches(api) == [] and store.alternatives_of([CLOSED]) == {}
    config = started(store, make_config(api, db_url, smtp_server, PEOPLE[:1], per_poll=1))
    api.reset_requests()
    poller.poll(store, config, force=True)
    assert len(searches(api)) == 2 and CLOSED in store.alternatives_of([CLOSED])
    # The same data date: found already, not searched again.
    api.reset_requests()
    poller.poll(store, config, force=True)
    assert searches(api) == []


# -- the trial page ------------------------------------------------------------------------------

def page(store, config, query: str = "") -> str:
    from starlette.testclient import TestClient

    from trialwatch.web import create_app

    with TestClient(create_app(config, store), base_url="https://trials.example.org") as c:
        got = c.get(f"/trials/{CLOSED}{query}")
    assert got.status_code == 200
    return got.text


def section(html: str) -> str:
    import html as htmlmod

    return htmlmod.unescape(html.split('id="alternatives-h"', 1)[1].split("</section>", 1)[0])


def test_the_trial_page_ranks_the_stored_alternatives_by_near_without_asking_the_registry(
        store, db_url, api, records, smtp_server):
    config = started(store, make_config(api, db_url, smtp_server, PEOPLE[:1]))
    poller.poll(store, config)
    assert 'id="alternatives-h"' not in page(store, config)  # it recruits: no section
    close_it(api, records)
    poller.poll(store, config)
    api.reset_requests()

    near_boston = section(page(store, config, f"?near={BOSTON[0]},{BOSTON[1]}"))
    near_her = section(page(store, config, f"?near={ROCHESTER[0]},{ROCHESTER[1]}"))
    anywhere = section(page(store, config))

    assert api.requests == []  # ranked from the stored answer
    ids = lambda html: [m for m in __import__("re").findall(r'study/(NCT\d{8})"', html)]  # noqa: E731
    # Expanded access first (its own record, then the AVAILABLE one), then the trials.
    assert ids(near_her) == [OWN_EA, "NCT90000008", "NCT90000001", "NCT90000002", "NCT90000003"]
    assert ids(near_boston)[2:] == ["NCT90000002", "NCT90000004"]
    assert "Nearest open site: Synthetic site 1 of NCT90000001" in near_her
    # Without a place: up to 5, closest match first, no site named, and a way to give one.
    assert len(ids(anywhere)) == 2 + 4 and "Nearest open site" not in anywhere
    assert 'name="near"' in anywhere
    for html in (near_her, anywhere):
        assert HONEST in html.lower() and f"data of {DAY2[:10]}" in html
        assert "NCT90000005" not in html and "NCT90000006" not in html


def test_the_trial_page_says_the_search_is_unavailable_and_an_unknown_place_is_named(
        store, db_url, api, records, smtp_server):
    config = started(store, make_config(api, db_url, smtp_server, PEOPLE[:1], per_poll=0))
    api.put(with_status(records["closed"], "COMPLETED", "2026-11-20"))
    poller.poll(store, config)  # per_poll 0: nothing searched

    html = section(page(store, config, "?near=Nowhereville%20Zzz"))

    assert "Unavailable:" in html and "NCT90000001" not in html
    assert OWN_EA in html  # named by the trial's own record
    assert 'role="alert"' in html and "not ranked by distance" in html


# -- her place -----------------------------------------------------------------------------------

def test_her_place_is_her_config_location_else_the_one_she_saved_on_the_web_resolved_once_per_send(
        monkeypatch):
    from trialwatch import places
    from trialwatch.notify.digest import her_place
    from trialwatch.store import Subscriber

    config = cfgmod.loads(f"subscribers:\n  - {{email: ana@example.org, trials: [{CLOSED}], "
                          f"location: '{ROCHESTER[0]},{ROCHESTER[1]}'}}\n")
    calls = []
    real = places.resolve
    monkeypatch.setattr(places, "resolve", lambda q: calls.append(q) or real(q))
    cache: dict = {}
    ana = Subscriber(address="ana@example.org", location=f"{BOSTON[0]},{BOSTON[1]}")
    web = [Subscriber(address=f"web{i}@example.org", location=f"{BOSTON[0]},{BOSTON[1]}") for i in range(3)]
    nowhere = Subscriber(address="zed@example.org", location=None)

    assert her_place(config, ana, cache).lat == ROCHESTER[0]          # the config's location wins
    assert {her_place(config, w, cache).lat for w in web} == {BOSTON[0]}
    assert her_place(config, nowhere, cache) is None
    assert calls.count(f"{BOSTON[0]},{BOSTON[1]}") == 1               # one resolution per send

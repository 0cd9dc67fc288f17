"""The web app, route by route, through Starlette's TestClient (no network, a SQLite file).

Read as a specification: what a physician sees, what a stranger cannot do.
"""

from __future__ import annotations

import datetime as dt
import re
import time
import xml.etree.ElementTree as ET
from contextlib import contextmanager

import pytest
from sqlalchemy import func, select
from starlette.testclient import TestClient

from trialwatch import config as configmod
from trialwatch import tokens
from trialwatch.diff import Change
from trialwatch.store import Message, OutboxRow, Poll, RateEvent, Subscriber
from trialwatch.web import SECURITY_HEADERS, create_app
from conftest import web_config

SECRET = "test-secret-key-0123456789"
WATCHED = "NCT02552212"
OTHER = "NCT03934567"
ATOM = "{http://www.w3.org/2005/Atom}"


@pytest.fixture
def cfg(tmp_path, monkeypatch):
    return web_config(tmp_path, monkeypatch, f"""
database: sqlite:///{tmp_path / 'tw.db'}
trials: [{WATCHED}, {OTHER}]
searches:
  - name: epilepsy
    condition: epilepsy
""")


@pytest.fixture
def confirmations(monkeypatch):
    """Every confirmation the app asks notify to send, as (email, url); the real sender runs too."""
    from trialwatch import notify

    sent: list[tuple[str, str]] = []
    real = notify.send_confirmation

    def spy(store, config, subscriber, confirm_url, **kw):  # noqa: ANN001
        sent.append((subscriber.email, confirm_url))
        return real(store, config, subscriber, confirm_url, **kw)

    monkeypatch.setattr(notify, "send_confirmation", spy)
    return sent


def csrf(client: TestClient, path: str = "/subscribe") -> str:
    page = client.get(path)
    m = re.search(r'name="csrf_token" value="([0-9a-f]+)"', page.text)
    assert m, f"no CSRF field on {path}"
    return m.group(1)


def subscribe(client: TestClient, email: str = "dr.ada@example.org", trials=(WATCHED,), searches=(),
              severity: str = "important", digest: str = "each_poll", token: str | None = None):
    data = {"csrf_token": token or csrf(client), "email": email, "trials": list(trials),
            "searches": list(searches), "min_severity": severity, "digest": digest}
    return client.post("/subscribe", data=data)


def subscriber(db, email: str = "dr.ada@example.org") -> Subscriber | None:
    with db.session() as s:
        sub = s.scalars(select(Subscriber).where(Subscriber.email == email)).first()
        if sub is not None:
            _ = sub.subscriptions
        return sub


def token_of(url: str) -> str:
    return url.split("token=", 1)[1]


def confirm(client: TestClient, url: str):
    return client.post("/confirm", data={"csrf_token": csrf(client), "token": token_of(url)})


@contextmanager
def clock_at(seconds_ago: float):
    """Sign tokens as if it were ``seconds_ago`` in the past."""
    real = time.time
    time.time = lambda: real() - seconds_ago
    try:
        yield
    finally:
        time.time = real


# -- status pages -----------------------------------------------------------------------------

def test_index_lists_watched_trials_with_status_last_change_last_check_and_last_poll(client, db, record):
    db.record_fetch(record(WATCHED))
    with db.session() as s, s.begin():
        s.add(Poll(started_at=dt.datetime(2026, 1, 2, 10, 30), finished_at=dt.datetime(2026, 1, 2, 10, 31),
                   complete=False, error="ClinicalTrials.gov answered 503"))
    page = client.get("/")
    assert page.status_code == 200
    assert WATCHED in page.text and OTHER in page.text
    assert "Completed" in page.text                      # status in words, not COMPLETED
    assert "Not fetched yet" in page.text               # OTHER was never polled
    assert "error" in page.text and "answered 503" in page.text
    assert "epilepsy" in page.text and "/searches/epilepsy/feed.atom" in page.text
    assert 'href="/subscribe"' in page.text


def test_index_flags_a_trial_the_last_finished_poll_did_not_reach(client, db, record):
    db.record_fetch(record(WATCHED), fetched_at=dt.datetime(2026, 1, 1, 10, 31))
    with db.session() as s, s.begin():
        s.add(Poll(started_at=dt.datetime(2026, 1, 2, 10, 30), finished_at=None))
    assert "not reached by the last check" not in client.get("/").text      # still running
    with db.session() as s, s.begin():
        s.scalars(select(Poll)).one().finished_at = dt.datetime(2026, 1, 2, 10, 35)
    assert "not reached by the last check" in client.get("/").text


def test_fresh_install_index_says_nothing_was_checked_yet(client):
    page = client.get("/")
    assert page.status_code == 200
    assert "has not been checked yet" in page.text


def test_trial_page_shows_what_a_referral_needs_and_changes_most_recent_first(client, db, record):
    first = record(WATCHED)
    db.record_fetch(first, fetched_at=dt.datetime(2026, 1, 1, 10, 0))
    db.add_events(WATCHED, [Change("overall_status", "Overall status", "RECRUITING", "SUSPENDED", "critical")],
                  at=dt.datetime(2026, 1, 5, 10, 0))
    db.add_events(WATCHED, [Change("site_status", "Site Mayo Clinic", "RECRUITING", "COMPLETED", "important")],
                  at=dt.datetime(2026, 2, 5, 10, 0))
    page = client.get(f"/trials/{WATCHED}")
    assert page.status_code == 200
    text = page.text
    for expected in ("Completed", "Eligibility", "Contacts", "All sites (", "Status history",
                     f"https://clinicaltrials.gov/study/{WATCHED}", "Inclusion"):
        assert expected in text, expected
    assert text.index("Site Mayo Clinic") < text.index("Overall status")   # newest first
    assert "Suspended" in text                                             # enum in words


def test_status_history_draws_one_entry_per_status_run(client, db, record):
    r = record(WATCHED)
    r["protocolSection"]["statusModule"]["overallStatus"] = "RECRUITING"
    db.record_fetch(r, fetched_at=dt.datetime(2026, 1, 1))
    r["protocolSection"]["statusModule"]["overallStatus"] = "SUSPENDED"
    r["protocolSection"]["statusModule"]["whyStopped"] = "Drug supply interrupted"
    db.record_fetch(r, fetched_at=dt.datetime(2026, 3, 1))
    page = client.get(f"/trials/{WATCHED}").text
    timeline = page[page.index('class="status-timeline"'):]
    timeline = timeline[:timeline.index("</ol>")]
    assert timeline.index("Suspended") < timeline.index("Recruiting")
    assert "2026-01-01 to 2026-03-01" in timeline and "59 days" in timeline
    assert "Drug supply interrupted" in page


def test_a_watched_trial_not_fetched_yet_has_a_page_saying_so(client):
    page = client.get(f"/trials/{OTHER}")
    assert page.status_code == 200 and "not been fetched" in page.text


def test_unknown_or_malformed_trial_is_a_404_page(client):
    for path in ("/trials/NCT09999999", "/trials/banana", "/trials/NCT09999999/feed.atom", "/nowhere"):
        page = client.get(path)
        assert page.status_code == 404, path
        assert "Not found" in page.text


def test_nct_id_is_normalised_by_a_same_site_redirect(client):
    page = client.get("/trials/nct2552212", follow_redirects=False)
    assert page.status_code == 301
    assert page.headers["location"] == f"/trials/{WATCHED}"


def test_no_open_redirect(client):
    for path in ("//evil.example/", "/trials/%2F%2Fevil.example", "/trials/http:%2F%2Fevil.example",
                 "/\\evil.example", "/subscribe?next=https://evil.example"):
        page = client.get(path, follow_redirects=False)
        location = page.headers.get("location", "")
        assert "evil" not in location, (path, location)


def test_record_text_is_untrusted_and_escaped(client, db, record):
    r = record(WATCHED)
    r["protocolSection"]["identificationModule"]["briefTitle"] = '<img src=x onerror="alert(1)">Title'
    r["protocolSection"]["eligibilityModule"]["eligibilityCriteria"] = "<script>alert('x')</script> adults"
    db.record_fetch(r)
    db.add_events(WATCHED, [Change("x", "<b>label</b>", "<i>old</i>", "<script>new</script>", "critical",
                                   detail="</pre><script>d</script>")])
    for path in (f"/trials/{WATCHED}", "/", "/subscribe"):
        text = client.get(path).text
        assert "<script" not in text and "<img" not in text and "<b>label" not in text, path
    text = client.get(f"/trials/{WATCHED}").text
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; adults" in text


# -- security headers and CSRF ------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/", f"/trials/{WATCHED}", "/subscribe", "/healthz", "/static/style.css",
                                  "/nowhere", "/confirm?token=x", f"/trials/{WATCHED}/feed.atom"])
def test_security_headers_on_every_response(client, path):
    page = client.get(path)
    for name, value in SECURITY_HEADERS:
        assert page.headers[name.decode()] == value.decode(), (path, name)
    csp = page.headers["content-security-policy"]
    assert "script-src 'none'" in csp and "style-src 'self'" in csp and "unsafe-inline" not in csp


def test_an_unexpected_error_is_a_500_page_with_the_security_headers(client, db, monkeypatch):
    def boom(nct_id):
        raise RuntimeError("bug")

    monkeypatch.setattr(db, "latest_record", boom)
    page = client.get(f"/trials/{WATCHED}")
    assert page.status_code == 500 and "Something went wrong" in page.text and "bug" not in page.text
    assert page.headers["x-frame-options"] == "DENY"


def test_pages_have_no_inline_script_or_style(client, db, record):
    db.record_fetch(record(WATCHED))
    for path in ("/", f"/trials/{WATCHED}", "/subscribe", "/nowhere"):
        text = client.get(path).text
        assert "<script" not in text and "<style" not in text and " style=" not in text, path


def test_a_form_post_without_its_csrf_token_is_refused(client, db):
    for data in ({}, {"csrf_token": ""}, {"csrf_token": "0" * 64}):
        page = client.post("/subscribe", data={**data, "email": "x@example.org", "trials": [WATCHED],
                                               "min_severity": "important", "digest": "each_poll"})
        assert page.status_code == 403
    assert subscriber(db, "x@example.org") is None


def test_a_csrf_token_works_only_with_the_cookie_it_was_issued_for(cfg, db, client):
    stolen = csrf(client)   # the attacker's own token, from the attacker's own cookie
    with TestClient(create_app(cfg, db), base_url="https://trials.example.org") as victim:
        victim.get("/")     # the victim has a cookie of her own
        page = subscribe(victim, email="v@example.org", token=stolen)
        assert page.status_code == 403
    assert subscriber(db, "v@example.org") is None


def test_csrf_cookie_is_httponly_samesite_and_secure_over_https(client):
    cookie = client.get("/subscribe").headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=lax" in cookie and "secure" in cookie


# -- subscribe: double opt-in -----------------------------------------------------------------

def test_subscribing_creates_a_pending_web_subscriber_and_sends_one_confirmation(client, db, confirmations):
    page = subscribe(client, trials=[WATCHED], searches=["epilepsy"], severity="critical", digest="weekly")
    assert page.status_code == 200 and "Check your inbox" in page.text
    sub = subscriber(db)
    assert (sub.state, sub.source, sub.min_severity, sub.digest) == ("pending", "web", "critical", "weekly")
    assert {(x.kind, x.target) for x in sub.subscriptions} == {("trial", WATCHED), ("search", "epilepsy")}
    assert len(confirmations) == 1
    email, url = confirmations[0]
    assert email == "dr.ada@example.org" and url.startswith("https://trials.example.org/confirm?token=")
    assert tokens.read(SECRET, "confirm", token_of(url)).subscriber_id == sub.id
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(Message).where(Message.kind == "confirm")) == 1


def test_an_unconfirmed_address_is_sent_nothing_but_the_confirmation(client, db, record):
    subscribe(client)
    db.add_events(WATCHED, [Change("overall_status", "Overall status", "RECRUITING", "SUSPENDED", "critical")])
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(OutboxRow)) == 0


def test_the_form_offers_only_watched_trials_and_rejects_any_other(client, db, confirmations):
    form = client.get("/subscribe").text
    assert f'value="{WATCHED}"' in form and f'value="{OTHER}"' in form
    page = subscribe(client, trials=["NCT09999999"])
    assert page.status_code == 400 and "not one of the trials watched here" in page.text
    page = subscribe(client, trials=[WATCHED], searches=["not-a-search"])
    assert page.status_code == 400
    assert subscriber(db) is None and confirmations == []


@pytest.mark.parametrize("fields, message", [
    ({"email": "not an address"}, "valid email"),
    ({"trials": [], "searches": []}, "at least one"),
    ({"severity": "everything"}, "which changes"),
    ({"digest": "hourly"}, "how often"),
])
def test_invalid_form_input_is_explained_and_nothing_is_stored(client, db, confirmations, fields, message):
    page = subscribe(client, **fields)
    assert page.status_code == 400 and message in page.text
    assert confirmations == []


def test_get_on_the_confirmation_link_changes_nothing_and_post_activates(client, db, confirmations):
    subscribe(client)
    url = confirmations[0][1]
    page = client.get(url.removeprefix("https://trials.example.org"))
    assert page.status_code == 200 and "Confirm your subscription" in page.text and WATCHED in page.text
    assert subscriber(db).state == "pending"      # mail scanners prefetch links
    no_csrf = client.post("/confirm", data={"token": token_of(url)})
    assert no_csrf.status_code == 403 and subscriber(db).state == "pending"
    page = confirm(client, url)
    assert page.status_code == 200 and "You are subscribed" in page.text
    sub = subscriber(db)
    assert sub.state == "active" and sub.confirmed_at is not None
    again = confirm(client, url)                  # idempotent
    assert again.status_code == 200 and subscriber(db).state == "active"


def test_only_the_newest_confirmation_link_confirms_a_pending_sign_up(client, db, confirmations):
    """Anyone can submit the form for an address; a link mailed before must not confirm the
    choices submitted after it."""
    subscribe(client, trials=[WATCHED])
    subscribe(client, trials=[OTHER])           # e.g. someone else, before she confirmed
    first, newest = confirmations[0][1], confirmations[1][1]
    assert confirm(client, first).status_code == 400
    assert subscriber(db).state == "pending"
    page = client.get(newest.removeprefix("https://trials.example.org"))
    assert OTHER in page.text                    # she sees what she is confirming
    assert confirm(client, newest).status_code == 200 and subscriber(db).state == "active"


@pytest.mark.parametrize("purpose", ["confirm", "manage", "unsubscribe"])
def test_forged_altered_or_wrong_purpose_links_get_a_clear_400(client, db, confirmations, purpose):
    subscribe(client)
    sid = subscriber(db).id
    wrong_purpose = tokens.make(SECRET, "confirm" if purpose != "confirm" else "manage", sid)
    forged = tokens.make("another-secret-key-987654321", purpose, sid)
    altered = tokens.make(SECRET, purpose, sid)[:-2] + "xx"
    for bad in (wrong_purpose, forged, altered, ""):
        page = client.get(f"/{purpose}?token={bad}")
        assert page.status_code == 400 and "This link does not work" in page.text, bad
        page = client.post(f"/{purpose}", data={"token": bad, "csrf_token": csrf(client)})
        assert page.status_code == 400, bad


def test_expired_confirmation_and_manage_links_are_refused(client, db, confirmations):
    subscribe(client)
    sid = subscriber(db).id
    with clock_at(3 * 86400):
        old_confirm = tokens.make(SECRET, "confirm", sid)
    with clock_at(31 * 86400):
        old_manage = tokens.make(SECRET, "manage", sid)
    page = client.get(f"/confirm?token={old_confirm}")
    assert page.status_code == 400 and "expired" in page.text
    assert client.get(f"/manage?token={old_manage}").status_code == 400
    assert subscriber(db).state == "pending"


def test_an_active_address_resubscribing_is_not_changed_without_its_owner(client, db, confirmations):
    subscribe(client, trials=[WATCHED], severity="important")
    confirm(client, confirmations[0][1])
    page = subscribe(client, trials=[OTHER], severity="minor")      # anyone can type her address
    assert "Check your inbox" in page.text                            # same answer as for a stranger
    sub = subscriber(db)
    assert sub.state == "active" and sub.min_severity == "important"
    assert [x.target for x in sub.subscriptions] == [WATCHED]
    # Her new mail asks her to confirm the addition (nothing changes until she does); the
    # same trials again lead to the page where she can change her alerts herself.
    link = confirmations[1][1].removeprefix("https://trials.example.org")
    page = client.get(link)
    assert "Add to your alerts?" in page.text and OTHER in page.text
    assert [x.target for x in subscriber(db).subscriptions] == [WATCHED]
    subscribe(client, trials=[WATCHED])
    page = client.get(confirmations[2][1].removeprefix("https://trials.example.org"))
    assert "Already subscribed" in page.text and "/manage?token=" in page.text


def test_an_unsubscribed_address_comes_back_only_through_a_new_opt_in(client, db, confirmations):
    subscribe(client)
    confirm(client, confirmations[0][1])
    sid = subscriber(db).id
    client.post(f"/unsubscribe?token={tokens.make(SECRET, 'unsubscribe', sid, subscriber(db).token_version)}",
                data={"List-Unsubscribe": "One-Click"})
    assert subscriber(db).state == "unsubscribed"
    subscribe(client, trials=[OTHER])
    assert subscriber(db).state == "pending"
    assert len(confirmations) == 2
    confirm(client, confirmations[1][1])
    sub = subscriber(db)
    assert sub.state == "active" and [x.target for x in sub.subscriptions] == [OTHER]


def test_an_old_confirmation_link_does_not_undo_an_unsubscribe(client, db, confirmations):
    subscribe(client)
    confirm(client, confirmations[0][1])
    sub = subscriber(db)
    client.post(f"/unsubscribe?token={tokens.make(SECRET, 'unsubscribe', sub.id, sub.token_version)}",
                data={"List-Unsubscribe": "One-Click"})
    page = confirm(client, confirmations[0][1])
    assert page.status_code == 400 and subscriber(db).state == "unsubscribed"


# -- rate limits ------------------------------------------------------------------------------

def test_confirmation_mails_are_limited_per_address_without_revealing_it(client, db, confirmations):
    pages = [subscribe(client, email="target@example.org") for _ in range(5)]
    assert [p.status_code for p in pages] == [200] * 5
    assert all("Check your inbox" in p.text for p in pages)
    assert len(confirmations) == 3


def test_subscribe_requests_are_limited_per_client(client, db, confirmations):
    pages = [subscribe(client, email=f"person{i}@example.org") for i in range(11)]
    assert [p.status_code for p in pages[:10]] == [200] * 10
    assert pages[10].status_code == 429 and "Too many" in pages[10].text
    assert len(confirmations) == 10
    assert subscriber(db, "person10@example.org") is None


def test_rate_limits_forget_after_an_hour(client, db, confirmations):
    for _ in range(3):
        subscribe(client, email="target@example.org")
    with db.session() as s, s.begin():
        for ev in s.scalars(select(RateEvent)):
            ev.at -= dt.timedelta(minutes=61)
    subscribe(client, email="target@example.org")
    assert len(confirmations) == 4


# -- manage and unsubscribe -------------------------------------------------------------------

def _active(client, db, confirmations) -> Subscriber:
    subscribe(client, trials=[WATCHED])
    confirm(client, confirmations[-1][1])
    return subscriber(db)


def test_manage_link_shows_and_saves_preferences(client, db, confirmations):
    sub = _active(client, db, confirmations)
    token = tokens.make(SECRET, "manage", sub.id, sub.token_version)
    page = client.get(f"/manage?token={token}")
    assert page.status_code == 200 and sub.email in page.text
    assert re.search(rf'value="{WATCHED}" checked', page.text)
    saved = client.post("/manage", data={"csrf_token": csrf(client, f"/manage?token={token}"), "token": token,
                                         "trials": [OTHER], "searches": ["epilepsy"],
                                         "min_severity": "minor", "digest": "daily"})
    assert saved.status_code == 200 and "Saved" in saved.text
    sub = subscriber(db)
    assert (sub.min_severity, sub.digest) == ("minor", "daily")
    assert {x.target for x in sub.subscriptions} == {OTHER, "epilepsy"}


def test_manage_refuses_missing_csrf_and_unwatched_trials(client, db, confirmations):
    sub = _active(client, db, confirmations)
    token = tokens.make(SECRET, "manage", sub.id, sub.token_version)
    form = {"token": token, "trials": ["NCT09999999"], "min_severity": "minor", "digest": "daily"}
    assert client.post("/manage", data=form).status_code == 403
    page = client.post("/manage", data={**form, "csrf_token": csrf(client, f"/manage?token={token}")})
    assert page.status_code == 400
    assert [x.target for x in subscriber(db).subscriptions] == [WATCHED]


def test_unsubscribe_get_asks_and_one_click_post_needs_no_csrf_and_is_idempotent(client, db, confirmations):
    sub = _active(client, db, confirmations)
    token = tokens.make(SECRET, "unsubscribe", sub.id, sub.token_version)
    page = client.get(f"/unsubscribe?token={token}")
    assert page.status_code == 200 and "Stop all alerts?" in page.text
    assert subscriber(db).state == "active"
    client.cookies.clear()                      # a mail client has no cookie and no page
    for _ in range(2):
        page = client.post(f"/unsubscribe?token={token}", data={"List-Unsubscribe": "One-Click"})
        assert page.status_code == 200 and "Unsubscribed" in page.text
        assert subscriber(db).state == "unsubscribed"
    assert client.get(f"/unsubscribe?token={token}").status_code == 200


def test_unsubscribe_post_without_a_valid_token_changes_nothing(client, db, confirmations):
    sub = _active(client, db, confirmations)
    for bad in ("", tokens.make(SECRET, "manage", sub.id, sub.token_version)):
        page = client.post(f"/unsubscribe?token={bad}", data={"List-Unsubscribe": "One-Click"})
        assert page.status_code == 400
    assert subscriber(db).state == "active"


# -- feeds ------------------------------------------------------------------------------------

def _atom(page) -> ET.Element:
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("application/atom+xml")
    root = ET.fromstring(page.content)
    assert root.tag == f"{ATOM}feed"
    return root


def test_trial_feed_carries_the_stored_changes_newest_first(client, db, record):
    db.record_fetch(record(WATCHED))
    db.add_events(WATCHED, [Change("overall_status", "Overall status", "RECRUITING", "SUSPENDED", "critical")],
                  at=dt.datetime(2026, 1, 5))
    db.add_events(WATCHED, [Change("x", "<b>Site & co</b>", None, "RECRUITING", "minor")],
                  at=dt.datetime(2026, 2, 5))
    root = _atom(client.get(f"/trials/{WATCHED}/feed.atom"))
    titles = [e.findtext(f"{ATOM}title") for e in root.findall(f"{ATOM}entry")]
    assert len(titles) == 2
    assert "<b>Site & co</b>" in titles[0] and "Recruiting → Suspended" in titles[1]
    links = [e.find(f"{ATOM}link").get("href") for e in root.findall(f"{ATOM}entry")]
    assert links[0] == f"https://trials.example.org/trials/{WATCHED}"


def test_search_feed_carries_membership_events_and_changes_to_members(client, db, record):
    db.add_events(OTHER, [Change("search_match", "Now matches saved search epilepsy", None, OTHER, "important")],
                  search="epilepsy")
    root = _atom(client.get("/searches/epilepsy/feed.atom"))
    assert [e.findtext(f"{ATOM}title") for e in root.findall(f"{ATOM}entry")][0].startswith(OTHER)
    assert client.get("/searches/nothing/feed.atom").status_code == 404


def test_search_page_lists_its_matching_trials_and_who_joined_or_left(client, db, record):
    from trialwatch.store import SearchMember

    db.record_fetch(record(OTHER))
    with db.session() as s, s.begin():
        s.add(SearchMember(search="epilepsy", nct_id=OTHER, active=True))
    db.add_events(OTHER, [Change("search_match", "Now matches saved search epilepsy", None, "epilepsy", "important")],
                  search="epilepsy")
    db.add_events(WATCHED, [Change("search_unmatch", "No longer matches", "epilepsy", None, "important",
                                   detail="its status is now <b>Suspended</b>")], search="epilepsy")
    page = client.get("/searches/epilepsy")
    assert page.status_code == 200
    assert f'href="/trials/{OTHER}"' in page.text and "Matching now (1)" in page.text
    assert "now matches" in page.text and "&lt;b&gt;Suspended&lt;/b&gt;" in page.text
    assert 'href="/searches/epilepsy"' in client.get("/").text
    assert client.get("/searches/nothing").status_code == 404


def test_feeds_of_a_fresh_install_are_valid_and_empty(client):
    assert _atom(client.get(f"/trials/{OTHER}/feed.atom")).findall(f"{ATOM}entry") == []
    assert _atom(client.get("/searches/epilepsy/feed.atom")).findall(f"{ATOM}entry") == []


# -- health -----------------------------------------------------------------------------------

def test_healthz_on_a_fresh_install(client):
    page = client.get("/healthz")
    assert page.status_code == 200
    assert page.json() == {"database": "ok", "last_complete_poll": None, "outbox_backlog": 0}


def test_healthz_reports_last_complete_poll_and_undelivered_changes(client, db, confirmations):
    _active(client, db, confirmations)
    with db.session() as s, s.begin():
        s.add(Poll(started_at=dt.datetime(2026, 1, 1, 10, 30), finished_at=dt.datetime(2026, 1, 1, 10, 32),
                   complete=True))
        s.add(Poll(started_at=dt.datetime(2026, 1, 2, 10, 30), finished_at=dt.datetime(2026, 1, 2, 10, 31),
                   complete=False, error="boom"))
    db.add_events(WATCHED, [Change("overall_status", "Overall status", "RECRUITING", "SUSPENDED", "critical")])
    body = client.get("/healthz").json()
    assert body == {"database": "ok", "last_complete_poll": "2026-01-01T10:32:00Z", "outbox_backlog": 1}


def test_healthz_is_503_when_the_database_is_unreachable(cfg, tmp_path):
    broken = cfg.model_copy(update={"database": f"sqlite:///{tmp_path}/no/such/dir/tw.db"})
    with TestClient(create_app(broken)) as c:
        page = c.get("/healthz")
        assert page.status_code == 503 and page.json()["database"] != "ok"
        assert c.get("/").status_code == 503


@contextmanager
def silent_server():
    """A TCP server on 127.0.0.1 that accepts connections and never answers (a database host
    that is up but hung). Yields its port."""
    import socket
    import threading

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    accepted: list[socket.socket] = []
    closing = threading.Event()

    def accept() -> None:
        while not closing.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            accepted.append(conn)

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    try:
        yield listener.getsockname()[1]
    finally:
        closing.set()
        listener.close()
        for conn in accepted:
            conn.close()


def test_healthz_is_503_when_the_database_accepts_connections_and_never_answers(cfg):
    pytest.importorskip("psycopg")
    with silent_server() as port:
        hung = cfg.model_copy(update={"database": f"postgresql+psycopg://tw@127.0.0.1:{port}/tw"})
        with TestClient(create_app(hung)) as c:
            started = time.monotonic()
            page = c.get("/healthz")
            # A hang guard, not a performance assert: before the fix this request never returned.
            assert time.monotonic() - started < 10
            assert page.status_code == 503 and page.json()["database"] != "ok"
            assert page.headers["cache-control"] == "no-store"


def test_the_app_is_built_without_touching_the_database(cfg, tmp_path):
    broken = cfg.model_copy(update={"database": f"sqlite:///{tmp_path}/no/such/dir/tw.db"})
    create_app(broken)      # opens the store on first request, not here


def test_the_app_refuses_to_start_without_a_signing_key(cfg, monkeypatch):
    monkeypatch.delenv("TRIALWATCH_SECRET_KEY")
    with pytest.raises(configmod.ConfigError):
        create_app(cfg)


# -- review fixes -------------------------------------------------------------------------------

@pytest.mark.parametrize("body", [{"csrf_token": "é" * 64}, "csrf_token=%ff%fe%fd&email=x%40example.org"])
def test_a_csrf_token_with_non_ascii_characters_is_refused_not_a_crash(client, db, body):
    client.get("/subscribe")    # a cookie to compare against
    if isinstance(body, dict):
        page = client.post("/subscribe", data={**body, "email": "x@example.org", "trials": [WATCHED]})
    else:
        page = client.post("/subscribe", content=body.encode(),
                           headers={"content-type": "application/x-www-form-urlencoded"})
    assert page.status_code == 403
    assert page.headers["x-frame-options"] == "DENY"
    assert subscriber(db, "x@example.org") is None


def test_even_an_error_outside_the_page_handlers_has_the_security_headers(cfg, db):
    app = create_app(cfg, db)

    def boom(request, form):  # noqa: ANN001
        raise RuntimeError("bug")

    app.state.web._csrf_ok = boom
    with TestClient(app, base_url="https://trials.example.org", raise_server_exceptions=False) as c:
        c.get("/subscribe")
        page = c.post("/subscribe", data={"csrf_token": "x"})
    assert page.status_code == 500 and "bug" not in page.text
    for name, value in SECURITY_HEADERS:
        assert page.headers.get(name.decode()) == value.decode(), name


def test_a_405_names_the_allowed_methods(client):
    page = client.put("/subscribe")
    assert page.status_code == 405
    assert set(page.headers["allow"].replace(" ", "").split(",")) >= {"GET", "POST"}
    assert page.headers["x-frame-options"] == "DENY"


def test_feeds_have_an_author_and_a_self_link(client):
    for path in (f"/trials/{OTHER}/feed.atom", "/searches/epilepsy/feed.atom"):
        root = _atom(client.get(path))
        # RFC 4287 4.1.1: atom:author is required when the entries carry none.
        assert root.find(f"{ATOM}author/{ATOM}name") is not None, path
        links = {link.get("rel"): link.get("href") for link in root.findall(f"{ATOM}link")}
        assert links["self"] == f"https://trials.example.org{path}", path
        assert not links.get("alternate", "").endswith(".atom"), path


def test_a_feed_of_record_text_with_control_characters_is_still_valid_xml(client, db):
    db.add_events(WATCHED, [Change("x", "Lab\x0bel", None, "A\x01B", "minor", site="Site\x0c", detail="d\x00e")])
    entry = _atom(client.get(f"/trials/{WATCHED}/feed.atom")).find(f"{ATOM}entry")
    assert "Label" in entry.findtext(f"{ATOM}title") and "AB" in entry.findtext(f"{ATOM}title")
    assert "de" in entry.findtext(f"{ATOM}content")


def test_the_store_is_opened_once_by_concurrent_first_requests(cfg, db, monkeypatch):
    import threading

    from trialwatch import store as storemod

    opened = []

    def slow_open(url):  # noqa: ANN001
        opened.append(url)
        time.sleep(0.2)
        return db

    monkeypatch.setattr(storemod, "open_store", slow_open)
    with TestClient(create_app(cfg), base_url="https://trials.example.org") as c:
        threads = [threading.Thread(target=c.get, args=("/healthz",)) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert len(opened) == 1


def test_pages_are_served_while_a_poll_holds_the_write_lock(client, db, record):
    # SQLite has one writer at a time. A page only reads: it must read the last committed state
    # instead of queueing for the write lock behind a poll's transaction (before: each read
    # began IMMEDIATE and waited up to the 30 s busy timeout, then failed with a 503).
    from trialwatch.store import Trial

    db.record_fetch(record(WATCHED))
    with db.session() as writer, writer.begin():
        writer.add(Trial(nct_id="NCT09999998", title="being written"))
        writer.flush()  # the write lock is now held, uncommitted
        assert client.get("/").status_code == 200
        page = client.get(f"/trials/{WATCHED}")
        assert page.status_code == 200 and WATCHED in page.text
        assert client.get("/healthz").json()["database"] == "ok"
        assert db.trial("NCT09999998") is None  # the uncommitted write is not seen

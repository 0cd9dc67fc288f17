"""The trial page before a referral (issue 12): what comes first, the nearest open sites to
``?near=``, the warnings, a 1,148-site record kept small (collapsed, filtered, paged
server-side), and what a page must never show (raw internals, promises nobody keeps).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re

import pytest
from starlette.testclient import TestClient

from trialwatch import config as configmod
from trialwatch.diff import Change
from trialwatch.store import Trial
from trialwatch.web import create_app
from conftest import web_config

SECRET = "test-secret-key-0123456789"
BIG = "NCT04267848"        # 1,148 sites, recruiting, verified long ago
SMALL = "NCT03281889"      # two sites with geoPoints, a central contact
MISSING = "NCT09999999"
pytestmark = pytest.mark.corpus


@pytest.fixture
def cfg(tmp_path, monkeypatch):
    return web_config(tmp_path, monkeypatch, f"""
database: sqlite:///{tmp_path / 'tw.db'}
trials: [{BIG}, {SMALL}, {MISSING}]
""")


def _km(lat1, lon1, lat2, lon2):
    # Independent of trialwatch.referral: the spherical law of cosines, mean Earth radius.
    a, b = math.radians(lat1), math.radians(lat2)
    c = math.sin(a) * math.sin(b) + math.cos(a) * math.cos(b) * math.cos(math.radians(lon2 - lon1))
    return 6371.0 * math.acos(max(-1.0, min(1.0, c)))


def _section_order(html: str) -> list[str]:
    return re.findall(r'<h2 id="([a-z]+)-h"', html)


def test_the_1148_site_page_leads_with_what_a_referral_needs_and_stays_small(client, db, record):
    db.record_fetch(record(BIG))
    page = client.get(f"/trials/{BIG}")
    assert page.status_code == 200
    assert len(page.content) < 150_000, len(page.content)
    order = _section_order(page.text)
    assert order[:4] == ["warn", "near", "contacts", "elig"], order
    assert order.index("sites") < order.index("status") < order.index("changes")
    # The full list is collapsed and holds one page of rows, not 1,148.
    sites = page.text[page.text.index('id="sites"'):page.text.index('id="status-h"')]
    assert re.search(r"<details>\s*<summary>Show all 1148 sites</summary>", sites)
    assert sites.count('<li><strong>') == 50
    assert "Page 1 of 23" in sites


def test_the_site_list_filters_by_status_country_and_state_on_the_server(client, db, record):
    raw = record(BIG)
    db.record_fetch(raw)
    locs = raw["protocolSection"]["contactsLocationsModule"]["locations"]
    want = sorted(loc["facility"] for loc in locs if loc.get("state") == "Minnesota"
                  and loc.get("status") == "RECRUITING")
    page = client.get(f"/trials/{BIG}", params={"country": "United States", "state": "Minnesota",
                                                  "site_status": "RECRUITING"})
    sites = page.text[page.text.index('id="sites"'):page.text.index('id="status-h"')]
    shown = sorted(re.findall(r"<li><strong>([^<]*)</strong>", sites))
    assert shown == sorted(f.replace("&#39;", "'") for f in want) or len(shown) == len(want)
    assert f"{len(want)} of 1148 sites match the filter" in sites
    assert "<details open>" in sites
    second = client.get(f"/trials/{BIG}", params={"page": "2"})
    first_rows = re.findall(r"<li><strong>([^<]*)</strong>", page.text)
    assert "Page 2 of 23" in second.text and re.findall(r"<li><strong>([^<]*)</strong>", second.text) != first_rows


def test_nearest_open_sites_to_a_place_with_distance_and_contact(client, db, record):
    raw = record(BIG)
    db.record_fetch(raw)
    page = client.get(f"/trials/{BIG}", params={"near": "44.0225,-92.4699"})
    near = page.text[page.text.index('id="nearest"'):page.text.index('id="contacts-h"')]
    rows = re.findall(r"<li><strong>([^<]*)</strong>.*?(\d+) km · (\d+) mi", near, re.S)
    assert len(rows) == 5
    open_sites = [loc for loc in raw["protocolSection"]["contactsLocationsModule"]["locations"]
                  if loc.get("status") in ("RECRUITING", "NOT_YET_RECRUITING", "ENROLLING_BY_INVITATION")
                  and loc.get("geoPoint")]
    expected = sorted(_km(44.0225, -92.4699, loc["geoPoint"]["lat"], loc["geoPoint"]["lon"]) for loc in open_sites)[:5]
    assert [int(km) for _, km, _ in rows] == [round(x) for x in expected]
    assert all(abs(int(mi) - round(int(km) / 1.609344)) <= 1 for _, km, mi in rows)
    assert "tel:" in near or "mailto:" in near
    # A place by name is resolved offline; an unknown one is an error in words, never a guess.
    bad = client.get(f"/trials/{BIG}", params={"near": "Atlantis, Nowhere"})
    near = bad.text[bad.text.index('id="nearest"'):bad.text.index('id="contacts-h"')]
    assert 'role="alert"' in near and "km" not in near


def test_warnings_a_physician_must_see_and_malformed_fields(client, db, record):
    db.record_fetch(record(BIG))
    text = client.get(f"/trials/{BIG}").text
    assert "warning-stale" in text and "Status last verified" in text
    # A malformed record's problems are stored with its trial and said on its page...
    bad = record(SMALL)
    bad["protocolSection"]["identificationModule"]["briefTitle"] = {"textblock": "not a string"}
    db.record_fetch(bad)
    assert json.loads(db.trial(SMALL).problems) == ["briefTitle is an object, not text; stored without a title"]
    text = client.get(f"/trials/{SMALL}").text
    assert "This record has malformed fields: briefTitle is an object, not text" in text
    # ...and cleared when a later version is well-formed.
    db.record_fetch(record(SMALL))
    assert db.trial(SMALL).problems is None
    assert "malformed" not in client.get(f"/trials/{SMALL}").text


def test_a_record_that_answered_404_promises_no_check_that_will_not_come(client, db):
    db.mark_gone(MISSING)
    text = client.get(f"/trials/{MISSING}").text
    assert "it will be at the next check" not in text
    assert "had no record" in text and "not found" in text


def test_changes_are_in_the_mails_order_status_first_then_most_severe(client, db, record):
    db.record_fetch(record(SMALL), fetched_at=dt.datetime(2026, 1, 1))
    db.add_events(SMALL, [Change("enrollment", "Enrollment", 10, 20, "important"),
                          Change("brief_summary", "Summary", "a", "b", "minor"),
                          Change("overall_status", "Overall status", "RECRUITING", "SUSPENDED", "critical"),
                          Change("why_stopped", "Why stopped", None, "funding", "critical")],
                  at=dt.datetime(2026, 2, 1))
    text = client.get(f"/trials/{SMALL}").text
    labels = re.findall(r'<span class="sev">[a-z]+</span> <strong>([^<]*)</strong>', text)
    assert labels == ["Overall status", "Why stopped", "Enrollment", "Summary"]


def test_no_raw_internals_and_subscribe_opens_with_the_trial_ticked(client, db, record):
    db.record_fetch(record(SMALL))
    with db.session() as s, s.begin():
        s.get(Trial, SMALL).linked_from = "expanded_access:NCT03268603"
    index = client.get("/").text
    assert "expanded_access:" not in index and "expanded-access record of NCT03268603" in index
    page = client.get(f"/trials/{SMALL}").text
    assert f'href="/subscribe?trial={SMALL}"' in page
    form = client.get("/subscribe", params={"trial": SMALL}).text
    assert re.search(rf'value="{SMALL}"[^>]*checked', form), "the trial is ticked"


def _csrf(client, path):
    m = re.search(r'name="csrf_token" value="([0-9a-f]+)"', client.get(path).text)
    return m.group(1)


def test_an_active_subscriber_asking_for_one_more_trial_gets_it_through_a_confirmation(client, db, record,
                                                                                         monkeypatch):
    from trialwatch import notify

    sent: list[str] = []
    real = notify.send_confirmation

    def spy(store, config, subscriber, confirm_url, **kw):  # noqa: ANN001
        sent.append(confirm_url)
        return real(store, config, subscriber, confirm_url, **kw)

    monkeypatch.setattr(notify, "send_confirmation", spy)
    db.record_fetch(record(SMALL))
    db.record_fetch(record(BIG))

    def ask(trial):
        token = _csrf(client, f"/subscribe?trial={trial}")
        return client.post("/subscribe", data={"csrf_token": token, "email": "dr@example.org", "trials": [trial],
                                               "min_severity": "important", "digest": "each_poll"})

    assert ask(SMALL).status_code == 200
    confirm = sent[-1].split("/confirm?", 1)[1]
    client.post("/confirm?" + confirm, data={"csrf_token": _csrf(client, "/confirm?" + confirm),
                                              "token": confirm.split("=", 1)[1]})
    sub = db.subscriber_by_address("dr@example.org")
    assert sub.state == "active"
    # One more trial: a second mail, and nothing changes before she confirms it.
    page = ask(BIG)
    assert "Nothing was changed" not in page.text and len(sent) == 2
    assert {x.target for x in db.subscriber(sub.id).subscriptions} == {SMALL}
    query = sent[-1].split("/confirm?", 1)[1]
    shown = client.get("/confirm?" + query).text
    assert "Add to your alerts?" in shown and BIG in shown
    done = client.post("/confirm", data={"csrf_token": _csrf(client, "/confirm?" + query),
                                         "token": query.split("=", 1)[1]})
    assert "Added to your alerts" in done.text
    assert {x.target for x in db.subscriber(sub.id).subscriptions} == {SMALL, BIG}


def test_coordinates_are_shown_with_the_place_they_name(tmp_path, monkeypatch, db, record):
    monkeypatch.setenv("TRIALWATCH_SECRET_KEY", SECRET)
    (tmp_path / "near.yaml").write_text(f"""
database: sqlite:///{tmp_path / 'tw.db'}
trials: [{SMALL}]
searches:
  - name: mn
    condition: cancer
    near: {{lat: 44.02, lon: -92.46, miles: 200}}
email:
  transport: file
  outbox_dir: {tmp_path / 'outbox'}
  public_url: https://trials.example.org
""")
    cfg = configmod.load(tmp_path / "near.yaml")
    db.record_fetch(record(SMALL))
    with TestClient(create_app(cfg, db), base_url="https://trials.example.org") as client:
        assert "within 200.0 miles of Rochester, MN, United States (44.02, -92.46)" in client.get("/").text
        near = client.get(f"/trials/{SMALL}", params={"near": "42.36,-71.06"}).text
        assert "From Boston, MA, United States (42.36, -71.06)" in near

"""What a digest says before a referral (issue 12): the nearest open site to her place when a
trial starts recruiting, the record's warnings, site rows with their city, a search left said
in words, one grammatical footer; and words never broken mid-word on a phone."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from trialwatch import config as cfgmod
from trialwatch import events, notify
from trialwatch.notify.digest import render_digest
from trialwatch.store import utcnow

SECRET = "test-secret-key-0123456789"
NCT = "NCT03281889"   # recruiting, two sites with geoPoints, status verified long ago
STATUS = "protocolSection.statusModule.overallStatus"
ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.corpus


@pytest.fixture(autouse=True)
def _secret(monkeypatch):
    monkeypatch.setenv("TRIALWATCH_SECRET_KEY", SECRET)


def config(location: str | None = None, searches: str = "[]") -> cfgmod.Config:
    loc = f", location: '{location}'" if location else ""
    return cfgmod.loads(
        "email:\n  from: 'trialwatch <alerts@tw.example.org>'\n  public_url: https://tw.example.org\n"
        "  transport: console\nsearches:\n  - {name: lung, condition: lung cancer}\n"
        f"subscribers:\n  - {{email: ana@example.org, trials: [{NCT}], searches: {searches}, "
        f"min_severity: minor{loc}}}\n")


def _digest(store, cfg):
    notify.sync_subscribers(store, cfg)
    sub = store.subscriber_by_address("ana@example.org")
    _, changes = store.history(NCT)
    return render_digest(store, cfg, sub, [c for c in changes if not c.historical], now=utcnow())


def _start_recruiting(store, record):
    old = record(NCT)
    old["protocolSection"]["statusModule"]["overallStatus"] = "NOT_YET_RECRUITING"
    for loc in old["protocolSection"]["contactsLocationsModule"]["locations"]:
        loc["status"] = "NOT_YET_RECRUITING"
    store.record_fetch(old)
    store.record_fetch(record(NCT))


def test_a_trial_that_starts_recruiting_names_the_open_site_nearest_to_her(store, record):
    _start_recruiting(store, record)
    raw = record(NCT)
    sites = [loc for loc in raw["protocolSection"]["contactsLocationsModule"]["locations"] if loc.get("geoPoint")]
    near = sites[-1]["geoPoint"]
    cfg = config(location=f"{near['lat'] + 0.05},{near['lon']}")
    text = _digest(store, cfg).text
    line = next(x for x in text.splitlines() if x.startswith("Nearest open site to"))
    assert sites[-1]["facility"] in line and re.search(r"\b[56] km / [34] mi\b", line), line
    # Without a place, no nearest site is named (never a guess).
    assert "Nearest open site" not in _digest(store, config()).text


def test_the_digest_carries_the_record_s_warnings_and_site_rows_with_their_city(store, record):
    _start_recruiting(store, record)
    rendered = _digest(store, config())
    assert "Warning: Status last verified" in rendered.text
    raw = record(NCT)
    loc = raw["protocolSection"]["contactsLocationsModule"]["locations"][0]
    assert f"{loc['facility']} ({loc['city']}" in rendered.text
    assert loc["city"] in rendered.html


def test_a_search_left_is_a_sentence_and_the_footer_one_clause(store, record):
    store.record_fetch(record(NCT))
    store.add_events(NCT, [events.search_joined("lung")], search="lung")
    store.add_events(NCT, [events.search_left("lung", "its status is now Completed")], search="lung")
    text = _digest(store, config(searches="[lung]")).text
    assert "lung → —" not in text and "lung → " not in text
    assert "No longer matches saved search “lung”: its status is now Completed" in text
    assert "it matches your saved search “lung”" not in text
    assert "of your saved search" not in text
    assert f"because you follow {NCT} and your saved search “lung”;" in text


def test_no_style_breaks_words_mid_word_only_urls_may_break_anywhere():
    for path in [ROOT / "trialwatch/static/style.css", ROOT / "trialwatch/templates/email/_style.css"]:
        css = path.read_text()
        assert "break-all" not in css, path
        for m in re.finditer(r"([^{}]*)\{[^}]*overflow-wrap:\s*anywhere", css):
            assert "url" in m.group(1), (path, m.group(1).strip())


def test_readers_in_two_places_each_get_the_site_nearest_to_them_though_renderings_are_shared(store, record):
    """The composer shares one rendering among readers of the same changes (issue 13); her place
    is part of what makes two renderings the same, so each still reads her own nearest site."""
    import email
    import email.policy

    from sqlalchemy import select

    from trialwatch.store import Message

    sites = [loc for loc in record(NCT)["protocolSection"]["contactsLocationsModule"]["locations"]
             if loc.get("geoPoint")]
    first, last = sites[0], sites[-1]
    assert first["facility"] != last["facility"]
    near = {"ana@example.org": first, "bea@example.org": last}
    subs = "".join(f"  - {{email: {who}, trials: [{NCT}], min_severity: minor, "
                   f"location: '{at['geoPoint']['lat'] + 0.05},{at['geoPoint']['lon']}'}}\n"
                   for who, at in near.items())
    cfg = cfgmod.loads("email:\n  from: 'trialwatch <alerts@tw.example.org>'\n  public_url: https://tw.example.org\n"
                       f"  transport: console\nsubscribers:\n{subs}")
    notify.sync_subscribers(store, cfg)
    _start_recruiting(store, record)  # queued for both readers: the same changes
    notify.compose_digests(store, cfg, now=utcnow())
    with store.session() as s:
        bodies = {m.recipient: m.body for m in s.scalars(select(Message))}
    assert set(bodies) == set(near)
    for who, site in near.items():
        msg = email.message_from_bytes(bodies[who], policy=email.policy.default)
        text = msg.get_body(("plain",)).get_content()
        line = next(x for x in text.splitlines() if x.startswith("Nearest open site to"))
        assert site["facility"] in line, (who, line)

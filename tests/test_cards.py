"""A send renders each trial's card once and assembles every digest from the shared cards
(notify.cards). Whatever is shared, each reader's digest must be byte for byte the one rendered
for her alone (``digest.render``, the whole document at once), on real records with every kind
of change, names that need escaping, places and saved searches."""

from __future__ import annotations

import datetime as dt
import re
from email import message_from_bytes, policy

import pytest

from trialwatch import config as cfgmod
from trialwatch import events, notify
from trialwatch.notify import digest
from trialwatch.notify.cards import Renderings
from trialwatch.store import utcnow

NCT = "NCT03934567"     # 26 sites, a central contact, long criteria
OTHER = "NCT03281889"   # two recruiting sites with geoPoints (Boston, Houston)
BOSTON, HOUSTON = "42.40,-71.06", "29.80,-95.36"
pytestmark = pytest.mark.corpus


def config() -> cfgmod.Config:
    people = [
        ("ana", "Dr Ana Ruiz", f"[{NCT}, {OTHER}]", "[]", None, "minor"),
        ("bea", "Dr Bea Lund", f"[{NCT}, {OTHER}]", "[]", None, "minor"),   # ana's cards, her own name
        ("bo", None, f"[{NCT}]", "[lung]", None, "minor"),
        ("cy", "Dr O'Hara & Sons <x>", f"[{NCT}, {OTHER}]", "[]", None, "minor"),  # escaped: rendered alone
        ("di", "Zoë\u00a0Li", f"[{OTHER}]", "[lung]", BOSTON, "minor"),
        ("ed", None, f"[{OTHER}]", "[]", HOUSTON, "important"),
        ("fa", "Dr Fa", "[]", "[lung]", BOSTON, "minor"),
        ("gu", "Dr Gu", f"[{NCT}, {OTHER}]", "[]", None, "critical"),
    ]
    subs = "".join(f"  - {{email: {who}@example.org, trials: {trials}, searches: {searches}, "
                   f"min_severity: {floor}" + (f', name: "{name}"' if name else "")
                   + (f", location: '{place}'" if place else "") + "}\n"
                   for who, name, trials, searches, place, floor in people)
    return cfgmod.loads(
        "email:\n  from: 'trialwatch <alerts@tw.example.org>'\n  public_url: https://tw.example.org\n"
        "  transport: console\nsearches:\n  - {name: lung, condition: lung cancer}\n"
        f"subscribers:\n{subs}")


def changes_of_every_kind(store, record) -> None:  # noqa: ANN001
    """OTHER starts recruiting (its sites open); NCT stops, loses a site and gains criteria with
    markup and a stray terminal escape; NCT joins a saved search."""
    old = record(OTHER)
    old["protocolSection"]["statusModule"]["overallStatus"] = "NOT_YET_RECRUITING"
    for loc in old["protocolSection"]["contactsLocationsModule"]["locations"]:
        loc["status"] = "NOT_YET_RECRUITING"
    store.record_fetch(old, fetched_at=utcnow() - dt.timedelta(days=1))
    store.record_fetch(record(OTHER))
    store.record_fetch(record(NCT), fetched_at=utcnow() - dt.timedelta(days=1))
    new = record(NCT)
    new["protocolSection"]["statusModule"]["overallStatus"] = "SUSPENDED"
    new["protocolSection"]["contactsLocationsModule"]["locations"].pop(1)
    new["protocolSection"]["eligibilityModule"]["eligibilityCriteria"] += \
        "\n* <script>alert('x')</script> & more\n* Unterminated \x1b]0;title"
    store.record_fetch(new)
    store.add_events(NCT, [events.search_joined("lung")], search="lung")


def test_every_digest_assembled_from_shared_cards_is_the_one_rendered_for_her_alone(store, record):
    cfg = config()
    notify.sync_subscribers(store, cfg)
    changes_of_every_kind(store, record)
    now = utcnow()
    facts: dict = {}
    shared = Renderings(cfg, facts)
    due = digest.pending(store, now)
    digest.load_facts(store, {c.nct_id for p in due for c in p.changes}, facts)
    assert len(due) == 8
    # Every reader with her own changes, and with every other reader's too: readers differ in
    # what they follow, their names, places and floors, so each key part is tried.
    change_sets = [[c for c, _ in p.split()[0]] for p in due]
    views, alone_only = [], set()
    for p in due:
        for i, kept in enumerate(change_sets):
            links = (f"unsub{p.subscriber.id}", f"manage{p.subscriber.id}")
            view = shared.view(p.subscriber, kept, now=now, links=links)
            got = shared.render(view)
            alone_view = digest.build_view(cfg, p.subscriber, kept, facts, now=now, links=links)
            alone = digest.render(alone_view)
            assert view == alone_view, (p.subscriber.address, i)
            assert (got.subject, got.text, got.html) == (alone.subject, alone.text, alone.html), \
                (p.subscriber.address, i)
            if got.pieces is None:  # a value the frame cannot take as a stand-in: rendered whole
                alone_only.add(p.subscriber.address)
            else:
                assert "".join(got.pieces[0]) == got.text and "".join(got.pieces[1]) == got.html
            if kept is change_sets[due.index(p)]:
                views.append(view)
    assert alone_only == {"cy@example.org", "di@example.org"}

    text = {v.name: digest.render(v).text for v in views}
    assert "Nearest open site to" in text["Zoë\u00a0Li"] and "\x1b" not in "".join(text.values())
    # The stray escape is dropped within its own trial: the next trial and the footer survive.
    assert "Unsubscribe: https://tw.example.org/unsubscribe?token=unsub" in text["Dr Ana Ruiz"]
    assert text["Dr Ana Ruiz"].count("=" * 72) == 2
    # Shared: readers alike got the very same card objects.
    cards = [t for v in views for t in v.trials]
    assert len({id(t) for t in cards}) < len(cards)
    ana, bea = (next(v for v in views if v.name == n) for n in ("Dr Ana Ruiz", "Dr Bea Lund"))
    assert all(a is b for a, b in zip(ana.trials, bea.trials))


def test_the_parts_encode_to_the_same_bytes_piece_by_piece(store, record):
    cfg = config()
    notify.sync_subscribers(store, cfg)
    changes_of_every_kind(store, record)
    now = utcnow()
    shared = Renderings(cfg, {})
    for p in digest.pending(store, now):
        kept = [c for c, _ in p.split()[0]]
        digest.load_facts(store, {c.nct_id for c in kept}, shared.facts)
        rendered = shared.render(shared.view(p.subscriber, kept, now=now, links=("u", "m")))
        whole = digest.Rendered(rendered.subject, rendered.text, rendered.html)
        a, b = (notify.build_message(cfg, to=p.subscriber.address, name=None, rendered=r, now=now)[0]
                for r in (rendered, whole))
        # The same bytes but for the Message-ID and the boundary, which are random.
        strip = re.compile(rb"Message-ID: \S+|=+[0-9a-f]{20}==")
        assert strip.sub(b"", a) == strip.sub(b"", b)
        parts = [part.get_content().replace("\r\n", "\n")
                 for part in message_from_bytes(a, policy=policy.default).iter_parts()]
        assert parts == [rendered.text, rendered.html + "\n"]

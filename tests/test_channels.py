"""Channels: a subscriber's destination is (channel, address); every channel shares the outbox.

A webhook receiver runs on 127.0.0.1 (an http.server thread) and is scripted to fail: a 500,
a timeout after it processed the delivery, a refused connection. Every change still reaches it,
a repeat carries the same Idempotency-Key, and the signature verifies with the shared secret.
Apprise is the real package, posting through its own ``json://`` plugin to the same receiver.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import importlib.util
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from sqlalchemy import select

from trialwatch import config as cfgmod
from trialwatch import notify
from trialwatch.errors import ConfigError
from trialwatch.notify import channels
from trialwatch.store import ChangeRow, Message, Subscriber, utcnow

NCT = "NCT03934567"          # real record, ACTIVE_NOT_RECRUITING, 26 sites
SECRET = "s3cret-key-for-tests-only-0123456789"
HOOK_SECRET = "webhook-shared-secret-for-tests"


@pytest.fixture(autouse=True)
def _secrets(monkeypatch):
    monkeypatch.setenv("TRIALWATCH_SECRET_KEY", SECRET)
    monkeypatch.setenv("TRIALWATCH_WEBHOOK_SECRET", HOOK_SECRET)
    # A receiver that does not answer within this is a timeout (the test receiver sleeps 1 s).
    monkeypatch.setattr(channels, "WEBHOOK_TIMEOUT_S", 0.3)


class Receiver:
    """A webhook endpoint on 127.0.0.1. ``script`` says how to answer each request in turn
    (an HTTP status, or "slow": process it, then answer too late); then 200."""

    def __init__(self, script: list = ()) -> None:
        self.script = list(script)
        self.requests: list[tuple[dict, bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
                action = receiver.script.pop(0) if receiver.script else 200
                if action == "slow":
                    time.sleep(1.0)
                    action = 200
                try:
                    self.send_response(action)
                    self.end_headers()
                    self.wfile.write(b"ok")
                except OSError:
                    pass  # the client gave up waiting

            def log_message(self, *args) -> None:  # noqa: ANN002
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def payloads(self) -> list[dict]:
        return [json.loads(body) for _, body in self.requests]


@pytest.fixture
def receiver():
    made: list[Receiver] = []

    def make(script: list = ()) -> Receiver:
        made.append(Receiver(script))
        return made[-1]

    yield make
    for r in made:
        r.close()


def make_config(subscribers: str) -> cfgmod.Config:
    return cfgmod.loads(
        "email:\n  from: 'trialwatch <alerts@tw.example.org>'\n  public_url: https://tw.example.org\n"
        f"  transport: console\n  retry_backoff_s: 60\nsubscribers:\n{subscribers}")


def hook(url: str) -> str:
    return f"  - {{channel: webhook, address: '{url}', trials: [{NCT}], min_severity: minor}}\n"


def three_changes(store, record) -> list[ChangeRow]:  # noqa: ANN001
    """Status, enrollment and minimum age change in one new version of a real record."""
    store.record_fetch(record(NCT), fetched_at=utcnow() - dt.timedelta(days=1))
    new = record(NCT)
    new["protocolSection"]["statusModule"]["overallStatus"] = "RECRUITING"
    new["protocolSection"]["designModule"]["enrollmentInfo"]["count"] = 999
    new["protocolSection"]["eligibilityModule"]["minimumAge"] = "21 Years"
    return store.record_fetch(new).changes


def stored(store) -> list[Message]:  # noqa: ANN001
    with store.session() as s:
        return list(s.scalars(select(Message).order_by(Message.id)))


# -- webhook --------------------------------------------------------------------------------------

def test_a_webhook_gets_every_change_after_a_500_signed_with_the_shared_secret(store, record, receiver):
    hookd = receiver([500])
    cfg = make_config(hook(hookd.url))
    notify.sync_subscribers(store, cfg)
    changes = three_changes(store, record)

    first = notify.send_pending(store, cfg)
    assert [(e.state, e.error) for e in first.entries] == [("queued", "webhook 127.0.0.1 answered 500")]
    again = notify.send_pending(store, cfg)

    assert [e.state for e in again.entries] == ["sent"]
    assert len(hookd.requests) == 2
    (h1, b1), (h2, b2) = hookd.requests
    assert b1 == b2 and h1["idempotency-key"] == h2["idempotency-key"] == stored(store)[0].rfc_message_id
    for headers, body in hookd.requests:
        expected = "sha256=" + hmac.new(HOOK_SECRET.encode(), body, hashlib.sha256).hexdigest()
        assert hmac.compare_digest(headers["x-trialwatch-signature"], expected)
        assert headers["content-type"] == "application/json"
    [trial] = hookd.payloads()[-1]["trials"]
    assert trial["nct_id"] == NCT
    assert sorted(c["field"] for c in trial["changes"]) == sorted(c.field for c in changes)
    status = next(c for c in trial["changes"] if c["field"] == "overall_status")
    assert (status["old"], status["new"], status["severity"]) == ("ACTIVE_NOT_RECRUITING", "RECRUITING", "important")


def test_a_timeout_after_the_receiver_processed_it_repeats_with_the_same_key(store, record, receiver):
    hookd = receiver(["slow"])
    cfg = make_config(hook(hookd.url))
    notify.sync_subscribers(store, cfg)
    three_changes(store, record)

    first = notify.send_pending(store, cfg)
    [entry] = first.entries
    assert entry.state == "queued" and "Timeout" in entry.error
    second = notify.send_pending(store, cfg)

    assert [e.state for e in second.entries] == ["sent"]
    keys = [h["idempotency-key"] for h, _ in hookd.requests]
    # The receiver saw it twice, under one key: it keeps the first and drops the repeat.
    assert len(keys) == 2 and len(set(keys)) == 1
    assert hookd.requests[0][1] == hookd.requests[1][1]


def test_a_refused_connection_leaves_the_digest_queued_and_uncounted(store, record, receiver):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/hook"
    live = receiver()
    cfg = make_config(hook(dead) + hook(live.url).replace(NCT, NCT))
    notify.sync_subscribers(store, cfg)
    three_changes(store, record)

    report = notify.send_pending(store, cfg)

    states = {e.recipient: (e.state, e.attempts) for e in report.entries}
    assert states == {dead: ("queued", 0), live.url: ("sent", 1)}
    [waiting] = [m for m in stored(store) if m.recipient == dead]
    assert (waiting.state, waiting.attempts) == ("queued", 0) and "unreachable" in waiting.last_error
    assert notify.undelivered(store, report) is not None  # exit 6: it waits, it is not lost


def test_two_digests_never_share_a_key(store, record, receiver):
    hookd = receiver()
    cfg = make_config(hook(hookd.url))
    notify.sync_subscribers(store, cfg)
    three_changes(store, record)
    notify.send_pending(store, cfg)
    newer = record(NCT)
    newer["protocolSection"]["statusModule"]["overallStatus"] = "COMPLETED"
    store.record_fetch(newer)
    notify.send_pending(store, cfg)

    keys = [h["idempotency-key"] for h, _ in hookd.requests]
    assert len(keys) == 2 and len(set(keys)) == 2


def test_a_webhook_without_its_secret_is_reported_and_its_changes_wait(store, record, receiver, monkeypatch):
    hookd = receiver()
    cfg = make_config(hook(hookd.url))
    notify.sync_subscribers(store, cfg)
    three_changes(store, record)
    monkeypatch.delenv("TRIALWATCH_WEBHOOK_SECRET")

    report = notify.send_pending(store, cfg)

    assert hookd.requests == [] and stored(store) == []
    [failed] = report.compose_failed
    assert "TRIALWATCH_WEBHOOK_SECRET is not set" in failed.error
    monkeypatch.setenv("TRIALWATCH_WEBHOOK_SECRET", HOOK_SECRET)
    assert [e.state for e in notify.send_pending(store, cfg).entries] == ["sent"]


# -- apprise --------------------------------------------------------------------------------------

def test_an_apprise_url_gets_the_digest_through_apprise(store, record, receiver):
    pytest.importorskip("apprise")
    hookd = receiver()
    url = hookd.url.replace("http://", "json://")
    cfg = make_config(f"  - {{channel: apprise, address: '{url}', trials: [{NCT}], min_severity: minor}}\n")
    notify.sync_subscribers(store, cfg)
    three_changes(store, record)

    report = notify.send_pending(store, cfg)

    assert [e.state for e in report.entries] == ["sent"]
    [payload] = hookd.payloads()
    assert payload["title"] == report.entries[0].subject == f"{NCT}: Active, not recruiting → Recruiting (+2 more)"
    assert "Minimum age" in payload["message"] and "Enrollment" in payload["message"]
    # An Apprise URL usually carries a token: send prints its scheme only.
    assert report.entries[0].recipient == "json://…"


def test_an_apprise_url_can_stay_in_the_environment(store, record, receiver, monkeypatch):
    pytest.importorskip("apprise")
    hookd = receiver()
    cfg = make_config(f"  - {{channel: apprise, address: 'env:TW_TEST_APPRISE', trials: [{NCT}]}}\n")
    notify.sync_subscribers(store, cfg)
    three_changes(store, record)

    unset = notify.send_pending(store, cfg)
    [failed] = unset.compose_failed
    assert "TW_TEST_APPRISE is not set" in failed.error and unset.entries == []
    monkeypatch.setenv("TW_TEST_APPRISE", hookd.url.replace("http://", "json://"))
    report = notify.send_pending(store, cfg)

    assert [(e.recipient, e.state) for e in report.entries] == [("env:TW_TEST_APPRISE", "sent")]
    assert len(hookd.payloads()) == 1
    assert [m.recipient for m in stored(store)] == ["env:TW_TEST_APPRISE"]  # the URL is stored nowhere


def test_an_apprise_channel_without_apprise_installed_is_a_config_error(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "apprise" else real(name, *a))

    with pytest.raises(ConfigError) as e:
        make_config(f"  - {{channel: apprise, address: 'slack://a/b/c', trials: [{NCT}]}}\n")

    assert "<config>:7" in e.value.message and "pip install 'trialwatch[apprise]'" in e.value.message


# -- configuration and data model -------------------------------------------------------------

def test_email_stays_the_default_channel_and_email_keeps_working(store):
    cfg = make_config(f"  - {{email: ana@example.org, trials: [{NCT}]}}\n"
                      f"  - {{channel: email, address: bo@example.org, trials: [{NCT}]}}\n"
                      "  - {channel: webhook, address: 'https://hooks.example.org/tw', searches: []}\n")
    notify.sync_subscribers(store, cfg)

    assert [(s.channel, s.address, s.email) for s in cfg.subscribers] == [
        ("email", "ana@example.org", "ana@example.org"), ("email", "bo@example.org", "bo@example.org"),
        ("webhook", "https://hooks.example.org/tw", None)]
    with store.session() as s:
        rows = s.scalars(select(Subscriber).order_by(Subscriber.id)).all()
        assert [(r.channel, r.address) for r in rows] == [
            ("email", "ana@example.org"), ("email", "bo@example.org"), ("webhook", "https://hooks.example.org/tw")]


@pytest.mark.parametrize("entry, says", [
    ("{channel: pigeon, address: roof}", "unknown channel 'pigeon'"),
    ("{channel: webhook, address: 'ftp://x.example.org/'}", "is not an http(s) URL"),
    ("{channel: webhook, email: a@example.org}", "'email:' is for the email channel"),
    ("{channel: webhook}", "a subscriber needs 'email:'"),
])
def test_a_destination_that_cannot_work_is_refused_at_load_naming_the_line(entry, says):
    with pytest.raises(ConfigError) as e:
        make_config(f"  - {entry}\n")

    assert "<config>:7" in e.value.message and says in e.value.message


def test_a_new_channel_is_one_class(store, record):
    got: list[tuple[str, str]] = []

    class Pigeon(channels.Channel):
        __kind__ = "pigeon-test"

        def compose(self, rendered, view, *, to, name, now, unsubscribe_token=None):  # noqa: ANN001
            return rendered.subject.encode(), channels.new_key(now)

        def deliver(self, body, recipient, key):  # noqa: ANN001
            got.append((recipient, body.decode()))

    try:
        cfg = make_config(f"  - {{channel: pigeon-test, address: roof-7, trials: [{NCT}], min_severity: minor}}\n")
        notify.sync_subscribers(store, cfg)
        three_changes(store, record)
        assert [e.state for e in notify.send_pending(store, cfg).entries] == ["sent"]
        assert got == [("roof-7", f"{NCT}: Active, not recruiting → Recruiting (+2 more)")]
    finally:
        del channels.Channel.registry["pigeon-test"]

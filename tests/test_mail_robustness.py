"""Mail that must not be lost: an SMTP outage spanning many sends, and digests that cannot be built.

Retries count time, not runs: a digest fails for good only once its first try is
``email.give_up_after_hours`` old (or on a permanent 5xx, or after ``max_attempts`` deferrals the
server itself answered). Time is injected (``now=``), so two days pass in a fraction of a second.
"""

from __future__ import annotations

import datetime as dt
import json

import pytest
from sqlalchemy import select

from smtp_server import SmtpServer, smtp_server  # noqa: F401 - the fixture
from standin import StandIn
from trialwatch import config as cfgmod
from trialwatch import ctgov, notify
from trialwatch.cli import main
from trialwatch.errors import ConfigError
from trialwatch.store import Message, Subscriber, Subscription, open_store, utcnow

NCT = "NCT03268603"          # the synthetic fixture in tests/fixtures
STATUS = "protocolSection.statusModule.overallStatus"
SECRET = "s3cret-key-for-tests-only-0123456789"
H = dt.timedelta(hours=1)


@pytest.fixture(autouse=True)
def _secret(monkeypatch):
    monkeypatch.setenv("TRIALWATCH_SECRET_KEY", SECRET)


def make_config(server: SmtpServer, n: int, **email) -> cfgmod.Config:
    extra = "".join(f"  {k}: {v}\n" for k, v in email.items())
    subs = "".join(f"  - {{email: dr{i:02d}@example.org, trials: [{NCT}]}}\n" for i in range(n))
    return cfgmod.loads(f"email:\n  from: 'trialwatch <alerts@tw.example.org>'\n  transport: smtp\n"
                        f"  smtp: {server.config_yaml()}\n{extra}subscribers:\n{subs}")


def recruiting(store, record, at: dt.datetime) -> None:  # noqa: ANN001
    store.record_fetch(record(NCT), fetched_at=at - dt.timedelta(days=1))
    new = record(NCT)
    new["protocolSection"]["statusModule"]["overallStatus"] = "RECRUITING"
    store.record_fetch(new, fetched_at=at)


def states(store) -> list[tuple[str, int]]:  # noqa: ANN001
    with store.session() as s:
        return [(m.state, m.attempts) for m in s.scalars(select(Message).order_by(Message.id))]


# -- an SMTP outage (item 3) -------------------------------------------------------------------

def test_smtp_down_across_many_sends_then_up_delivers_every_digest_and_fails_none(store, record, smtp_server):
    cfg = make_config(smtp_server, 20)   # max_attempts 8, give_up_after_hours 48 (the defaults)
    notify.sync_subscribers(store, cfg)
    t0 = utcnow()
    recruiting(store, record, t0)
    smtp_server.down()

    # 47 hours of outage: an explicit `send` every hour and a daemon send every half hour between.
    for k in range(47 * 2):
        report = notify.send_pending(store, cfg, now=t0 + k * H / 2, force=k % 2 == 0)
        assert report.failed == [], k
    assert states(store) == [("queued", 0)] * 20

    smtp_server.up()
    report = notify.send_pending(store, cfg, now=t0 + 47 * H)

    assert len(report.sent) == 20 and report.failed == []
    assert sorted(r for m in smtp_server.messages for r in m.recipients) == \
        [f"dr{i:02d}@example.org" for i in range(20)]
    assert [s for s, _ in states(store)] == ["sent"] * 20


def test_a_digest_fails_for_good_only_once_its_outage_window_has_passed(store, record, smtp_server):
    cfg = make_config(smtp_server, 3, give_up_after_hours=24)
    notify.sync_subscribers(store, cfg)
    t0 = utcnow()
    recruiting(store, record, t0)
    smtp_server.down()

    tries = []  # the times the daemon's sends really dialled for the first digest
    now = t0
    while now < t0 + 24 * H:
        report = notify.send_pending(store, cfg, now=now, force=False)
        tries += [now for e in report.entries if e.message_id == 1 and not e.error.startswith("not tried")]
        assert report.failed == []
        now += dt.timedelta(minutes=5)

    last = notify.send_pending(store, cfg, now=t0 + 24 * H, force=False)

    assert [e.state for e in last.entries] == ["failed"] * 3
    assert all("gave up after 24 h" in e.error for e in last.entries)
    # The waits grew (300 s, then about as long as it had waited, at most 6 h): a handful of dials
    # in a day, not one every five minutes; and the last one falls on the give-up time itself.
    waits = [(b - a).total_seconds() for a, b in zip(tries, tries[1:])]
    assert waits[:3] == [300, 300, 600] and max(waits) == 6 * 3600
    assert len(tries) < 16
    assert [s for s, _ in states(store)] == ["failed"] * 3


def test_the_outage_window_is_configurable_and_max_attempts_still_accepted():
    cfg = cfgmod.loads("email:\n  give_up_after_hours: 72\n  max_attempts: 3\n")
    assert (cfg.email.give_up_after_hours, cfg.email.max_attempts) == (72, 3)
    assert cfgmod.loads("").email.give_up_after_hours == 48
    with pytest.raises(ConfigError, match=r"config.yaml:2: email.give_up_after_hours"):
        cfgmod.loads("email:\n  give_up_after_hours: 0\n", source="config.yaml")


# -- digests that cannot be built (item 4) -------------------------------------------------------

@pytest.mark.parametrize("yaml, where", [
    ('email:\n  from: "trialwatch <alerts@example.org>\\r\\nBcc: spy@evil.example"\n', "config.yaml:2: email.from"),
    ('email:\n  from: "trialwatch <üser@example.org>"\n', "config.yaml:2: email.from"),
    ('email:\n  public_url: "https://tw.example.org/\\r\\nX-Evil: 1"\n', "config.yaml:2: email.public_url"),
    ('email:\n  public_url: "https://tw.example.org/a b"\n', "config.yaml:2: email.public_url"),
    ("subscribers:\n  - email: üser@example.org\n", "config.yaml:2: subscribers.0.email"),
])
def test_what_would_make_every_digest_fail_is_refused_at_config_load(yaml, where):
    with pytest.raises(ConfigError) as e:
        cfgmod.loads(yaml, source="config.yaml")
    assert where in e.value.message


def test_a_non_ascii_subscriber_says_why(tmp_path):
    with pytest.raises(ConfigError, match="non-ASCII"):
        cfgmod.loads("subscribers:\n  - email: üser@example.org\n")


@pytest.fixture
def cli(record, db_url, tmp_path, smtp_server, monkeypatch, capsys):  # noqa: F811
    monkeypatch.setattr(ctgov, "BACKOFF_BASE_S", 0.01)
    api = StandIn([record(NCT), record("NCT03268603_EA")]).start()
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"""
database: {db_url}
ctgov: {{base_url: '{api.base_url}', requests_per_minute: 60000, max_retries: 1}}
trials: [{NCT}]
email:
  from: "trialwatch <alerts@example.org>"
  transport: smtp
  smtp: {smtp_server.config_yaml()}
subscribers:
  - {{email: dr.neuro@example.org, trials: [{NCT}]}}
""")

    def run(*args):
        code = main(["--config", str(cfg), *args])
        out, err = capsys.readouterr()
        return code, out, err

    yield api, run, db_url
    api.stop()


def test_a_digest_that_cannot_be_built_is_reported_and_counted_by_poll_and_send(cli, record, smtp_server, caplog):
    api, run, db_url = cli
    assert run("poll")[0] == 0
    # An address an older release let in from the web: no digest can be addressed to it.
    store = open_store(db_url)
    with store.session() as s, s.begin():
        s.add(Subscriber(email="üser@example.org", state="active", source="web", token_version=1,
                         subscriptions=[Subscription(kind="trial", target=NCT)]))
    store.close()
    changed = record(NCT)
    changed["protocolSection"]["statusModule"]["overallStatus"] = "RECRUITING"
    changed["protocolSection"]["statusModule"]["lastUpdatePostDateStruct"]["date"] = "2026-11-26"
    api.put(changed)
    api.set_data_timestamp("2026-11-26T09:00:05")

    code, out, err = run("poll", "--json")

    assert code == 6, err
    report = json.loads(out)
    assert (report["emails_sent"], report["emails_failed"]) == (1, 1)
    # The log (stderr outside pytest) names her and the reason.
    [logged] = [r for r in caplog.records if r.levelname == "ERROR" and "cannot build the digest" in r.getMessage()]
    assert "üser@example.org" in logged.getMessage()
    assert "could not be delivered" in err

    code, out, err = run("send", "--json")
    assert code == 6
    sent = json.loads(out)
    assert [e["recipient"] for e in sent["compose_failed"]] == ["üser@example.org"]
    assert "1 digest(s) could not be built" in err

    code, out, err = run("send")
    assert code == 6 and "unbuilt" in out
    assert [m.recipients for m in smtp_server.messages] == [["dr.neuro@example.org"]]

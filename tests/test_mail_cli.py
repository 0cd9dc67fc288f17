"""Email alerts as an operator runs them: `trialwatch poll` against the API stand-in, mail to
a real SMTP server (aiosmtpd), `trialwatch send` and `trialwatch unsubscribe` from the shell."""

from __future__ import annotations

import email
import email.policy
import json
import re

import pytest

from trialwatch import ctgov
from trialwatch.cli import main

from smtp_server import smtp_server  # noqa: F401 - the fixture
from standin import StandIn

NCT = "NCT03268603"
DAY2 = "2026-11-26T09:00:05"


@pytest.fixture
def setup(record, db_url, tmp_path, smtp_server, monkeypatch, capsys):  # noqa: F811
    monkeypatch.setattr(ctgov, "BACKOFF_BASE_S", 0.01)
    monkeypatch.setenv("TRIALWATCH_SECRET_KEY", "test-secret-key-0123456789abcdef")
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
  public_url: https://trialwatch.example.org
  retry_backoff_s: 0
subscribers:
  - email: dr.neuro@example.org
    name: Dr. Neuro
    trials: [{NCT}]
    min_severity: important
  - email: dr.critical@example.org
    trials: [{NCT}]
    min_severity: critical
""")

    def run(*args):
        code = main(["--config", str(cfg), *args])
        out, err = capsys.readouterr()
        return code, out, err

    yield api, run, smtp_server, record
    api.stop()


def now_recruiting(api, record):
    changed = record(NCT)
    changed["protocolSection"]["statusModule"]["overallStatus"] = "RECRUITING"
    changed["protocolSection"]["statusModule"]["lastUpdatePostDateStruct"]["date"] = "2026-11-26"
    api.put(changed)
    api.set_data_timestamp(DAY2)


def test_a_status_change_is_mailed_once_to_each_physician_whose_severity_it_meets(setup):
    api, run, smtp, record = setup
    code, out, err = run("poll", "--json")
    assert code == 0, err
    assert json.loads(out)["emails_sent"] == 0 and smtp.messages == []  # first snapshot: nothing to say

    now_recruiting(api, record)
    code, out, err = run("poll", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["trials_changed"] == 1 and report["emails_sent"] == 1
    (msg,) = smtp.messages
    assert msg.recipients == ["dr.neuro@example.org"]  # dr.critical's floor is above "important"
    parsed = email.message_from_bytes(msg.data, policy=email.policy.default)
    assert parsed["Subject"] == f"{NCT}: Active, not recruiting → Recruiting"
    for header in ("Message-ID", "Date", "List-Unsubscribe", "List-Unsubscribe-Post"):
        assert parsed[header], header
    assert parsed["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert {p.get_content_type() for p in parsed.walk()} >= {"text/plain", "text/html"}

    # Re-running sends nothing.
    code, out, _ = run("poll", "--json", "--force")
    assert json.loads(out)["emails_sent"] == 0
    code, out, _ = run("send", "--json")
    assert code == 0 and json.loads(out)["sent"] == 0
    assert len(smtp.messages) == 1

    # The unsubscribe link's token works from the shell; she gets nothing after that.
    token = re.search(r"unsubscribe\?token=([^>\s]+)>", parsed["List-Unsubscribe"]).group(1)
    code, out, _ = run("unsubscribe", token)
    assert code == 0 and "dr.neuro@example.org is unsubscribed" in out
    code, _, err = run("unsubscribe", token[:-3] + "xyz")
    assert code == 2 and "not valid" in err
    changed = record(NCT)
    changed["protocolSection"]["statusModule"]["overallStatus"] = "SUSPENDED"
    changed["protocolSection"]["statusModule"]["lastUpdatePostDateStruct"]["date"] = "2026-11-27"
    api.put(changed)
    api.set_data_timestamp("2026-11-27T09:00:05")
    code, out, _ = run("poll", "--json")
    assert json.loads(out)["emails_sent"] == 1  # dr.critical only: suspended is critical
    assert smtp.messages[-1].recipients == ["dr.critical@example.org"]
    code, out, _ = run("subscribers", "--json")
    states = {s["email"]: s["state"] for s in json.loads(out)}
    assert states == {"dr.neuro@example.org": "unsubscribed", "dr.critical@example.org": "active"}


def test_with_the_smtp_server_down_the_digest_waits_and_goes_out_once(setup):
    api, run, smtp, record = setup
    run("poll")
    now_recruiting(api, record)
    smtp.down()
    # Exit 6: the change is stored, but its mail waits; stderr says how many and why.
    code, out, err = run("poll", "--json")
    assert code == 6, err
    assert json.loads(out)["emails_queued"] == 1
    assert "1 message(s) wait in the outbox" in err and "Connection refused" in err
    code, out, err = run("send", "--json")
    assert code == 6, err
    assert json.loads(out)["queued"] == 1
    assert "1 message(s) wait in the outbox" in err and "Connection refused" in err
    smtp.up()
    code, out, err = run("send", "--json")
    assert code == 0, err
    sent = json.loads(out)
    assert sent["sent"] == 1 and [m["recipient"] for m in sent["messages"]] == ["dr.neuro@example.org"]
    code, out, _ = run("send", "--json")
    assert json.loads(out)["sent"] == 0
    assert len(smtp.messages) == 1


def test_a_change_seen_by_check_is_mailed_by_the_next_send(setup):
    api, run, smtp, record = setup
    assert run("check", NCT)[0] == 0
    now_recruiting(api, record)
    code, out, _ = run("check", NCT)
    assert "Recruiting" in out
    code, out, err = run("send")
    assert code == 0, err
    assert [m.recipients for m in smtp.messages] == [["dr.neuro@example.org"]]


def test_preview_renders_without_sending(setup, tmp_path):
    api, run, smtp, record = setup
    run("check", NCT)
    now_recruiting(api, record)
    run("check", NCT)
    html = tmp_path / "digest.html"
    code, out, err = run("preview", NCT, "--to", "dr.neuro@example.org", "--html", str(html))
    assert code == 0, err
    assert out.startswith(f"Subject: {NCT}: Active, not recruiting → Recruiting")
    assert "<html" in html.read_text().lower()
    assert smtp.messages == []


def test_mail_commands_need_the_signing_key(setup, monkeypatch):
    api, run, smtp, record = setup
    monkeypatch.delenv("TRIALWATCH_SECRET_KEY")
    code, _, err = run("send")
    assert code == 2 and "TRIALWATCH_SECRET_KEY" in err
    code, _, err = run("poll")
    assert code == 2 and "TRIALWATCH_SECRET_KEY" in err

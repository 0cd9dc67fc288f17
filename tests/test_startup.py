"""How a one-shot command starts: it imports only what it uses, and the console script's start-up
(``cli.console``) keeps the cyclic collector off while the heavy modules are imported, then turns
it back on for the command's own work. Checked on the module set and the collector's state in a
child process, never on time (speed is measured by bench/bench_startup.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from standin import StandIn

NCT = "NCT03268603"

# main() in a child, then what it imported and the collector's state, as the last line.
CHILD = """
import gc, json, sys
from trialwatch import cli_common
from trialwatch.cli import main
if sys.argv[1] == "console":
    cli_common.begin_startup()  # what cli.console does first
code = main(sys.argv[2:])
print(json.dumps({"code": code, "modules": sorted(sys.modules), "gc_enabled": gc.isenabled(),
                  "frozen": gc.get_freeze_count()}))
"""


def child(*args: str, startup: str = "plain") -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIALWATCH_")}
    env.update(NO_PROXY="127.0.0.1", no_proxy="127.0.0.1")
    done = subprocess.run([sys.executable, "-c", CHILD, startup, *args], capture_output=True, text=True,
                          timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    out["stdout"] = done.stdout
    return out


@pytest.fixture
def check_config(record, tmp_path):
    with StandIn([record(NCT)]) as api:
        cfg = tmp_path / "config.yaml"
        # A subscriber, as a hospital's config has: the check syncs her before it stores anything.
        cfg.write_text(f"database: sqlite:///{tmp_path / 'tw.db'}\nctgov:\n  base_url: {api.base_url}\n"
                       f"  requests_per_minute: 6000\ntrials: [{NCT}]\n"
                       f"subscribers:\n  - email: dr@example.org\n    trials: [{NCT}]\n")
        yield cfg


def test_a_quiet_check_imports_no_mail_template_scheduler_or_web_code(check_config):
    first = child("--config", str(check_config), "check", NCT)
    assert first["code"] == 0 and "First snapshot" in first["stdout"]
    quiet = child("--config", str(check_config), "check", NCT)
    assert quiet["code"] == 0 and "No change since" in quiet["stdout"]
    loaded = set(quiet["modules"])
    # It does sync the subscriber (a change it stored must reach her), which needs none of these.
    assert "trialwatch.notify.subscribers" in loaded
    unused = {"jinja2", "trialwatch.notify.compose", "trialwatch.notify.digest", "trialwatch.notify.outbox",
              "trialwatch.notify.channels", "trialwatch.notify.preview", "trialwatch.mailer", "smtplib",
              "itsdangerous", "apscheduler", "starlette", "trialwatch.web", "alembic", "premailer"}
    assert sorted(unused & loaded) == []


def test_the_collector_is_off_during_start_up_and_back_on_once_the_store_is_open(tmp_path):
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"database: sqlite:///{tmp_path / 'tw.db'}\n"
                   "subscribers:\n  - email: dr@example.org\n    trials: [NCT03268603]\n")
    # A command that fails before opening the store ends with the collector still off (it exits).
    bad = child("--config", str(tmp_path / "missing.yaml"), "subscribers", startup="console")
    assert bad["code"] == 2 and bad["gc_enabled"] is False
    # One that opens the store: what start-up made is frozen, and the collector runs again for
    # the command's own work (a daemon, a 10,000-trial poll).
    listed = child("--config", str(cfg), "subscribers", "--json", startup="console")
    assert listed["code"] == 0 and "dr@example.org" in listed["stdout"]
    assert listed["gc_enabled"] is True and listed["frozen"] > 10_000
    # `db upgrade` opens no store, and turns the collector back on before its migrations.
    upgraded = child("--config", str(tmp_path / "config.yaml"), "db", "upgrade", startup="console")
    assert upgraded["code"] == 0 and upgraded["gc_enabled"] is True
    # main() alone (tests, library callers) leaves the collector as it found it.
    plain = child("--config", str(cfg), "subscribers", "--json")
    assert plain["gc_enabled"] is True and plain["frozen"] == 0


def test_a_client_loads_no_ca_bundle_until_an_https_request_needs_one(record, monkeypatch):
    """Loading the CA bundle is ~15 ms of a one-shot command: a plain-http base URL (a local
    mirror, the stand-in) never needs it; an https request gets httpx's default, verified TLS."""
    import ssl

    from trialwatch import ctgov
    from trialwatch.errors import CtgovUnreachable

    loaded = []
    real = ssl.SSLContext.load_verify_locations

    def spy(self, *args, **kwargs):  # noqa: ANN001
        loaded.append((self.verify_mode, self.check_hostname))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(ssl.SSLContext, "load_verify_locations", spy)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    with StandIn([record(NCT)]) as api, ctgov.Client(api.base_url, requests_per_minute=6000) as client:
        assert client.study(NCT).nct_id == NCT
    assert loaded == []
    # Nothing listens on port 9: the request fails, after its transport was made, verifying.
    with ctgov.Client("https://127.0.0.1:9/api/v2", max_retries=0) as client, pytest.raises(CtgovUnreachable):
        client.version()
    assert loaded == [(ssl.CERT_REQUIRED, True)]

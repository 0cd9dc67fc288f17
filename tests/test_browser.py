"""A physician's whole journey in a real headless Chromium, against real servers on 127.0.0.1:
trialwatch's web app (uvicorn), a local SMTP server (aiosmtpd) and the ClinicalTrials.gov
stand-in. Nothing leaves the machine.

She subscribes through the form, follows the link in the confirmation email, gets a digest when
the trial's status changes, unsubscribes through the digest's link, and then gets nothing.
The pages are photographed on the way (desktop and phone): into the test's temporary folder,
or into docs/ when TRIALWATCH_SCREENSHOTS=docs is set (how docs/web-*.png are refreshed).
"""

from __future__ import annotations

import contextlib
import copy
import email
import email.policy
import re
import socket
import threading
import time
import os
from pathlib import Path

import pytest
from sqlalchemy import func, select
from smtp_server import smtp_server  # noqa: F401 - the fixture

from trialwatch.store import Message

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium")]

DOCS_DIR = Path(__file__).resolve().parent.parent / "docs"
TRIAL = "NCT03281889"      # recruiting, two sites, a central contact
NEIGHBOUR = "NCT02513394"  # a second watched trial, so the index is not a list of one
SECRET = "browser-test-secret-0123456789"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _mail(smtp, count: int, timeout: float = 10) -> list[email.message.EmailMessage]:
    """The first ``count`` messages the SMTP server received, parsed (waits for them)."""
    deadline = time.monotonic() + timeout
    while len(smtp.messages) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(smtp.messages) >= count, f"expected {count} message(s), got {len(smtp.messages)}"
    return [email.message_from_bytes(m.data, policy=email.policy.default) for m in smtp.messages[:count]]


@pytest.fixture
def api(record):
    from standin import StandIn

    with StandIn([record(TRIAL), record(NEIGHBOUR)]) as server:
        yield server


@pytest.fixture
def site(tmp_path, monkeypatch, smtp_server, api):
    """trialwatch served by uvicorn on a free port; yields (config, store, base_url)."""
    from trialwatch import config as configmod
    from trialwatch.store import open_store
    from trialwatch.web import create_app

    monkeypatch.setenv("TRIALWATCH_SECRET_KEY", SECRET)
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    (tmp_path / "config.yaml").write_text(f"""
database: sqlite:///{tmp_path / 'tw.db'}
trials: [{TRIAL}, {NEIGHBOUR}]
ctgov:
  base_url: {api.base_url}
  requests_per_minute: 6000
  max_retries: 0
email:
  from: trialwatch <alerts@trials.example.org>
  transport: smtp
  smtp: {smtp_server.config_yaml()}
  public_url: {base}
  retry_backoff_s: 0
""")
    cfg = configmod.load(tmp_path / "config.yaml")
    store = open_store(cfg.database_url)
    with serving(create_app(cfg, store), port):
        yield cfg, store, base
    store.close()


@contextlib.contextmanager
def serving(app, port: int):  # noqa: ANN001
    """``app`` served by a real uvicorn on 127.0.0.1:``port`` in a thread, until the block ends."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started, "uvicorn did not start"
    try:
        yield
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()


def _poll(cfg, store, api, data_timestamp: str) -> None:
    """One poll cycle against the stand-in, after the registry's daily refresh."""
    from trialwatch import ctgov, poller

    api.set_data_timestamp(data_timestamp)
    with ctgov.Client.from_config(cfg.ctgov) as client:
        report = poller.poll(store, cfg, client=client)
    assert not report.errors, report.errors


def _change_status(api, record: dict, status: str, posted: str, why: str | None = None) -> dict:
    r = copy.deepcopy(record)
    sm = r["protocolSection"]["statusModule"]
    sm["overallStatus"] = status
    sm["lastUpdatePostDateStruct"] = {"date": posted, "type": "ACTUAL"}
    if why:
        sm["whyStopped"] = why
    api.put(r)
    return r


def _link(msg, path: str) -> str:
    text = msg.get_body(preferencelist=("plain",)).get_content()
    m = re.search(rf"(http://127\.0\.0\.1:\d+/{path}\?token=[\w.\-]+)", text)
    assert m, f"no /{path} link in:\n{text}"
    return m.group(1)


def test_a_physician_subscribes_confirms_gets_a_digest_and_unsubscribes(site, smtp_server, api, browser, record,
                                                                       tmp_path):
    DOCS = DOCS_DIR if os.environ.get("TRIALWATCH_SCREENSHOTS") == "docs" else tmp_path
    cfg, store, base = site
    _poll(cfg, store, api, "2026-11-25T09:00:05")          # first look: snapshots, no changes
    dr = "dr.grace@hospital.example.org"

    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)

    page.goto(base + "/")
    assert page.locator("h1").inner_text() == "Watched trials"
    assert page.get_by_text("Recruiting").first.is_visible()

    page.click(f"text={TRIAL}")
    assert page.url == f"{base}/trials/{TRIAL}"
    assert page.get_by_role("heading", name="Eligibility").is_visible()

    # She subscribes to the trial.
    page.click("text=Subscribe >> nth=0")
    page.fill("input[name=email]", dr)
    page.check(f"input[name=trials][value={TRIAL}]")
    page.check("input[name=min_severity][value=important]")
    page.screenshot(path=str(DOCS / "web-subscribe.png"), full_page=True)
    page.click("button[type=submit]")
    assert page.locator("h1").inner_text() == "Check your inbox"

    # The confirmation email arrives; its link shows a button (the GET changes nothing).
    confirmation = _mail(smtp_server, 1)[0]
    assert confirmation["To"].addresses[0].addr_spec == dr
    page.goto(_link(confirmation, "confirm"))
    assert page.locator("h1").inner_text() == "Confirm your subscription"
    page.click("button[type=submit]")
    assert page.locator("h1").inner_text() == "You are subscribed"

    # The trial is suspended; the next poll stores the change and sends her a digest.
    _change_status(api, record(TRIAL), "SUSPENDED", "2026-11-26", why="Funding paused")
    _poll(cfg, store, api, "2026-11-26T09:00:05")
    from trialwatch import notify

    notify.send_pending(store, cfg)
    digest = _mail(smtp_server, 2)[1]
    assert digest["To"].addresses[0].addr_spec == dr
    assert "Suspended" in digest.get_body(preferencelist=("plain",)).get_content()
    assert digest["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"

    # The pages now show the change and the status timeline.
    page.goto(base + "/")
    assert page.locator("table.trials").get_by_text("Suspended").is_visible()
    page.screenshot(path=str(DOCS / "web-index.png"), full_page=True)
    page.goto(f"{base}/trials/{TRIAL}")
    assert "Funding paused" in page.content()
    assert page.locator("ol.status-timeline li").count() == 2
    page.screenshot(path=str(DOCS / "web-trial.png"), full_page=True)
    phone = browser.new_page(viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True)
    phone.goto(f"{base}/trials/{TRIAL}")
    assert phone.evaluate("document.documentElement.scrollWidth") <= 390   # no sideways scrolling
    phone.screenshot(path=str(DOCS / "web-trial-phone.png"))
    phone.close()

    # She unsubscribes through the digest's link, in the browser.
    page.goto(_link(digest, "unsubscribe"))
    assert page.locator("h1").inner_text() == "Stop all alerts?"
    page.click("button[type=submit]")
    assert page.locator("h1").inner_text() == "Unsubscribed"

    # The next change reaches nobody.
    _change_status(api, record(TRIAL), "TERMINATED", "2026-11-27", why="Sponsor decision")
    _poll(cfg, store, api, "2026-11-27T09:00:05")
    notify.send_pending(store, cfg)
    time.sleep(0.5)
    assert len(smtp_server.messages) == 2
    with store.session() as s:
        assert s.scalar(select(func.count()).select_from(Message).where(Message.state != "sent")) == 0
    assert errors == [], errors    # no CSP violations or other console errors

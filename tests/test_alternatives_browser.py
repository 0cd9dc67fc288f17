"""The trial page's "Recruiting alternatives" section in a real headless Chromium: trialwatch's
web app (uvicorn) after two polls of the local stand-in serving the SYNTHETIC scene of
tests/alt_records.py, in which the followed ALS cell-therapy trial stops recruiting."""

from __future__ import annotations

import copy

import pytest

from alt_records import CLOSED, OWN_EA, ROCHESTER, scene
from standin import StandIn
from test_browser import CHROMIUM, _free_port, browser, serving  # noqa: F401 - the fixture

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium")]


def _status(r: dict, status: str, posted: str) -> dict:
    r = copy.deepcopy(r)
    r["protocolSection"]["statusModule"]["overallStatus"] = status
    r["protocolSection"]["statusModule"]["lastUpdatePostDateStruct"] = {"date": posted, "type": "ACTUAL"}
    return r


@pytest.fixture
def site(tmp_path, monkeypatch):
    """Two polls (the trial recruits, then it does not), then the web app on a free port."""

    from trialwatch import config as configmod
    from trialwatch import poller
    from trialwatch.store import open_store
    from trialwatch.web import create_app

    monkeypatch.setenv("TRIALWATCH_SECRET_KEY", "browser-test-secret-0123456789")  # the web app signs forms
    records = scene()
    closed = records.pop("closed")
    with StandIn([_status(closed, "RECRUITING", "2026-11-20"), *records.values()],
                 data_timestamp="2026-11-24T09:00:05") as api:
        (tmp_path / "config.yaml").write_text(
            f"database: sqlite:///{tmp_path / 'tw.db'}\ntrials: [{CLOSED}]\nhistory:\n  per_poll: 0\n"
            f"ctgov:\n  base_url: {api.base_url}\n  requests_per_minute: 6000\n  max_retries: 0\n")
        cfg = configmod.load(tmp_path / "config.yaml")
        store = open_store(cfg.database_url)
        poller.poll(store, cfg, send=False)
        api.put(_status(closed, "ACTIVE_NOT_RECRUITING", "2026-11-25"))
        api.set_data_timestamp("2026-11-25T09:00:05")
        assert poller.poll(store, cfg, send=False).alternatives_searched == 1
        api.reset_requests()
        port = _free_port()
        with serving(create_app(cfg, store), port):
            yield f"http://127.0.0.1:{port}", api
        store.close()


def test_a_physician_ranks_the_alternatives_of_a_closed_trial_by_her_place(site, browser):
    base, api = site
    page = browser.new_page()
    page.goto(f"{base}/trials/{CLOSED}")
    section = page.locator("section.alternatives")
    assert section.locator("h2").inner_text() == "Recruiting alternatives"
    assert "not a recommendation or an eligibility judgement" in section.inner_text()

    page.fill("#alt-near", f"{ROCHESTER[0]},{ROCHESTER[1]}")
    page.click("section.alternatives button[type=submit]")
    page.wait_for_url(f"**/trials/{CLOSED}?near=*")

    items = page.locator("ol.alternatives-list > li")
    first_links = [items.nth(i).locator("a").first.get_attribute("href") for i in range(items.count())]
    assert first_links == [f"https://clinicaltrials.gov/study/{n}"
                           for n in ("NCT90000001", "NCT90000002", "NCT90000003")]
    assert "Nearest open site: Synthetic site 1 of NCT90000001" in items.nth(0).inner_text()
    assert "Why listed: same condition" in items.nth(0).inner_text()
    ea = page.locator("ul.expanded-access > li a")
    assert ea.first.inner_text() == OWN_EA
    # The page ranks the poll's stored answer: the browser's visits cost the registry nothing.
    assert api.requests == []

"""Ready to refer, in a real headless Chromium (issue 12): nearest open sites to ``?near=``,
the warnings, the collapsed and filtered site list, and subscribing from a trial's page (the
trial ticked; an address already subscribed adds a trial through a confirmation mail).

Photographed at desktop (1280) and phone (390) width: into the test's temporary folder, or into
docs/ when TRIALWATCH_SCREENSHOTS=docs is set.
"""

from __future__ import annotations

import os

import pytest
from smtp_server import smtp_server  # noqa: F401 - the fixture
from test_browser import CHROMIUM, DOCS_DIR, NEIGHBOUR, TRIAL, _link, _mail, _poll, api, browser, site  # noqa: F401

pytestmark = [pytest.mark.browser, pytest.mark.corpus,
              pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium")]


def test_nearest_sites_warnings_and_the_collapsed_filtered_site_list(site, api, browser, tmp_path):
    docs = DOCS_DIR if os.environ.get("TRIALWATCH_SCREENSHOTS") == "docs" else tmp_path
    cfg, store, base = site
    _poll(cfg, store, api, "2026-11-25T09:00:05")
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto(f"{base}/trials/{TRIAL}")
    assert page.locator("li.warning-stale").is_visible()
    assert page.locator("li.warning-past_completion").is_visible()
    # She types where her patient lives; the open sites come nearest first, with km and miles.
    page.fill("input[name=near]", "Boston, MA")
    page.click("form.near-form button")
    first = page.locator("ol.nearest li").first
    assert "Massachusetts General Hospital" in first.inner_text()
    assert " km · " in first.inner_text() and " mi" in first.inner_text()
    assert "MD Anderson" in page.locator("ol.nearest li").nth(1).inner_text()
    # The full list is collapsed; opened and filtered by state on the server.
    assert not page.locator("ul.sites li").first.is_visible()
    page.click("#sites summary")
    assert page.locator("ul.sites li").count() == 2
    page.select_option("select[name=state]", "Texas")
    page.click("form.site-filter button")
    assert "state=Texas" in page.url and "near=Boston" in page.url
    assert page.locator("ul.sites li").count() == 1
    assert "MD Anderson" in page.locator("ul.sites li").inner_text()
    page.goto(f"{base}/trials/{TRIAL}?near=Boston,+MA")
    page.screenshot(path=str(docs / "web-trial-referral.png"), full_page=True)
    phone = browser.new_page(viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True)
    phone.goto(f"{base}/trials/{TRIAL}?near=Boston,+MA")
    width = phone.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"the phone page scrolls sideways ({width} px)"
    phone.screenshot(path=str(docs / "web-trial-referral-phone.png"), full_page=True)
    assert not errors, errors


def test_subscribing_from_a_trial_ticks_it_and_an_existing_subscriber_adds_one_by_mail(site, api, browser,
                                                                                      smtp_server):
    cfg, store, base = site
    _poll(cfg, store, api, "2026-11-25T09:00:05")
    dr = "dr.lee@hospital.example.org"
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(f"{base}/trials/{TRIAL}")
    page.click("text=Get email when this trial changes")
    assert page.url == f"{base}/subscribe?trial={TRIAL}"
    assert page.is_checked(f"input[name=trials][value={TRIAL}]")
    assert not page.is_checked(f"input[name=trials][value={NEIGHBOUR}]")
    page.fill("input[name=email]", dr)
    page.click("button[type=submit]")
    assert page.locator("h1").inner_text() == "Check your inbox"
    page.goto(_link(_mail(smtp_server, 1)[0], "confirm"))
    page.click("button[type=submit]")
    assert page.locator("h1").inner_text() == "You are subscribed"

    # A week later she wants the neighbouring trial too, from its page.
    page.goto(f"{base}/trials/{NEIGHBOUR}")
    page.click("text=Get email when this trial changes")
    assert page.is_checked(f"input[name=trials][value={NEIGHBOUR}]")
    page.fill("input[name=email]", dr)
    page.click("button[type=submit]")
    assert page.locator("h1").inner_text() == "Check your inbox"
    added = _mail(smtp_server, 2)[1]
    assert added["Subject"] == "Confirm what to add to your trialwatch alerts"
    assert NEIGHBOUR in added.get_body(preferencelist=("plain",)).get_content()
    sub = store.subscriber_by_address(dr)
    assert {x.target for x in sub.subscriptions} == {TRIAL}          # nothing before she confirms
    page.goto(_link(added, "confirm"))
    assert page.locator("h1").inner_text() == "Add to your alerts?"
    page.click("button[type=submit]")
    assert page.locator("h1").inner_text() == "Added to your alerts"
    assert {x.target for x in store.subscriber(sub.id).subscriptions} == {TRIAL, NEIGHBOUR}

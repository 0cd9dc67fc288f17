"""A subscriber's place (issue 12): config subscribers' ``location`` is stored on sync; the
sign-up and manage forms take one, checked offline (an unknown place is a form error that says
why, never a guess); ``trialwatch subscribers`` prints a header row."""

from __future__ import annotations

import re

import pytest
from starlette.testclient import TestClient

from trialwatch import config as configmod
from trialwatch import tokens
from trialwatch.cli import main
from trialwatch.notify import sync_subscribers
from trialwatch.store import open_store
from trialwatch.web import create_app

SECRET = "test-secret-key-0123456789"
NCT = "NCT03281889"


@pytest.fixture
def cfg_path(tmp_path, monkeypatch):
    monkeypatch.setenv("TRIALWATCH_SECRET_KEY", SECRET)
    path = tmp_path / "config.yaml"
    path.write_text(f"""
database: sqlite:///{tmp_path / 'tw.db'}
trials: [{NCT}]
subscribers:
  - email: dr@example.org
    location: 'Rochester, MN'
    trials: [{NCT}]
email:
  transport: file
  outbox_dir: {tmp_path / 'outbox'}
  public_url: https://trials.example.org
""")
    return path


def test_a_config_subscribers_location_is_stored_on_sync_and_follows_the_file(cfg_path):
    cfg = configmod.load(cfg_path)
    store = open_store(cfg.database_url)
    sync_subscribers(store, cfg)
    assert store.subscriber_by_address("dr@example.org").location == "Rochester, MN"
    cfg_path.write_text(cfg_path.read_text().replace("'Rochester, MN'", "'55905'"))
    sync_subscribers(store, configmod.load(cfg_path))
    assert store.subscriber_by_address("dr@example.org").location == "55905"
    store.close()


def _manage(client, store):
    sub = store.subscriber_by_address("dr@example.org")
    token = tokens.make(SECRET, "manage", sub.id, sub.token_version)
    page = client.get(f"/manage?token={token}")
    csrf = re.search(r'name="csrf_token" value="([0-9a-f]+)"', page.text).group(1)
    return page, lambda **extra: client.post("/manage", data={
        "csrf_token": csrf, "token": token, "trials": [NCT], "min_severity": "important",
        "digest": "each_poll", **extra})


def test_the_manage_page_sets_a_location_and_refuses_an_unknown_one_with_the_reason(cfg_path):
    cfg = configmod.load(cfg_path)
    store = open_store(cfg.database_url)
    sync_subscribers(store, cfg)
    with TestClient(create_app(cfg, store), base_url="https://trials.example.org") as client:
        page, post = _manage(client, store)
        assert 'name="location"' in page.text and 'value="Rochester, MN"' in page.text
        bad = post(location="Atlantis, Nowhere")
        assert bad.status_code == 400
        assert "Location: in &#39;Atlantis, Nowhere&#39;, &#39;Nowhere&#39; is neither a US state nor a country" in bad.text
        assert store.subscriber_by_address("dr@example.org").location == "Rochester, MN"
        ok = post(location="Lyon, France")
        assert ok.status_code == 200
        assert store.subscriber_by_address("dr@example.org").location == "Lyon, France"
    store.close()


def test_the_sign_up_form_asks_for_a_location(cfg_path):
    cfg = configmod.load(cfg_path)
    store = open_store(cfg.database_url)
    with TestClient(create_app(cfg, store), base_url="https://trials.example.org") as client:
        assert 'name="location"' in client.get("/subscribe").text
    store.close()


def test_the_subscribers_listing_has_a_header_row(cfg_path, capsys):
    assert main(["--config", str(cfg_path), "subscribers"]) in (0, None)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["ADDRESS", "STATE", "SOURCE", "SEVERITY", "DIGEST", "FOLLOWS"]
    assert lines[1].startswith("dr@example.org")


def test_the_unsubscribe_page_offers_a_way_back(cfg_path):
    cfg = configmod.load(cfg_path)
    store = open_store(cfg.database_url)
    sync_subscribers(store, cfg)
    sub = store.subscriber_by_address("dr@example.org")
    token = tokens.make(SECRET, "unsubscribe", sub.id, sub.token_version)
    with TestClient(create_app(cfg, store), base_url="https://trials.example.org") as client:
        asked = client.get(f"/unsubscribe?token={token}").text
        assert re.search(r'href="/manage\?token=[^"]+">manage your alerts', asked)
        done = client.post(f"/unsubscribe?token={token}", data={"token": token}).text
        assert "Unsubscribed" in done and 'href="/subscribe"' in done
    store.close()

"""The web app under hostile or concurrent input: sign-up races on PostgreSQL and SQLite, non-ASCII
addresses, redirects that must never come from the Host header.

The race tests are real concurrency: threads, each on its own database connection, released at
once by a barrier, against the database of ``db_url`` (SQLite, and PostgreSQL when
TRIALWATCH_TEST_DATABASE_URL is set).
"""

from __future__ import annotations

import re
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import func, select
from starlette.testclient import TestClient

from trialwatch.store import RateEvent, Subscriber
from trialwatch.web import MAX_SUBSCRIBES_PER_CLIENT
from conftest import web_config

SECRET = "test-secret-key-0123456789"
WATCHED = "NCT02552212"
N = 40


@pytest.fixture
def cfg(tmp_path, monkeypatch, db_url):
    monkeypatch.setenv("TRIALWATCH_DATABASE_URL", db_url)
    return web_config(tmp_path, monkeypatch, f"""
trials: [{WATCHED}]
""")


def at_once(fn, n: int = N) -> list:
    """Run ``fn(i)`` in ``n`` threads released together; their results in order."""
    barrier = threading.Barrier(n)

    def run(i: int):
        barrier.wait()
        return fn(i)

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(run, range(n)))


def sign_up(app, email: str, client_ip: str = "203.0.113.7"):
    with TestClient(app, base_url="https://trials.example.org", client=(client_ip, 50000)) as c:
        token = re.search(r'name="csrf_token" value="([0-9a-f]+)"', c.get("/subscribe").text).group(1)
        return c.post("/subscribe", data={"csrf_token": token, "email": email, "trials": [WATCHED],
                                          "min_severity": "important", "digest": "each_poll"})


# -- races (item 6) -----------------------------------------------------------------------------

def test_simultaneous_sign_ups_of_one_new_address_all_succeed_and_make_one_row(app, db):
    # Each from its own client, so no rate limit stands in the way.
    pages = at_once(lambda i: sign_up(app, "dr.same@example.org", client_ip=f"198.51.100.{i + 1}"))

    assert [p.status_code for p in pages] == [200] * N
    with db.session() as s:
        rows = s.scalars(select(Subscriber).where(Subscriber.email == "dr.same@example.org")).all()
        assert [(r.state, r.source) for r in rows] == [("pending", "web")]
        # Every sign-up bumped the confirmation link's version exactly once.
        assert rows[0].token_version == N


def test_a_rate_limit_holds_under_simultaneous_requests(app, db):
    web = app.state.web

    allowed = at_once(lambda i: web.allow("subscribe_client", "203.0.113.9", MAX_SUBSCRIBES_PER_CLIENT))

    assert allowed.count(True) == MAX_SUBSCRIBES_PER_CLIENT
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(RateEvent)) == MAX_SUBSCRIBES_PER_CLIENT


def test_simultaneous_sign_ups_from_one_client_stop_at_its_limit(app, db):
    pages = at_once(lambda i: sign_up(app, f"person{i}@example.org"))

    codes = [p.status_code for p in pages]
    assert codes.count(200) == MAX_SUBSCRIBES_PER_CLIENT and codes.count(429) == N - MAX_SUBSCRIBES_PER_CLIENT
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(Subscriber)) == MAX_SUBSCRIBES_PER_CLIENT


# -- non-ASCII addresses (item 5) ----------------------------------------------------------------

@pytest.mark.parametrize("email", ["üser@example.org", "dr.neuro@exämple.org", "医生@example.org"])
def test_a_non_ascii_address_is_refused_with_a_clear_400_and_stores_nothing(app, db, email):
    page = sign_up(app, email)

    assert page.status_code == 400
    assert "ASCII" in page.text
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(Subscriber)) == 0


# -- redirects (item 11) -------------------------------------------------------------------------

@pytest.mark.parametrize("path, target", [
    (f"/trials/{WATCHED}/", f"/trials/{WATCHED}"),
    ("/subscribe/", "/subscribe"),
    (f"/trials/{WATCHED}/feed.atom/?a=1", f"/trials/{WATCHED}/feed.atom?a=1"),
])
def test_a_trailing_slash_redirects_to_a_path_on_this_site_whatever_the_host_header(app, path, target):
    with TestClient(app, base_url="https://trials.example.org") as c:
        page = c.get(path, headers={"host": "evil.example"}, follow_redirects=False)
        assert page.status_code == 307
        assert page.headers["location"] == target
        assert c.get(path, follow_redirects=True).status_code == 200


@pytest.mark.parametrize("path", ["/\\evil.example/", "/%5Cevil.example/", "/%2F%2Fevil.example/",
                                  "/nowhere/", "///trials/x//", "/trials//evil.example/"])
def test_no_slash_redirect_leaves_this_site(app, path):
    with TestClient(app, base_url="https://trials.example.org") as c:
        page = c.get(path, headers={"host": "evil.example"}, follow_redirects=False)
        location = page.headers.get("location")
        assert page.status_code == 404 if location is None else re.match(r"/[^/\\]", location), (path, location)
        assert "evil" not in (location or "")

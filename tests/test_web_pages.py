"""The public pages at scale: the home page paged and searchable, and conditional GET.

Pages and feeds change only when something writes the database (a poll, a check): they carry
an ETag and a Last-Modified derived from that, a client whose copy still holds gets a 304, and
any new write (a poll, a change) gives a new validator, so no 304 is ever answered across one.
"""

from __future__ import annotations

import copy
import datetime as dt
import re
from email.utils import format_datetime

import pytest
from starlette.testclient import TestClient

from trialwatch.web import PER_PAGE, SECURITY_HEADERS, create_app
from conftest import web_config

SECRET = "test-secret-key-0123456789"
FETCHED = "NCT02552212"   # "Multicenter Study Evaluating Certolizumab Pegol ... axSpA ..."
OTHER = "NCT03934567"     # "... Oral Abexinostat ... Follicular Lymphoma"
# 120 more watched trials, never fetched: three pages of the home page in all.
FILLER = [f"NCT9{i:07d}" for i in range(120)]
PAST = dt.datetime(2026, 1, 2, 10, 0)


@pytest.fixture
def cfg(tmp_path, monkeypatch):
    return web_config(tmp_path, monkeypatch, f"""
database: sqlite:///{tmp_path / 'tw.db'}
trials: [{FETCHED}, {OTHER}, {', '.join(FILLER)}]
""")


@pytest.fixture
def app(cfg, db):
    app = create_app(cfg, db)
    # Trial pages are judged on a day (their warnings); that day's start is before everything
    # stored here, so their Last-Modified is the poll's end like every other page's.
    app.state.web.today = lambda: PAST.date()
    return app


@pytest.fixture
def stored(db, record):
    """Two trials fetched and a finished poll, all long ago (so Last-Modified is settled)."""
    db.record_fetch(record(FETCHED), fetched_at=PAST)
    db.record_fetch(record(OTHER), fetched_at=PAST)
    poll = db.start_poll()
    with db.session() as s, s.begin():
        from trialwatch.store import Poll

        row = s.get(Poll, poll)
        row.started_at, row.finished_at, row.complete = PAST, PAST + dt.timedelta(minutes=1), True
    return db


def listed(page) -> list[str]:
    return re.findall(r'<a href="/trials/(NCT\d{8})"><strong>', page.text)


def poll_now(db) -> None:
    db.finish_poll(db.start_poll(), complete=True, skipped=False, full=False, data_timestamp=None, requests=1,
                   bytes_received=0, trials_checked=0, trials_changed=0, changes=0, error=None)


# -- paging and search ---------------------------------------------------------------------------

def test_the_home_page_lists_fifty_trials_a_page_in_watch_list_order(client):
    everything = [FETCHED, OTHER, *FILLER]
    first = client.get("/")
    assert listed(first) == everything[:PER_PAGE] and PER_PAGE == 50
    assert "Page 1 of 3" in first.text and 'href="/?page=2"' in first.text and "122 trials watched" in first.text
    assert listed(client.get("/?page=2")) == everything[50:100]
    last = client.get("/?page=3")
    assert listed(last) == everything[100:] and 'href="/?page=2"' in last.text and "?page=4" not in last.text


@pytest.mark.parametrize("page", ["99", "0", "-1", "two", "٣"])
def test_a_page_number_out_of_range_or_not_a_number_shows_a_real_page(client, page):
    resp = client.get("/", params={"page": page})
    assert resp.status_code == 200
    assert listed(resp) in ([FETCHED, OTHER, *FILLER][:50], [FETCHED, OTHER, *FILLER][100:])


def test_search_by_nct_number_finds_that_trial(client, stored):
    for q in (OTHER, OTHER.lower(), OTHER[3:], " NCT0393 "):
        page = client.get("/", params={"q": q})
        assert listed(page) == [OTHER], q
        assert "1 trial match" in page.text


def test_search_by_words_of_the_title_in_any_case(client, stored):
    assert listed(client.get("/", params={"q": "certolizumab"})) == [FETCHED]
    assert listed(client.get("/", params={"q": "FOLLICULAR lymphoma"})) == [OTHER]
    assert listed(client.get("/", params={"q": "study"})) == [FETCHED, OTHER]
    # Every word must be in the title: these two are in different titles.
    none = client.get("/", params={"q": "certolizumab lymphoma"})
    assert listed(none) == [] and "No watched trial matches" in none.text


def test_search_results_are_paged_and_the_pager_keeps_the_query(client):
    page = client.get("/", params={"q": "NCT900000"})  # the 100 fillers NCT900000xx
    assert listed(page) == FILLER[:50] and "100 trials match" in page.text
    assert 'href="/?page=2&amp;q=NCT900000"' in page.text
    assert listed(client.get("/", params={"q": "NCT900000", "page": "2"})) == FILLER[50:100]


def test_the_query_is_escaped_where_it_is_shown(client):
    page = client.get("/", params={"q": '<script>alert(1)</script>'})
    assert "<script>" not in page.text and "&lt;script&gt;" in page.text


# -- validators and 304 --------------------------------------------------------------------------

PUBLIC = ["/", "/?page=2", "/?q=lymphoma", f"/trials/{FETCHED}", f"/trials/{FETCHED}/feed.atom"]


@pytest.mark.parametrize("path", PUBLIC)
def test_public_pages_carry_etag_and_last_modified_and_no_cookie(client, stored, path):
    resp = client.get(path)
    assert resp.status_code == 200
    assert re.fullmatch(r'W/"[0-9a-f]+"', resp.headers["etag"])
    assert resp.headers["last-modified"] == "Fri, 02 Jan 2026 10:01:00 GMT"  # the poll's end
    assert resp.headers["cache-control"] == "no-cache"
    # No form, no CSRF token, no cookie: the same bytes can go to everyone.
    assert "set-cookie" not in resp.headers


@pytest.mark.parametrize("path", PUBLIC)
def test_if_none_match_gets_a_304_with_the_security_headers(client, stored, path):
    etag = client.get(path).headers["etag"]
    resp = client.get(path, headers={"if-none-match": etag})
    assert resp.status_code == 304 and resp.content == b""
    assert resp.headers["etag"] == etag
    for name, value in SECURITY_HEADERS:
        assert resp.headers[name.decode()] == value.decode()
    assert client.get(path, headers={"if-none-match": f'"other", {etag}'}).status_code == 304
    assert client.get(path, headers={"if-none-match": '"other"'}).status_code == 200


def test_if_modified_since_gets_a_304_unless_the_page_is_newer(client, stored):
    path = f"/trials/{FETCHED}"
    modified = client.get(path).headers["last-modified"]
    assert client.get(path, headers={"if-modified-since": modified}).status_code == 304
    later = format_datetime(PAST.replace(tzinfo=dt.timezone.utc) + dt.timedelta(days=1), usegmt=True)
    assert client.get(path, headers={"if-modified-since": later}).status_code == 304
    earlier = format_datetime(PAST.replace(tzinfo=dt.timezone.utc), usegmt=True)
    assert client.get(path, headers={"if-modified-since": earlier}).status_code == 200
    assert client.get(path, headers={"if-modified-since": "not a date"}).status_code == 200


def test_if_none_match_decides_over_if_modified_since(client, stored):
    path = f"/trials/{FETCHED}"
    modified = client.get(path).headers["last-modified"]
    resp = client.get(path, headers={"if-none-match": '"stale"', "if-modified-since": modified})
    assert resp.status_code == 200


def test_a_new_poll_gives_every_page_a_new_validator_and_no_304(client, stored, app):
    before = {p: client.get(p) for p in PUBLIC}
    poll_now(stored)
    # A minute on: the new poll's second is over, so it has a Last-Modified too.
    app.state.web.pages.clock = lambda: dt.datetime.now(dt.timezone.utc).replace(tzinfo=None) + dt.timedelta(minutes=1)
    for path, old in before.items():
        resp = client.get(path, headers={"if-none-match": old.headers["etag"]})
        assert resp.status_code == 200, path
        assert resp.headers["etag"] != old.headers["etag"]
        resp = client.get(path, headers={"if-modified-since": old.headers["last-modified"]})
        assert resp.status_code == 200, path
        assert resp.headers["last-modified"] != old.headers["last-modified"]


def test_a_new_change_is_served_not_a_304_of_the_cached_page(client, stored, record):
    path = f"/trials/{FETCHED}"
    old = client.get(path)
    assert "Suspended" not in old.text
    changed = copy.deepcopy(record(FETCHED))
    changed["protocolSection"]["statusModule"]["overallStatus"] = "SUSPENDED"
    stored.record_fetch(changed, fetched_at=PAST + dt.timedelta(hours=1))
    resp = client.get(path, headers={"if-none-match": old.headers["etag"]})
    assert resp.status_code == 200 and "Suspended" in resp.text
    feed = client.get(f"{path}/feed.atom")
    assert "SUSPENDED" in feed.text or "Suspended" in feed.text


def test_a_check_of_an_unchanged_trial_changes_the_validator(client, stored):
    """`trialwatch check` stores no version when nothing changed, but the page's "last checked" moves."""
    path = f"/trials/{FETCHED}"
    old = client.get(path)
    stored.mark_checked([FETCHED], at=PAST + dt.timedelta(hours=2))
    resp = client.get(path, headers={"if-none-match": old.headers["etag"]})
    assert resp.status_code == 200 and "2026-01-02 12:00 UTC" in resp.text


def test_a_new_day_gives_a_new_validator_and_the_page_judged_on_that_day(client, stored, record, app):
    """A record's warnings depend on the day ("status last verified 13 months ago"): with no
    write at all, the cached page and its validators must not outlive the day they were made."""
    path = f"/trials/{FETCHED}"
    recruiting = copy.deepcopy(record(FETCHED))
    sm = recruiting["protocolSection"]["statusModule"]
    sm["overallStatus"], sm["statusVerifiedDate"] = "RECRUITING", "2026-01"
    stored.record_fetch(recruiting, fetched_at=PAST + dt.timedelta(hours=1))
    web = app.state.web
    web.today = lambda: dt.date(2026, 3, 1)
    old = client.get(path)
    assert old.status_code == 200 and "Status last verified" not in old.text
    assert client.get(path, headers={"if-none-match": old.headers["etag"]}).status_code == 304
    web.today = lambda: dt.date(2027, 6, 1)
    resp = client.get(path, headers={"if-none-match": old.headers["etag"]})
    assert resp.status_code == 200 and "Status last verified 2026-01" in resp.text
    assert resp.headers["etag"] != old.headers["etag"]
    # A client that only kept Last-Modified is not told its copy from before midnight holds.
    assert client.get(path, headers={"if-modified-since": old.headers["last-modified"]}).status_code == 200


def test_unwatching_changes_the_home_page_validator(client, stored, cfg):
    old = client.get("/")
    stored.watch([FETCHED])
    assert client.get("/", headers={"if-none-match": old.headers["etag"]}).status_code == 200


def test_last_modified_is_withheld_until_its_second_is_over(client, db, record, app):
    """A second write in the same second would carry the same time: a client holding that time
    would get a 304 across it. The ETag still works meanwhile."""
    db.record_fetch(record(FETCHED), fetched_at=PAST)
    poll_now(db)
    stamp = db.page_stamp()
    app.state.web.pages.clock = lambda: stamp.changed_at
    resp = client.get("/")
    assert "last-modified" not in resp.headers and resp.headers["etag"]
    assert client.get("/", headers={"if-modified-since": "Fri, 01 Jan 2100 00:00:00 GMT"}).status_code == 200
    app.state.web.pages.clock = lambda: stamp.changed_at + dt.timedelta(seconds=1)
    assert client.get("/").headers["last-modified"]


def test_different_pages_have_different_etags(client, stored):
    tags = {client.get(p).headers["etag"] for p in PUBLIC}
    assert len(tags) == len(PUBLIC)


def test_a_missing_trial_is_a_404_without_validators(client, stored):
    resp = client.get("/trials/NCT00000001")
    assert resp.status_code == 404 and "etag" not in resp.headers


def test_forms_still_get_their_own_csrf_token_and_no_validators(client, stored):
    a = client.get("/subscribe")
    assert "etag" not in a.headers and a.headers["cache-control"] == "no-store"
    assert "csrf_token" in a.text and "set-cookie" in a.headers
    with TestClient(client.app, base_url="https://trials.example.org") as other:
        b = other.get("/subscribe")
        token = lambda r: re.search(r'name="csrf_token" value="([0-9a-f]+)"', r.text).group(1)  # noqa: E731
        assert token(a) != token(b)
        # The cached home page is the same for both: it holds no token.
        assert client.get("/").content == other.get("/").content
        assert "csrf" not in client.get("/").text


def test_the_cache_is_bounded():
    from trialwatch.pagecache import PageCache

    cache = PageCache("x", max_entries=3, max_bytes=10)
    for i in range(5):
        cache.put((i,), b"ab")
    assert cache.get((0,)) is None and cache.get((1,)) is None and cache.get((4,)) == b"ab"
    cache.put((9,), b"123456789")
    assert cache.get((4,)) is None and cache.get((9,)) == b"123456789"
    cache.put((10,), b"x" * 11)  # larger than the whole cache: not kept
    assert cache.get((10,)) is None


# -- the store's side, on SQLite and PostgreSQL --------------------------------------------------

def test_page_stamp_moves_with_every_write_a_page_shows_and_not_with_subscribers(store, record):
    from types import SimpleNamespace

    seen = [store.page_stamp()]

    def moved() -> bool:
        seen.append(store.page_stamp())
        return seen[-1] != seen[-2]

    store.record_fetch(record(FETCHED), fetched_at=PAST)
    assert moved()                                            # a new trial, snapshot
    poll = store.start_poll()
    assert moved()                                            # a poll starts ("running")
    store.mark_checked([FETCHED], at=PAST + dt.timedelta(hours=1))
    assert moved()                                            # checked, unchanged
    store.finish_poll(poll, complete=True, skipped=False, full=False, data_timestamp=None, requests=1,
                      bytes_received=0, trials_checked=1, trials_changed=0, changes=0, error=None)
    assert moved()                                            # the poll finishes
    changed = record(FETCHED)
    changed["protocolSection"]["statusModule"]["overallStatus"] = "SUSPENDED"
    store.record_fetch(changed, fetched_at=PAST + dt.timedelta(hours=2))
    assert moved()                                            # a change
    store.watch([FETCHED])
    assert moved()
    store.unwatch([FETCHED])
    assert moved()
    store.save_registry_versions(FETCHED, [{"version": 0, "date": "2015-09-01", "status": "RECRUITING"}])
    assert moved()                                            # backfill's version list
    store.page_stamp()
    assert not moved()                                        # reading moves nothing
    with store.session() as s, s.begin():
        from trialwatch.store import Subscriber

        s.add(Subscriber(email="dr.ada@example.org", state="active", source="web"))
    assert not moved()                                        # no page shows subscribers
    assert seen[-1].changed_at > PAST + dt.timedelta(hours=2)       # the version list, fetched now
    cfg = SimpleNamespace(trials=[FETCHED, OTHER, *FILLER], subscribers=[], searches=[])
    page = store.index_page(cfg, page=3, per_page=50)
    assert (page.total, page.pages, page.page) == (122, 3, 3) and [r.nct_id for r in page.rows] == FILLER[98:]
    found = store.index_page(cfg, q="certolizumab")
    assert [(r.nct_id, r.overall_status, r.found) for r in found.rows] == [(FETCHED, "SUSPENDED", True)]
    assert [r.found for r in store.index_page(cfg, q=OTHER).rows] == [False]   # watched, never fetched


def test_if_none_match_star_does_not_answer_for_a_page_that_does_not_exist(client, stored):
    assert client.get("/trials/NCT00000001", headers={"if-none-match": "*"}).status_code == 404


def test_the_served_connections_send_without_waiting_for_an_ack():
    """`serve` binds its own socket. asyncio turns Nagle off (TCP_NODELAY) on an accepted
    connection only when the listening socket says it is TCP; otherwise a response written as
    headers then body waited ~40 ms for the client's delayed ACK."""
    import asyncio
    import socket

    from trialwatch.web import listen_socket

    async def nodelay_of_an_accepted_connection() -> int:
        loop = asyncio.get_running_loop()
        seen: asyncio.Future = loop.create_future()

        class Probe(asyncio.Protocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                seen.set_result(transport.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
                transport.close()

        sock = listen_socket("127.0.0.1", 0)
        server = await loop.create_server(Probe, sock=sock)
        _, writer = await asyncio.open_connection(*sock.getsockname())
        try:
            return await asyncio.wait_for(seen, 30)
        finally:
            writer.close()
            server.close()

    assert asyncio.run(nodelay_of_an_accepted_connection())


def _gate_with_reads(results: list) -> tuple:
    """A StampGate over a read that blocks until released; ``results[i]`` is read i's outcome."""
    import asyncio
    import threading

    from trialwatch.pagecache import StampGate

    started: list[int] = []
    release = [threading.Event() for _ in results]

    def read() -> object:
        n = len(started)
        started.append(n)
        assert release[n].wait(30)
        if isinstance(results[n], Exception):
            raise results[n]
        return results[n]

    return StampGate(read, asyncio.to_thread), started, release


async def _until(cond) -> None:
    import asyncio

    for _ in range(30_000):  # a hang guard (about 30 s), not a timing assert
        if cond():
            return
        await asyncio.sleep(0.001)
    raise AssertionError("never happened")


def test_requests_waiting_together_share_one_stamp_read_that_began_after_they_arrived():
    """A page must show any write committed before its request: a request may share a stamp
    read with others, but never take one that was already under way when it arrived."""
    import asyncio

    async def scenario() -> tuple:
        gate, started, release = _gate_with_reads(["read 0", "read 1"])
        first = asyncio.ensure_future(gate.get())
        await _until(lambda: started == [0])
        # Two requests arrive while read 0 runs: it may predate their writes, so they wait.
        later = [asyncio.ensure_future(gate.get()) for _ in range(2)]
        await asyncio.sleep(0)
        release[0].set()
        got_first = await first
        await _until(lambda: len(started) >= 2)
        release[1].set()
        return got_first, [await f for f in later], started

    got_first, got_later, started = asyncio.run(scenario())
    assert got_first == "read 0"
    assert got_later == ["read 1", "read 1"]
    assert started == [0, 1]  # three requests, two reads


def test_a_failed_stamp_read_fails_its_waiters_and_the_next_request_reads_again():
    import asyncio

    async def scenario() -> tuple:
        gate, started, release = _gate_with_reads([RuntimeError("database unavailable"), "read 1"])
        waiting = [asyncio.ensure_future(gate.get()) for _ in range(2)]
        await _until(lambda: started == [0])
        release[0].set()
        errors = await asyncio.gather(*waiting, return_exceptions=True)
        release[1].set()
        return errors, await gate.get()

    errors, after = asyncio.run(scenario())
    assert [str(e) for e in errors] == ["database unavailable"] * 2
    assert after == "read 1"

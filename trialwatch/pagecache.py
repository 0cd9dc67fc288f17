"""Conditional GET and a bounded cache for the public pages and feeds.

Pages and feeds change only when something writes the database (a poll, ``check``, ``watch``,
``backfill``), so their validator is derived from ``Store.page_stamp()`` (one cheap statement),
never from rendering: the ETag is a hash of the stamp, the page's key (path and the query
parameters it reads) and a fingerprint of this server (version, config, templates); the
Last-Modified is the newest write time in the stamp. A request whose If-None-Match (or, without
one, If-Modified-Since) still holds is answered 304 without touching the page. Rendered bodies
are kept in a bounded LRU keyed by (key, stamp), so between polls a page is rendered once.

Between polls the stamp is the whole cost of a page, and many requests arrive at once:
``StampGate`` lets the requests waiting at the same moment share one read of it, never a read
that began before they arrived.

Only pages without forms go through here: they carry no CSRF token and set no cookie, so one
visitor's token can never be served to another.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable
from email.utils import format_datetime, parsedate_to_datetime
from typing import Any

MAX_ENTRIES = 512
MAX_BYTES = 64 * 1024 * 1024


class PageCache:
    """LRU of rendered bodies, bounded in entries and bytes; one render per key at a time."""

    def __init__(self, fingerprint: str, *, max_entries: int = MAX_ENTRIES, max_bytes: int = MAX_BYTES,
                 clock: Callable[[], dt.datetime] | None = None) -> None:
        self.fingerprint = fingerprint
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.clock = clock or (lambda: dt.datetime.now(dt.timezone.utc).replace(tzinfo=None))
        self._items: OrderedDict[tuple, bytes] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self._rendering: dict[tuple, threading.Lock] = {}

    def etag(self, key: tuple, stamp: Any) -> str:
        h = hashlib.blake2b(repr((self.fingerprint, key, stamp.key)).encode(), digest_size=12).hexdigest()
        return f'W/"{h}"'

    def last_modified(self, stamp: Any, since: dt.date | None = None) -> dt.datetime | None:
        """The stamp's time, once its second is over: a later write in the same second would
        carry the same time, and a client holding it would get a 304 across that change. With
        ``since`` (the local day a page is judged on), never before that day's start: the page
        may have changed at midnight without any write."""
        at = stamp.changed_at
        if at is None:
            return None
        if since is not None:
            midnight = dt.datetime.combine(since, dt.time()).astimezone(dt.timezone.utc).replace(tzinfo=None)
            at = max(at, midnight)
        if at.replace(microsecond=0) >= self.clock().replace(microsecond=0):
            return None
        return at.replace(microsecond=0)

    def get(self, key: tuple) -> bytes | None:
        with self._lock:
            body = self._items.get(key)
            if body is not None:
                self._items.move_to_end(key)
            return body

    def put(self, key: tuple, body: bytes) -> None:
        if len(body) > self.max_bytes:
            return
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= len(old)
            self._items[key] = body
            self._bytes += len(body)
            while len(self._items) > self.max_entries or self._bytes > self.max_bytes:
                _, dropped = self._items.popitem(last=False)
                self._bytes -= len(dropped)

    def body(self, key: tuple, build: Callable[[], bytes | None]) -> bytes | None:
        """The cached body for ``key``, or ``build()`` once (concurrent askers wait for it rather
        than all render the same page); None (not cached) when ``build`` says the page does not exist."""
        body = self.get(key)
        if body is not None:
            return body
        with self._lock:
            gate = self._rendering.setdefault(key, threading.Lock())
        with gate:
            body = self.get(key)
            if body is None:
                body = build()
                if body is not None:
                    self.put(key, body)
        with self._lock:
            self._rendering.pop(key, None)
        return body


class StampGate:
    """``read()`` (the page stamp) for concurrent requests, one read in flight at a time.

    A request joins the next read, which starts only once the one in flight is done: so every
    request gets the result of a read that BEGAN AFTER IT ARRIVED, and a write committed before
    a request is always seen by it, exactly as if each request read for itself. Requests that
    arrive during a read share the following one, so under load a read serves many. The read
    runs in a worker thread (``run``); state is kept per event loop (a test client may start
    one per request)."""

    def __init__(self, read: Callable[[], Any], run: Callable[..., Any]) -> None:
        self._read = read
        self._run = run  # e.g. starlette's run_in_threadpool
        self._loops: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    async def get(self) -> Any:
        loop = asyncio.get_running_loop()
        state = self._loops.setdefault(loop, {"next": None, "reader": None})
        if state["next"] is None:
            state["next"] = loop.create_future()
            # Retrieved even when every waiter went away (a client disconnected), so asyncio
            # does not log "exception was never retrieved".
            state["next"].add_done_callback(lambda f: f.cancelled() or f.exception())
        waiting = state["next"]
        if state["reader"] is None:
            state["reader"] = loop.create_task(self._reader(state))
        return await asyncio.shield(waiting)

    async def _reader(self, state: dict) -> None:
        try:
            while state["next"] is not None:
                # From here on, newcomers wait for the read after this one.
                batch, state["next"] = state["next"], None
                try:
                    batch.set_result(await self._run(self._read))
                except asyncio.CancelledError:
                    batch.cancel()
                    raise
                except Exception as e:  # noqa: BLE001 - handed to every waiter, which answers it
                    batch.set_exception(e)
        finally:
            state["reader"] = None
            if state["next"] is not None and not state["next"].done():
                state["next"].cancel()
                state["next"] = None


def not_modified(headers: Any, etag: str, last_modified: dt.datetime | None) -> bool:
    """RFC 9110 13.1: If-None-Match (weak comparison) decides when present; otherwise
    If-Modified-Since, when we have a Last-Modified."""
    inm = headers.get("if-none-match")
    if inm is not None:
        # "*" is not honoured: the 304 is decided before we know whether the page exists.
        tags = {t.strip().removeprefix("W/") for t in inm.split(",")}
        return etag.removeprefix("W/") in tags
    ims = headers.get("if-modified-since")
    if ims is None or last_modified is None:
        return False
    try:
        since = parsedate_to_datetime(ims)
    except (TypeError, ValueError):
        return False
    if since is None or since.tzinfo is None:
        return False
    return last_modified <= since.astimezone(dt.timezone.utc).replace(tzinfo=None)


def validator_headers(etag: str, last_modified: dt.datetime | None) -> dict[str, str]:
    # no-cache (not no-store): keep it, but ask us each time; the answer is usually a 304.
    headers = {"etag": etag, "cache-control": "no-cache"}
    if last_modified is not None:
        headers["last-modified"] = format_datetime(last_modified.replace(tzinfo=dt.timezone.utc), usegmt=True)
    return headers


def fingerprint(*parts: Any, template_dir: Any = None) -> str:
    """This server's share of every ETag: what changes pages without a database write."""
    h = hashlib.blake2b(repr(parts).encode(), digest_size=12)
    if template_dir is not None:
        for path in sorted(template_dir.rglob("*")):
            if path.is_file():
                h.update(path.name.encode())
                h.update(path.read_bytes())
    return h.hexdigest()

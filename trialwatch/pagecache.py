"""Conditional GET and a bounded cache for the public pages and feeds.

Pages and feeds change only when something writes the database (a poll, ``check``, ``watch``,
``backfill``), so their validator is derived from ``Store.page_stamp()`` (one cheap statement),
never from rendering: the ETag is a hash of the stamp, the page's key (path and the query
parameters it reads) and a fingerprint of this server (version, config, templates); the
Last-Modified is the newest write time in the stamp. A request whose If-None-Match (or, without
one, If-Modified-Since) still holds is answered 304 without touching the page. Rendered bodies
are kept in a bounded LRU keyed by (key, stamp), so between polls a page is rendered once.

Only pages without forms go through here: they carry no CSRF token and set no cookie, so one
visitor's token can never be served to another.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import threading
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

    def last_modified(self, stamp: Any) -> dt.datetime | None:
        """The stamp's time, once its second is over: a later write in the same second would
        carry the same time, and a client holding it would get a 304 across that change."""
        at = stamp.changed_at
        if at is None or at.replace(microsecond=0) >= self.clock().replace(microsecond=0):
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

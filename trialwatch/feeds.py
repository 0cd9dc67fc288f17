"""Atom feeds of stored changes: one per trial, one per saved search (the same changes the
digests carry). A feed reader polls these instead of getting mail."""

from __future__ import annotations

import datetime as dt
import re
from typing import TYPE_CHECKING

from . import record as rec

if TYPE_CHECKING:
    from .config import Config
    from .store import ChangeRow, Store

MAX_ENTRIES = 200
# Characters XML 1.0 forbids (lxml refuses them): C0 controls but tab, LF, CR; lone surrogates;
# U+FFFE/U+FFFF. Registry text can carry them; they are dropped rather than failing the feed.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _x(text: str) -> str:
    return _NOT_XML.sub("", text)


def trial_feed(store: "Store", config: "Config", nct_id: str) -> bytes:
    trial = store.trial(nct_id)
    title = f"{nct_id}: {trial.title}" if trial and trial.title else nct_id
    # History backfilled from the registry is not news: feeds carry what changed since.
    rows = store.trial_feed_changes(nct_id, limit=MAX_ENTRIES)
    base = config.email.public_url
    return _feed(f"{base}/trials/{nct_id}", f"Changes to {title}", rows, base,
                 self_url=f"{base}/trials/{nct_id}/feed.atom", page_url=f"{base}/trials/{nct_id}")


def search_feed(store: "Store", config: "Config", name: str) -> bytes:
    """Search membership events, and changes to every trial the search has matched."""
    rows = store.search_feed_changes(name, limit=MAX_ENTRIES)
    base = config.email.public_url
    return _feed(f"{base}/searches/{name}/feed.atom", f"Saved search {name}", rows, base,
                 self_url=f"{base}/searches/{name}/feed.atom", page_url=f"{base}/")


def _feed(feed_id: str, title: str, rows: list["ChangeRow"], base: str, *, self_url: str,
          page_url: str) -> bytes:
    from feedgen.feed import FeedGenerator

    fg = FeedGenerator()
    fg.id(feed_id)
    fg.title(_x(title))
    # RFC 4287 4.1.1: a feed MUST have an author unless every entry has one.
    fg.author({"name": "trialwatch"})
    fg.link(href=page_url, rel="alternate", type="text/html")
    fg.link(href=self_url, rel="self", type="application/atom+xml")
    fg.generator("trialwatch")
    fg.updated(_utc(rows[0].detected_at) if rows else dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc))
    # feedgen prepends entries; add oldest first so the feed reads newest first.
    for row in reversed(rows):
        entry = fg.add_entry()
        entry.id(f"{base}/trials/{row.nct_id}#change-{row.id}")
        entry.title(_x(f"{row.nct_id} — {row.label}: {rec.words(row.old_value)} → {rec.words(row.new_value)}"))
        entry.link(href=f"{base}/trials/{row.nct_id}")
        entry.updated(_utc(row.detected_at))
        entry.published(_utc(row.detected_at))
        entry.category(term=_x(row.severity))
        lines = [f"{row.label} ({row.severity})", f"Before: {rec.words(row.old_value)}",
                 f"After: {rec.words(row.new_value)}"]
        if row.site:
            lines.append(f"Site: {row.site}")
        if row.search:
            lines.append(f"Saved search: {row.search}")
        if row.detail:
            lines += ["", row.detail]
        # Plain text content: feed readers never interpret record text as markup.
        entry.content(_x("\n".join(lines)), type="text")
    return fg.atom_str(pretty=True)


def _utc(value: dt.datetime) -> dt.datetime:
    return value.replace(tzinfo=dt.timezone.utc)

"""Composing: due outbox rows become one stored digest message per subscriber.

``compose_digests`` pages through unattached outbox rows, builds each person's view and
rendering with ``digest`` (each trial's card rendered once for the readers alike, ``cards``),
and stores the messages with their outbox rows attached.
``render_digest`` is called through the ``digest`` module so a test that replaces
``notify.digest.render_digest`` replaces it here too.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from .. import tokens, untrusted
from ..store import ChangeRow, NewMessage, Store, Subscriber, utcnow
from . import digest
from .cards import Renderings
from .digest import Pending, TrialFacts, digest_due, load_facts

if TYPE_CHECKING:
    from ..config import Config
    from .outbox import SendEntry

log = logging.getLogger("trialwatch.notify")

# Subscribers composed per page: their digests are stored in one transaction, and no more than
# a page of subscribers, changes and rendered messages is held at a time (50,000 subscribers
# stream through in bounded memory).
COMPOSE_BATCH = 100


def compose_digests(store: Store, config: "Config", *, now: dt.datetime | None = None,
                    failures: list["SendEntry"] | None = None) -> list[int]:
    """Turn due outbox rows into stored digest messages (one per subscriber); returns their ids.

    Subscribers are taken COMPOSE_BATCH at a time; their digests are stored in one transaction,
    each message with the attachment of its outbox rows (if another composer attached any of a
    digest's rows first, that digest alone is undone and left to it). A digest that cannot be
    built is logged as an error and, when ``failures`` is given, appended to it (state
    ``unbuilt``) so the caller counts it; her changes stay queued.
    """
    from .channels import channel_for, display
    from .outbox import SendEntry

    now = now or utcnow()
    secret = config.secret_key()
    ids: list[int] = []
    # One read per trial for the whole send, whoever's digest it appears in.
    facts: dict[str, TrialFacts] = {}
    channels: dict[str, Any] = {}
    # Each trial's card rendered once for the readers alike, her place resolved once a send.
    renderings = Renderings(config, facts)
    changes: dict[int, ChangeRow] = {}  # each change read once per send, whoever it is owed to
    after = 0
    while True:
        rows = store.unsent_outbox_page(after, COMPOSE_BATCH, changes)
        if not rows:
            break
        after = rows[-1][2].id
        due = _pending_of(rows, now)
        load_facts(store, {c.nct_id for p in due for c in p.changes}, facts)
        batch: list[tuple[int, list[int], list[int], NewMessage | None]] = []
        for p in due:
            sub = p.subscriber
            # Rows queued before she raised her min_severity are dropped, not mailed.
            keep, drop = p.split()
            message = None
            if keep:
                try:
                    if sub.channel not in channels:
                        channels[sub.channel] = channel_for(sub.channel, config)
                    message = _digest_message(store, config, channels[sub.channel], sub, [c for c, _ in keep],
                                              facts, now, secret, renderings)
                except Exception as e:  # noqa: BLE001 - one bad digest must not hold back everyone's mail
                    # Her outbox rows stay unattached, so nothing is lost: a fixed release mails them.
                    # Reported, never swallowed: a digest nobody can build is mail that never arrives.
                    error = f"cannot build the digest: {type(e).__name__}: {e}"
                    shown = display(sub.channel, sub.address)
                    log.error("subscriber %s (%s): %s; her %d change(s) stay queued",
                              sub.id, untrusted.one_line(shown), error, len(keep))
                    log.debug("digest composition failed", exc_info=True)
                    if failures is not None:
                        failures.append(SendEntry(None, shown, "(digest)", "unbuilt", error))
                    continue
            batch.append((sub.id, [o for _, o in keep], drop, message))
        ids += [mid for mid in store.store_digests(batch, now) if mid is not None]
    return ids


def _pending_of(rows: Iterable[tuple[int, ChangeRow, Subscriber]], now: dt.datetime) -> list[Pending]:
    out: dict[int, Pending] = {}
    for outbox_id, change, sub in rows:
        p = out.setdefault(sub.id, Pending(sub, [], []))
        p.changes.append(change)
        p.outbox_ids.append(outbox_id)
    return [p for p in out.values() if digest_due(p.subscriber, now)]


def _digest_message(store: Store, config: "Config", channel: Any, sub: Subscriber, changes: list[ChangeRow],
                    facts: dict[str, TrialFacts], now: dt.datetime, secret: str,
                    renderings: Renderings) -> NewMessage:
    version = sub.token_version or 0
    unsub = tokens.make(secret, "unsubscribe", sub.id, version)
    view = renderings.view(sub, changes, now=now, links=(unsub, tokens.make(secret, "manage", sub.id, version)))
    rendered = digest.render_digest(store, config, sub, changes, now=now, secret_key=secret, facts=facts,
                                    view=view, renderings=renderings)
    body, msg_key = channel.compose(rendered, view, to=sub.address, name=sub.name, now=now, unsubscribe_token=unsub)
    return NewMessage(sub.id, "digest", channel.__kind__, sub.address, msg_key, rendered.subject, body)

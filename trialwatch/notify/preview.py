"""Preview: the digest a subscriber would get, rendered without sending or touching the outbox."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .. import record as rec
from ..diff import SEVERITY_RANK
from ..errors import ConfigError, UsageError
from ..store import ChangeRow, Store, Subscriber, Subscription
from .digest import Rendered, pending, render_digest

if TYPE_CHECKING:
    from ..config import Config


def preview(store: Store, config: "Config", nct_id: str, *, to: str | None = None) -> Rendered:
    """Render the digest ``send`` would send now, without sending or touching the outbox.

    ``to`` picks a subscriber: when changes of ``nct_id`` wait in her outbox, the preview is her
    next digest exactly as ``send`` composes it (every waiting change above her floor, of every
    trial, with the same subject). Otherwise, and without ``to`` (a sample reader who gets every
    change), the trial's most recent stored changes, or its current state if none. The CLI prints
    the subject, then the text part (``--html`` the HTML).
    """
    nct = store.resolve_alias(rec.normalize_nct(nct_id))
    snaps, changes = store.history(nct)
    if not snaps and not changes:
        raise UsageError(f"{nct} is not in the database yet",
                         hint="Add it to config.yaml (trials:) and let a poll fetch it first.")
    sub = store.subscriber_by_address(to) if to else None
    if sub is None:
        sample = Subscriber(id=0, address=to or "physician@example.org", name=None, state="active",
                            min_severity="minor", digest="each_poll", token_version=0)
        sample.subscriptions = [Subscription(kind="trial", target=nct)]
        return render_digest(store, config, sample, _latest_batch(changes), nct_ids=[nct])
    try:
        secret = config.secret_key()
    except ConfigError:
        secret = None  # a preview still renders, with placeholder links
    waiting = _waiting(store, sub)
    if any(c.nct_id == nct for c in waiting):
        return render_digest(store, config, sub, waiting, secret_key=secret)
    floor = SEVERITY_RANK.get(sub.min_severity, 0)
    latest = [c for c in _latest_batch(changes) if c.rank >= floor]
    return render_digest(store, config, sub, latest, nct_ids=[nct], secret_key=secret)


def _waiting(store: Store, sub: Subscriber) -> list[ChangeRow]:
    """Her unattached outbox changes at or above her floor: what her next digest holds."""
    from ..store import utcnow

    for p in pending(store, utcnow(), due_only=False):
        if p.subscriber.id == sub.id:
            return [c for c, _ in p.split()[0]]
    return []


def _latest_batch(changes: list[ChangeRow]) -> list[ChangeRow]:
    """The changes of the trial's newest snapshot (or newest event batch); registry history is
    never news."""
    changes = [c for c in changes if not c.historical]
    if not changes:
        return []
    last = changes[-1]
    if last.snapshot_id:
        return [c for c in changes if c.snapshot_id == last.snapshot_id]
    return [c for c in changes if c.snapshot_id is None and c.detected_at == last.detected_at]

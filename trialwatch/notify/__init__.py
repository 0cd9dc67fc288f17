"""From stored changes to notifications, in three parts and a preview.

* ``subscribers``: the sync from config.yaml, sign-up, confirmation, preferences, unsubscribe.
* ``digest``: load a plain view model (each trial's facts read once per send), then render it.
* ``compose``: ``compose_digests`` turns due outbox rows into one stored message per subscriber.
* ``outbox``: claims, leases, backoff within a time-based give-up window, delivery through the
  message's channel (``channels``: email, webhook, apprise), ``send_pending``, ``undelivered``.
* ``preview``: what ``send`` would send for a subscriber, rendered without sending.

The outbox is filled by ``Store.record_fetch`` in the change's own transaction. An outbox row
belongs to at most one message, so a change reaches a person at most once, however often
``send`` runs. Nothing is built at import time: the Jinja2 environment is made on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

# Each name is imported from its module on first use (PEP 562): `trialwatch check` and `poll
# --no-send` need only the subscriber sync, not the composer, the outbox or the channels' mail
# machinery, and a one-shot command pays for every module it imports.
_EXPORTS = {
    "Channel": "channels", "build_message": "channels",
    "compose_digests": "compose",
    "Rendered": "digest", "digest_subject": "digest", "environment": "digest", "headline": "digest",
    "render_digest": "digest",
    "LEASE": "outbox", "MAX_BACKOFF": "outbox", "SendEntry": "outbox", "SendReport": "outbox",
    "send_pending": "outbox", "undelivered": "outbox",
    "preview": "preview",
    "SyncReport": "subscribers", "send_confirmation": "subscribers", "sync_subscribers": "subscribers",
    "unsubscribe": "subscribers",
}
# Not ``preview``: as before, ``notify.preview`` is the function (the module of the same name is
# only ever imported through this package).
_SUBMODULES = {"channels", "compose", "digest", "outbox", "subscribers", "words"}

if TYPE_CHECKING:
    from .channels import Channel, build_message
    from .compose import compose_digests
    from .digest import Rendered, digest_subject, environment, headline, render_digest
    from .outbox import LEASE, MAX_BACKOFF, SendEntry, SendReport, send_pending, undelivered
    from .preview import preview
    from .subscribers import SyncReport, send_confirmation, sync_subscribers, unsubscribe


def __getattr__(name: str) -> Any:
    from importlib import import_module

    if name in _SUBMODULES:  # `notify.outbox` before anything imported it
        return import_module(f"{__name__}.{name}")
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # later look-ups (and monkeypatch) see a plain attribute
    return value


__all__ = ["LEASE", "MAX_BACKOFF", "Channel", "Rendered", "SendEntry", "SendReport", "SyncReport",
           "build_message", "compose_digests", "digest_subject", "environment", "headline", "preview",
           "render_digest", "send_confirmation", "send_pending", "sync_subscribers", "undelivered",
           "unsubscribe"]

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

from .channels import Channel, build_message
from .compose import compose_digests
from .digest import (
    Rendered,
    digest_subject,
    environment,
    headline,
    render_digest,
)
from .outbox import LEASE, MAX_BACKOFF, SendEntry, SendReport, send_pending, undelivered
from .preview import preview
from .subscribers import SyncReport, send_confirmation, sync_subscribers, unsubscribe

__all__ = ["LEASE", "MAX_BACKOFF", "Channel", "Rendered", "SendEntry", "SendReport", "SyncReport",
           "build_message", "compose_digests", "digest_subject", "environment", "headline", "preview",
           "render_digest", "send_confirmation", "send_pending", "sync_subscribers", "undelivered",
           "unsubscribe"]

"""Subscribers: the sync from config.yaml, web sign-up, confirmation, preferences, unsubscribe.

The rules live here; the transactions are the store's (``store/subscribers.py``). The web
handlers call these functions and build no queries of their own.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

from .. import tokens
from ..errors import TokenError, UsageError
from ..store import NewMessage, Store, Subscriber, WantedSubscriber, utcnow
from .words import DIGEST_WORDS, SEVERITY_WORDS

# The channels and the digest templates are imported where mail is made (sign-up, confirmation):
# the sync every command runs at start needs neither.
if TYPE_CHECKING:
    from ..config import Config
    from ..mailer import Transport
    from .outbox import SendEntry

# How long the sign-up rate limits count events.
RATE_WINDOW = dt.timedelta(hours=1)


@dataclass
class SyncReport:
    """What ``sync_subscribers`` did, by address."""

    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    # In config.yaml but unsubscribed themselves: an unsubscribe stands over the file.
    kept_unsubscribed: list[str] = field(default_factory=list)
    # In config.yaml but signed up on the web: her own choices are left alone.
    skipped_web: list[str] = field(default_factory=list)
    # Config subscribers no longer in the file: their subscriptions and unsent mail are dropped.
    removed: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    def lines(self) -> list[str]:
        """Human-readable lines for the CLI; the unsubscribed are named so the operator sees them."""
        out = [f"subscribers: {len(self.created)} added, {len(self.updated)} updated, "
               f"{len(self.unchanged)} unchanged, {len(self.removed)} removed"]
        out += [f"  {e}: unsubscribed herself; not re-subscribed (remove her from config.yaml)"
                for e in self.kept_unsubscribed]
        out += [f"  {e}: signed up on the web; config.yaml entry ignored" for e in self.skipped_web]
        return out


def sync_subscribers(store: Store, config: "Config", *, now: dt.datetime | None = None) -> SyncReport:
    """Make the database's config subscribers match ``config.subscribers``.

    Creates or updates each as ``active``/``source=config`` with her trial and search
    subscriptions, min_severity and digest. Never reactivates someone who unsubscribed; never
    touches web subscribers. The CLI prints ``SyncReport.lines()`` at start-up.
    """
    wanted = [WantedSubscriber(
        channel=sc.channel, address=sc.address, name=sc.name, min_severity=sc.min_severity, digest=sc.digest,
        subscriptions=frozenset({("trial", t) for t in sc.trials} | {("search", n) for n in sc.searches}),
        location=_location_text(sc.location))
        for sc in config.subscribers]
    return SyncReport(**store.sync_config_subscribers(wanted, now or utcnow()))


def _location_text(location: object) -> str | None:
    """What ``subscribers.location`` stores: the place as she wrote it (resolved when used)."""
    if location is None:
        return None
    text = getattr(location, "query", None) or getattr(location, "label", None) or location
    return str(text)[:200]


def unsubscribe(store: Store, config: "Config", token: str, *, now: dt.datetime | None = None) -> Subscriber:
    """Unsubscribe the person a signed token names; works without the web server.

    A forged or altered token raises TokenError. Her unsent outbox rows and queued digests are
    dropped. Doing it twice is harmless. The CLI prints "<address> is unsubscribed" (and, when
    she came from config.yaml, that the file entry will no longer re-subscribe her).
    """
    data = tokens.read(config.secret_key(), "unsubscribe", token)
    # Any token_version is accepted: RFC 8058 lets a recipient act on any message she received,
    # and unsubscribing is the one action that is always safe to honour.
    sub = store.unsubscribe_subscriber(data.subscriber_id, now or utcnow())
    if sub is None:
        raise TokenError("this unsubscribe link names an address that is no longer on file",
                         hint="Nothing is sent to it any more.")
    return sub


def unsubscribe_target(store: Store, secret: str, token: str) -> Subscriber:
    """The subscriber an unsubscribe link names, without changing anything (the page's GET)."""
    # Any token_version: a link in old mail must still work (RFC 8058), as in ``unsubscribe``.
    data = tokens.read(secret, "unsubscribe", token)
    sub = store.subscriber(data.subscriber_id)
    if sub is None:
        raise TokenError("this unsubscribe link names an address that is no longer on file")
    return sub


def allow(store: Store, kind: str, key: str, limit: int) -> bool:
    """Count one event against ``limit`` per RATE_WINDOW; False (and nothing counted) when the
    limit is reached. Atomic per (kind, key), also on PostgreSQL."""
    return store.rate_allow(kind, key, limit, RATE_WINDOW)


def upsert_pending(store: Store, email: str, prefs: dict) -> Subscriber:
    """A new or not-yet-active address gets these preferences, pending confirmation. An active
    address is left exactly as it is: its confirmation link leads to the manage page, where its
    owner can change it herself. Web sign-ups are email subscribers."""
    from .channels import EmailChannel

    return store.upsert_pending_subscriber(email, prefs, EmailChannel.__kind__)


def subscriber_for(store: Store, secret: str, purpose: str, token: str) -> Subscriber:
    """The subscriber a signed link names; TokenError if forged, expired or superseded."""
    data = tokens.read(secret, purpose, token or "")
    sub = store.subscriber(data.subscriber_id)
    if sub is None or sub.token_version != data.version:
        raise TokenError(f"this {purpose} link is no longer valid")
    return sub


def confirm(store: Store, subscriber_id: int, *, now: dt.datetime | None = None) -> None:
    store.confirm_subscriber(subscriber_id, now or utcnow())


def set_prefs(store: Store, subscriber_id: int, prefs: dict) -> None:
    store.set_subscriber_prefs(subscriber_id, prefs)


def add_following(store: Store, subscriber_id: int, trials: list[str], searches: list[str]) -> None:
    """Add what a confirmed "add" link names to an active subscriber's choices (kept as they are)."""
    sub = store.subscriber(subscriber_id)
    prefs = prefs_of(sub)
    prefs["trials"] = prefs["trials"] + [t for t in trials if t not in prefs["trials"]]
    prefs["searches"] = prefs["searches"] + [n for n in searches if n not in prefs["searches"]]
    store.set_subscriber_prefs(subscriber_id, prefs)


def prefs_of(sub: Subscriber) -> dict:
    return {"trials": [x.target for x in sub.subscriptions if x.kind == "trial"],
            "searches": [x.target for x in sub.subscriptions if x.kind == "search"],
            "min_severity": sub.min_severity, "digest": sub.digest, "location": sub.location or ""}


def send_confirmation(store: Store, config: "Config", subscriber: Subscriber | int, confirm_url: str, *,
                      transport: "Transport | None" = None, now: dt.datetime | None = None,
                      adding: tuple[list[str], list[str]] | None = None) -> "SendEntry":
    """Queue and send at once the one-off "confirm your subscription" message of a web sign-up.

    If the transport fails transiently the message stays queued and the next ``send`` retries
    it. Rate limits are the caller's (web) business. Returns the message's outcome.
    """
    from .channels import EmailChannel
    from .digest import Rendered, environment, render_html
    from .outbox import SendEntry, SendReport, deliver_all

    now = now or utcnow()
    sub = store.subscriber(subscriber if isinstance(subscriber, int) else subscriber.id)
    if sub is None:
        raise UsageError("no such subscriber")
    # ``adding``: an active subscriber asked for more (trials, searches); the mail names those.
    subject = "Confirm your trialwatch subscription" if adding is None else "Confirm what to add to your trialwatch alerts"
    ctx = {
        "name": sub.name, "email": sub.address, "confirm_url": confirm_url, "adding": adding is not None,
        "trials": adding[0] if adding else [x.target for x in sub.subscriptions if x.kind == "trial"],
        "searches": adding[1] if adding else [x.target for x in sub.subscriptions if x.kind == "search"],
        "severity_words": SEVERITY_WORDS.get(sub.min_severity, ""),
        "digest_words": DIGEST_WORDS.get(sub.digest, ""),
        "public_url": config.email.public_url,
        "hours": (tokens.MAX_AGE_S["confirm"] or 0) // 3600,
        "subject": subject, "preheader": subject,
    }
    rendered = Rendered(subject, environment().get_template("email/confirm.txt.j2").render(**ctx),
                        render_html("email/confirm.html.j2", ctx))
    body, key = EmailChannel(config).compose(rendered, None, to=sub.address, name=sub.name, now=now)
    mid = store.queue_message(NewMessage(sub.id, "confirm", EmailChannel.__kind__, sub.address, key, subject,
                                         body), now)
    report = SendReport()
    deliver_all(store, config, transport, [mid], now, report)
    return report.entries[0] if report.entries else SendEntry(mid, sub.address, subject, "queued")

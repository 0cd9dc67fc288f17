"""Channels: where a notification goes. A channel is one class here, registered by its name.

A subscriber's destination is a (channel, address) pair. The outbox, its leases, backoff and
give-up window are the same for every channel; a channel only knows how to turn a rendered digest
into the bytes it stores (``compose``) and how to hand those bytes over (``deliver``). Each
message has a stable key (an email's Message-ID, a webhook's ``Idempotency-Key``) that every
retry carries, so a receiver can drop the rare repeat after a timeout.

``deliver`` returns (delivered) or raises ``TransientMailError`` (kept queued, retried with
backoff; ``unreachable=True`` when nothing can get through to that route right now) or
``PermanentMailError`` (failed for good).

To add a channel: subclass ``Channel`` with a ``__kind__``; config entries naming that kind
(``channel: <kind>``, ``address: ...``) then route to it. Nothing else names a channel.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import hmac
import importlib.util
import json
import os
import re
import secrets
from email import policy
from email.headerregistry import Address
from email.utils import format_datetime, parseaddr
from typing import TYPE_CHECKING, ClassVar
from urllib.parse import urlsplit

from .. import untrusted
from ..errors import ConfigError
from ..mailer import PermanentMailError, TransientMailError, Transport, make_transport

if TYPE_CHECKING:
    from ..config import Config
    from .digest import DigestView, Rendered

WEBHOOK_SECRET_ENV = "TRIALWATCH_WEBHOOK_SECRET"
SIGNATURE_HEADER = "X-Trialwatch-Signature"
IDEMPOTENCY_HEADER = "Idempotency-Key"
WEBHOOK_TIMEOUT_S = 15.0


class Channel:
    """One way of delivering notifications. Subclasses set ``__kind__`` and are registered."""

    __kind__: ClassVar[str] = ""
    registry: ClassVar[dict[str, type["Channel"]]] = {}

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__kind__:
            Channel.registry[cls.__kind__] = cls

    def __init__(self, config: "Config") -> None:
        self.config = config

    @classmethod
    def check_address(cls, address: str) -> str:
        """The address as stored; ValueError (shown with the config line) when it is unusable."""
        return address

    @classmethod
    def check_available(cls) -> None:
        """ConfigError when this channel cannot work in this installation (a missing extra)."""

    def compose(self, rendered: "Rendered", view: "DigestView | None", *, to: str, name: str | None,
                now: dt.datetime, unsubscribe_token: str | None = None) -> tuple[bytes, str]:
        """The bytes to store and send, and the message's stable key."""
        raise NotImplementedError

    @classmethod
    def display(cls, address: str) -> str:
        """The address as ``send`` prints and logs it (credentials left out)."""
        return address

    def route(self, recipient: str) -> str:
        """What one outage takes down: messages to the same route are not tried after an
        ``unreachable`` error in the same send."""
        return self.__kind__

    def deliver(self, body: bytes, recipient: str, key: str) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Release connections at the end of a send."""


def channel_class(kind: str) -> type[Channel]:
    try:
        return Channel.registry[kind]
    except KeyError:
        raise ConfigError(f"unknown channel {kind!r}",
                          hint=f"Use one of: {', '.join(sorted(Channel.registry))}.") from None


def display(kind: str, address: str) -> str:
    cls = Channel.registry.get(kind)
    return cls.display(address) if cls else address


def channel_for(kind: str, config: "Config") -> Channel:
    """A channel instance (not connected yet), for composing."""
    return channel_class(kind)(config)


def new_key(now: dt.datetime, domain: str = "localhost") -> str:
    # Short enough never to be folded in a mail header (some MTAs mangle a folded Message-ID).
    return f"<{now:%Y%m%d%H%M%S}.{secrets.token_hex(12)}@{domain}>"


# -- email ------------------------------------------------------------------------------------

class EmailChannel(Channel):
    """RFC 5322 mail through the configured transport (smtp | file | console)."""

    __kind__ = "email"

    def __init__(self, config: "Config", transport: Transport | None = None) -> None:
        super().__init__(config)
        self._transport = transport

    @classmethod
    def check_address(cls, address: str) -> str:
        # The same rule as the web sign-up: an address accepted here must be mailable.
        return untrusted.subscriber_address(address)

    def compose(self, rendered: "Rendered", view: "DigestView | None", *, to: str, name: str | None,
                now: dt.datetime, unsubscribe_token: str | None = None) -> tuple[bytes, str]:
        return build_message(self.config, to=to, name=name, rendered=rendered, now=now,
                             unsubscribe_token=unsubscribe_token)

    def deliver(self, body: bytes, recipient: str, key: str) -> None:
        if self._transport is None:
            self._transport = make_transport(self.config)
        self._transport.send(body, sender(self.config), [recipient])

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


def build_message(config: "Config", *, to: str, name: str | None, rendered: "Rendered",
                  now: dt.datetime, unsubscribe_token: str | None = None) -> tuple[bytes, str]:
    """The RFC 5322 bytes of one message and its Message-ID.

    Written out directly rather than through ``EmailMessage``: the stdlib parses and re-folds
    every header and walks the parts in its generator, about 1.5 ms a message, more than an
    SMTP delivery to a local relay costs. A header that is not plain short ASCII is still folded
    by the (cached) stdlib policy, so the bytes are what ``policy.SMTP`` would write."""
    from_addr = sender(config)
    mid = new_key(now, from_addr.rpartition("@")[2] or "localhost")  # 96 random bits
    # Record text reaches headers: a newline there would be header injection.
    display_name = untrusted.one_line(name or "")
    head = [_header("From", config.email.from_),
            _to_header(display_name, to),
            _header("Subject", untrusted.one_line(rendered.subject)),
            _date_header(now),
            f"Message-ID: {mid}\r\n",
            # Tells vacation responders and ticket systems not to answer.
            "Auto-Submitted: auto-generated\r\n"]
    if unsubscribe_token:
        https = f"{config.email.public_url}/unsubscribe?token={unsubscribe_token}"
        value = f"<{https}>, <mailto:{from_addr}?subject=unsubscribe%20{unsubscribe_token}>"
        # Unique per message, so not worth the fold cache; _mail_policy says why it is folded so.
        head.append(f"List-Unsubscribe: {value.replace('>, <', '>,' + chr(13) + chr(10) + ' <')}\r\n"
                    if value.isascii() else _mail_policy().header_factory("List-Unsubscribe", value)
                    .fold(policy=_mail_policy()))
        head.append("List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n")
    # The boundary starts with "=", which quoted-printable always encodes: no part can contain it.
    boundary = "===============" + secrets.token_hex(10) + "=="
    head.append(f'MIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary="{boundary}"\r\n\r\n')
    sep = f"--{boundary}\r\n".encode()
    # Quoted-printable keeps both parts readable in a raw .eml and safe for 7-bit relays.
    body = b"".join((
        "".join(head).encode("ascii"),
        sep, b'Content-Type: text/plain; charset="utf-8"\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n',
        # The CRLF before a boundary belongs to the boundary, not to the part above it.
        _qp(rendered.text, rendered.pieces and rendered.pieces[0]), b"\r\n",
        sep, b'Content-Type: text/html; charset="utf-8"\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n',
        _qp(rendered.html, rendered.pieces and rendered.pieces[1]), b"\r\n",
        f"--{boundary}--\r\n".encode()))
    return body, mid


def _qp(text: str, pieces: tuple[str, ...] | None = None) -> bytes:
    """A part's body: CRLF lines, quoted-printable (binascii's C encoder), ending in CRLF.

    ``pieces`` (``Rendered.pieces``): what ``text`` is joined from, the digest's frame first and
    last and the send's shared cards between. Quoted-printable works line by line, so when each
    piece ends a line the pieces encode apart to the same bytes; each card is encoded once."""
    pieces = tuple(p for p in pieces or () if p)
    if len(pieces) < 2 or not all(p.endswith("\n") for p in pieces[:-1]):
        return _qp_lines(text)
    return b"".join((_qp_lines(pieces[0]), *map(_qp_shared, pieces[1:-1]), _qp_lines(pieces[-1])))


def _qp_lines(text: str) -> bytes:
    import binascii

    data = text.replace("\r\n", "\n").replace("\r", "\n")
    if not data.endswith("\n"):
        data += "\n"
    return binascii.b2a_qp(data.replace("\n", "\r\n").encode("utf-8"), istext=True)


@functools.lru_cache(maxsize=512)
def _qp_shared(card: str) -> bytes:
    # A card ends its line (``_qp`` checked): the newline added at the end is never one of its own.
    return _qp_lines(card)


_ATEXT = re.compile(r"[A-Za-z0-9 !#$%&'*+/=?^_`{|}~-]*")
_PLAIN = re.compile(r"[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?")


def _header(name: str, value: str) -> str:
    """``Name: value`` CRLF; short printable ASCII as it is, anything else folded (and
    RFC 2047-encoded) by the stdlib policy."""
    if len(name) + len(value) + 2 <= 78 and _PLAIN.fullmatch(value) and "  " not in value:
        return f"{name}: {value}\r\n"
    return _folded(name, value)


@functools.lru_cache(maxsize=4096)
def _folded(name: str, value: str) -> str:
    # Cached: many digests of one send share a subject, and the sender never changes.
    pol = _mail_policy()
    return pol.header_factory(name, value).fold(policy=pol)


def _to_header(display_name: str, to: str) -> str:
    if _ATEXT.fullmatch(display_name) and to.isascii() and display_name.strip() == display_name \
            and "  " not in display_name and len(display_name) + len(to) < 60:
        return f"To: {display_name} <{to}>\r\n" if display_name else f"To: {to}\r\n"
    pol = _mail_policy()
    return pol.header_factory("To", Address(display_name=display_name, addr_spec=to)).fold(policy=pol)


@functools.lru_cache(maxsize=8)
def _date_header(now: dt.datetime) -> str:
    return f"Date: {format_datetime(now.replace(tzinfo=dt.timezone.utc))}\r\n"


@functools.lru_cache(maxsize=1)
def _mail_policy() -> policy.EmailPolicy:
    """policy.SMTP, except that List-Unsubscribe keeps its <URI>s as they are.

    The default folder turns a header word longer than a line (the unsubscribe URL with its
    token) into an RFC 2047 encoded-word, which hides the URI from the mail clients that offer
    the one-click unsubscribe (RFC 2369, RFC 8058). That header is folded between its items only.
    """
    from email.headerregistry import HeaderRegistry, UnstructuredHeader

    class UriListHeader(UnstructuredHeader):
        def fold(self, *, policy: policy.Policy) -> str:  # type: ignore[override]
            value = str(self)
            if not value.isascii():
                return super().fold(policy=policy)
            return f"{self.name}: " + value.replace(">, <", ">," + policy.linesep + " <") + policy.linesep

    registry = HeaderRegistry()
    registry.map_to_type("list-unsubscribe", UriListHeader)
    return policy.SMTP.clone(header_factory=registry)


def sender(config: "Config") -> str:
    return _address_of(config.email.from_)


@functools.lru_cache(maxsize=8)
def _address_of(from_: str) -> str:
    # Parsed once, not for each message built and sent.
    return parseaddr(from_)[1] or "trialwatch@localhost"


# -- webhook ----------------------------------------------------------------------------------

def _http_url(address: str) -> str:
    parts = urlsplit(address)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{address[:80]!r} is not an http(s) URL")
    return address


def webhook_payload(view: "DigestView", key: str) -> dict:
    """The JSON a webhook receives: the digest's changes as data, plus its subject and links."""
    return {
        "id": key, "kind": "digest", "subject": view.subject, "generated_at": view.generated_at,
        "unsubscribe_url": view.unsubscribe_url, "manage_url": view.manage_url,
        "trials": [{
            "nct_id": t.nct_id, "url": t.url, "title": t.title, "status": t.status,
            "changes": [{"field": c.field, "label": c.label, "severity": c.severity, "site": c.site,
                         "old": c.old_value, "new": c.new_value, "detail": c.detail}
                        for c in t.changes + t.sites],
        } for t in view.trials],
    }


def sign(secret: str, body: bytes) -> str:
    """The signature header's value: ``sha256=<hex HMAC-SHA256 of the body>``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class WebhookChannel(Channel):
    """POST a JSON body, signed with HMAC-SHA256 (secret from TRIALWATCH_WEBHOOK_SECRET)."""

    __kind__ = "webhook"

    def __init__(self, config: "Config") -> None:
        super().__init__(config)
        self._client = None

    @classmethod
    def check_address(cls, address: str) -> str:
        return _http_url(address)

    def compose(self, rendered: "Rendered", view: "DigestView | None", *, to: str, name: str | None,
                now: dt.datetime, unsubscribe_token: str | None = None) -> tuple[bytes, str]:
        if view is None:
            raise ValueError("a webhook carries digests only")
        self._secret()  # refused here, before anything is queued that could never be signed
        key = new_key(now)
        body = json.dumps(webhook_payload(view, key), ensure_ascii=False, sort_keys=True).encode()
        return body, key

    def route(self, recipient: str) -> str:
        parts = urlsplit(recipient)
        return f"webhook:{parts.hostname}:{parts.port}"

    def _secret(self) -> str:
        secret = os.environ.get(WEBHOOK_SECRET_ENV, "")
        if not secret:
            raise ConfigError(f"{WEBHOOK_SECRET_ENV} is not set",
                              hint="Webhook deliveries are signed with it: set it in the environment "
                                   "(and give the receiver the same secret).")
        return secret

    def deliver(self, body: bytes, recipient: str, key: str) -> None:
        import httpx

        headers = {"Content-Type": "application/json", "User-Agent": "trialwatch",
                   SIGNATURE_HEADER: sign(self._secret(), body), IDEMPOTENCY_HEADER: key}
        if self._client is None:
            self._client = httpx.Client(timeout=WEBHOOK_TIMEOUT_S, follow_redirects=False)
        try:
            resp = self._client.post(recipient, content=body, headers=headers)
        except httpx.ConnectError as e:
            raise TransientMailError(f"webhook {_host(recipient)} unreachable: {e}", unreachable=True,
                                     hint="It stays queued; check that the receiver is up.") from None
        except httpx.HTTPError as e:
            # A timeout may come after the receiver processed it: the retry carries the same key.
            raise TransientMailError(f"webhook {_host(recipient)}: {type(e).__name__}: {e}",
                                     hint="It stays queued and is retried with the same Idempotency-Key.") from None
        if resp.is_success:
            return
        what = f"webhook {_host(recipient)} answered {resp.status_code}"
        if resp.status_code >= 500 or resp.status_code in (408, 425, 429):
            raise TransientMailError(what, hint="It stays queued and is retried.")
        raise PermanentMailError(what, hint="Check the webhook URL and what the receiver accepts.")

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


def _host(url: str) -> str:
    return urlsplit(url).hostname or "?"


# -- apprise (optional extra) -----------------------------------------------------------------

class AppriseChannel(Channel):
    """Any Apprise URL (Slack, Teams, Matrix, ...): ``pip install 'trialwatch[apprise]'``.

    Apprise URLs usually carry the service's token. Secrets stay out of config.yaml: write the
    address as ``env:NAME`` and put the URL in the environment variable NAME.
    """

    __kind__ = "apprise"

    @classmethod
    def check_available(cls) -> None:
        if importlib.util.find_spec("apprise") is None:
            raise ConfigError("the apprise channel needs the apprise package, which is not installed",
                              hint="Install it: pip install 'trialwatch[apprise]'.")

    @classmethod
    def check_address(cls, address: str) -> str:
        if address.startswith("env:"):
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", address[4:]):
                raise ValueError(f"{address[:80]!r}: after 'env:' comes the name of an environment variable")
        elif "://" not in address:
            raise ValueError(f"{address[:80]!r} is not an Apprise URL (scheme://...) nor env:NAME")
        return address

    @classmethod
    def display(cls, address: str) -> str:
        return address if address.startswith("env:") else address.split("://", 1)[0] + "://…"

    @staticmethod
    def _url(address: str) -> str:
        if not address.startswith("env:"):
            return address
        url = os.environ.get(address[4:], "")
        if not url:
            raise ConfigError(f"{address[4:]} is not set",
                              hint="A subscriber's apprise address names it: set it to the Apprise URL.")
        return url

    def compose(self, rendered: "Rendered", view: "DigestView | None", *, to: str, name: str | None,
                now: dt.datetime, unsubscribe_token: str | None = None) -> tuple[bytes, str]:
        self._url(to)  # refused here, before anything is queued that could never be delivered
        body = json.dumps({"title": rendered.subject, "body": rendered.text}, ensure_ascii=False).encode()
        return body, new_key(now)

    def route(self, recipient: str) -> str:
        return f"apprise:{recipient}"

    def deliver(self, body: bytes, recipient: str, key: str) -> None:
        self.check_available()
        import apprise

        data = json.loads(body)
        ap = apprise.Apprise()
        what = self.display(recipient)
        if not ap.add(self._url(recipient)):
            raise PermanentMailError(f"apprise does not understand the URL of {what}",
                                     hint="Check the subscriber's apprise address.")
        # Apprise reports failure as False, without telling a transient one from a lasting one.
        if not ap.notify(title=data["title"], body=data["body"]):
            raise TransientMailError(f"apprise could not notify {what}", hint="It stays queued and is retried.")

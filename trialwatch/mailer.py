"""Mail transports: SMTP, ``.eml`` files, the console.

A transport delivers bytes that ``notify`` composed and stored; it knows nothing of the
database. ``send(msg, sender, recipients)`` either returns (delivered) or raises:

* ``TransientMailError``: worth retrying later (server down, timeout, 4xx, dropped connection);
  the message stays queued.
* ``PermanentMailError``: this message will never go through (5xx, every recipient refused);
  it is marked failed and the others are still delivered.

A misconfiguration that no retry can fix (a username without a password) is a plain
``MailError`` raised by ``make_transport``, before any message is touched.
"""

from __future__ import annotations

import os
import re
import smtplib
import socket
import ssl
import sys
import tempfile
from email import message_from_bytes, policy
from email.parser import BytesHeaderParser
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TextIO

from .errors import MailError

if TYPE_CHECKING:
    from .config import Config


class TransientMailError(MailError):
    """Delivery failed for now; the message stays queued and is retried with backoff."""

    hint = "The message stays queued and is retried; check that the SMTP server is reachable."

    def __init__(self, message: str, *, unreachable: bool = False, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        # True when no message can get through right now (no connection, login refused): the
        # sender then stops dialling for the rest of the batch instead of timing out per message.
        self.unreachable = unreachable


class PermanentMailError(MailError):
    """The server refused this message for good; it is marked failed and not retried."""

    hint = "Check the recipient address; the other messages are still delivered."


class Transport(Protocol):
    def send(self, msg: bytes, sender: str, recipients: list[str]) -> None: ...

    def close(self) -> None: ...


def message_id_of(msg: bytes) -> str | None:
    return BytesHeaderParser(policy=policy.default).parsebytes(msg).get("Message-ID")


# -- SMTP -------------------------------------------------------------------------------------

class SmtpTransport:
    """smtplib with STARTTLS or implicit TLS and login; one connection reused for a batch."""

    def __init__(self, config: "Config", *, ssl_context: ssl.SSLContext | None = None) -> None:
        smtp = config.email.smtp
        self.host, self.port, self.timeout = smtp.host, smtp.port, smtp.timeout_s
        self.starttls, self.implicit_tls = smtp.starttls, smtp.ssl
        self.username = smtp.username
        self.password = config.smtp_password()
        if self.username and not self.password:
            from .config import ENV_SMTP_PASSWORD

            raise MailError(f"email.smtp.username is set but {ENV_SMTP_PASSWORD} is not",
                            hint=f"export {ENV_SMTP_PASSWORD}=... (the password never goes in config.yaml)")
        # Tests pass a context that trusts their self-signed certificate.
        self.ssl_context = ssl_context or ssl.create_default_context()
        self._conn: smtplib.SMTP | None = None

    def _connect(self) -> smtplib.SMTP:
        where = f"{self.host}:{self.port}"
        try:
            if self.implicit_tls:
                conn: smtplib.SMTP = smtplib.SMTP_SSL(self.host, self.port, timeout=self.timeout,
                                                      context=self.ssl_context)
            else:
                conn = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
            conn.ehlo()
            if self.starttls:
                conn.starttls(context=self.ssl_context)
                conn.ehlo()
        except (OSError, smtplib.SMTPException) as e:
            raise TransientMailError(f"cannot connect to SMTP server {where}: {_describe(e)}",
                                     unreachable=True) from None
        if self.username:
            try:
                conn.login(self.username, self.password or "")
            except smtplib.SMTPAuthenticationError as e:
                _quit(conn)
                # Retried rather than failed: the fix is the operator's, and queued mail must survive it.
                raise TransientMailError(
                    f"SMTP server {where} refused the login of {self.username!r}: {_describe(e)}",
                    unreachable=True,
                    hint="Check email.smtp.username and TRIALWATCH_SMTP_PASSWORD; mail stays queued.") from None
            except (OSError, smtplib.SMTPException) as e:
                _quit(conn)
                raise TransientMailError(f"SMTP login at {where} failed: {_describe(e)}",
                                         unreachable=True) from None
        return conn

    def send(self, msg: bytes, sender: str, recipients: list[str]) -> None:
        if self._conn is None:
            self._conn = self._connect()
        try:
            try:
                # A partial refusal returns a dict and still counts as delivered: the message is out.
                self._conn.sendmail(sender, recipients, msg)
            finally:
                # On a 421 smtplib closes the socket itself; the next message must reconnect.
                if self._conn is not None and getattr(self._conn, "sock", None) is None:
                    self._conn = None
        except smtplib.SMTPRecipientsRefused as e:
            codes = [code for code, _ in e.recipients.values()]
            text = "; ".join(f"{r}: {c} {_text(m)}" for r, (c, m) in e.recipients.items())
            if all(400 <= c < 500 for c in codes):
                raise TransientMailError(f"recipient deferred: {text}") from None
            raise PermanentMailError(f"recipient refused: {text}") from None
        except smtplib.SMTPResponseException as e:
            # Covers SMTPSenderRefused and SMTPDataError: 4xx is "try later", 5xx is "never".
            if 400 <= e.smtp_code < 500:
                raise TransientMailError(f"SMTP server deferred the message: {_describe(e)}") from None
            if e.smtp_code >= 500:
                raise PermanentMailError(f"SMTP server refused the message: {_describe(e)}") from None
            self._drop()
            raise TransientMailError(f"unexpected SMTP reply: {_describe(e)}") from None
        except (smtplib.SMTPServerDisconnected, OSError) as e:
            self._drop()
            raise TransientMailError(f"SMTP connection lost: {_describe(e)}") from None
        except smtplib.SMTPException as e:
            self._drop()
            raise TransientMailError(f"SMTP error: {_describe(e)}") from None

    def _drop(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None

    def close(self) -> None:
        if self._conn is not None:
            _quit(self._conn)
            self._conn = None


def _quit(conn: smtplib.SMTP) -> None:
    try:
        conn.quit()
    except (OSError, smtplib.SMTPException):
        conn.close()


def _text(m: bytes | str) -> str:
    return m.decode("utf-8", "replace") if isinstance(m, bytes) else str(m)


def _describe(e: BaseException) -> str:
    if isinstance(e, smtplib.SMTPResponseException):
        return f"{e.smtp_code} {_text(e.smtp_error)}"
    if isinstance(e, socket.timeout):
        return "timed out"
    return str(e) or type(e).__name__


# -- files ------------------------------------------------------------------------------------

_UNSAFE = re.compile(r"[^A-Za-z0-9._@+-]")


class FileTransport:
    """One ``.eml`` file per message, named from its Message-ID and written atomically: a
    repeated attempt of the same message overwrites its file instead of adding a second one."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.dir = Path(directory)

    def path_for(self, msg: bytes) -> Path:
        mid = (message_id_of(msg) or "").strip().strip("<>")
        if not mid:
            raise PermanentMailError("message has no Message-ID; cannot name its file")
        return self.dir / (_UNSAFE.sub("_", mid) + ".eml")

    def send(self, msg: bytes, sender: str, recipients: list[str]) -> None:
        target = self.path_for(msg)
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=".", suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(msg)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, target)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as e:
            # A full disk or a permission problem can be fixed; keep the message queued.
            raise TransientMailError(f"cannot write {target}: {e}") from None

    def close(self) -> None:
        pass


# -- console ----------------------------------------------------------------------------------

class ConsoleTransport:
    """Prints each message's headers and its plain-text part, for trying trialwatch out."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream

    def send(self, msg: bytes, sender: str, recipients: list[str]) -> None:
        # Resolved per call so pytest's capsys (and redirected stdout) see the output.
        out = self._stream or sys.stdout
        parsed = message_from_bytes(msg, policy=policy.default)
        out.write("-" * 72 + "\n")
        out.write(f"Envelope: {sender} -> {', '.join(recipients)}\n")
        for key, value in parsed.items():
            out.write(f"{key}: {value}\n")
        body = parsed.get_body(("plain",))
        out.write("\n" + (body.get_content() if body is not None else msg.decode("utf-8", "replace")))
        html = parsed.get_body(("html",))
        if html is not None:
            out.write(f"\n[HTML part: {len(html.get_content())} characters]\n")
        out.flush()

    def close(self) -> None:
        pass


def make_transport(config: "Config") -> Transport:
    """The transport ``email.transport`` names; a misconfiguration raises MailError now."""
    kind = config.email.transport
    if kind == "smtp":
        return SmtpTransport(config)
    if kind == "file":
        return FileTransport(config.outbox_path)
    return ConsoleTransport()

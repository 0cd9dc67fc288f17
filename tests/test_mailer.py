"""mailer: each transport delivers the stored bytes, or says whether a retry can help."""

from __future__ import annotations

import io
import ssl
import subprocess

import pytest
from aiosmtpd.smtp import AuthResult, LoginPassword

from smtp_server import SmtpServer, smtp_server  # noqa: F401 - the fixture
from trialwatch import config as cfgmod
from trialwatch.errors import MailError
from trialwatch.mailer import (ConsoleTransport, FileTransport, PermanentMailError, SmtpTransport,
                               TransientMailError, make_transport)

MSG = ("From: trialwatch <alerts@tw.example.org>\r\nTo: ana@example.org\r\n"
       "Subject: NCT03934567: Recruiting\r\nMessage-ID: <20260101.abc123@tw.example.org>\r\n"
       "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nNow recruiting.\r\n").encode()


def smtp_config(server: SmtpServer, **smtp) -> cfgmod.Config:  # noqa: ANN003
    opts = {"host": server.host, "port": server.port, "timeout_s": 5, **smtp}
    body = ", ".join(f"{k}: {str(v).lower() if isinstance(v, bool) else v}" for k, v in opts.items())
    return cfgmod.loads(f"email:\n  transport: smtp\n  smtp: {{{body}}}\n")


def test_smtp_delivers_the_bytes_as_given(smtp_server):
    t = SmtpTransport(smtp_config(smtp_server))
    t.send(MSG, "alerts@tw.example.org", ["ana@example.org"])
    t.send(MSG.replace(b"abc123", b"def456"), "alerts@tw.example.org", ["bo@example.org"])
    t.close()

    assert [(m.sender, m.recipients) for m in smtp_server.messages] == [
        ("alerts@tw.example.org", ["ana@example.org"]), ("alerts@tw.example.org", ["bo@example.org"])]
    assert smtp_server.messages[0].data.rstrip(b"\r\n") == MSG.rstrip(b"\r\n")


def test_smtp_server_down_is_transient_and_unreachable(smtp_server):
    smtp_server.down()
    with pytest.raises(TransientMailError) as e:
        SmtpTransport(smtp_config(smtp_server)).send(MSG, "a@tw.example.org", ["ana@example.org"])
    assert e.value.unreachable and "cannot connect" in e.value.message


@pytest.mark.parametrize(("where", "reply", "error"), [
    ("rcpt", "550 5.1.1 no such user", PermanentMailError),
    ("rcpt", "450 4.2.1 mailbox busy", TransientMailError),
    ("data", "554 5.7.1 rejected as spam", PermanentMailError),
    ("data", "451 4.3.0 try again later", TransientMailError),
])
def test_smtp_replies_map_to_permanent_or_transient(smtp_server, where, reply, error):
    if where == "rcpt":
        smtp_server.refuse["ana@example.org"] = reply
    else:
        smtp_server.answer_data(reply)
    t = SmtpTransport(smtp_config(smtp_server))
    with pytest.raises(error) as e:
        t.send(MSG, "alerts@tw.example.org", ["ana@example.org"])
    assert reply.split()[0] in e.value.message
    assert not getattr(e.value, "unreachable", False)
    # The connection stays usable for the next message of the batch.
    smtp_server.refuse.clear()
    smtp_server.answer_data(None)
    t.send(MSG, "alerts@tw.example.org", ["bo@example.org"])
    assert [m.recipients for m in smtp_server.messages] == [["bo@example.org"]]


def test_a_username_without_the_password_env_is_a_config_error(smtp_server):
    with pytest.raises(MailError) as e:
        SmtpTransport(smtp_config(smtp_server, username="tw"))
    assert not isinstance(e.value, (TransientMailError, PermanentMailError))
    assert "TRIALWATCH_SMTP_PASSWORD" in str(e.value)


# -- TLS and login against a server with a self-signed certificate -----------------------------

@pytest.fixture(scope="module")
def cert(tmp_path_factory):
    d = tmp_path_factory.mktemp("tls")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(d / "key.pem"), "-out", str(d / "cert.pem")],
                   check=True, capture_output=True)
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(d / "cert.pem", d / "key.pem")
    client = ssl.create_default_context(cafile=str(d / "cert.pem"))
    return server, client


def _auth(server, session, envelope, mechanism, auth_data):  # noqa: ANN001
    ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (b"tw", b"pw")
    return AuthResult(success=ok, handled=False)  # handled=False: aiosmtpd answers 535 itself


@pytest.mark.parametrize("mode", ["starttls", "ssl"])
def test_tls_and_login(cert, monkeypatch, mode):
    server_ctx, client_ctx = cert
    # PLAIN only: aiosmtpd 1.4 stalls on smtplib's LOGIN with an initial response.
    auth = {"authenticator": _auth, "auth_exclude_mechanism": ["LOGIN"]}
    if mode == "starttls":
        server = SmtpServer(tls_context=server_ctx, require_starttls=True, **auth)
    else:
        # aiosmtpd only counts STARTTLS as TLS when deciding to offer AUTH; here all of it is TLS.
        server = SmtpServer(ssl_context=server_ctx, auth_require_tls=False, **auth)
    server.up()
    try:
        monkeypatch.setenv("TRIALWATCH_SMTP_PASSWORD", "pw")
        cfg = smtp_config(server, username="tw", **{mode: True})
        t = SmtpTransport(cfg, ssl_context=client_ctx)
        t.send(MSG, "alerts@tw.example.org", ["ana@example.org"])
        t.close()
        assert [m.recipients for m in server.messages] == [["ana@example.org"]]

        monkeypatch.setenv("TRIALWATCH_SMTP_PASSWORD", "wrong")
        with pytest.raises(TransientMailError) as e:
            SmtpTransport(cfg, ssl_context=client_ctx).send(MSG, "alerts@tw.example.org", ["ana@example.org"])
        # Queued mail survives a wrong password: the operator fixes it and the next send delivers.
        assert e.value.unreachable and "refused the login" in e.value.message
    finally:
        server.down()


def test_a_certificate_the_client_does_not_trust_is_refused(cert):
    server_ctx, _ = cert
    server = SmtpServer(tls_context=server_ctx, require_starttls=True)
    server.up()
    try:
        cfg = smtp_config(server, starttls=True)
        with pytest.raises(TransientMailError) as e:
            SmtpTransport(cfg).send(MSG, "alerts@tw.example.org", ["ana@example.org"])
        assert "CERTIFICATE_VERIFY_FAILED" in e.value.message
        assert server.messages == []
    finally:
        server.down()


# -- files and console --------------------------------------------------------------------------

def test_file_transport_writes_one_eml_per_message_id_atomically(tmp_path):
    t = FileTransport(tmp_path / "outbox")
    t.send(MSG, "alerts@tw.example.org", ["ana@example.org"])
    t.send(MSG, "alerts@tw.example.org", ["ana@example.org"])  # a repeated attempt
    t.send(MSG.replace(b"abc123", b"def456"), "alerts@tw.example.org", ["bo@example.org"])

    files = sorted(p.name for p in (tmp_path / "outbox").iterdir())
    assert files == ["20260101.abc123@tw.example.org.eml", "20260101.def456@tw.example.org.eml"]
    assert (tmp_path / "outbox" / files[0]).read_bytes() == MSG


def test_file_transport_names_cannot_escape_the_folder(tmp_path):
    evil = MSG.replace(b"<20260101.abc123@tw.example.org>", b"<../../etc/passwd>")
    FileTransport(tmp_path / "outbox").send(evil, "a@tw.example.org", ["ana@example.org"])
    assert [p.name for p in (tmp_path / "outbox").iterdir()] == [".._.._etc_passwd.eml"]


def test_file_transport_failure_to_write_is_transient(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(TransientMailError):
        FileTransport(tmp_path / "file" / "outbox").send(MSG, "a@tw.example.org", ["ana@example.org"])


def test_console_transport_prints_headers_and_text():
    out = io.StringIO()
    ConsoleTransport(out).send(MSG, "alerts@tw.example.org", ["ana@example.org"])
    printed = out.getvalue()
    assert "Subject: NCT03934567: Recruiting" in printed and "Now recruiting." in printed
    assert "alerts@tw.example.org -> ana@example.org" in printed


def test_make_transport_follows_email_transport(tmp_path):
    cfg = cfgmod.loads(f"email: {{transport: file, outbox_dir: {tmp_path / 'o'}}}\n")
    t = make_transport(cfg)
    assert isinstance(t, FileTransport) and t.dir == tmp_path / "o"
    assert isinstance(make_transport(cfgmod.loads("email: {transport: console}\n")), ConsoleTransport)
    assert isinstance(make_transport(cfgmod.loads("email: {transport: smtp}\n")), SmtpTransport)


def test_after_a_421_the_next_message_reconnects_instead_of_failing(smtp_server):
    # smtplib closes the socket itself on 421 ("closing channel"); the transport must not keep
    # that dead connection, or the next message of the batch fails (and counts an attempt) too.
    smtp_server.answer_data("421 4.3.2 service shutting down")
    t = SmtpTransport(smtp_config(smtp_server))
    with pytest.raises(TransientMailError):
        t.send(MSG, "alerts@tw.example.org", ["ana@example.org"])
    smtp_server.answer_data(None)
    t.send(MSG, "alerts@tw.example.org", ["bo@example.org"])
    t.close()
    assert [m.recipients for m in smtp_server.messages] == [["bo@example.org"]]

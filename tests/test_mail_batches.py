"""A send works in batches: digests composed and stored a page of subscribers at a time,
messages claimed and settled BATCH at a time over one SMTP connection. Batching must not weaken
exactly-once: a crash repeats at most the in-flight batch, under the same Message-IDs."""

from __future__ import annotations

import datetime as dt

import pytest

from smtp_server import SmtpServer, smtp_server  # noqa: F401 - the fixture
from test_notify import NCT, followers, make_config, messages, parsed, recruiting
from trialwatch import mailer, notify
from trialwatch.store import NewMessage, utcnow

SECRET = "s3cret-key-for-tests-only-0123456789"


@pytest.fixture(autouse=True)
def _secret(monkeypatch):
    monkeypatch.setenv("TRIALWATCH_SECRET_KEY", SECRET)


@pytest.fixture
def dials(monkeypatch) -> list:
    """One entry per SMTP connection the transport opens; the real connection is opened too."""
    opened: list = []
    real = mailer.SmtpTransport._connect
    monkeypatch.setattr(mailer.SmtpTransport, "_connect", lambda self: opened.append(1) or real(self))
    return opened


class Crash(BaseException):
    """The process dies (not an error a channel reports): nothing after it runs."""


def test_a_crash_mid_batch_repeats_only_that_batch_with_the_same_message_ids(store, record, smtp_server,
                                                                            monkeypatch):
    monkeypatch.setattr(notify.outbox, "BATCH", 2)
    cfg = make_config(smtp_server, followers(5))
    notify.sync_subscribers(store, cfg)
    recruiting(store, record)
    now = utcnow()
    real = mailer.SmtpTransport.send
    calls = [0]

    def dies_after_the_fourth_hand_over(self, msg, sender, recipients):  # noqa: ANN001
        real(self, msg, sender, recipients)
        calls[0] += 1
        if calls[0] == 3:  # the first message of the second batch is out; the process dies
            raise Crash

    monkeypatch.setattr(mailer.SmtpTransport, "send", dies_after_the_fourth_hand_over)
    with pytest.raises(Crash):
        notify.send_pending(store, cfg, now=now)
    monkeypatch.setattr(mailer.SmtpTransport, "send", real)
    states = [m.state for m in messages(store)]
    assert states == ["sent", "sent", "sending", "sending", "queued"]

    later = notify.send_pending(store, cfg, now=now + notify.LEASE + dt.timedelta(seconds=1))

    assert later.recovered == 2 and len(later.sent) == 3
    ids = [parsed(m.data)["Message-ID"] for m in smtp_server.messages]
    stored = [m.rfc_message_id for m in messages(store)]
    # Each of the five arrived; only the third (handed over just before the crash, in the
    # in-flight batch) arrived twice, under its one stored Message-ID.
    assert sorted(set(ids)) == sorted(stored)
    assert [i for i in set(ids) if ids.count(i) > 1] == [stored[2]]
    assert all(m.state == "sent" for m in messages(store))


def test_one_smtp_connection_carries_every_message_of_a_send(store, record, smtp_server, dials, monkeypatch):
    monkeypatch.setattr(notify.outbox, "BATCH", 2)
    cfg = make_config(smtp_server, followers(5))
    notify.sync_subscribers(store, cfg)
    recruiting(store, record)

    report = notify.send_pending(store, cfg)

    assert len(report.sent) == 5 and len(smtp_server.messages) == 5
    assert len(dials) == 1


def test_a_dropped_connection_is_redialled_once_and_the_rest_go_out(store, record, smtp_server, dials,
                                                                    monkeypatch):
    cfg = make_config(smtp_server, followers(4))
    notify.sync_subscribers(store, cfg)
    recruiting(store, record)
    real_send = mailer.SmtpTransport.send

    def drops_the_second(self, msg, sender, recipients):  # noqa: ANN001
        if len(smtp_server.messages) == 1 and self._conn is not None and not dials[1:]:
            self._conn.close()  # the server hung up between two messages
        return real_send(self, msg, sender, recipients)

    monkeypatch.setattr(mailer.SmtpTransport, "send", drops_the_second)

    report = notify.send_pending(store, cfg)

    # The message that met the dropped connection waits for its retry; the next one redials.
    assert [e.state for e in report.entries] == ["sent", "queued", "sent", "sent"]
    assert len(dials) == 2
    assert len(notify.send_pending(store, cfg).sent) == 1


def test_a_digest_another_composer_took_is_undone_alone_within_its_page(store, record, monkeypatch):
    cfg = make_config(None, followers(3))
    notify.sync_subscribers(store, cfg)
    recruiting(store, record)
    now = utcnow()
    real = store.store_digests

    def another_composer_first(digests, at):  # noqa: ANN001
        sub_id, keep, _, _ = digests[1]
        theirs = real([(sub_id, keep, [], NewMessage(sub_id, "digest", "email", "p1@example.org",
                                                     "<theirs@x>", "theirs", b"x"))], at)
        assert theirs[0] is not None
        return real(digests, at)

    monkeypatch.setattr(store, "store_digests", another_composer_first)

    ids = notify.compose_digests(store, cfg, now=now)

    got = messages(store)
    assert len(ids) == 2 and sorted(ids) == sorted(m.id for m in got if m.rfc_message_id != "<theirs@x>")
    # Her rows stay with the other composer's message; no half-stored digest is left behind.
    assert [m.recipient for m in got].count("p1@example.org") == 1
    assert len(got) == 3


def test_readers_sharing_a_change_set_each_get_exactly_their_own_digest(store, record):
    # Readers with the same changes and preferences share one rendering with their name and
    # link tokens filled in; the result must be what rendering for each alone gives.
    import re

    from trialwatch import tokens

    names = ["Dr Ana Ruiz", "Dr Bo Li", None, "Dr O'Hara & Sons <x>"]
    subs = "".join(f"  - {{email: p{i}@example.org, trials: [{NCT}]" + (f", name: \"{n}\"" if n else "") + "}\n"
                   for i, n in enumerate(names))
    cfg = make_config(None, subs)
    notify.sync_subscribers(store, cfg)
    recruiting(store, record)
    now = utcnow()
    [(_, change, _), *_] = store.unsent_outbox()

    notify.compose_digests(store, cfg, now=now)

    def unsigned(text: str) -> str:  # tokens carry their signing time: compare the rest
        return re.sub(r"token=[A-Za-z0-9_.\-]+", "token=T", text)

    for m in messages(store):
        got = parsed(m.body)
        sub = store.subscriber(m.subscriber_id)
        alone = notify.render_digest(store, cfg, sub, [change], now=now, secret_key=SECRET)
        assert unsigned(got.get_body(("plain",)).get_content().replace("\r\n", "\n")) == unsigned(alone.text)
        # A MIME text part ends with a line break (as the stdlib writes it too).
        assert unsigned(got.get_body(("html",)).get_content().replace("\r\n", "\n")) == \
            unsigned(alone.html.replace("\r\n", "\n")) + "\n"
        for token in re.findall(r"token=([A-Za-z0-9_.\-]+)", got.get_body(("plain",)).get_content()):
            purpose = "unsubscribe" if "unsubscribe?token=" + token in got.get_body(("plain",)).get_content() \
                else "manage"
            assert tokens.read(SECRET, purpose, token).subscriber_id == sub.id


def test_a_page_of_digests_attaches_its_outbox_rows_in_one_statement_each_to_its_own_message(store, record):
    from sqlalchemy import event

    cfg = make_config(None, followers(3))
    notify.sync_subscribers(store, cfg)
    recruiting(store, record)
    rows = store.unsent_outbox()
    assert len(rows) == 3
    now = utcnow()
    seen: list[tuple[str, bool]] = []

    def log(conn, cursor, statement, params, context, executemany):  # noqa: ANN001
        seen.append((statement, executemany))

    event.listen(store.engine, "before_cursor_execute", log)
    try:
        mids = store.store_digests([(sub.id, [oid], [], NewMessage(sub.id, "digest", "email", sub.address,
                                                                   f"<k{sub.id}@x>", "s", b"x"))
                                    for oid, _, sub in rows], now)
    finally:
        event.remove(store.engine, "before_cursor_execute", log)
    attach = [(sql, many) for sql, many in seen if sql.lstrip().upper().startswith("UPDATE OUTBOX")]
    assert attach and not any(many for _, many in attach) and len(attach) == 1
    got = {m.subscriber_id: m.id for m in messages(store)}
    assert mids == [got[sub.id] for _, _, sub in rows]
    with store.session() as s:
        from trialwatch.store import OutboxRow

        assert {o.subscriber_id: o.message_id for o in s.query(OutboxRow)} == got


def test_two_digests_of_one_person_in_a_page_each_keep_their_own_rows(store, record):
    cfg = make_config(None, followers(1))
    notify.sync_subscribers(store, cfg)
    recruiting(store, record)
    store.record_fetch(record(NCT) | {"hasResults": True})  # more changes for her
    rows = store.unsent_outbox()
    assert len(rows) >= 2 and len({r[2].id for r in rows}) == 1
    sub = rows[0][2]
    store.store_digests([(sub.id, [oid], [], NewMessage(sub.id, "digest", "email", sub.address, f"<k{oid}@x>", "s",
                                                        b"x")) for oid, _, _ in rows], utcnow())
    key_of = {m.id: m.rfc_message_id for m in messages(store)}
    with store.session() as s:
        from trialwatch.store import OutboxRow

        assert {o.id: key_of[o.message_id] for o in s.query(OutboxRow)} == {oid: f"<k{oid}@x>" for oid, _, _ in rows}


def test_a_send_reads_each_change_once_and_readers_as_plain_data(store, record, monkeypatch):
    import re

    from sqlalchemy import event

    from trialwatch.notify import compose
    from trialwatch.store import Reader

    monkeypatch.setattr(compose, "COMPOSE_BATCH", 1)  # a page per reader
    cfg = make_config(None, followers(3))
    notify.sync_subscribers(store, cfg)
    recruiting(store, record)
    reads: list[str] = []

    def log(conn, cursor, statement, params, context, executemany):  # noqa: ANN001
        if re.search(r"\bFROM changes\b|\bJOIN changes\b", statement):
            reads.append(statement)

    real = store.unsent_outbox_page
    pages = []
    monkeypatch.setattr(store, "unsent_outbox_page", lambda *a: pages.append(real(*a)) or pages[-1])
    event.listen(store.engine, "before_cursor_execute", log)
    try:
        assert len(notify.compose_digests(store, cfg)) == 3
    finally:
        event.remove(store.engine, "before_cursor_execute", log)
    assert len(reads) == 1   # the first page read the change; the next two had it already
    assert all(isinstance(sub, Reader) for page in pages for _, _, sub in page)
    assert [sub.address for page in pages for _, _, sub in page] == [f"p{i}@example.org" for i in range(3)]

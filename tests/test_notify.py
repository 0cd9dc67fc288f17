"""notify: from stored changes to one digest per physician, delivered exactly once.

Changes are made the real way: ``Store.record_fetch`` of a real record, then of the same record
with a field changed. Mail goes to a real SMTP server on 127.0.0.1 (tests/smtp_server.py).
"""

from __future__ import annotations

import datetime as dt
import re
import threading
from email import message_from_bytes, policy

import pytest
from sqlalchemy import func, select, update

from smtp_server import SmtpServer, smtp_server  # noqa: F401 - the fixture
from trialwatch import config as cfgmod
from trialwatch import notify, tokens
from trialwatch.errors import TokenError
from trialwatch.store import Message, OutboxRow, Subscriber, Subscription, utcnow

NCT = "NCT03934567"          # real record, ACTIVE_NOT_RECRUITING, 26 sites
OTHER = "NCT03281889"        # real record, RECRUITING, with a central contact
SECRET = "s3cret-key-for-tests-only-0123456789"
STATUS = "protocolSection.statusModule.overallStatus"


@pytest.fixture(autouse=True)
def _secret(monkeypatch):
    monkeypatch.setenv("TRIALWATCH_SECRET_KEY", SECRET)


def make_config(server: SmtpServer | None, subscribers: str, **email) -> cfgmod.Config:
    opts = {"max_attempts": 3, "retry_backoff_s": 60, **email}
    extra = "".join(f"  {k}: {v}\n" for k, v in opts.items())
    smtp = f"  transport: smtp\n  smtp: {server.config_yaml()}\n" if server else "  transport: console\n"
    return cfgmod.loads(
        "email:\n  from: 'trialwatch <alerts@tw.example.org>'\n  public_url: https://tw.example.org\n"
        f"{smtp}{extra}subscribers:\n{subscribers}")


def followers(n: int) -> str:
    """``n`` subscribers, p0@example.org ..., each following NCT."""
    return "".join(f"  - {{email: p{i}@example.org, trials: [{NCT}]}}\n" for i in range(n))


ANA_BO = f"""\
  - {{email: ana@example.org, name: Dr Ana Ruiz, trials: [{NCT}], min_severity: important}}
  - {{email: bo@example.org, trials: [{NCT}], min_severity: critical}}
"""


def set_path(rec: dict, path: str, value) -> dict:  # noqa: ANN001
    node = rec
    *parents, last = path.split(".")
    for p in parents:
        node = node[p]
    node[last] = value
    return rec


def change(store, record, nct=NCT, *, at=None, **paths):  # noqa: ANN001, ANN003
    """Store the real record, then a version with ``paths`` (dotted, '__' for '.') changed."""
    store.record_fetch(record(nct), fetched_at=(at or utcnow()) - dt.timedelta(days=1))
    new = record(nct)
    for path, value in paths.items():
        set_path(new, path.replace("__", "."), value)
    return store.record_fetch(new, fetched_at=at)


def recruiting(store, record, nct=NCT, **kw):  # noqa: ANN001, ANN003
    return change(store, record, nct, **{STATUS.replace(".", "__"): "RECRUITING"}, **kw)


def messages(store) -> list[Message]:  # noqa: ANN001
    with store.session() as s:
        return list(s.scalars(select(Message).order_by(Message.id)))


def parsed(raw: bytes):  # noqa: ANN201
    return message_from_bytes(raw, policy=policy.default)


def token_from(msg) -> str:  # noqa: ANN001
    return re.search(r"unsubscribe\?token=([^>\s]+)>", msg["List-Unsubscribe"]).group(1)


# -- a status change ----------------------------------------------------------------------------

def test_a_status_change_mails_each_physician_whose_floor_it_meets_once(store, record, smtp_server):
    cfg = make_config(smtp_server, ANA_BO)
    notify.sync_subscribers(store, cfg)
    recruiting(store, record)

    report = notify.send_pending(store, cfg)

    # ana asked for important changes and gets one; bo asked for critical only and gets none.
    assert [(e.recipient, e.state) for e in report.entries] == [("ana@example.org", "sent")]
    assert [m.recipients for m in smtp_server.messages] == [["ana@example.org"]]
    msg = parsed(smtp_server.messages[0].data)
    assert msg["Subject"] == f"{NCT}: Active, not recruiting → Recruiting"
    assert msg.get_body(("plain",)) is not None and msg.get_body(("html",)) is not None
    text = msg.get_body(("plain",)).get_content()
    assert "Active, not recruiting → Recruiting" in text
    assert f"https://clinicaltrials.gov/study/{NCT}" in text
    assert msg["To"] == "Dr Ana Ruiz <ana@example.org>"
    for header in ("Message-ID", "Date"):
        assert msg[header]
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert re.fullmatch(r"<https://tw\.example\.org/unsubscribe\?token=\S+>, <mailto:alerts@tw\.example\.org\?\S+>",
                        msg["List-Unsubscribe"])
    assert "https://tw.example.org/manage?token=" in text
    # The footer says why she gets it and at which floor.
    assert f"you follow {NCT}" in text and "important and critical changes" in text

    again = notify.send_pending(store, cfg)
    assert again.entries == [] and len(smtp_server.messages) == 1


def test_the_unsubscribe_header_link_works_without_a_web_server(store, record, smtp_server):
    cfg = make_config(smtp_server, ANA_BO)
    notify.sync_subscribers(store, cfg)
    recruiting(store, record)
    notify.send_pending(store, cfg)
    token = token_from(parsed(smtp_server.messages[0].data))

    sub = notify.unsubscribe(store, cfg, token)

    assert (sub.email, sub.state) == ("ana@example.org", "unsubscribed")
    assert notify.unsubscribe(store, cfg, token).state == "unsubscribed"  # twice is harmless
    # Nothing more reaches her; bo, who asked for critical changes only, gets the suspension.
    change(store, record, **{"protocolSection__statusModule__overallStatus": "SUSPENDED"},
           at=utcnow() + dt.timedelta(days=2))
    notify.send_pending(store, cfg)
    assert [m.recipients for m in smtp_server.messages] == [["ana@example.org"], ["bo@example.org"]]


@pytest.mark.parametrize("forge", [
    lambda t: t[:-2] + ("AA" if not t.endswith("AA") else "BB"),           # altered signature
    lambda t: tokens.make("another-secret-key-0123456789", "unsubscribe", 1),  # another key
    lambda t: tokens.make(SECRET, "manage", 1),                              # another purpose
    lambda t: "not-a-token",
])
def test_a_forged_or_altered_token_is_refused(store, record, forge):
    cfg = make_config(None, ANA_BO)
    notify.sync_subscribers(store, cfg)
    good = tokens.make(SECRET, "unsubscribe", 1)
    with pytest.raises(TokenError):
        notify.unsubscribe(store, cfg, forge(good))
    with store.session() as s:
        assert s.get(Subscriber, 1).state == "active"


def test_unsubscribing_drops_her_queued_digest(store, record, smtp_server):
    cfg = make_config(smtp_server, ANA_BO)
    notify.sync_subscribers(store, cfg)
    recruiting(store, record)
    smtp_server.down()
    assert [e.state for e in notify.send_pending(store, cfg).entries] == ["queued"]

    notify.unsubscribe(store, cfg, tokens.make(SECRET, "unsubscribe", 1))
    smtp_server.up()

    assert notify.send_pending(store, cfg).entries == []
    assert smtp_server.messages == [] and messages(store) == []
    with store.session() as s:
        assert s.scalar(select(func.count()).select_from(OutboxRow)) == 0


# -- delivery failures --------------------------------------------------------------------------

def test_server_down_keeps_the_message_queued_and_it_goes_out_once_when_back(store, record, smtp_server):
    cfg = make_config(smtp_server, ANA_BO)
    notify.sync_subscribers(store, cfg)
    recruiting(store, record)
    now = utcnow()
    smtp_server.down()

    first = notify.send_pending(store, cfg, now=now)

    [entry] = first.entries
    assert entry.state == "queued" and "cannot connect" in entry.error
    [m] = messages(store)
    # A refused connection is not a try the server answered: it uses up none of max_attempts.
    assert (m.state, m.attempts, m.next_attempt_at) == ("queued", 0, now + dt.timedelta(seconds=60))
    smtp_server.up()
    # The daemon's automatic send respects the backoff ...
    early = notify.send_pending(store, cfg, now=now + dt.timedelta(seconds=30), force=False)
    assert early.entries == [] and early.waiting == 1 and smtp_server.messages == []
    # ... and delivers once it is due.
    due = notify.send_pending(store, cfg, now=now + dt.timedelta(seconds=61), force=False)
    assert [e.state for e in due.entries] == ["sent"]
    assert notify.send_pending(store, cfg, now=now + dt.timedelta(seconds=62)).entries == []
    assert len(smtp_server.messages) == 1
    assert parsed(smtp_server.messages[0].data)["Message-ID"] == m.rfc_message_id


def test_an_outage_dials_once_per_send_and_uses_up_no_message_s_attempts(store, record, smtp_server):
    three = ANA_BO.replace("min_severity: critical", "min_severity: important") + \
        f"  - {{email: cy@example.org, trials: [{NCT}]}}\n"
    cfg = make_config(smtp_server, three)  # max_attempts: 3
    notify.sync_subscribers(store, cfg)
    recruiting(store, record)
    smtp_server.down()
    for _ in range(5):  # more explicit sends during the outage than max_attempts
        report = notify.send_pending(store, cfg)
        assert [e.state for e in report.entries] == ["queued"] * 3
        assert [e.error.startswith("not tried") for e in report.entries] == [False, True, True]
    assert sorted((m.attempts, m.state) for m in messages(store)) == [(0, "queued")] * 3
    smtp_server.up()
    assert len(notify.send_pending(store, cfg).sent) == 3


def test_explicit_send_retries_at_once_and_gives_up_after_max_deferrals(store, record, smtp_server):
    cfg = make_config(smtp_server, ANA_BO, max_attempts=2, retry_backoff_s=3600)
    notify.sync_subscribers(store, cfg)
    recruiting(store, record)
    smtp_server.refuse["ana@example.org"] = "450 4.2.1 mailbox busy"
    now = utcnow()

    assert [e.state for e in notify.send_pending(store, cfg, now=now).entries] == ["queued"]
    # force=True ignores next_attempt_at (an hour away) and tries now, but a try ahead of its
    # time does not count against max_attempts, nor move the schedule.
    for _ in range(3):
        assert [e.state for e in notify.send_pending(store, cfg, now=now).entries] == ["queued"]
    [m] = messages(store)
    assert (m.attempts, m.next_attempt_at) == (1, now + dt.timedelta(hours=1))
    # The due retry is the second deferral the server answered: max_attempts reached.
    later = now + dt.timedelta(hours=1)
    assert [e.state for e in notify.send_pending(store, cfg, now=later).entries] == ["failed"]
    [m] = messages(store)
    assert (m.state, m.attempts) == ("failed", 2) and "450" in m.last_error
    del smtp_server.refuse["ana@example.org"]
    assert notify.send_pending(store, cfg).entries == [] and smtp_server.messages == []


TWO = f"""\
  - {{email: ana@example.org, trials: [{NCT}]}}
  - {{email: cy@example.org, trials: [{NCT}]}}
"""


def test_a_5xx_for_one_recipient_fails_only_hers(store, record, smtp_server):
    cfg = make_config(smtp_server, TWO)
    notify.sync_subscribers(store, cfg)
    recruiting(store, record)
    smtp_server.refuse["cy@example.org"] = "550 5.1.1 no such user"

    report = notify.send_pending(store, cfg)

    states = {e.recipient: (e.state, e.error) for e in report.entries}
    assert states["ana@example.org"] == ("sent", None)
    assert states["cy@example.org"][0] == "failed" and "550" in states["cy@example.org"][1]
    assert [m.recipients for m in smtp_server.messages] == [["ana@example.org"]]
    assert report.to_dict()["failed"] == 1


def test_a_4xx_for_a_recipient_defers_her_message(store, record, smtp_server):
    cfg = make_config(smtp_server, TWO)
    notify.sync_subscribers(store, cfg)
    recruiting(store, record)
    smtp_server.refuse["cy@example.org"] = "450 4.2.1 mailbox busy"

    report = notify.send_pending(store, cfg)

    assert {e.recipient: e.state for e in report.entries} == {"ana@example.org": "sent",
                                                             "cy@example.org": "queued"}
    del smtp_server.refuse["cy@example.org"]
    assert [e.recipient for e in notify.send_pending(store, cfg).sent] == ["cy@example.org"]


def stranded_in_sending(store, record, smtp_server):
    """A digest composed and claimed by a sender that died before marking it sent:
    returns (config, message id, the time of the claim)."""
    cfg = make_config(smtp_server, ANA_BO)
    notify.sync_subscribers(store, cfg)
    recruiting(store, record)
    now = utcnow()
    [mid] = notify.compose_digests(store, cfg, now=now)
    with store.session() as s, s.begin():
        s.execute(update(Message).where(Message.id == mid)
                  .values(state="sending", attempts=1, lease_until=now + notify.LEASE))
    return cfg, mid, now


def test_an_expired_lease_is_recovered_and_resent_with_the_same_message_id(store, record, smtp_server):
    cfg, mid, now = stranded_in_sending(store, record, smtp_server)

    # While the lease runs, nobody else touches it.
    assert notify.send_pending(store, cfg, now=now + dt.timedelta(minutes=1)).entries == []
    later = notify.send_pending(store, cfg, now=now + notify.LEASE + dt.timedelta(seconds=1))

    assert later.recovered == 1 and [e.state for e in later.entries] == ["sent"]
    [m] = messages(store)
    assert parsed(smtp_server.messages[0].data)["Message-ID"] == m.rfc_message_id
    assert len(smtp_server.messages) == 1


def test_concurrent_senders_never_send_a_message_twice(db_url, store, record):
    from trialwatch.store import open_store

    cfg = make_config(None, followers(6))
    notify.sync_subscribers(store, cfg)
    recruiting(store, record)
    delivered: list[bytes] = []
    lock = threading.Lock()

    class Recorder:
        def send(self, msg, sender, recipients):  # noqa: ANN001
            with lock:
                delivered.append(msg)

        def close(self):
            pass

    stores = [open_store(db_url) for _ in range(4)]
    start = threading.Barrier(len(stores))
    errors: list[BaseException] = []

    def run(st):  # noqa: ANN001
        try:
            start.wait()
            notify.send_pending(st, cfg, transport=Recorder())
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(st,)) for st in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for st in stores:
        st.close()

    assert errors == []
    ids = [parsed(m)["Message-ID"] for m in delivered]
    assert len(ids) == 6 and len(set(ids)) == 6
    assert [m.state for m in messages(store)] == ["sent"] * 6


# -- digests ------------------------------------------------------------------------------------

def test_changes_to_several_trials_make_one_digest_most_severe_first(store, record, smtp_server):
    cfg = make_config(smtp_server, f"  - {{email: ana@example.org, trials: [{NCT}, {OTHER}]}}\n")
    notify.sync_subscribers(store, cfg)
    recruiting(store, record, NCT)
    change(store, record, OTHER, protocolSection__statusModule__overallStatus="SUSPENDED")

    report = notify.send_pending(store, cfg)

    assert len(report.sent) == 1 and len(smtp_server.messages) == 1
    msg = parsed(smtp_server.messages[0].data)
    # SUSPENDED is critical, so that trial leads.
    assert msg["Subject"] == f"2 trials changed: {OTHER} Suspended, {NCT} Recruiting"
    text = msg.get_body(("plain",)).get_content()
    assert text.index(OTHER) < text.index(NCT)
    assert "Enrolment paused" in text


def test_now_recruiting_names_the_central_contact_of_the_latest_record(store, record, smtp_server):
    contact = {"name": "Li Wei", "role": "CONTACT", "phone": "+86 10 8778 8888", "email": "trial@example.cn"}
    cfg = make_config(smtp_server, ANA_BO)
    notify.sync_subscribers(store, cfg)
    change(store, record, protocolSection__statusModule__overallStatus="RECRUITING",
           protocolSection__contactsLocationsModule__centralContacts=[contact])

    notify.send_pending(store, cfg)

    msg = parsed(smtp_server.messages[0].data)
    text = msg.get_body(("plain",)).get_content()
    assert "Now recruiting" in text
    assert "Contact: Li Wei · +86 10 8778 8888 · trial@example.cn" in text
    assert 'href="mailto:trial@example.cn"' in msg.get_body(("html",)).get_content()


def test_site_changes_are_a_table_and_criteria_a_readable_diff(store, record):
    cfg = make_config(None, f"  - {{email: ana@example.org, trials: [{NCT}], min_severity: minor}}\n")
    notify.sync_subscribers(store, cfg)
    new_sites = record(NCT)["protocolSection"]["contactsLocationsModule"]["locations"][1:]
    criteria = record(NCT)["protocolSection"]["eligibilityModule"]["eligibilityCriteria"]
    change(store, record, protocolSection__contactsLocationsModule__locations=new_sites,
           protocolSection__eligibilityModule__eligibilityCriteria=criteria + "\n14. Pregnant women")
    [mid] = notify.compose_digests(store, cfg)

    msg = parsed(messages(store)[0].body)
    html = msg.get_body(("html",)).get_content()
    text = msg.get_body(("plain",)).get_content()
    assert "Cancer Hospital Chinese Academy of Medical Sciences: Removed from the record" in text
    assert "+ Exclusion: Pregnant women" in text      # which list gained which criterion
    assert "<table" in html and "Removed from the record" in html
    # Inline styles only: nothing external, no <style> left for clients to strip.
    assert "<style" not in html and "<script" not in html and "<link" not in html and "<img" not in html
    assert 'style="' in html


def test_script_in_record_text_is_escaped_in_html(store, record):
    cfg = make_config(None, f"  - {{email: ana@example.org, trials: [{NCT}], min_severity: minor}}\n")
    notify.sync_subscribers(store, cfg)
    criteria = record(NCT)["protocolSection"]["eligibilityModule"]["eligibilityCriteria"]
    change(store, record, protocolSection__eligibilityModule__eligibilityCriteria=criteria
           + "\n* <script>alert('x')</script>")
    notify.compose_digests(store, cfg)

    msg = parsed(messages(store)[0].body)
    html = msg.get_body(("html",)).get_content()
    assert "<script" not in html
    assert "&lt;script&gt;alert(" in html
    # The plain-text part is not HTML and shows the text as written.
    assert "<script>alert('x')</script>" in msg.get_body(("plain",)).get_content()


def test_a_daily_digest_waits_for_its_day(store, record):
    cfg = make_config(None, f"  - {{email: ana@example.org, trials: [{NCT}], digest: daily}}\n")
    notify.sync_subscribers(store, cfg)
    now = utcnow()
    with store.session() as s, s.begin():
        s.execute(update(Subscriber).values(last_digest_at=now - dt.timedelta(hours=2)))
    recruiting(store, record, at=now)

    assert notify.compose_digests(store, cfg, now=now) == []
    assert notify.compose_digests(store, cfg, now=now + dt.timedelta(hours=12)) == []
    with store.session() as s:  # the change waits in the outbox, not lost
        assert s.scalar(select(func.count()).select_from(OutboxRow).where(OutboxRow.message_id.is_(None))) == 1
    assert len(notify.compose_digests(store, cfg, now=now + dt.timedelta(hours=22))) == 1
    with store.session() as s:
        assert s.get(Subscriber, 1).last_digest_at == now + dt.timedelta(hours=22)


def test_dry_run_lists_what_would_go_out_and_changes_nothing(store, record, smtp_server):
    cfg = make_config(smtp_server, ANA_BO)
    notify.sync_subscribers(store, cfg)
    recruiting(store, record)

    report = notify.send_pending(store, cfg, dry_run=True)

    assert [(e.recipient, e.state) for e in report.entries] == [("ana@example.org", "would_send")]
    assert report.entries[0].subject == f"{NCT}: Active, not recruiting → Recruiting"
    assert messages(store) == [] and smtp_server.messages == []


# -- preview ------------------------------------------------------------------------------------

def test_preview_renders_the_latest_changes_without_touching_the_outbox(store, record):
    cfg = make_config(None, ANA_BO)
    notify.sync_subscribers(store, cfg)
    recruiting(store, record)

    r = notify.preview(store, cfg, "nct3934567", to="ana@example.org")

    assert r.subject == f"{NCT}: Active, not recruiting → Recruiting"
    assert "Recruiting" in r.text and "<html" in r.html
    assert messages(store) == []
    with store.session() as s:
        assert s.scalar(select(func.count()).select_from(OutboxRow).where(OutboxRow.message_id.is_(None))) == 1


def test_preview_of_a_trial_without_changes_shows_its_current_state(store, record):
    cfg = make_config(None, ANA_BO)
    store.record_fetch(record(OTHER))

    r = notify.preview(store, cfg, OTHER)

    assert r.subject == f"{OTHER}: current state"
    assert "Current status: Recruiting" in r.text and "Now recruiting" in r.text


def test_a_send_reads_each_trial_once_however_many_people_follow_it(store, record, monkeypatch):
    cfg = make_config(None, followers(5))
    notify.sync_subscribers(store, cfg)
    recruiting(store, record)
    reads: list[str] = []
    real = type(store).latest_record

    def counted(self, nct_id):  # noqa: ANN001
        reads.append(nct_id)
        return real(self, nct_id)

    monkeypatch.setattr(type(store), "latest_record", counted)

    report = notify.send_pending(store, cfg)

    assert len(report.sent) == 5
    assert reads == [NCT]


def test_preview_shows_exactly_the_digest_send_then_sends_her(store, record, smtp_server):
    # Two polls' changes wait for her (issue 12: preview showed the last poll's one change and
    # another subject, while send mailed all of them).
    cfg = make_config(smtp_server, ANA_BO)
    notify.sync_subscribers(store, cfg)
    first = utcnow() - dt.timedelta(hours=2)
    recruiting(store, record, at=first)
    later = record(NCT)
    set_path(later, STATUS, "RECRUITING")
    set_path(later, "protocolSection.designModule.enrollmentInfo.count", 999)
    set_path(later, "protocolSection.eligibilityModule.minimumAge", "21 Years")
    assert len(store.record_fetch(later, fetched_at=first + dt.timedelta(hours=1)).changes) == 2

    shown = notify.preview(store, cfg, NCT, to="ana@example.org")
    sent = notify.send_pending(store, cfg)

    [entry] = sent.sent
    mail = parsed(smtp_server.messages[0].data)
    assert shown.subject == entry.subject == mail["Subject"]
    assert shown.subject == f"{NCT}: Active, not recruiting → Recruiting (+2 more)"
    text = mail.get_body(preferencelist=("plain",)).get_content()
    labels = re.findall(r"^\* (.+) \[", text, flags=re.M)
    assert labels == re.findall(r"^\* (.+) \[", shown.text, flags=re.M)
    assert len(labels) == 3 and "3 changes in 1 trial you follow." in shown.text


# -- subscribers from config.yaml ---------------------------------------------------------------

def test_sync_creates_updates_and_never_resubscribes_the_unsubscribed(store):
    cfg = make_config(None, ANA_BO)
    first = notify.sync_subscribers(store, cfg)
    assert first.created == ["ana@example.org", "bo@example.org"]
    notify.unsubscribe(store, cfg, tokens.make(SECRET, "unsubscribe", 1))

    changed = make_config(None, f"""\
  - {{email: ana@example.org, trials: [{NCT}]}}
  - {{email: bo@example.org, trials: [{NCT}, {OTHER}], min_severity: minor, digest: weekly}}
""")
    report = notify.sync_subscribers(store, changed)

    assert report.kept_unsubscribed == ["ana@example.org"]
    assert report.updated == ["bo@example.org"]
    assert any("ana@example.org" in line and "unsubscribed" in line for line in report.lines())
    with store.session() as s:
        ana, bo = s.get(Subscriber, 1), s.get(Subscriber, 2)
        assert ana.state == "unsubscribed"
        assert (bo.state, bo.source, bo.min_severity, bo.digest) == ("active", "config", "minor", "weekly")
        assert {x.target for x in bo.subscriptions} == {NCT, OTHER}
    assert notify.sync_subscribers(store, changed).unchanged == ["bo@example.org"]


def test_sync_leaves_web_subscribers_alone_and_drops_removed_config_ones(store):
    with store.session() as s, s.begin():
        s.add(Subscriber(email="web@example.org", state="active", source="web", min_severity="minor",
                         subscriptions=[Subscription(kind="trial", target=OTHER)]))
    notify.sync_subscribers(store, make_config(None, ANA_BO))

    report = notify.sync_subscribers(store, make_config(None, f"""\
  - {{email: ana@example.org, trials: [{NCT}]}}
  - {{email: web@example.org, trials: [{NCT}]}}
"""))

    assert report.removed == ["bo@example.org"] and report.skipped_web == ["web@example.org"]
    with store.session() as s:
        web = s.scalars(select(Subscriber).where(Subscriber.email == "web@example.org")).one()
        assert [x.target for x in web.subscriptions] == [OTHER] and web.min_severity == "minor"
        bo = s.scalars(select(Subscriber).where(Subscriber.email == "bo@example.org")).one()
        assert bo.subscriptions == []


# -- confirmation -------------------------------------------------------------------------------

def test_send_confirmation_mails_the_link_at_once(store, smtp_server):
    cfg = make_config(smtp_server, ANA_BO)
    with store.session() as s, s.begin():
        sub = Subscriber(email="new@example.org", state="pending", source="web",
                         subscriptions=[Subscription(kind="trial", target=OTHER)])
        s.add(sub)

    entry = notify.send_confirmation(store, cfg, sub, "https://tw.example.org/confirm?token=abc")

    assert entry.state == "sent"
    msg = parsed(smtp_server.messages[0].data)
    assert msg["To"] == "new@example.org" and "List-Unsubscribe" not in msg
    assert "https://tw.example.org/confirm?token=abc" in msg.get_body(("plain",)).get_content()
    assert OTHER in msg.get_body(("html",)).get_content()
    assert messages(store)[0].kind == "confirm"


# -- review fixes -------------------------------------------------------------------------------

def test_list_unsubscribe_is_plain_uris_not_an_encoded_word(store, record):
    # RFC 2369/8058: mail clients look for <https://...> in the raw header; an RFC 2047
    # encoded-word hides the URI and breaks one-click unsubscribe.
    cfg = make_config(None, ANA_BO)
    notify.sync_subscribers(store, cfg)
    recruiting(store, record)
    notify.compose_digests(store, cfg)

    raw = messages(store)[0].body
    head = raw.split(b"\r\n\r\n", 1)[0]
    assert b"=?" not in head.split(b"List-Unsubscribe:", 1)[1].split(b"\r\nList-Unsubscribe-Post", 1)[0]
    assert b"List-Unsubscribe: <https://tw.example.org/unsubscribe?token=" in head
    assert all(len(line) <= 998 for line in head.split(b"\r\n"))
    token = token_from(parsed(raw))
    assert notify.unsubscribe(store, cfg, token).state == "unsubscribed"


def test_a_lease_runs_from_the_claim_not_from_the_start_of_a_long_send(store, record, monkeypatch):
    # send_pending's ``now`` is taken once, before composing and the whole batch. A message
    # claimed 15 minutes into a slow batch must not carry a lease that has already expired, or a
    # second sender (the daemon, a manual ``trialwatch send``) re-queues and mails it again.
    cfg = make_config(None, followers(2))
    notify.sync_subscribers(store, cfg)
    recruiting(store, record)
    now = utcnow()
    clock = [1000.0]
    monkeypatch.setattr(notify.outbox, "_clock", lambda: clock[0])
    second: list[bytes] = []

    class Other:
        def send(self, msg, sender, recipients):  # noqa: ANN001
            second.append(msg)

        def close(self):
            pass

    class Slow:
        calls = 0

        def send(self, msg, sender, recipients):  # noqa: ANN001
            Slow.calls += 1
            if Slow.calls == 1:
                clock[0] += 15 * 60  # the first delivery takes 15 minutes of real time
            else:
                # A minute into the second delivery, another sender starts.
                clock[0] += 60
                other = notify.send_pending(store, cfg, transport=Other(),
                                            now=now + dt.timedelta(seconds=clock[0] - 1000.0))
                assert other.recovered == 0

        def close(self):
            pass

    report = notify.send_pending(store, cfg, transport=Slow(), now=now)

    assert [e.state for e in report.entries] == ["sent", "sent"] and second == []


def test_one_digest_that_cannot_be_rendered_does_not_hold_back_everyone_elses_mail(
        store, record, smtp_server, monkeypatch):
    cfg = make_config(smtp_server, TWO)
    notify.sync_subscribers(store, cfg)
    recruiting(store, record)
    real = notify.render_digest

    def flaky(store_, config, subscriber, *a, **kw):  # noqa: ANN001, ANN002, ANN003
        if subscriber.email == "ana@example.org":
            raise ValueError("a record value the template cannot handle")
        return real(store_, config, subscriber, *a, **kw)

    monkeypatch.setattr(notify.digest, "render_digest", flaky)

    report = notify.send_pending(store, cfg)

    # cy's digest goes out; ana's changes wait in the outbox (not lost) for a fixed release.
    assert [(e.recipient, e.state) for e in report.entries] == [("cy@example.org", "sent")]
    with store.session() as s:
        waiting = s.scalars(select(OutboxRow).where(OutboxRow.message_id.is_(None))).all()
        assert [o.subscriber_id for o in waiting] == [1]
    monkeypatch.setattr(notify.digest, "render_digest", real)
    assert [e.recipient for e in notify.send_pending(store, cfg).sent] == ["ana@example.org"]


def test_a_digest_stranded_in_sending_is_not_mailed_after_she_unsubscribed(store, record, smtp_server):
    cfg, mid, now = stranded_in_sending(store, record, smtp_server)
    # Then she unsubscribed.
    notify.unsubscribe(store, cfg, tokens.make(SECRET, "unsubscribe", 1))

    later = notify.send_pending(store, cfg, now=now + notify.LEASE + dt.timedelta(seconds=1))

    assert later.entries == [] and smtp_server.messages == []
    assert messages(store) == []

"""Record text is data, never markup or control.

A contact address on a record becomes a ``mailto:`` link only when it is a plain address (one
with ``?bcc=…&body=…`` would pre-fill a Bcc), a phone number a ``tel:`` link only when it is a
number; and no record text reaches a terminal with its escape sequences or line breaks. Each
place record text goes is checked: the web page, both parts of the digest, ``check`` and
``history``.
"""

from __future__ import annotations

import datetime as dt
import re
from email import message_from_bytes, policy

import pytest
from starlette.testclient import TestClient

from trialwatch import config as configmod
from trialwatch import notify
from trialwatch.store import Message, open_store, utcnow
from trialwatch.untrusted import one_line, safe_email, strip_controls, tel_href

from conftest import cli_against
from standin import StandIn

NCT = "NCT03268603"          # the synthetic fixture in tests/fixtures
SECRET = "test-secret-key-0123456789"
BCC = "coord@site.example?bcc=spy@evil.example&body=Send%20the%20records"
SCRIPT_PHONE = "javascript:alert(1)"
# An OSC 8 hyperlink, an OSC title, a screen clear, an 8-bit CSI, and a CR/LF that would
# forge a line of output of its own.
HOSTILE = ("ALS study\x1b]8;;https://evil.example\x07click\x1b]8;;\x07\x1b]0;pwned\x07"
           "\x1b[2J\x9b31m\r\nNCT00000000  forged line\x00")
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def hostile(record: dict, status: str | None = None) -> dict:
    ps = record["protocolSection"]
    ps["identificationModule"]["briefTitle"] = HOSTILE
    ps["contactsLocationsModule"]["centralContacts"] = [
        {"name": "Dr\x1b[31m Red", "role": "CONTACT", "phone": SCRIPT_PHONE, "email": BCC}]
    if status:
        ps["statusModule"]["overallStatus"] = status
    return record


# -- the rules ----------------------------------------------------------------------------------

@pytest.mark.parametrize("value", ["als-msc-study@example.org", "o'brien.j+trials@mayo.example.edu"])
def test_a_plain_address_is_fit_for_a_mailto_link(value):
    assert safe_email(value) == value


@pytest.mark.parametrize("value", [BCC, "a b@example.org", "a@example.org\r\nBcc: b@example.org",
                                   "mailto:a@example.org", "a%3Fbcc=b@example.org", "a@example.org#x",
                                   "a@example.org&cc=b@example.org", "<a@example.org>", "a@localhost",
                                   "üser@example.org", None, 42])
def test_anything_else_is_not(value):
    assert safe_email(value) is None


@pytest.mark.parametrize("value, href", [
    ("507-555-0142", "tel:5075550142"),
    ("+1 (507) 555-0142 ext. 12", "tel:+15075550142;ext=12"),
    ("+33 1.23.45.67.89 x7", "tel:+33123456789;ext=7"),
])
def test_a_phone_number_becomes_a_tel_uri_of_digits(value, href):
    assert tel_href(value) == href


@pytest.mark.parametrize("value", [SCRIPT_PHONE, "555-0142?body=x", "12", "call 555 0142", "555\r\n0142", None])
def test_anything_else_is_no_tel_link(value):
    assert tel_href(value) is None


def test_control_sequences_are_stripped_and_line_breaks_kept_only_where_asked():
    assert strip_controls(HOSTILE) == "ALS studyclick\nNCT00000000  forged line"
    assert one_line(HOSTILE) == "ALS studyclick NCT00000000 forged line"
    assert strip_controls("- old\r\n+ new\ttab") == "- old\n+ new\ttab"


def test_printable_text_is_returned_as_is_because_no_filter_acts_on_a_printable_character():
    from trialwatch import untrusted

    for ch in map(chr, range(0x10000)):
        if ch.isprintable():
            assert not any(p.search(ch) for p in (untrusted._ESC_SEQ, untrusted._NEWLINES, untrusted._CONTROLS)), \
                hex(ord(ch))
    text = "NCT03268603: Active, not recruiting → Recruiting “x”"
    assert strip_controls(text) is text and one_line(text) == text


# -- the web page -------------------------------------------------------------------------------

@pytest.fixture
def web(tmp_path, monkeypatch, record):
    monkeypatch.setenv("TRIALWATCH_SECRET_KEY", SECRET)
    cfg = configmod.loads(f"database: sqlite:///{tmp_path / 'tw.db'}\ntrials: [{NCT}]\n")
    store = open_store(cfg.database_url)
    store.record_fetch(hostile(record(NCT)))
    from trialwatch.web import create_app

    with TestClient(create_app(cfg, store), base_url="https://trials.example.org") as c:
        yield c
    store.close()


def test_the_trial_page_links_no_hostile_address_or_number(web):
    page = web.get(f"/trials/{NCT}").text
    assert "mailto:" not in page
    assert "tel:" not in page
    assert 'href="javascript' not in page
    # Shown as text, escaped.
    assert "coord@site.example?bcc=spy@evil.example&amp;body=Send%20the%20records" in page
    assert f" · {SCRIPT_PHONE}" in page


def test_a_plain_contact_is_still_linked(tmp_path, monkeypatch, record):
    monkeypatch.setenv("TRIALWATCH_SECRET_KEY", SECRET)
    cfg = configmod.loads(f"database: sqlite:///{tmp_path / 'tw.db'}\ntrials: [{NCT}]\n")
    store = open_store(cfg.database_url)
    store.record_fetch(record(NCT))
    from trialwatch.web import create_app

    with TestClient(create_app(cfg, store), base_url="https://trials.example.org") as c:
        page = c.get(f"/trials/{NCT}").text
    store.close()
    assert '<a href="mailto:als-msc-study@example.org">' in page and '<a href="tel:5075550142">' in page


# -- the digest ---------------------------------------------------------------------------------

def test_the_digest_links_no_hostile_address_and_its_text_part_carries_no_controls(tmp_path, monkeypatch, record):
    monkeypatch.setenv("TRIALWATCH_SECRET_KEY", SECRET)
    cfg = configmod.loads(
        f"database: sqlite:///{tmp_path / 'tw.db'}\nemail: {{transport: file, outbox_dir: {tmp_path / 'out'}}}\n"
        f"subscribers:\n  - {{email: dr.neuro@example.org, trials: [{NCT}]}}\n")
    store = open_store(cfg.database_url)
    notify.sync_subscribers(store, cfg)
    store.record_fetch(record(NCT), fetched_at=utcnow() - dt.timedelta(days=1))
    # Now recruiting: the digest names the central contact, the hostile one.
    store.record_fetch(hostile(record(NCT), status="RECRUITING"))
    [mid] = notify.compose_digests(store, cfg)
    with store.session() as s:
        raw = s.get(Message, mid).body
    store.close()

    msg = message_from_bytes(raw, policy=policy.default)
    html = msg.get_body(("html",)).get_content()
    text = msg.get_body(("plain",)).get_content()
    assert "mailto:coord" not in html and "tel:" not in html and 'href="javascript' not in html
    assert "coord@site.example?bcc=spy@evil.example&amp;body=Send%20the%20records" in html
    text = text.replace("\r\n", "\n")
    assert not CONTROL.search(text.replace("\n", "").replace("\t", "")), repr(text)
    assert f"Dr Red · {SCRIPT_PHONE} · {BCC}" in text
    assert "\x1b" not in msg["Subject"] and "\n" not in msg["Subject"]


# -- the terminal -------------------------------------------------------------------------------

@pytest.fixture
def run(record, tmp_path, capsys, monkeypatch):
    with StandIn([record(NCT)]) as api:
        yield cli_against(api.base_url, f"sqlite:///{tmp_path / 'tw.db'}", tmp_path, capsys, monkeypatch,
                          max_retries=5, extra=f"trials: [{NCT}]\n"), api


def test_check_and_history_print_record_text_without_its_control_sequences(run, record):
    invoke, api = run
    assert invoke("check", NCT)[0] == 0
    api.put(hostile(record(NCT)))
    code, checked, err = invoke("check", NCT)
    assert code == 0, err
    code, history, err = invoke("history", NCT)
    assert code == 0, err

    for out in (checked, history):
        assert not CONTROL.search(out.replace("\n", "")), repr(out)
        # The record's CR/LF forged no line of its own.
        assert not any(line.startswith("NCT00000000") for line in out.splitlines())
    assert f"{NCT}  ALS studyclick NCT00000000 forged line" in checked
    assert "Dr Red, javascript:alert(1), " + BCC in checked
    assert "ALS studyclick NCT00000000 forged line" in history

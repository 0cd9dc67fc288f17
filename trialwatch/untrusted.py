"""Text from outside is data, never markup or control: the validators and scrubbers for it.

Record text comes from ClinicalTrials.gov, addresses from a web form or config.yaml; none of it
may steer a terminal, forge a line of output, add a Bcc to a ``mailto:`` link or break a mail
header. One place, reused by the templates (web and mail), the CLI output and config/web
validation, so the rules cannot drift apart. Pure functions, standard library only.
"""

from __future__ import annotations

import re

# ESC sequences a terminal acts on: OSC (title, hyperlinks, clipboard) up to BEL or ST, CSI
# (colours, cursor moves, screen clears), then any other two-byte ESC sequence; the 8-bit C1
# forms of OSC/CSI/DCS likewise. What remains of C0/C1 is dropped one character at a time.
_ESC_SEQ = re.compile(
    r"(?:\x1b\][^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?"   # OSC ... BEL | ST
    r"|\x9d[^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?"       # 8-bit OSC
    r"|\x1b[P^_X][^\x1b\x9c]*(?:\x1b\\|\x9c)?"          # DCS / PM / APC / SOS strings
    r"|\x1b\[[0-?]*[ -/]*[@-~]?"                        # CSI
    r"|\x9b[0-?]*[ -/]*[@-~]?"                          # 8-bit CSI
    r"|\x1b[ -/]*[0-~]?)"                               # any other ESC sequence
)
_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_NEWLINES = re.compile(r"\r\n?|[\n\x0b\x0c\x85\u2028\u2029]")


def strip_controls(text: str, *, newlines: bool = True) -> str:
    """``text`` without terminal escape sequences and C0/C1 control characters.

    With ``newlines`` (multi-line text such as a criteria diff), line breaks of any kind become
    ``\\n`` and tabs stay; without, the result is one line: breaks and tabs become spaces.
    """
    if not text:
        return text or ""
    if isinstance(text, str) and text.isprintable():
        # Nothing below can match: escapes, breaks, tabs and C0/C1 are all unprintable.
        return text
    text = _NEWLINES.sub("\n", _ESC_SEQ.sub("", str(text)))
    if not newlines:
        text = text.replace("\n", " ").replace("\t", " ")
    return _CONTROLS.sub("", text)


def one_line(text: str | None) -> str:
    """Record text for a single line of output: no controls, no line breaks, spaces collapsed."""
    return " ".join(strip_controls(text or "", newlines=False).split())


# A plain addr-spec as it appears on a record: letters, digits and . _ + ' - before the @, a
# dotted DNS name after it. Deliberately narrower than RFC 5322: a ``?``, ``&``, ``%``, ``#``
# or space would turn ``mailto:`` into a link that pre-fills headers or a body.
_EMAIL = re.compile(r"[A-Za-z0-9_+'-]+(?:\.[A-Za-z0-9_+'-]+)*"
                    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}")
# A phone number as records write it: digits, spaces, + - ( ) . / and an extension.
_PHONE = re.compile(r"\+?[0-9 ()./-]{3,40}?(?:\s*(?:x|ext\.?|extension)\s*([0-9]{1,8}))?", re.IGNORECASE)


def safe_email(value: object) -> str | None:
    """The address if it is a plain addr-spec fit for a ``mailto:`` link, else None (show it as
    escaped text, no link)."""
    if not isinstance(value, str):
        return None
    value = value.strip()
    return value if len(value) <= 254 and _EMAIL.fullmatch(value) else None


def tel_href(value: object) -> str | None:
    """The ``tel:`` URI of a plain phone number (``+1 507-555-0142 ext. 12`` ->
    ``tel:+15075550142;ext=12``), else None (show it as escaped text, no link)."""
    if not isinstance(value, str):
        return None
    m = _PHONE.fullmatch(value.strip())
    if not m:
        return None
    number = value.strip()[: m.start(1)] if m.group(1) else value.strip()
    digits = re.sub(r"[^0-9]", "", number)
    if len(digits) < 3:
        return None
    plus = "+" if number.lstrip().startswith("+") else ""
    return f"tel:{plus}{digits}" + (f";ext={m.group(1)}" if m.group(1) else "")


def subscriber_address(value: str) -> str:
    """A subscriber's address, normalised; ValueError says why it cannot be mailed.

    Non-ASCII addresses are refused rather than half-supported: the SMTP path (the envelope, the
    ``To`` header under ``policy.SMTP``) is ASCII-only, and an address accepted here but never
    deliverable would fail every digest for that person.
    """
    from email_validator import EmailNotValidError, validate_email

    value = (value or "").strip()
    if not value.isascii():
        raise ValueError("addresses with non-ASCII characters are not supported; "
                         "use an address written in ASCII letters")
    try:
        return validate_email(value, check_deliverability=False, allow_smtputf8=False).normalized
    except EmailNotValidError as e:
        raise ValueError(str(e)) from None


__all__ = ["one_line", "safe_email", "strip_controls", "subscriber_address", "tel_href"]

"""From stored changes to mail: subscriber sync, digests, rendering, the sender, unsubscribe.

The outbox is filled by ``Store.record_fetch`` in the change's own transaction. From there:

1. ``compose_digests`` takes each active subscriber's unattached outbox rows (when her digest
   frequency says it is time), renders ONE message grouping them by trial, stores it in
   ``messages`` (the full RFC 5322 bytes, a unique Message-ID) and attaches the rows to it, in
   one transaction. An outbox row belongs to at most one message, so a change is mailed to a
   person at most once, however often ``send`` runs.
2. ``send_pending`` claims each due message with ``UPDATE ... WHERE state='queued'`` (so two
   senders never both take it), marks it ``sending`` with a lease in its own committed
   transaction, hands the stored bytes to the transport, then marks it ``sent``. A crash in
   between leaves it ``sending``; once the lease has expired the next send re-queues it, and the
   retry carries the same Message-ID, so at worst that one message repeats.

Nothing is built at import time: the Jinja2 environment is made on first use.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import secrets
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, func, select, update

from . import record as rec
from . import tokens, untrusted
from .diff import SEVERITY_RANK
from .errors import ConfigError, MailUndelivered, TokenError, UsageError
from .mailer import Transport, TransientMailError, PermanentMailError, make_transport
from .store import ChangeRow, Message, OutboxRow, SearchMember, Store, Subscriber, Subscription, Trial, utcnow

if TYPE_CHECKING:
    from jinja2 import Environment

    from .config import Config

log = logging.getLogger("trialwatch.notify")
TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"
# A claimed message must be sent or released within this time, else another send re-queues it.
LEASE = dt.timedelta(minutes=10)
# The longest wait between two tries of a message, so mail goes out within hours of an outage.
MAX_BACKOFF = dt.timedelta(hours=6)
# Real elapsed time, so a lease runs from its claim even though ``now`` is fixed per call.
_clock = time.monotonic
DIGEST_PERIOD = {"daily": dt.timedelta(days=1), "weekly": dt.timedelta(days=7)}
# A daily poll that runs a few seconds earlier than yesterday's must not skip a day.
DIGEST_GRACE = dt.timedelta(hours=1)
SUBJECT_MAX = 140
VALUE_MAX = 300

SEVERITY_WORDS = {"critical": "critical changes only",
                  "important": "important and critical changes",
                  "minor": "every change, minor ones included"}
DIGEST_WORDS = {"each_poll": "as soon as they are found", "daily": "in a daily digest",
                "weekly": "in a weekly digest"}

# What a new overall status means for a physician who refers patients.
STATUS_MEANING = {
    "RECRUITING": "Now recruiting: you can refer eligible patients.",
    "NOT_YET_RECRUITING": "Not recruiting yet: referrals open once the status is Recruiting.",
    "ENROLLING_BY_INVITATION": "Enrolling by invitation only: ask the study team before referring anyone.",
    "ACTIVE_NOT_RECRUITING": "No longer recruiting: new referrals are not possible; enrolled patients continue.",
    "SUSPENDED": "Enrolment paused: hold referrals. Enrolled patients should ask their site what this means for them.",
    "TERMINATED": "Stopped early: no new referrals. Enrolled patients should ask their site about follow-up.",
    "WITHDRAWN": "Withdrawn before enrolling anyone: no referrals.",
    "COMPLETED": "Completed: no new referrals; results may be posted on the record later.",
    "AVAILABLE": "Expanded access is available: contact the sponsor to request it for a patient.",
    "NO_LONGER_AVAILABLE": "Expanded access is no longer available.",
    "TEMPORARILY_NOT_AVAILABLE": "Expanded access is temporarily unavailable: hold requests.",
}
SITE_MEANING = {
    "RECRUITING": "This site now recruits: refer patients to it directly.",
    "NOT_YET_RECRUITING": "This site is not recruiting yet.",
    "ACTIVE_NOT_RECRUITING": "This site no longer takes new patients.",
    "SUSPENDED": "This site paused enrolment.",
    "TERMINATED": "This site stopped.",
    "WITHDRAWN": "This site withdrew.",
    "COMPLETED": "This site finished enrolling.",
}
FIELD_MEANING = {
    "eligibility_criteria": "Re-check patients you planned to refer against the new criteria.",
    "minimum_age": "Re-check the age of patients you planned to refer.",
    "maximum_age": "Re-check the age of patients you planned to refer.",
    "sex": "Re-check which patients qualify.",
    "healthy_volunteers": "Re-check which participants qualify.",
    "why_stopped": "The sponsor gave a reason for stopping; tell enrolled patients who ask.",
    "results_posted": "Results are posted on the record.",
}


@dataclass(frozen=True)
class Rendered:
    subject: str
    text: str
    html: str


# -- templates --------------------------------------------------------------------------------

@functools.lru_cache(maxsize=1)
def environment() -> "Environment":
    """The Jinja2 environment, built on first use. HTML templates autoescape (record text is
    untrusted: a registry entry can contain ``<script>``); the plain-text ones must not."""
    from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

    env = Environment(
        loader=FileSystemLoader(str(TEMPLATES_DIR)),
        autoescape=select_autoescape(enabled_extensions=("html", "html.j2"), default_for_string=True,
                                     default=False),
        undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
    )
    env.filters.update(safe_email=untrusted.safe_email, tel_href=untrusted.tel_href,
                       one_line=untrusted.one_line)
    return env


def _render_html(name: str, ctx: dict) -> str:
    import css_inline

    html = environment().get_template(name).render(**ctx)
    # Mail clients drop <style>; every rule goes into style="" attributes and nothing is fetched.
    return css_inline.CSSInliner(load_remote_stylesheets=False, keep_style_tags=False).inline(html)


# -- sync -------------------------------------------------------------------------------------

@dataclass
class SyncReport:
    """What ``sync_subscribers`` did, by email address."""

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
    now = now or utcnow()
    report = SyncReport()
    with store.session() as s, s.begin():
        existing = {sub.email.lower(): sub for sub in s.scalars(select(Subscriber))}
        listed = set()
        for sc in config.subscribers:
            key = sc.email.lower()
            listed.add(key)
            want = {("trial", t) for t in sc.trials} | {("search", n) for n in sc.searches}
            sub = existing.get(key)
            if sub is None:
                sub = Subscriber(email=sc.email, name=sc.name, state="active", source="config",
                                 min_severity=sc.min_severity, digest=sc.digest, created_at=now,
                                 confirmed_at=now, token_version=0)
                sub.subscriptions = [Subscription(kind=k, target=t) for k, t in sorted(want)]
                s.add(sub)
                report.created.append(sc.email)
                continue
            if sub.source == "web":
                report.skipped_web.append(sub.email)
                continue
            if sub.state == "unsubscribed":
                report.kept_unsubscribed.append(sub.email)
                continue
            changed = False
            for attr, value in (("name", sc.name), ("min_severity", sc.min_severity),
                                ("digest", sc.digest), ("state", "active")):
                if getattr(sub, attr) != value:
                    setattr(sub, attr, value)
                    changed = True
            if sub.confirmed_at is None:
                sub.confirmed_at = now
            changed |= _set_subscriptions(sub, want)
            (report.updated if changed else report.unchanged).append(sub.email)
        for key, sub in existing.items():
            if key in listed or sub.source != "config" or sub.state == "unsubscribed":
                continue
            if sub.subscriptions:
                sub.subscriptions = []
                _drop_unsent(s, sub.id)
                report.removed.append(sub.email)
    return report


def _set_subscriptions(sub: Subscriber, want: set[tuple[str, str]]) -> bool:
    have = {(x.kind, x.target) for x in sub.subscriptions}
    if have == want:
        return False
    sub.subscriptions = [x for x in sub.subscriptions if (x.kind, x.target) in want] + \
        [Subscription(kind=k, target=t) for k, t in sorted(want - have)]
    return True


def _drop_unsent(s: Any, subscriber_id: int) -> int:
    """Forget everything not yet handed to a transport for this person; returns messages dropped."""
    queued = list(s.scalars(select(Message.id).where(Message.subscriber_id == subscriber_id,
                                                      Message.state == "queued")))
    s.execute(delete(OutboxRow).where(OutboxRow.subscriber_id == subscriber_id,
                                      OutboxRow.message_id.is_(None)))
    if queued:
        s.execute(delete(OutboxRow).where(OutboxRow.message_id.in_(queued)))
        s.execute(delete(Message).where(Message.id.in_(queued)))
    return len(queued)


# -- unsubscribe ------------------------------------------------------------------------------

def unsubscribe(store: Store, config: "Config", token: str, *, now: dt.datetime | None = None) -> Subscriber:
    """Unsubscribe the person a signed token names; works without the web server.

    A forged or altered token raises TokenError. Her unsent outbox rows and queued digests are
    dropped. Doing it twice is harmless. The CLI prints "<email> is unsubscribed" (and, when
    she came from config.yaml, that the file entry will no longer re-subscribe her).
    """
    data = tokens.read(config.secret_key(), "unsubscribe", token)
    # Any token_version is accepted: RFC 8058 lets a recipient act on any message she received,
    # and unsubscribing is the one action that is always safe to honour.
    with store.session() as s, s.begin():
        sub = s.get(Subscriber, data.subscriber_id)
        if sub is None:
            raise TokenError("this unsubscribe link names an address that is no longer on file",
                             hint="Nothing is sent to it any more.")
        if sub.state != "unsubscribed":
            sub.state = "unsubscribed"
            sub.unsubscribed_at = now or utcnow()
            sub.token_version += 1
        _drop_unsent(s, sub.id)
    return sub


# -- composing --------------------------------------------------------------------------------

@dataclass
class _Pending:
    subscriber: Subscriber
    changes: list[ChangeRow]
    outbox_ids: list[int]


def _digest_due(sub: Subscriber, now: dt.datetime) -> bool:
    period = DIGEST_PERIOD.get(sub.digest)
    if period is None or sub.last_digest_at is None:
        return True
    return now - sub.last_digest_at >= period - DIGEST_GRACE


def _pending(store: Store, now: dt.datetime) -> list[_Pending]:
    """Unattached outbox rows of active subscribers whose digest is due, grouped per person."""
    out: dict[int, _Pending] = {}
    with store.session() as s:
        rows = s.execute(
            select(OutboxRow.id, ChangeRow, Subscriber)
            .join(ChangeRow, OutboxRow.change_id == ChangeRow.id)
            .join(Subscriber, OutboxRow.subscriber_id == Subscriber.id)
            .where(OutboxRow.message_id.is_(None), Subscriber.state == "active")
            .order_by(Subscriber.id, ChangeRow.id)).all()
        for outbox_id, change, sub in rows:
            p = out.setdefault(sub.id, _Pending(sub, [], []))
            p.changes.append(change)
            p.outbox_ids.append(outbox_id)
    return [p for p in out.values() if _digest_due(p.subscriber, now)]


class _Taken(Exception):
    """Rolls back a digest whose outbox rows another composer attached first."""


def compose_digests(store: Store, config: "Config", *, now: dt.datetime | None = None,
                    failures: list["SendEntry"] | None = None) -> list[int]:
    """Turn due outbox rows into stored digest messages (one per subscriber); returns their ids.

    Each message and the attachment of its outbox rows commit together; if another composer
    attached any of the rows first, this one's digest is rolled back and left to it. A digest
    that cannot be built is logged as an error and, when ``failures`` is given, appended to it
    (state ``unbuilt``) so the caller counts it; her changes stay queued.
    """
    now = now or utcnow()
    secret = config.secret_key()
    ids: list[int] = []
    for p in _pending(store, now):
        sub = p.subscriber
        # Rows queued before she raised her min_severity are dropped, not mailed.
        floor = SEVERITY_RANK.get(sub.min_severity, 0)
        keep = [(c, o) for c, o in zip(p.changes, p.outbox_ids) if c.rank >= floor]
        drop = [o for c, o in zip(p.changes, p.outbox_ids) if c.rank < floor]
        rendered = built = None
        if keep:
            try:
                rendered = render_digest(store, config, sub, [c for c, _ in keep], now=now,
                                         secret_key=secret)
                token = tokens.make(secret, "unsubscribe", sub.id, sub.token_version)
                built = build_message(config, to=sub.email, name=sub.name, rendered=rendered,
                                      now=now, unsubscribe_token=token)
            except Exception as e:  # noqa: BLE001 - one bad digest must not hold back everyone's mail
                # Her outbox rows stay unattached, so nothing is lost: a fixed release mails them.
                # Reported, never swallowed: a digest nobody can build is mail that never arrives.
                error = f"cannot build the digest: {type(e).__name__}: {e}"
                log.error("subscriber %s (%s): %s; her %d change(s) stay queued",
                          sub.id, untrusted.one_line(sub.email), error, len(keep))
                log.debug("digest composition failed", exc_info=True)
                if failures is not None:
                    failures.append(SendEntry(None, sub.email, "(digest)", "unbuilt", error))
                continue
        try:
            with store.session() as s, s.begin():
                if drop:
                    s.execute(delete(OutboxRow).where(OutboxRow.id.in_(drop), OutboxRow.message_id.is_(None)))
                if rendered is None or built is None:
                    continue
                body, mid = built
                msg = Message(subscriber_id=sub.id, kind="digest", recipient=sub.email,
                              rfc_message_id=mid, subject=rendered.subject, body=body,
                              state="queued", attempts=0, created_at=now)
                s.add(msg)
                s.flush()
                outbox_ids = [o for _, o in keep]
                res = s.execute(update(OutboxRow)
                                .where(OutboxRow.id.in_(outbox_ids), OutboxRow.message_id.is_(None))
                                .values(message_id=msg.id))
                if res.rowcount != len(outbox_ids):
                    raise _Taken
                s.execute(update(Subscriber).where(Subscriber.id == sub.id).values(last_digest_at=now))
                ids.append(msg.id)
        except _Taken:
            continue  # another composer attached some of these rows first; its digest stands
    return ids


def build_message(config: "Config", *, to: str, name: str | None, rendered: Rendered,
                  now: dt.datetime, unsubscribe_token: str | None = None) -> tuple[bytes, str]:
    """The RFC 5322 bytes of one message and its Message-ID."""
    msg = EmailMessage(policy=_mail_policy())
    sender = _sender(config)
    msg["From"] = config.email.from_
    msg["To"] = Address(display_name=_one_line(name or ""), addr_spec=to)
    msg["Subject"] = _one_line(rendered.subject)
    msg["Date"] = format_datetime(now.replace(tzinfo=dt.timezone.utc))
    # Short enough never to be folded (some MTAs mangle a folded Message-ID); 96 random bits.
    mid = f"<{now:%Y%m%d%H%M%S}.{secrets.token_hex(12)}@{sender.rpartition('@')[2] or 'localhost'}>"
    msg["Message-ID"] = mid
    # Tells vacation responders and ticket systems not to answer.
    msg["Auto-Submitted"] = "auto-generated"
    if unsubscribe_token:
        https = f"{config.email.public_url}/unsubscribe?token={unsubscribe_token}"
        msg["List-Unsubscribe"] = f"<{https}>, <mailto:{sender}?subject=unsubscribe%20{unsubscribe_token}>"
        msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    # Quoted-printable keeps both parts readable in a raw .eml and safe for 7-bit relays.
    msg.set_content(rendered.text, cte="quoted-printable")
    msg.add_alternative(rendered.html, subtype="html", cte="quoted-printable")
    return msg.as_bytes(), mid


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


def _sender(config: "Config") -> str:
    return parseaddr(config.email.from_)[1] or "trialwatch@localhost"


def _one_line(text: str) -> str:
    # Record text reaches headers and terminals; a newline there would be header injection,
    # an escape sequence would steer the terminal that prints the subject.
    return untrusted.one_line(text)


# -- rendering --------------------------------------------------------------------------------

def _is_status(c: ChangeRow) -> bool:
    return c.field in ("overall_status", "protocolSection.statusModule.overallStatus")


def _short(value: Any, limit: int = VALUE_MAX) -> str:
    text = rec.words(value)
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def headline(c: ChangeRow) -> str:
    """One line naming a change, for subjects: "Active, not recruiting → Recruiting"."""
    if _is_status(c):
        return f"{rec.words(c.old_value)} → {rec.words(c.new_value)}"
    old, new = c.old_value, c.new_value
    if c.detail or (len(rec.words(old)) + len(rec.words(new))) > 60:
        return f"{c.label} changed"
    if old is None:
        return f"{c.label}: {rec.words(new)} (new)" if not c.field.startswith("site_added") else f"{c.label} added"
    if new is None:
        return f"{c.label} removed"
    return f"{c.label}: {rec.words(old)} → {rec.words(new)}"


def _brief(c: ChangeRow) -> str:
    return rec.words(c.new_value) if _is_status(c) else c.label


def digest_subject(groups: Sequence[tuple[str, list[ChangeRow]]]) -> str:
    """``NCT03268603: Active, not recruiting → Recruiting`` or ``3 trials changed: NCT… Recruiting, …``."""
    if len(groups) == 1:
        nct, changes = groups[0]
        if not changes:
            return f"{nct}: current state"
        subject = f"{nct}: {headline(changes[0])}"
        if len(changes) > 1:
            subject += f" (+{len(changes) - 1} more)"
        return _clip(subject)
    head = f"{len(groups)} trials changed: "
    parts = [f"{nct} {_brief(changes[0])}" for nct, changes in groups if changes]
    return _clip(head + ", ".join(parts))


def _clip(subject: str) -> str:
    subject = _one_line(subject)
    if len(subject) <= SUBJECT_MAX:
        return subject
    cut = subject[: SUBJECT_MAX - 1]
    # Prefer ending at a list separator so no NCT number is cut in half.
    if ", " in cut[len(cut) // 2:]:
        cut = cut[: cut.rindex(", ")] + ","
    return cut.rstrip() + " …"


def _group(changes: Iterable[ChangeRow]) -> list[tuple[str, list[ChangeRow]]]:
    """By trial; each trial's changes most severe first; trials with the most severe first."""
    by: dict[str, list[ChangeRow]] = {}
    for c in changes:
        by.setdefault(c.nct_id, []).append(c)
    groups = [(nct, sorted(cs, key=lambda c: (-c.rank, c.id or 0))) for nct, cs in by.items()]
    groups.sort(key=lambda g: (-max((c.rank for c in g[1]), default=0), g[0]))
    return groups


def _contact(c: dict | None) -> dict | None:
    if not c:
        return None
    phone = c.get("phone")
    if phone and c.get("phoneExt"):
        phone = f"{phone} ext. {c['phoneExt']}"
    out = {"name": c.get("name"), "phone": phone, "email": c.get("email")}
    return out if any(out.values()) else None


def _central_contact(record: dict | None) -> dict | None:
    contacts = rec.get(record, "protocolSection.contactsLocationsModule.centralContacts") or []
    primary = [c for c in contacts if c.get("role") == "CONTACT"] or contacts
    return _contact(primary[0]) if primary else None


def _site_contact(record: dict | None, site: str | None) -> dict | None:
    for loc in rec.get(record, "protocolSection.contactsLocationsModule.locations") or []:
        if site and site in (loc.get("facility"), loc.get("city")):
            contacts = loc.get("contacts") or []
            primary = [c for c in contacts if c.get("role") == "CONTACT"] or contacts
            return _contact(primary[0]) if primary else None
    return None


def _detail_lines(detail: str | None) -> list[dict]:
    kinds = {"+": "add", "-": "del"}
    return [{"kind": kinds.get(line[:1], "ctx"), "text": line} for line in (detail or "").splitlines()]


def _site_text(c: ChangeRow) -> str:
    """The "what happened" cell of the sites table."""
    def status(v: Any) -> str | None:
        return rec.words(v.get("status")) if isinstance(v, dict) and v.get("status") else None

    if c.field == "site_added":
        return "Added" + (f" · {status(c.new_value)}" if status(c.new_value) else "")
    if c.field == "site_removed":
        return "Removed from the record"
    if c.field == "site_status":
        if c.old_value is None:
            return f"Status now: {rec.words(c.new_value)}"
        return f"{rec.words(c.old_value)} → {rec.words(c.new_value)}"
    what = c.label.split(":", 1)[0].removeprefix("Site ").strip() or "Details"
    return f"{what[:1].upper()}{what[1:]} changed: {_short(c.new_value, 120)}"


def _change_view(c: ChangeRow, record: dict | None) -> dict:
    meaning, contact = None, None
    new = c.new_value
    if _is_status(c) and isinstance(new, str):
        meaning = STATUS_MEANING.get(new)
        if new == "RECRUITING":
            contact = _central_contact(record)
    elif c.field == "site_status" and isinstance(new, str):
        meaning = SITE_MEANING.get(new)
        if new == "RECRUITING":
            contact = _site_contact(record, c.site) or _central_contact(record)
    elif c.field in FIELD_MEANING:
        meaning = FIELD_MEANING[c.field]
    long_values = len(rec.words(c.old_value)) + len(rec.words(new)) > 2 * VALUE_MAX
    return {
        "label": c.label, "site": c.site, "site_text": _site_text(c) if c.site else None, "field": c.field, "severity": c.severity,
        "old": _short(c.old_value), "new": _short(new), "added": c.old_value is None,
        "removed": new is None,
        # Long texts (criteria) read better as the line diff alone.
        "show_values": not (c.detail and long_values),
        "detail_lines": _detail_lines(c.detail), "meaning": meaning, "contact": contact,
        "no_contact": _is_status(c) and new == "RECRUITING" and contact is None,
    }


def _searches(sub: Subscriber, changes: list[ChangeRow], memberships: set[str]) -> list[str]:
    """Her saved searches this trial belongs to (or that reported it)."""
    mine = {x.target for x in sub.subscriptions or [] if x.kind == "search"}
    return sorted(mine & (memberships | {c.search for c in changes if c.search}))


def _reasons(sub: Subscriber, nct_id: str, changes: list[ChangeRow], memberships: set[str]) -> list[str]:
    out = []
    if any(x.kind == "trial" and x.target == nct_id for x in sub.subscriptions or []):
        out.append(f"you follow {nct_id}")
    out += [f"it matches your saved search “{name}”" for name in _searches(sub, changes, memberships)]
    return out


def _and(items: Sequence[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def render_digest(store: Store, config: "Config", subscriber: Subscriber, changes: Sequence[ChangeRow], *,
                  nct_ids: Sequence[str] = (), now: dt.datetime | None = None,
                  secret_key: str | None = None) -> Rendered:
    """Render one digest for ``subscriber``: ``changes`` grouped by trial (most severe first),
    plus the current state of any trial in ``nct_ids`` without changes (previews).

    Links carry real tokens when ``secret_key`` is given, a placeholder otherwise.
    """
    now = now or utcnow()
    groups = _group(changes)
    seen = {nct for nct, _ in groups}
    groups += [(nct, []) for nct in nct_ids if nct not in seen]
    seen_all = {nct for nct, _ in groups}
    with store.session() as s:
        memberships: dict[str, set[str]] = {}
        for search, nct in s.execute(select(SearchMember.search, SearchMember.nct_id)
                                     .where(SearchMember.nct_id.in_([g[0] for g in groups]))):
            memberships.setdefault(nct, set()).add(search)
        titles = {t.nct_id: t.title for t in s.scalars(select(Trial).where(
            Trial.nct_id.in_([g[0] for g in groups])))}
    trials = []
    for nct, cs in groups:
        record = store.latest_record(nct)
        views = [_change_view(c, record) for c in cs]
        status = rec.get(record, "protocolSection.statusModule.overallStatus")
        trials.append({
            "nct_id": nct, "url": rec.url(nct),
            "title": titles.get(nct) or rec.get(record, "protocolSection.identificationModule.briefTitle") or "",
            "status": rec.words(status), "status_meaning": STATUS_MEANING.get(status or ""),
            "central_contact": _central_contact(record),
            "changes": [v for v in views if not v["site"]],
            "sites": [v for v in views if v["site"]],
            "reasons": _reasons(subscriber, nct, cs, memberships.get(nct, set())),
            "searches": _searches(subscriber, cs, memberships.get(nct, set())),
            "severity": cs[0].severity if cs else None,
        })
    if secret_key and subscriber.id:
        unsub = tokens.make(secret_key, "unsubscribe", subscriber.id, subscriber.token_version or 0)
        manage = tokens.make(secret_key, "manage", subscriber.id, subscriber.token_version or 0)
    else:
        unsub = manage = "PREVIEW"
    followed = sorted({x.target for x in subscriber.subscriptions or [] if x.kind == "trial"} & seen_all)
    searches = sorted({x.target for x in subscriber.subscriptions or [] if x.kind == "search"}
                      & {r for t in trials for r in t["searches"]})
    reasons = ([f"you follow {_and(followed)}"] if followed else []) + \
        ([f"of your saved search{'es' if len(searches) > 1 else ''} {_and([f'“{n}”' for n in searches])}"]
         if searches else [])
    subject = digest_subject(groups)
    n_changes = sum(len(cs) for _, cs in groups)
    ctx = {
        "subject": subject,
        "preheader": subject,
        "name": subscriber.name,
        "intro": (f"{n_changes} change{'s' if n_changes != 1 else ''} in {len(groups)} "
                  f"trial{'s' if len(groups) != 1 else ''} you follow." if n_changes else
                  "No change has been recorded for this trial yet; this is its current state."),
        "trials": trials,
        "reasons": reasons,
        "severity_words": SEVERITY_WORDS.get(subscriber.min_severity or "important", ""),
        "digest_words": DIGEST_WORDS.get(subscriber.digest or "each_poll", ""),
        "unsubscribe_url": f"{config.email.public_url}/unsubscribe?token={unsub}",
        "manage_url": f"{config.email.public_url}/manage?token={manage}",
        "public_url": config.email.public_url,
        "generated_at": now.strftime("%Y-%m-%d %H:%M UTC"),
    }
    env = environment()
    # Record text must not carry terminal escapes or stray CRs into a mail reader's text view.
    text = untrusted.strip_controls(env.get_template("email/digest.txt.j2").render(**ctx))
    return Rendered(subject=subject, text=text, html=_render_html("email/digest.html.j2", ctx))


def preview(store: Store, config: "Config", nct_id: str, *, to: str | None = None) -> Rendered:
    """Render the digest a subscriber would get for ``nct_id`` now, from the trial's most recent
    stored changes (or its current state if none), without sending or touching the outbox.

    ``to`` picks a subscriber (her name, severity floor and links); otherwise a sample reader
    who gets every change. The CLI prints the subject, then the text part (``--html`` the HTML).
    """
    nct = store.resolve_alias(rec.normalize_nct(nct_id))
    snaps, changes = store.history(nct)
    if not snaps and not changes:
        raise UsageError(f"{nct} is not in the database yet",
                         hint="Add it to config.yaml (trials:) and let a poll fetch it first.")
    latest: list[ChangeRow] = []
    changes = [c for c in changes if not c.historical]  # registry history is never news
    if changes:
        last = changes[-1]
        batch = (lambda c: c.snapshot_id == last.snapshot_id) if last.snapshot_id else \
                (lambda c: c.snapshot_id is None and c.detected_at == last.detected_at)
        latest = [c for c in changes if batch(c)]
    sub = None
    if to:
        with store.session() as s:
            sub = s.scalars(select(Subscriber).where(Subscriber.email == to)).first()
    secret = None
    if sub is not None:
        floor = SEVERITY_RANK.get(sub.min_severity, 0)
        latest = [c for c in latest if c.rank >= floor]
        try:
            secret = config.secret_key()
        except ConfigError:
            secret = None  # a preview still renders, with placeholder links
    else:
        sub = Subscriber(id=0, email=to or "physician@example.org", name=None, state="active",
                         min_severity="minor", digest="each_poll", token_version=0)
        sub.subscriptions = [Subscription(kind="trial", target=nct)]
    return render_digest(store, config, sub, latest, nct_ids=[nct], secret_key=secret)


# -- sending ----------------------------------------------------------------------------------

@dataclass
class SendEntry:
    message_id: int | None
    recipient: str
    subject: str
    state: str               # sent | queued | failed | would_send
    error: str | None = None
    attempts: int = 0
    next_attempt_at: dt.datetime | None = None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["next_attempt_at"] = self.next_attempt_at.isoformat() + "Z" if self.next_attempt_at else None
        return d


@dataclass
class SendReport:
    dry_run: bool = False
    composed: int = 0
    recovered: int = 0       # messages whose 'sending' lease had expired, put back in the queue
    waiting: int = 0         # queued messages not yet due (backoff), left for a later send
    entries: list[SendEntry] = field(default_factory=list)
    # Digests that could not be built (state 'unbuilt'); their changes stay in the outbox.
    compose_failed: list[SendEntry] = field(default_factory=list)

    def _in(self, state: str) -> list[SendEntry]:
        return [e for e in self.entries if e.state == state]

    @property
    def sent(self) -> list[SendEntry]:
        return self._in("sent")

    @property
    def queued(self) -> list[SendEntry]:
        return self._in("queued")

    @property
    def failed(self) -> list[SendEntry]:
        return self._in("failed")

    def describe(self) -> str:
        """What the CLI prints: one line per message, then the totals."""
        one = untrusted.one_line
        lines = [f"{e.state:<10} {one(e.recipient)}  {one(e.subject)}" + (f"  [{one(e.error)}]" if e.error else "")
                 for e in self.entries]
        if self.dry_run:
            lines.append(f"dry run: {len(self.entries)} message(s) would be sent; nothing changed")
        else:
            lines.append(f"{len(self.sent)} sent, {len(self.queued)} queued for retry, "
                         f"{len(self.failed)} failed"
                         + (f", {self.waiting} waiting for their retry time" if self.waiting else "")
                         + (f", {self.recovered} recovered from an interrupted send" if self.recovered else ""))
            lines[-1:-1] = [f"{'unbuilt':<10} {untrusted.one_line(e.recipient)}  [{untrusted.one_line(e.error)}]"
                            for e in self.compose_failed]
            if self.compose_failed:
                lines[-1] += f", {len(self.compose_failed)} digest(s) could not be built"
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"dry_run": self.dry_run, "composed": self.composed, "recovered": self.recovered,
                "waiting": self.waiting, "sent": len(self.sent), "queued": len(self.queued),
                "failed": len(self.failed), "messages": [e.to_dict() for e in self.entries],
                "compose_failed": [e.to_dict() for e in self.compose_failed]}


def undelivered(store: Store, report: SendReport) -> MailUndelivered | None:
    """The error of a send that left mail undelivered, or None when nothing waits after a failure.

    Counts what this send tried and left queued or failed, plus queued messages that an earlier
    send could not deliver and that wait for their retry time; says why (the last error)."""
    if report.dry_run:
        return None
    tried = {e.message_id for e in report.entries}
    with store.session() as s:
        earlier = list(s.execute(select(Message.id, Message.last_error).where(
            Message.state == "queued", Message.last_error.is_not(None))))
    earlier = [(mid, err) for mid, err in earlier if mid not in tried]
    queued, failed = len(report.queued) + len(earlier), len(report.failed)
    unbuilt = len(report.compose_failed)
    if not queued and not failed and not unbuilt:
        return None
    why = next((e.error for e in report.queued + report.failed + report.compose_failed if e.error), None) \
        or next((err for _, err in earlier if err), "unknown")
    parts = []
    if queued:
        parts.append(f"{queued} message(s) wait in the outbox for a retry")
    if failed:
        parts.append(f"{failed} failed for good")
    if unbuilt:
        parts.append(f"{unbuilt} digest(s) could not be built (their changes stay queued)")
    return MailUndelivered(f"mail could not be delivered: {', '.join(parts)} (last error: {why})",
                           queued=queued, failed=failed)


def _recover_leases(store: Store, now: dt.datetime) -> int:
    with store.session() as s, s.begin():
        # A digest stranded by a crashed sender is not re-queued for someone who unsubscribed
        # meanwhile (unsubscribe drops only what is queued): it is dropped like her queued mail.
        gone = list(s.scalars(select(Message.id).join(Subscriber, Message.subscriber_id == Subscriber.id)
                              .where(Message.state == "sending", Message.lease_until < now,
                                     Message.kind == "digest", Subscriber.state == "unsubscribed")))
        if gone:
            s.execute(delete(OutboxRow).where(OutboxRow.message_id.in_(gone)))
            s.execute(delete(Message).where(Message.id.in_(gone)))
        res = s.execute(update(Message).where(Message.state == "sending", Message.lease_until < now)
                        .values(state="queued", lease_until=None, next_attempt_at=None))
        return res.rowcount or 0


def send_pending(store: Store, config: "Config", *, transport: Transport | None = None,
                 now: dt.datetime | None = None, force: bool = True, dry_run: bool = False) -> SendReport:
    """Compose due digests, then deliver every queued message that is due.

    ``force`` (explicit ``trialwatch send``) retries every queued message now (a failed try
    before it was due keeps its schedule and counts against nothing); the daemon passes
    ``force=False`` so backoff (``next_attempt_at``) is respected. ``dry_run`` changes nothing and
    lists what would go out. The CLI prints one line per message,
    ``sent|queued|failed  recipient  subject  [error]``, then the totals; ``--json`` prints
    ``to_dict()``. Exit code 6 when any message stays undelivered (``undelivered``).
    """
    now = now or utcnow()
    started = _clock()
    report = SendReport(dry_run=dry_run)
    if dry_run:
        for p in _pending(store, now):
            floor = SEVERITY_RANK.get(p.subscriber.min_severity, 0)
            kept = [c for c in p.changes if c.rank >= floor]
            if kept:
                report.entries.append(SendEntry(None, p.subscriber.email, digest_subject(_group(kept)),
                                                "would_send"))
        for m in _queued(store, now, force):
            report.entries.append(SendEntry(m.id, m.recipient, m.subject, "would_send",
                                            m.last_error, m.attempts, m.next_attempt_at))
        return report
    report.recovered = _recover_leases(store, now)
    report.composed = len(compose_digests(store, config, now=now, failures=report.compose_failed))
    due = _queued(store, now, force)
    with store.session() as s:
        queued = s.scalar(select(func.count()).select_from(Message).where(Message.state == "queued"))
        report.waiting = queued - len(due)
    if due:
        _deliver_all(store, config, transport, [m.id for m in due], now, report, started=started)
    return report


def _queued(store: Store, now: dt.datetime, force: bool) -> list[Message]:
    q = select(Message).where(Message.state == "queued")
    if not force:
        q = q.where((Message.next_attempt_at.is_(None)) | (Message.next_attempt_at <= now))
    with store.session() as s:
        return list(s.scalars(q.order_by(Message.id)))


def _deliver_all(store: Store, config: "Config", transport: Transport | None, ids: list[int],
                 now: dt.datetime, report: SendReport, *, started: float | None = None) -> None:
    started = _clock() if started is None else started
    transport = transport or make_transport(config)
    unreachable: TransientMailError | None = None
    try:
        for mid in ids:
            if unreachable is not None:
                # The server cannot be reached: the rest of the batch is left queued untried, so
                # an outage costs one message an attempt per send, not every message.
                report.entries.append(_untried(store, config, mid, unreachable, now))
                continue
            # Composing and earlier deliveries took time: this claim's lease starts now.
            lease_until = now + dt.timedelta(seconds=max(0.0, _clock() - started)) + LEASE
            outcome = _deliver(store, config, transport, mid, now, unreachable, lease_until)
            if outcome is None:
                continue  # another sender claimed it
            entry, error = outcome
            report.entries.append(entry)
            if isinstance(error, TransientMailError) and error.unreachable:
                unreachable = error
    finally:
        transport.close()


def _untried(store: Store, config: "Config", mid: int, unreachable: TransientMailError,
             now: dt.datetime) -> SendEntry:
    with store.session() as s, s.begin():
        msg = s.get(Message, mid)
        entry = SendEntry(mid, msg.recipient, msg.subject, "queued",
                          f"not tried: {unreachable.message}", msg.attempts, msg.next_attempt_at)
        if msg.state == "queued" and now >= _give_up_at(config, msg.created_at):
            # Its whole window passed without the server being reachable: no dial would change that.
            entry.state, entry.error = "failed", _gave_up(config, unreachable.message)
            s.execute(update(Message).where(Message.id == mid, Message.state == "queued")
                      .values(state="failed", last_error=entry.error))
        return entry


def _give_up_at(config: "Config", created_at: dt.datetime) -> dt.datetime:
    return created_at + dt.timedelta(hours=config.email.give_up_after_hours)


def _gave_up(config: "Config", error: str) -> str:
    return f"gave up after {config.email.give_up_after_hours:g} h of failed tries: {error}"


def _backoff(config: "Config", waited: dt.timedelta) -> dt.timedelta:
    """The wait before the next try: retry_backoff_s at first, then about as long as the message
    has waited so far (so the waits double), at most MAX_BACKOFF. Time, not a count of tries:
    a `send` run every minute during an outage does not make a message give up sooner."""
    return min(max(dt.timedelta(seconds=config.email.retry_backoff_s), waited), MAX_BACKOFF)


def _deliver(store: Store, config: "Config", transport: Transport, mid: int, now: dt.datetime,
             unreachable: TransientMailError | None,
             lease_until: dt.datetime | None = None) -> tuple[SendEntry, Exception | None] | None:
    """Claim, send and settle one message. Returns None if another sender claimed it first."""
    with store.session() as s, s.begin():
        # The claim: only one process can move this row out of 'queued'.
        res = s.execute(update(Message).where(Message.id == mid, Message.state == "queued")
                        .values(state="sending", lease_until=lease_until or now + LEASE,
                                attempts=Message.attempts + 1))
        if res.rowcount != 1:
            return None
        msg = s.get(Message, mid)
        body, recipient, subject, attempts = msg.body, msg.recipient, msg.subject, msg.attempts
        created_at, due_at = msg.created_at or now, msg.next_attempt_at
    error: Exception | None = unreachable
    if error is None:
        try:
            transport.send(body, _sender(config), [recipient])
        except (TransientMailError, PermanentMailError) as e:
            error = e
        except Exception as e:  # noqa: BLE001 - a transport bug must not strand the message in 'sending'
            error = TransientMailError(f"{type(e).__name__}: {e}")
    entry = SendEntry(mid, recipient, subject, "sent", None, attempts)
    values: dict[str, Any] = {"lease_until": None}
    if error is None:
        values |= {"state": "sent", "sent_at": now, "last_error": None, "next_attempt_at": None}
    else:
        entry.error = error.message if hasattr(error, "message") else str(error)
        due = due_at is None or due_at <= now
        # `attempts` counts tries the server answered, when they were due: a refused connection
        # or an explicit `send` ahead of the backoff does not use up max_attempts.
        if not due or (isinstance(error, TransientMailError) and error.unreachable):
            attempts -= 1
            entry.attempts = attempts
            values["attempts"] = attempts
        give_up_at = _give_up_at(config, created_at)
        if isinstance(error, PermanentMailError):
            entry.state = "failed"
            values |= {"state": "failed", "last_error": entry.error}
        elif now >= give_up_at or attempts >= config.email.max_attempts:
            entry.state = "failed"
            entry.error = _gave_up(config, entry.error) if now >= give_up_at else \
                f"gave up after {attempts} tries the server deferred: {entry.error}"
            values |= {"state": "failed", "last_error": entry.error}
        else:
            entry.state = "queued"
            # A forced try ahead of time keeps the schedule it had; the last try falls on the
            # give-up time itself, so the window is spanned exactly.
            entry.next_attempt_at = due_at if not due else \
                min(now + _backoff(config, now - created_at), give_up_at)
            values |= {"state": "queued", "last_error": entry.error,
                       "next_attempt_at": entry.next_attempt_at}
    with store.session() as s, s.begin():
        s.execute(update(Message).where(Message.id == mid, Message.state == "sending").values(**values))
    return entry, error


# -- confirmation -----------------------------------------------------------------------------

def send_confirmation(store: Store, config: "Config", subscriber: Subscriber | int, confirm_url: str, *,
                      transport: Transport | None = None, now: dt.datetime | None = None) -> SendEntry:
    """Queue and send at once the one-off "confirm your subscription" message of a web sign-up.

    If the transport fails transiently the message stays queued and the next ``send`` retries
    it. Rate limits are the caller's (web) business. Returns the message's outcome.
    """
    now = now or utcnow()
    with store.session() as s, s.begin():
        sub = s.get(Subscriber, subscriber if isinstance(subscriber, int) else subscriber.id)
        if sub is None:
            raise UsageError("no such subscriber")
        ctx = {
            "name": sub.name, "email": sub.email, "confirm_url": confirm_url,
            "trials": [x.target for x in sub.subscriptions if x.kind == "trial"],
            "searches": [x.target for x in sub.subscriptions if x.kind == "search"],
            "severity_words": SEVERITY_WORDS.get(sub.min_severity, ""),
            "digest_words": DIGEST_WORDS.get(sub.digest, ""),
            "public_url": config.email.public_url,
            "hours": (tokens.MAX_AGE_S["confirm"] or 0) // 3600,
        }
        subject = "Confirm your trialwatch subscription"
        ctx["subject"] = ctx["preheader"] = subject
        rendered = Rendered(subject, environment().get_template("email/confirm.txt.j2").render(**ctx),
                            _render_html("email/confirm.html.j2", ctx))
        body, rfc_id = build_message(config, to=sub.email, name=sub.name, rendered=rendered, now=now)
        msg = Message(subscriber_id=sub.id, kind="confirm", recipient=sub.email, rfc_message_id=rfc_id,
                      subject=subject, body=body, state="queued", attempts=0, created_at=now)
        s.add(msg)
        s.flush()
        mid = msg.id
    report = SendReport()
    _deliver_all(store, config, transport, [mid], now, report)
    return report.entries[0] if report.entries else SendEntry(mid, ctx["email"], subject, "queued")


__all__ = ["Rendered", "SendEntry", "SendReport", "SyncReport", "compose_digests", "environment",
           "preview", "render_digest", "send_confirmation", "send_pending", "sync_subscribers",
           "unsubscribe"]

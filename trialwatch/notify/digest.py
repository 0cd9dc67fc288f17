"""Digests: load a plain view model, then render it. Nothing here queries while rendering.

``load_facts`` reads what a digest says about each trial (title, latest record's status and
contacts, saved-search memberships) ONCE per trial per send; ``build_view`` turns one person's
changes and those facts into dataclasses holding everything a template needs; ``render`` is the
templates alone. ``pending`` groups unattached outbox rows per person; ``compose`` turns them into
stored messages.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import record as rec
from .. import tokens, untrusted
from ..diff import SEVERITY_RANK
from ..events import is_status_change, stops_recruiting
from ..store import ChangeRow, Store, Subscriber, utcnow
from .words import DIGEST_WORDS, FIELD_MEANING, SEVERITY_WORDS, SITE_MEANING, STATUS_MEANING

if TYPE_CHECKING:
    from jinja2 import Environment

    from ..config import Config
    from .cards import Renderings

log = logging.getLogger("trialwatch.notify")
TEMPLATES_DIR = Path(__file__).resolve().parent.parent / "templates"
DIGEST_PERIOD = {"daily": dt.timedelta(days=1), "weekly": dt.timedelta(days=7)}
# A daily poll that runs a few seconds earlier than yesterday's must not skip a day.
DIGEST_GRACE = dt.timedelta(hours=1)
SUBJECT_MAX = 140
VALUE_MAX = 300
# A site that opens this far from her place, or nearer, is news worth naming the nearest site for.
NEAR_RADIUS_KM = 200.0


@dataclass(frozen=True)
class Rendered:
    subject: str
    text: str
    html: str
    # When assembled from a send's shared cards (notify.cards): the pieces text and html are
    # joined from, the frame's first and last, each trial's card between, so that a channel
    # can encode a card once a send. Not part of what it says.
    pieces: tuple[tuple[str, ...], tuple[str, ...]] | None = dataclasses.field(default=None, compare=False,
                                                                                repr=False)


# -- the view model ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Contact:
    name: str | None
    phone: str | None
    email: str | None


@dataclass(frozen=True)
class TrialFacts:
    """What a digest says about one trial whatever the reader: loaded once per send."""

    nct_id: str
    title: str
    status: str | None                       # the API's enum, from the latest record
    central_contact: Contact | None
    site_contacts: dict[str, Contact | None]  # by facility and by city
    memberships: frozenset[str]               # saved searches it belongs to now
    # Its recruiting alternatives as the last poll found them (store.AlternativesCache, or None:
    # none found or the search failed), and its own expandedAccessInfo. Read once per send.
    alternatives_row: Any = None
    expanded_access_info: dict | None = None
    site_places: dict[str, str] = dataclasses.field(default_factory=dict)  # facility -> "City, State, Country"
    warnings: tuple[str, ...] = ()            # referral.warnings of the latest record
    # The latest record, kept for ranking its open sites by each reader's place in memory.
    record: dict | None = dataclasses.field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class DetailLine:
    kind: str   # add | del | ctx
    text: str


@dataclass(frozen=True)
class ChangeView:
    field: str
    label: str
    severity: str
    site: str | None
    site_text: str | None
    old: str
    new: str
    added: bool
    removed: bool
    show_values: bool
    detail_lines: tuple[DetailLine, ...]
    meaning: str | None
    contact: Contact | None
    no_contact: bool
    site_where: str | None = None   # the site's city, state, country
    # The stored values, for channels that send data rather than prose (webhooks).
    old_value: Any = None
    new_value: Any = None
    detail: str | None = None


@dataclass(frozen=True)
class TrialView:
    nct_id: str
    url: str
    title: str
    status: str
    status_meaning: str | None
    central_contact: Contact | None
    changes: tuple[ChangeView, ...]
    sites: tuple[ChangeView, ...]
    reasons: tuple[str, ...]
    searches: tuple[str, ...]
    severity: str | None
    # When a change in this digest says the trial stopped recruiting: alternatives near her
    # (alternatives_cache.ShownAlternatives), ranked from the poll's stored answer.
    alternatives: Any = None
    warnings: tuple[str, ...] = ()
    nearest: str | None = None      # the open site nearest to her place, when a site or the trial opened


@dataclass(frozen=True)
class DigestView:
    subject: str
    preheader: str
    name: str | None
    intro: str
    trials: tuple[TrialView, ...]
    reasons: tuple[str, ...]
    severity_words: str
    digest_words: str
    unsubscribe_url: str
    manage_url: str
    public_url: str
    generated_at: str


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
                       one_line=untrusted.one_line, strip_controls=untrusted.strip_controls)
    return env


@functools.lru_cache(maxsize=1)
def css_inliner() -> Any:
    """Mail clients drop <style>; every rule goes into style="" attributes and nothing is fetched."""
    import css_inline

    return css_inline.CSSInliner(load_remote_stylesheets=False, keep_style_tags=False)


def render_html(name: str, ctx: dict) -> str:
    return css_inliner().inline(environment().get_template(name).render(**ctx))


def render(view: DigestView) -> Rendered:
    """The text and HTML of a digest: templates only, no queries."""
    ctx = {f.name: getattr(view, f.name) for f in dataclasses.fields(view)}
    # Record text must not carry terminal escapes or stray CRs into a mail reader's text view.
    text = untrusted.strip_controls(environment().get_template("email/digest.txt.j2").render(**ctx))
    return Rendered(subject=view.subject, text=text, html=render_html("email/digest.html.j2", ctx))


# -- loading ----------------------------------------------------------------------------------

def load_facts(store: Store, nct_ids: Iterable[str], into: dict[str, TrialFacts] | None = None) -> dict[str, TrialFacts]:
    """The facts of each trial not yet in ``into`` (one latest-record read per trial)."""
    facts = into if into is not None else {}
    missing = sorted({n for n in nct_ids if n not in facts})
    if not missing:
        return facts
    from .. import referral
    from ..store import NOT_RECRUITING

    titles, memberships = store.trial_context(missing)
    today = utcnow().date()
    records = {nct: store.latest_record(nct) for nct in missing}
    closed = [n for n, r in records.items()
              if rec.get(r, "protocolSection.statusModule.overallStatus") in NOT_RECRUITING]
    stored = store.alternatives_of(closed)
    for nct in missing:
        record = records[nct]
        facts[nct] = TrialFacts(
            nct_id=nct,
            title=titles.get(nct) or rec.get(record, "protocolSection.identificationModule.briefTitle") or "",
            status=rec.get(record, "protocolSection.statusModule.overallStatus"),
            central_contact=_central_contact(record), site_contacts=_site_contacts(record),
            memberships=frozenset(memberships.get(nct, set())), site_places=_site_places(record),
            warnings=tuple(w.text for w in referral.warnings(record, today)) if record else (),
            record=record,
            alternatives_row=stored.get(nct),
            expanded_access_info=rec.get(record, "protocolSection.statusModule.expandedAccessInfo"))
    return facts


def _site_places(record: dict | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for loc in rec.get(record, "protocolSection.contactsLocationsModule.locations") or []:
        if not isinstance(loc, dict) or not isinstance(loc.get("facility"), str):
            continue
        where = ", ".join(p for p in (loc.get("city"), loc.get("state"), loc.get("country")) if isinstance(p, str) and p)
        out.setdefault(loc["facility"], where)
    return out


_OPEN = frozenset({"RECRUITING", "NOT_YET_RECRUITING", "ENROLLING_BY_INVITATION"})


def _opens(old: Any, new: Any) -> bool:
    """Now recruiting (from anything else), or open at all after being closed."""
    return (new == "RECRUITING" and old != "RECRUITING") or (new in _OPEN and old not in _OPEN)


def _opened_site(c: ChangeRow) -> str | None:
    """The facility of a site this change opened (status to an open one, or added open)."""
    if c.field == "site_status" and _opens(c.old_value, c.new_value):
        return c.site
    if c.field == "site_added" and isinstance(c.new_value, dict) and c.new_value.get("status") in _OPEN:
        return c.site
    return None


def nearest_line(cs: Sequence[ChangeRow], facts: TrialFacts | None, place: Any) -> str | None:
    """"Nearest open site to Rochester, MN: Mayo Clinic, Rochester, …, 3 km / 2 mi — contact",
    when the trial started recruiting or a site within NEAR_RADIUS_KM of her opened. In memory:
    the record was loaded once for everyone; ``place`` is hers (``her_place``), resolved once a send."""
    from .. import referral

    if place is None or facts is None or not facts.record:
        return None
    started = any(is_status_change(c) and _opens(c.old_value, c.new_value) for c in cs)
    opened = {f for f in (_opened_site(c) for c in cs) if f}
    if not started and not opened:
        return None
    ranked = referral.nearest_sites(facts.record, place, limit=10_000).sites
    if not ranked:
        return None
    if not started and not any(s.facility in opened and s.distance_km <= NEAR_RADIUS_KM for s in ranked):
        return None
    return f"Nearest open site to {place.label}: {referral.site_line(ranked[0])}"


def _contact(c: dict | None) -> Contact | None:
    if not c:
        return None
    phone = c.get("phone")
    if phone and c.get("phoneExt"):
        phone = f"{phone} ext. {c['phoneExt']}"
    out = Contact(name=c.get("name"), phone=phone, email=c.get("email"))
    return out if (out.name or out.phone or out.email) else None


def _primary(contacts: list[dict]) -> Contact | None:
    primary = [c for c in contacts if c.get("role") == "CONTACT"] or contacts
    return _contact(primary[0]) if primary else None


def _central_contact(record: dict | None) -> Contact | None:
    return _primary(rec.get(record, "protocolSection.contactsLocationsModule.centralContacts") or [])


def _site_contacts(record: dict | None) -> dict[str, Contact | None]:
    out: dict[str, Contact | None] = {}
    for loc in rec.get(record, "protocolSection.contactsLocationsModule.locations") or []:
        contact = _primary(loc.get("contacts") or [])
        for key in (loc.get("facility"), loc.get("city")):
            if key and key not in out:  # the first location that names it, as before
                out[key] = contact
    return out


# -- building the view ------------------------------------------------------------------------

def _short(value: Any, limit: int = VALUE_MAX) -> str:
    text = rec.words(value)
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def headline(c: ChangeRow) -> str:
    """One line naming a change, for subjects: "Active, not recruiting → Recruiting"."""
    if is_status_change(c):
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
    return rec.words(c.new_value) if is_status_change(c) else c.label


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
    # Record text reaches headers and terminals: one line, no escape sequences.
    subject = untrusted.one_line(subject)
    if len(subject) <= SUBJECT_MAX:
        return subject
    cut = subject[: SUBJECT_MAX - 1]
    # Prefer ending at a list separator so no NCT number is cut in half.
    if ", " in cut[len(cut) // 2:]:
        cut = cut[: cut.rindex(", ")] + ","
    return cut.rstrip() + " …"


def group(changes: Iterable[ChangeRow]) -> list[tuple[str, list[ChangeRow]]]:
    """By trial; each trial's changes most severe first; trials with the most severe first."""
    by: dict[str, list[ChangeRow]] = {}
    for c in changes:
        by.setdefault(c.nct_id, []).append(c)
    groups = [(nct, sorted(cs, key=lambda c: (-c.rank, c.id or 0))) for nct, cs in by.items()]
    groups.sort(key=lambda g: (-max((c.rank for c in g[1]), default=0), g[0]))
    return groups


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


def _meaning_and_contact(c: ChangeRow, facts: TrialFacts | None) -> tuple[str | None, Contact | None]:
    new = c.new_value
    central = facts.central_contact if facts else None
    if is_status_change(c) and isinstance(new, str):
        return STATUS_MEANING.get(new), (central if new == "RECRUITING" else None)
    if c.field == "site_status" and isinstance(new, str):
        site = (facts.site_contacts.get(c.site) if facts and c.site else None)
        return SITE_MEANING.get(new), ((site or central) if new == "RECRUITING" else None)
    return FIELD_MEANING.get(c.field), None


def change_view(c: ChangeRow, facts: TrialFacts | None) -> ChangeView:
    meaning, contact = _meaning_and_contact(c, facts)
    new = c.new_value
    long_values = len(rec.words(c.old_value)) + len(rec.words(new)) > 2 * VALUE_MAX
    kinds = {"+": "add", "-": "del"}
    if c.field in ("search_match", "search_unmatch"):
        # Membership is a sentence, not a value diff ("lung-nsclc → —"): the label names the
        # search, the detail says why it left.
        label = f"{c.label}: {c.detail}" if c.detail and c.field == "search_unmatch" else c.label
        return ChangeView(field=c.field, label=label, severity=c.severity, site=None, site_text=None,
                          old=_short(c.old_value), new=_short(new), added=False, removed=False, show_values=False,
                          detail_lines=(), meaning=meaning, contact=None, no_contact=False,
                          old_value=c.old_value, new_value=new, detail=c.detail)
    return ChangeView(
        field=c.field, label=c.label, severity=c.severity, site=c.site,
        site_text=_site_text(c) if c.site else None,
        old=_short(c.old_value), new=_short(new), added=c.old_value is None, removed=new is None,
        # Long texts (criteria) read better as the line diff alone.
        show_values=not (c.detail and long_values),
        detail_lines=tuple(DetailLine(kinds.get(line[:1], "ctx"), line) for line in (c.detail or "").splitlines()),
        meaning=meaning, contact=contact,
        no_contact=is_status_change(c) and new == "RECRUITING" and contact is None,
        site_where=(facts.site_places.get(c.site) or None) if facts and c.site else None,
        old_value=c.old_value, new_value=new, detail=c.detail)


def followed_by(sub: Subscriber, kind: str) -> set[str]:
    return {x.target for x in sub.subscriptions or [] if x.kind == kind}


def her_searches(sub: Subscriber, changes: list[ChangeRow], memberships: frozenset[str],
                 followed: set[str] | None = None) -> tuple[str, ...]:
    """Her saved searches (``followed``, when known) this trial belongs to (or that reported it)."""
    followed = followed_by(sub, "search") if followed is None else followed
    return tuple(sorted(followed & (memberships | {c.search for c in changes if c.search})))


_CONFIG_LOCATIONS = ("config locations",)  # a key of the per-send cache no place text can be


def her_place(config: "Config", sub: Subscriber, cache: dict | None = None) -> Any:
    """Where she refers from: her config entry's ``location``, else the one she saved on the
    web (``subscribers.location``), resolved offline; None when unknown. Resolutions are kept
    in ``cache`` (one per send) by the text."""
    from ..errors import PlaceError
    from ..places import resolve

    cache = {} if cache is None else cache
    # The config's locations by address, built once a send (not a scan of the file per digest).
    by_address = cache.get(_CONFIG_LOCATIONS)
    if by_address is None:
        by_address = cache[_CONFIG_LOCATIONS] = {
            sc.address or sc.email: sc.location for sc in config.subscribers if sc.location is not None}
    text = by_address.get(sub.address) or getattr(sub, "location", None)
    if text is None or not isinstance(text, str):
        return text  # already a Place (validated config) or nothing
    if text not in cache:
        try:
            cache[text] = resolve(text)
        except PlaceError as e:
            log.warning("subscriber %s: location %r cannot be placed (%s); alternatives unranked by distance",
                        sub.id, untrusted.one_line(text), e.message)
            cache[text] = None
    return cache[text]


def trial_view(sub: Subscriber, nct: str, cs: list[ChangeRow], facts: TrialFacts | None,
               place: Any = None) -> TrialView:
    views = [change_view(c, facts) for c in cs]
    memberships = facts.memberships if facts else frozenset()
    searches = her_searches(sub, cs, memberships)
    # A search she follows that this trial just left is said as such, never "it matches".
    left = {c.search for c in cs if c.search and c.field == "search_unmatch"} - memberships
    reasons = ([f"you follow {nct}"] if nct in followed_by(sub, "trial") else []) + \
        [f"it {'matched' if name in left else 'matches'} your saved search “{name}”"
         + (" until now" if name in left else "") for name in searches]
    status = facts.status if facts else None
    return TrialView(
        nct_id=nct, url=rec.url(nct), title=facts.title if facts else "",
        status=rec.words(status), status_meaning=STATUS_MEANING.get(status or ""),
        central_contact=facts.central_contact if facts else None,
        changes=tuple(v for v in views if not v.site), sites=tuple(v for v in views if v.site),
        reasons=tuple(reasons), searches=searches, severity=cs[0].severity if cs else None,
        warnings=facts.warnings if facts else (), nearest=nearest_line(cs, facts, place),
        alternatives=_alternatives(nct, cs, facts, place))


def _alternatives(nct: str, cs: list[ChangeRow], facts: TrialFacts | None, place: Any) -> Any:
    if facts is None or not any(stops_recruiting(c) for c in cs):
        return None
    from ..alternatives_cache import IN_DIGEST, shown

    return shown(nct, facts.alternatives_row, place, IN_DIGEST, own_ea=facts.expanded_access_info)


def _and(items: Sequence[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _footer_reasons(sub: Subscriber, trials: Sequence[TrialView]) -> tuple[str, ...]:
    followed = sorted(followed_by(sub, "trial") & {t.nct_id for t in trials})
    searches = sorted(followed_by(sub, "search") & {r for t in trials for r in t.searches})
    things = ([_and(followed)] if followed else []) + \
        ([f"your saved search{'es' if len(searches) > 1 else ''} {_and([f'“{n}”' for n in searches])}"]
         if searches else [])
    # One clause: "you follow NCT… and your saved search “x”" (never "… and of your saved search").
    return (f"you follow {' and '.join(things)}",) if things else ()


def _intro(n_changes: int, n_trials: int) -> str:
    if not n_changes:
        return "No change has been recorded for this trial yet; this is its current state."
    return (f"{n_changes} change{'s' if n_changes != 1 else ''} in {n_trials} "
            f"trial{'s' if n_trials != 1 else ''} you follow.")


def build_view(config: "Config", subscriber: Subscriber, changes: Sequence[ChangeRow],
               facts: dict[str, TrialFacts], *, nct_ids: Sequence[str] = (), now: dt.datetime,
               secret_key: str | None = None, places: dict | None = None,
               links: tuple[str, str] | None = None,
               trial: Callable[[str, list[ChangeRow], Any], TrialView] | None = None) -> DigestView:
    """One person's digest as data: ``changes`` grouped by trial (most severe first), plus the
    current state of any trial in ``nct_ids`` without changes. Pure: ``facts`` holds the reads.
    ``links``: her unsubscribe and manage tokens, signed already (else signed here with
    ``secret_key``); ``trial(nct, changes, place)``: a trial's view (the composer's per-send
    cache), else ``trial_view``."""
    groups = group(changes)
    seen = {nct for nct, _ in groups}
    groups += [(nct, []) for nct in nct_ids if nct not in seen]
    # Her place ranks alternatives (a trial stopped recruiting) and names the nearest open site
    # (a trial or a site near her opened); resolved once a send (``places``).
    place = her_place(config, subscriber, places)
    if trial is None:
        def trial(nct: str, cs: list[ChangeRow], place: Any) -> TrialView:
            return trial_view(subscriber, nct, cs, facts.get(nct), place)
    trials = tuple(trial(nct, cs, place) for nct, cs in groups)
    if links is None and secret_key and subscriber.id:
        links = (tokens.make(secret_key, "unsubscribe", subscriber.id, subscriber.token_version or 0),
                 tokens.make(secret_key, "manage", subscriber.id, subscriber.token_version or 0))
    unsub, manage = links or ("PREVIEW", "PREVIEW")
    subject = digest_subject(groups)
    public = config.email.public_url
    return DigestView(
        subject=subject, preheader=subject, name=subscriber.name,
        intro=_intro(sum(len(cs) for _, cs in groups), len(groups)),
        trials=trials, reasons=_footer_reasons(subscriber, trials),
        severity_words=SEVERITY_WORDS.get(subscriber.min_severity or "important", ""),
        digest_words=DIGEST_WORDS.get(subscriber.digest or "each_poll", ""),
        unsubscribe_url=f"{public}/unsubscribe?token={unsub}", manage_url=f"{public}/manage?token={manage}",
        public_url=public, generated_at=now.strftime("%Y-%m-%d %H:%M UTC"))


def render_digest(store: Store, config: "Config", subscriber: Subscriber, changes: Sequence[ChangeRow], *,
                  nct_ids: Sequence[str] = (), now: dt.datetime | None = None,
                  secret_key: str | None = None, facts: dict[str, TrialFacts] | None = None,
                  places: dict | None = None, view: DigestView | None = None,
                  renderings: "Renderings | None" = None) -> Rendered:
    """Load (what ``facts`` lacks), build the view, render. Links carry real tokens when
    ``secret_key`` is given, a placeholder otherwise. ``view``: already built (the composer
    builds it once for the message and its channel), rendered from the send's shared cards
    when ``renderings`` is given (the same bytes)."""
    if view is not None:
        return renderings.render(view) if renderings is not None else render(view)
    facts = load_facts(store, [c.nct_id for c in changes] + list(nct_ids), facts)
    view = build_view(config, subscriber, changes, facts, nct_ids=nct_ids, now=now or utcnow(),
                      secret_key=secret_key, places=places)
    return render(view)


# -- composing --------------------------------------------------------------------------------

@dataclass
class Pending:
    """One person's unattached outbox rows: what her next digest holds before her floor."""

    subscriber: Subscriber
    changes: list[ChangeRow]
    outbox_ids: list[int]

    def split(self) -> tuple[list[tuple[ChangeRow, int]], list[int]]:
        """(changes kept with their outbox ids, outbox ids below her min_severity)."""
        floor = SEVERITY_RANK.get(self.subscriber.min_severity, 0)
        keep = [(c, o) for c, o in zip(self.changes, self.outbox_ids) if c.rank >= floor]
        return keep, [o for c, o in zip(self.changes, self.outbox_ids) if c.rank < floor]


def digest_due(sub: Subscriber, now: dt.datetime) -> bool:
    period = DIGEST_PERIOD.get(sub.digest)
    if period is None or sub.last_digest_at is None:
        return True
    return now - sub.last_digest_at >= period - DIGEST_GRACE


def pending(store: Store, now: dt.datetime, *, due_only: bool = True) -> list[Pending]:
    """Unattached outbox rows of active subscribers, grouped per person (only those whose
    digest is due, unless ``due_only`` is False)."""
    out: dict[int, Pending] = {}
    for outbox_id, change, sub in store.unsent_outbox():
        p = out.setdefault(sub.id, Pending(sub, [], []))
        p.changes.append(change)
        p.outbox_ids.append(outbox_id)
    return [p for p in out.values() if not due_only or digest_due(p.subscriber, now)]

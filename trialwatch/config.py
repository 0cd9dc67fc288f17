"""config.yaml: a declarative description of what to watch and whom to tell.

``load(path)`` reads and validates the file once, at start-up. A wrong type or an unknown key
is a ``ConfigError`` that names the key, the file and the line. Secrets never live in the file:
the SMTP password, the signing key and (optionally) a database URL with a password come from the
environment (``TRIALWATCH_SMTP_PASSWORD``, ``TRIALWATCH_SECRET_KEY``, ``TRIALWATCH_DATABASE_URL``).

Where the file is: ``--config PATH``, else ``$TRIALWATCH_CONFIG``, else ``./config.yaml``; with
none of them, the embedded defaults (SQLite in the current folder, .eml files for mail).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from .config_yaml import describe, key_lines
from .errors import ConfigError, InvalidNctId
from .events import SEVERITIES, Severity  # noqa: F401  (SEVERITIES: web imports it from here)
from .record import normalize_nct

if TYPE_CHECKING:
    from .places import Place

ENV_CONFIG = "TRIALWATCH_CONFIG"
ENV_DATABASE_URL = "TRIALWATCH_DATABASE_URL"
ENV_SECRET_KEY = "TRIALWATCH_SECRET_KEY"
ENV_SMTP_PASSWORD = "TRIALWATCH_SMTP_PASSWORD"

_DEFAULT_SCHEDULE = "30 10 * * *"
# Secret-looking keys get a pointed message instead of "unknown key".
_SECRET_KEYS = {"password": ENV_SMTP_PASSWORD, "secret_key": ENV_SECRET_KEY, "secret": ENV_SECRET_KEY}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _one_nct(value: str) -> str:
    try:
        return normalize_nct(value)
    except InvalidNctId as e:
        raise ValueError(f"{e.message} (an NCT number is 'NCT' and up to 8 digits)") from None


def _dedupe(values: list[str]) -> list[str]:
    return list(dict.fromkeys(values))


def _http_url(value: str) -> str:
    if not value.startswith(("http://", "https://")):
        raise ValueError("must start with http:// or https://")
    # It is pasted into mail headers (List-Unsubscribe) and links: a CR/LF or space there would
    # break every digest, found only when the first one is composed.
    if any(c.isspace() or ord(c) < 32 or 0x7f <= ord(c) <= 0x9f for c in value):
        raise ValueError("must not contain spaces, line breaks or control characters")
    if not value.isascii():
        raise ValueError("must be ASCII: write an international host name in its xn-- form "
                         "and percent-encode the path")
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number
    except ValueError as e:
        raise ValueError(f"is not a valid URL ({e})") from None
    if not parts.hostname:
        raise ValueError("has no host name, e.g. https://trialwatch.example.org")
    return value.rstrip("/")


def _mail_from(value: str) -> str:
    """``email.from``: a display name and an ASCII address, fit for a header as it stands."""
    import re
    from email.message import EmailMessage
    from email.policy import SMTP
    from email.utils import getaddresses

    if any(ord(c) < 32 or 0x7f <= ord(c) <= 0x9f for c in value):
        raise ValueError("must not contain line breaks or control characters")
    found = getaddresses([value])
    addr = found[0][1] if len(found) == 1 else ""
    # ASCII: the envelope sender goes to SMTP as it is (no SMTPUTF8).
    if not re.fullmatch(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?", addr):
        raise ValueError("must be an ASCII address, optionally with a name: 'trialwatch <alerts@example.org>'")
    try:
        msg = EmailMessage(policy=SMTP)
        msg["From"] = value
        msg.as_bytes()
    except (ValueError, TypeError, IndexError) as e:
        raise ValueError(f"cannot be used as a From header: {e}") from None
    return value


# A base URL: http(s), kept as a plain string without the trailing slash.
HttpUrl = Annotated[str, AfterValidator(_http_url)]

# An NCT number, normalised per item so an error points at the item's own line.
NctId = Annotated[str, AfterValidator(_one_nct)]
NctList = Annotated[list[NctId], AfterValidator(_dedupe)]


class CtgovConfig(_Strict):
    base_url: HttpUrl = "https://clinicaltrials.gov/api/v2"
    requests_per_minute: float = Field(50, gt=0, le=100000)
    timeout_s: float = Field(30, gt=0, le=600)
    max_retries: int = Field(5, ge=0, le=20)
    # filter.ids chunk size: keeps URLs well under common 8 KiB limits (100 ids ~ 1.2 KiB).
    batch_size: int = Field(100, ge=1, le=1000)
    # Response bodies are refused beyond these sizes (read in chunks, never whole): one record
    # (the largest real one is ~1.5 MB), and one page of a /studies listing.
    max_record_mb: float = Field(16, gt=0, le=1024)
    max_page_mb: float = Field(64, gt=0, le=4096)



class HistoryConfig(_Strict):
    # The registry's internal API (version history); default: ctgov.base_url with /api/int
    # in place of /api/v2.
    url: HttpUrl | None = None
    # Version lists a poll fetches at most (oldest-watched trials first): a first poll of
    # 10,000 trials must not cost 10,000 more requests. 0: never in a poll.
    per_poll: int = Field(50, ge=0, le=100000)


class AlternativesConfig(_Strict):
    # Trials a poll searches alternatives for beyond those that stopped recruiting in it (which
    # are always searched: their digests go out now): followed trials that do not recruit and
    # have nothing found at the poll's data date. 2-3 requests each; 0: only newly closed ones.
    per_poll: int = Field(20, ge=0, le=10000)


class SmtpConfig(_Strict):
    host: str = "localhost"
    port: int = Field(25, ge=1, le=65535)
    starttls: bool = False
    ssl: bool = False
    username: str | None = None
    timeout_s: float = Field(30, gt=0)

    @model_validator(mode="after")
    def _one_tls(self) -> "SmtpConfig":
        if self.starttls and self.ssl:
            raise ValueError("choose either starttls or ssl, not both")
        return self


class EmailConfig(_Strict):
    from_: Annotated[str, AfterValidator(_mail_from)] = Field("trialwatch <trialwatch@localhost>", alias="from")
    transport: Literal["smtp", "file", "console"] = "file"
    outbox_dir: str = "outbox"
    smtp: SmtpConfig = SmtpConfig()
    public_url: HttpUrl = "http://localhost:8080"
    # A transiently failing message is retried with a growing wait (retry_backoff_s, then about
    # as long as it has waited so far, at most 6 h) and fails for good only once its first try
    # is give_up_after_hours old: an SMTP outage of a day loses nothing, however often `send` runs.
    give_up_after_hours: float = Field(48, gt=0, le=24 * 30)
    # A cap on tries the server answered with a 4xx (a refused connection is not one of them,
    # nor a forced `send` before the retry was due): such a message fails after this many.
    max_attempts: int = Field(8, ge=1, le=100)
    retry_backoff_s: float = Field(300, ge=0)

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)



def _place(value: Any) -> Any:
    """A subscriber's ``location``, checked cheaply when the file is loaded: text, not empty,
    coordinates on Earth. A ZIP code or a city is looked up in the offline gazetteers only when
    it is used (``SubscriberConfig.place``, ``Config.resolve_places``): loading them costs
    0.4-3 s, which every command would pay for a place most of them never use."""
    from .errors import PlaceError
    from .places import Place, check_syntax

    if value is None or isinstance(value, Place):
        return value
    if not isinstance(value, str):
        # YAML reads 02115 as the octal number 1101: a ZIP code must be quoted.
        raise ValueError("write the place as text in quotes: a ZIP code ('02115'), a city "
                         "('Rochester, MN') or lat,lon ('44.02,-92.47')")
    try:
        check_syntax(value)
    except PlaceError as e:
        raise ValueError(f"{e.message}. {e.hint}") from None
    return value


# A place (see trialwatch.places): "Rochester, MN", "55905" or "44.02,-92.47".
Location = Annotated[Any, AfterValidator(_place)]


class SubscriberConfig(_Strict):
    # Where her digests go: ``email: ...`` alone (the default channel), or ``channel:`` (a name in
    # notify.channels: email, webhook, apprise) with ``address:``.
    email: str | None = None
    channel: str = "email"
    address: str | None = None
    name: str | None = None
    trials: NctList = []
    searches: list[str] = []
    min_severity: Severity = Severity.IMPORTANT
    digest: Literal["each_poll", "daily", "weekly"] = "each_poll"
    # Where she refers from, as written; ``place()`` resolves it (checked cheaply at load).
    location: Location = None

    def place(self) -> "Place | None":
        """``location`` resolved offline (a ``PlaceError`` when unknown or ambiguous)."""
        from .places import Place, resolve

        if self.location is None or isinstance(self.location, Place):
            return self.location
        return resolve(self.location)

    @field_validator("email")
    @classmethod
    def _email(cls, v: str | None) -> str | None:
        from .untrusted import subscriber_address

        # The same rule as the web sign-up: an address accepted here must be mailable.
        return subscriber_address(v) if v is not None else None

    @field_validator("channel")
    @classmethod
    def _channel(cls, v: str) -> str:
        from .notify.channels import Channel

        if v not in Channel.registry:
            raise ValueError(f"unknown channel {v!r} (one of: {', '.join(sorted(Channel.registry))})")
        try:
            Channel.registry[v].check_available()
        except ConfigError as e:
            raise ValueError(f"{e.message}. {e.hint}") from None
        return v

    @field_validator("address")
    @classmethod
    def _address(cls, v: str | None, info: ValidationInfo) -> str | None:
        from .notify.channels import Channel

        channel = Channel.registry.get(info.data.get("channel", ""))
        # An address accepted here must be deliverable on its channel.
        return channel.check_address(v) if v is not None and channel is not None else v

    @model_validator(mode="after")
    def _destination(self) -> "SubscriberConfig":
        if self.channel == "email":
            if self.email and self.address and self.email != self.address:
                raise ValueError("give the address once: 'email:' or 'address:'")
            address = self.email or self.address
        elif self.email:
            raise ValueError(f"'email:' is for the email channel; a {self.channel} subscriber has 'address:'")
        else:
            address = self.address
        if not address:
            raise ValueError("a subscriber needs 'email:' (or 'channel:' and 'address:')")
        # Frozen model: both names carry the destination from here on.
        object.__setattr__(self, "address", address)
        if self.channel == "email":
            object.__setattr__(self, "email", address)
        return self


class NearConfig(_Strict):
    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)
    miles: float = Field(gt=0)


STATUSES = (
    "ACTIVE_NOT_RECRUITING", "COMPLETED", "ENROLLING_BY_INVITATION", "NOT_YET_RECRUITING",
    "RECRUITING", "SUSPENDED", "TERMINATED", "WITHDRAWN", "AVAILABLE", "NO_LONGER_AVAILABLE",
    "TEMPORARILY_NOT_AVAILABLE", "APPROVED_FOR_MARKETING", "WITHHELD", "UNKNOWN",
)


class SearchConfig(_Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$")
    condition: str | None = None
    intervention: str | None = None
    term: str | None = None
    sponsor: str | None = None
    status: list[str] = []
    near: NearConfig | None = None
    max_results: int = Field(500, ge=1, le=10000)

    @field_validator("status")
    @classmethod
    def _statuses(cls, v: list[str]) -> list[str]:
        bad = [s for s in v if s.upper() not in STATUSES]
        if bad:
            raise ValueError(f"unknown status {bad[0]!r}; one of {', '.join(STATUSES)}")
        return [s.upper() for s in v]

    @model_validator(mode="after")
    def _something_to_search(self) -> "SearchConfig":
        if not any((self.condition, self.intervention, self.term, self.sponsor)):
            raise ValueError("a search needs at least one of condition, intervention, term, sponsor")
        return self

    def query_params(self) -> dict[str, str]:
        """The /studies query parameters of this search (without paging)."""
        params: dict[str, str] = {}
        for key, param in (("condition", "query.cond"), ("intervention", "query.intr"),
                           ("term", "query.term"), ("sponsor", "query.spons")):
            value = getattr(self, key)
            if value:
                params[param] = value
        if self.status:
            params["filter.overallStatus"] = ",".join(self.status)
        if self.near:
            params["filter.geo"] = f"distance({self.near.lat},{self.near.lon},{self.near.miles:g}mi)"
        return params


class Config(_Strict):
    database: str = "sqlite:///trialwatch.db"
    ctgov: CtgovConfig = CtgovConfig()
    history: HistoryConfig = HistoryConfig()
    alternatives: AlternativesConfig = AlternativesConfig()
    trials: NctList = []
    # Dotted JSON paths the diff never reports, e.g. protocolSection.referencesModule
    ignore: list[str] = []
    # Cron expression for `trialwatch run`. ClinicalTrials.gov refreshes its data once a day
    # (the /version dataTimestamp moves around 09:00 UTC); polling shortly after catches it.
    schedule: str = _DEFAULT_SCHEDULE
    # A poll normally asks only for records updated since the last one; every this many days
    # it fetches all of them, which is how a removed record (404) is noticed.
    full_sweep_days: int = Field(7, ge=1, le=365)
    timezone: str = "UTC"
    email: EmailConfig = EmailConfig()
    subscribers: list[SubscriberConfig] = []
    searches: list[SearchConfig] = []
    # Where the file was read from (None: embedded defaults); relative paths resolve against it.
    source: str | None = Field(None, exclude=True)
    # Line of each key path in the file, for errors found after loading (resolve_places).
    _lines: dict[tuple, int] = PrivateAttr(default_factory=dict)

    @field_validator("schedule")
    @classmethod
    def _cron(cls, v: str) -> str:
        if len(v.split()) != 5:
            raise ValueError("must be a 5-field cron expression, e.g. '30 10 * * *'")
        if v != _DEFAULT_SCHEDULE:  # the default is known good; spare every command the import
            # What `trialwatch run` will build: an impossible field ("61 10 * * *") is refused
            # here, with the file and line, not later as an unexpected error of the daemon.
            from apscheduler.triggers.cron import CronTrigger

            try:
                CronTrigger.from_crontab(v, timezone="UTC")
            except ValueError as e:
                raise ValueError(f"not a valid cron expression ({e}), e.g. '30 10 * * *'") from None
        return v

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {v!r}, e.g. UTC or America/Chicago") from None
        return v

    @model_validator(mode="after")
    def _references(self) -> "Config":
        names = [s.name for s in self.searches]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"search name {sorted(dup)[0]!r} is used twice")
        emails = [s.address.lower() for s in self.subscribers]
        dup = {e for e in emails if emails.count(e) > 1}
        if dup:
            raise ValueError(f"subscriber {sorted(dup)[0]!r} is listed twice")
        for sub in self.subscribers:
            for s in sub.searches:
                if s not in names:
                    raise ValueError(f"subscriber {sub.address} names search {s!r}, which is not under 'searches'")
        return self

    # -- derived values -------------------------------------------------------------------
    @property
    def base_dir(self) -> Path:
        return Path(self.source).resolve().parent if self.source else Path.cwd()

    @property
    def database_url(self) -> str:
        """The database URL: $TRIALWATCH_DATABASE_URL wins; relative SQLite paths resolve
        against the config file's folder so a daemon finds the same file from any cwd."""
        url = os.environ.get(ENV_DATABASE_URL) or self.database
        prefix = "sqlite:///"
        if url.startswith(prefix) and not url.startswith(prefix + "/") and url != "sqlite://" \
                and ":memory:" not in url:
            url = prefix + str(self.base_dir / url[len(prefix):])
        return url

    @property
    def outbox_path(self) -> Path:
        p = Path(self.email.outbox_dir)
        return p if p.is_absolute() else self.base_dir / p

    def all_trials(self) -> list[str]:
        """Trials named anywhere in the file: the watch list and every subscriber's."""
        # dict keeps first-seen order and makes this linear (10,000 trials: ms, not seconds).
        out = dict.fromkeys(self.trials)
        for sub in self.subscribers:
            out.update(dict.fromkeys(sub.trials))
        return list(out)

    def resolve_places(self) -> None:
        """Resolve every subscriber's ``location``: an unknown or ambiguous place is a
        ``ConfigError`` naming the file and line. Called before anything is sent."""
        from .errors import PlaceError

        msgs = []
        for i, sub in enumerate(self.subscribers):
            try:
                sub.place()
            except PlaceError as e:
                line = self._lines.get(("subscribers", i, "location"))
                where = f"{self.source}:{line}" if line and self.source else (self.source or "config")
                msgs.append(f"{where}: subscribers.{i}.location: {e.message}. {e.hint}")
        if msgs:
            raise ConfigError("invalid configuration:\n  " + "\n  ".join(msgs))

    def search(self, name: str) -> SearchConfig:
        for s in self.searches:
            if s.name == name:
                return s
        raise ConfigError(f"no saved search named {name!r} in {self.source or 'the configuration'}")

    def secret_key(self) -> str:
        key = os.environ.get(ENV_SECRET_KEY, "")
        if len(key) < 16:
            raise ConfigError(
                f"{ENV_SECRET_KEY} is {'too short' if key else 'not set'}: it signs unsubscribe "
                "and confirmation links, so mail cannot be sent without it",
                hint=f"export {ENV_SECRET_KEY}=$(python3 -c 'import secrets; print(secrets.token_urlsafe(32))')",
            )
        return key

    def smtp_password(self) -> str | None:
        return os.environ.get(ENV_SMTP_PASSWORD) or None


# -- loading ----------------------------------------------------------------------------------

def resolve_path(path: str | os.PathLike[str] | None) -> Path | None:
    """``--config PATH``, else $TRIALWATCH_CONFIG, else ./config.yaml if present, else None."""
    if path is not None:
        p = Path(path)
        # exists(), not is_file(): `--config <(...)` hands over a pipe, which is fine to read.
        if p.is_dir():
            raise ConfigError(f"config file {p} is a folder, not a file",
                              hint=f"Pass the file itself, e.g. --config {p / 'config.yaml'}.")
        if not p.exists():
            raise ConfigError(f"config file {p} does not exist", hint="Pass an existing file to --config.")
        return p
    env = os.environ.get(ENV_CONFIG)
    if env:
        p = Path(env)
        if p.is_dir():
            raise ConfigError(f"{ENV_CONFIG} names {p}, which is a folder, not a file")
        if not p.is_file():
            raise ConfigError(f"{ENV_CONFIG} names {p}, which does not exist")
        return p
    p = Path("config.yaml")
    return p if p.is_file() else None


def load(path: str | os.PathLike[str] | None = None, *, search_default: bool = True) -> Config:
    """Read and validate the configuration; with no file, the embedded defaults."""
    p = resolve_path(path) if (path is not None or search_default) else None
    if p is None:
        return Config()
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        line = p.read_bytes()[:e.start].count(b"\n") + 1
        raise ConfigError(f"invalid configuration:\n  {p}:{line}: not UTF-8 text (byte {e.object[e.start]:#04x})",
                          hint="Save the file as UTF-8.") from None
    except OSError as e:
        raise ConfigError(f"cannot read config file {p}: {e.strerror or e}") from None
    return loads(text, source=str(p))


def loads(text: str, *, source: str = "<config>") -> Config:
    # One parse: the node tree gives line numbers, the same tree gives the data. The C loader
    # when PyYAML has it (a 10,000-trial watch list parses in milliseconds, not seconds).
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)(text)
    try:
        node = loader.get_single_node()
        # Before construction, which flattens YAML merge keys (<<) into plain duplicates; the
        # same walk finds the lines that errors name.
        lines = key_lines(node, source)
        data = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark else source
        raise ConfigError(f"{where}: not valid YAML: {getattr(e, 'problem', None) or e}") from None
    finally:
        loader.dispose()
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}:1: the top level must be a mapping of keys (database, trials, ...)")
    try:
        config = Config.model_validate({**data, "source": source})
    except ValidationError as e:
        raise ConfigError(describe(e, source, lines, secret_keys=_SECRET_KEYS)) from None
    config._lines = lines
    return config


__all__ = ["Config", "load", "loads", "resolve_path", "InvalidNctId"]

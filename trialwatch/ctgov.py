"""The ClinicalTrials.gov API v2 client: throttled, bounded retries, and no garbage let through.

Every request goes through ``Client._get_json``: one throttle slot per HTTP attempt (redirect
hops included), retries with exponential backoff and jitter on what looks transient (429, 5xx,
timeouts, dropped connections, a 200 that is HTML or cut-off JSON), and a typed error from
``trialwatch.errors`` once the retries are spent. A body is returned to the caller only after
it parsed as JSON and had the shape asked for; nothing here touches the database.

The ``httpx`` transport, the sleep function, the clock and the jitter source are injected so
tests run without network or real waiting.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import json
import logging
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx

from . import __version__
from .errors import CtgovBadResponse, CtgovUnavailable, CtgovUnreachable, InvalidNctId, TrialNotFound
from .record import is_study, nct_of, normalize_nct

if TYPE_CHECKING:
    from .config import CtgovConfig

log = logging.getLogger("trialwatch.ctgov")

DEFAULT_BASE_URL = "https://clinicaltrials.gov/api/v2"
MAX_PAGE_SIZE = 1000  # the API coerces larger values to 1000
MAX_RETRY_AFTER_S = 300.0  # a Retry-After beyond this is capped, never obeyed blindly
BACKOFF_BASE_S = 1.0
BACKOFF_MAX_S = 60.0
MAX_REDIRECTS = 5
UNREACHABLE_RETRY_S = 0.5  # the one quick retry when the host cannot be resolved or refuses
# A response body is read in chunks and refused beyond these sizes (config: ctgov.max_record_mb,
# ctgov.max_page_mb): the largest real record is ~1.5 MB, a page of 100 a few tens of MB at most.
MAX_RECORD_BYTES = 16 * 1024 * 1024
MAX_PAGE_BYTES = 64 * 1024 * 1024
_EXCERPT = 200


@dataclass
class Fetched:
    nct_id: str  # canonical id, read from the body
    requested_id: str  # the normalised id that was asked for
    record: dict
    redirected: bool  # requested_id is an alias of nct_id


@dataclass
class Version:
    api_version: str
    data_timestamp: str  # UTC "yyyy-MM-ddTHH:mm:ss"; moves when the registry refreshes its data


@dataclass
class SearchResult:
    records: list[dict]
    total_seen: int  # studies received, including any beyond the cap on the last page
    capped: bool  # more studies matched than max_results; records holds the first max_results
    total_count: int | None = None  # the API's countTotal figure, when it gave one


@dataclass
class Stats:
    requests: int = 0  # every HTTP attempt, retries and redirect hops included
    bytes_received: int = 0
    retries: int = 0


class _Retry(Exception):
    """One attempt failed in a way worth retrying."""

    def __init__(self, what: str, *, garbage: bool = False, retry_after: float | None = None,
                 unreachable: bool = False):
        super().__init__(what)
        self.what = what
        self.garbage = garbage  # True: a 200 with a body we cannot read (-> CtgovBadResponse)
        self.retry_after = retry_after
        # True: no connection at all (DNS failure; refused by a host that never answered).
        # Minutes of backoff would not fix a wrong base_url or a machine offline: one quick retry.
        self.unreachable = unreachable


def _unreachable(e: httpx.TransportError, answered: bool) -> bool:
    """Is this a failure that retrying cannot fix: the name does not resolve, or the host refuses
    connections and has never answered this client (a server that answered before and now
    refuses is probably restarting: that is retried as usual)."""
    import socket

    if not isinstance(e, httpx.ConnectError):
        return False
    seen: set[int] = set()
    cause: BaseException | None = e
    while cause is not None and id(cause) not in seen:  # httpx -> httpcore -> OSError
        seen.add(id(cause))
        if isinstance(cause, socket.gaierror):
            return True
        if isinstance(cause, ConnectionRefusedError):
            return not answered
        cause = cause.__cause__ or cause.__context__
    text = str(e).lower()
    if "name or service not known" in text or "nodename nor servname" in text or "name resolution" in text:
        return True
    return "connection refused" in text and not answered


def default_user_agent() -> str:
    # Names the real TLS client: the CT.gov edge may refuse a UA that pretends to be another one.
    return f"trialwatch/{__version__} (+https://github.com/trialwatch/trialwatch) python-httpx/{httpx.__version__}"


def _excerpt(body: bytes | str) -> str:
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    text = " ".join(text.split())
    return text if len(text) <= _EXCERPT else text[:_EXCERPT] + "…"


def parse_retry_after(value: str | None, *, date_header: str | None = None,
                      now: Callable[[], float] = time.time) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP date), capped; None if
    absent or unreadable. An HTTP date is measured against the response's own Date header when
    there is one, so clock skew between us and the server does not matter."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        ref = None
        if date_header:
            try:
                ref = email.utils.parsedate_to_datetime(date_header).timestamp()
            except (TypeError, ValueError, IndexError):
                ref = None
        seconds = when.timestamp() - (ref if ref is not None else now())
    if seconds != seconds:  # NaN
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)


class _SchemeTransport(httpx.BaseTransport):
    """httpx's default transport, made for each URL scheme on its first request.

    ``httpx.Client()`` builds its transport at once, and with it a TLS context that loads the CA
    bundle (~15 ms of a 0.3 s command), whether or not a request will use TLS. Here an https
    request gets exactly httpx's default, ``httpx.HTTPTransport()`` (verified, ``SSL_CERT_FILE``
    and ``SSL_CERT_DIR`` honoured), made when the first one is sent; a plain-http ``base_url`` (a
    local mirror, the test stand-in) never loads the bundle. Proxies from the environment stay
    ``httpx.Client``'s own mounts, built as before."""

    def __init__(self) -> None:
        self._made: dict[str, httpx.HTTPTransport] = {}
        self._lock = threading.Lock()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        return self.transport_for(request.url.scheme).handle_request(request)

    def transport_for(self, scheme: str) -> httpx.HTTPTransport:
        key = "http" if scheme == "http" else "https"
        with self._lock:
            made = self._made.get(key)
            if made is None:
                if key == "https":
                    made = httpx.HTTPTransport()
                else:
                    import ssl

                    # Plain http makes no TLS connection. Should one ever be asked of this
                    # transport, its context verifies against no CA at all: it fails, never
                    # trusts.
                    made = httpx.HTTPTransport(verify=ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT))
                self._made[key] = made
        return made

    def close(self) -> None:
        with self._lock:
            for made in self._made.values():
                made.close()
            self._made.clear()


class Client:
    """A synchronous client of the ClinicalTrials.gov API v2."""

    def __init__(self, base_url: str = DEFAULT_BASE_URL, *, requests_per_minute: float = 50,
                 timeout_s: float = 30, max_retries: int = 5, batch_size: int = 100,
                 transport: httpx.BaseTransport | None = None,
                 sleep: Callable[[float], Any] = time.sleep,
                 clock: Callable[[], float] = time.monotonic,
                 user_agent: str | None = None,
                 jitter: Callable[[], float] = random.random,
                 max_record_bytes: int = MAX_RECORD_BYTES, max_page_bytes: int = MAX_PAGE_BYTES) -> None:
        if requests_per_minute <= 0:
            raise ValueError("requests_per_minute must be > 0")
        if max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        if not 1 <= batch_size <= MAX_PAGE_SIZE:
            raise ValueError(f"batch_size must be between 1 and {MAX_PAGE_SIZE}")
        self.base_url = base_url.rstrip("/")
        self.min_interval_s = 60.0 / requests_per_minute
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.batch_size = batch_size
        self.max_record_bytes = max_record_bytes
        self.max_page_bytes = max_page_bytes
        self.stats = Stats()
        self._sleep = sleep
        self._clock = clock
        self._jitter = jitter
        self._next_start: float | None = None
        self._answered = False  # any HTTP response at all from base_url's host
        # Redirects are followed by hand so each hop is throttled and counted.
        self._http = httpx.Client(
            base_url=self.base_url + "/", transport=transport or _SchemeTransport(), timeout=timeout_s,
            follow_redirects=False,
            headers={"User-Agent": user_agent or default_user_agent(), "Accept": "application/json"},
        )

    @classmethod
    def from_config(cls, cfg: "CtgovConfig", **kw: Any) -> "Client":
        return cls(cfg.base_url, requests_per_minute=cfg.requests_per_minute, timeout_s=cfg.timeout_s,
                   max_retries=cfg.max_retries, batch_size=cfg.batch_size,
                   max_record_bytes=int(cfg.max_record_mb * 1024 * 1024),
                   max_page_bytes=int(cfg.max_page_mb * 1024 * 1024), **kw)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- public calls ---------------------------------------------------------------------------

    def study(self, nct_id: str) -> Fetched:
        """GET /studies/{id}. 404 -> TrialNotFound; an alias is followed to its canonical record."""
        requested = normalize_nct(nct_id)
        data, redirected = self._get_json(f"studies/{requested}", {}, not_found=requested)
        if not is_study(data):
            raise CtgovBadResponse(f"GET /studies/{requested} answered JSON that is not a study record: "
                                   f"{_excerpt(json.dumps(data))}")
        canonical = nct_of(data)
        if canonical != requested and not redirected and requested not in record_aliases(data):
            # Neither a redirect nor a listed alias: the registry answered for another trial.
            raise CtgovBadResponse(f"asked ClinicalTrials.gov for {requested} and got {canonical} instead")
        return Fetched(nct_id=canonical, requested_id=requested, record=data,
                       redirected=canonical != requested)

    def studies(self, ids: Iterable[str], *, updated_since: dt.date | None = None,
                fields: Iterable[str] | None = None) -> Iterator[dict]:
        """Studies for ``ids`` in ``filter.ids`` batches of ``batch_size`` (aliases match too,
        the canonical record comes back); ids the registry does not know are simply absent.
        With ``updated_since``, only studies whose LastUpdatePostDate is on or after it."""
        wanted = list(dict.fromkeys(normalize_nct(i) for i in ids))  # all checked before any request
        extra: dict[str, str] = {}
        if updated_since is not None:
            if not isinstance(updated_since, dt.date):
                raise TypeError("updated_since must be a datetime.date")
            extra["filter.advanced"] = f"AREA[LastUpdatePostDate]RANGE[{updated_since.strftime('%Y-%m-%d')},MAX]"
        if fields:
            extra["fields"] = ",".join(fields)
        return self._batches(wanted, extra)  # not a generator itself: bad input raises at the call

    def _batches(self, wanted: list[str], extra: dict[str, str]) -> Iterator[dict]:
        for start in range(0, len(wanted), self.batch_size):
            chunk = wanted[start:start + self.batch_size]
            params = {"filter.ids": ",".join(chunk), **extra, "pageSize": str(len(chunk))}
            for page in self._pages(params):
                yield from page["studies"]

    def search(self, params: dict[str, str], *, max_results: int) -> SearchResult:
        """GET /studies with the given query/filter parameters, paging until done or until
        ``max_results`` studies were collected (then ``capped`` and a warning)."""
        if max_results < 1:
            raise ValueError("max_results must be >= 1")
        base = {k: str(v) for k, v in params.items() if k not in ("pageSize", "pageToken", "countTotal")}
        base["pageSize"] = str(min(MAX_PAGE_SIZE, max_results))
        base["countTotal"] = "true"  # answered on the first page only; makes the cap warning exact
        records: list[dict] = []
        seen = 0
        total: int | None = None
        more = False
        for page in self._pages(base):
            if total is None and isinstance(page.get("totalCount"), int):
                total = page["totalCount"]
            seen += len(page["studies"])
            room = max_results - len(records)
            records.extend(page["studies"][:room])
            if len(records) >= max_results:
                more = len(page["studies"]) > room or bool(page.get("nextPageToken"))
                break
        capped = more if total is None else (more and total > max_results)
        if capped:
            log.warning("search %s matched %s studies; keeping the first %d (max_results)",
                        _describe_params(params), total if total is not None else "more than max_results",
                        max_results)
        return SearchResult(records=records, total_seen=seen, capped=capped, total_count=total)

    def version(self) -> Version:
        """GET /version: the API version and the timestamp of the registry's last data refresh."""
        data, _ = self._get_json("version", {})
        api, ts = (data.get("apiVersion"), data.get("dataTimestamp")) if isinstance(data, dict) else (None, None)
        if not isinstance(api, str) or not isinstance(ts, str):
            raise CtgovBadResponse(f"GET /version answered an unexpected body: {_excerpt(json.dumps(data))}")
        try:
            # The poller takes the date of the last refresh from it: it must be a timestamp.
            dt.datetime.fromisoformat(ts)
        except ValueError:
            raise CtgovBadResponse(f"GET /version answered a dataTimestamp that is not a date: {ts[:60]!r}") from None
        return Version(api_version=api, data_timestamp=ts)

    # -- the registry's version history (internal, undocumented API) ---------------------------
    # Same throttle, retries and counters as every other call; the caller (trialwatch.history)
    # turns any failure into "history unavailable", because this API may change without notice.

    def history(self, nct_id: str, *, base_url: str | None = None) -> Any:
        """GET {int}/studies/{id}/history: the version list, as JSON (shape checked by the
        caller); a 404 is TrialNotFound, which the caller reads as "no history for this trial"."""
        nct = normalize_nct(nct_id)
        data, _ = self._get_json(f"{base_url or int_base_url(self.base_url)}/studies/{nct}/history", {},
                                 not_found=f"{nct} version history")
        return data

    def history_version(self, nct_id: str, version: int, *, base_url: str | None = None) -> Any:
        """GET {int}/studies/{id}/history/{v}: the record as it stood at version ``v`` (0-based)."""
        nct = normalize_nct(nct_id)
        data, _ = self._get_json(f"{base_url or int_base_url(self.base_url)}/studies/{nct}/history/{int(version)}",
                                 {}, not_found=f"{nct} version {int(version)}")
        return data

    # -- paging ---------------------------------------------------------------------------------

    def _pages(self, params: dict[str, str]) -> Iterator[dict]:
        """Each page of a /studies listing, checked whole before it is handed out. Later pages
        repeat the same parameters plus pageToken, as the API requires."""
        token: str | None = None
        seen_tokens: set[str] = set()
        while True:
            query = dict(params, pageToken=token) if token else params
            page, _ = self._get_json("studies", query)
            _check_page(page)
            yield page
            token = page.get("nextPageToken")
            if not token:
                return
            if token in seen_tokens:  # a server loop would otherwise page forever
                raise CtgovBadResponse(f"GET /studies returned the page token {token!r} twice")
            seen_tokens.add(token)

    # -- one request, retried -----------------------------------------------------------------

    def _get_json(self, path: str, params: dict[str, str], *,
                  not_found: str | None = None) -> tuple[Any, bool]:
        """GET ``path`` until it yields parsed JSON, or raise. Returns (data, redirected)."""
        attempts = self.max_retries + 1
        shown = "/" + path
        quick_retried = False
        for attempt in range(1, attempts + 1):
            try:
                return self._attempt(path, params, not_found)
            except _Retry as r:
                if r.unreachable:
                    if quick_retried or attempt == attempts:
                        raise CtgovUnreachable(f"cannot reach ClinicalTrials.gov at {self.base_url} "
                                               f"(GET {shown}): {r.what}") from None
                    quick_retried = True
                    log.warning("GET %s failed: %s; one quick retry", shown, r.what)
                    self.stats.retries += 1
                    self._sleep(UNREACHABLE_RETRY_S)
                    continue
                if attempt == attempts:
                    cls = CtgovBadResponse if r.garbage else CtgovUnavailable
                    raise cls(f"ClinicalTrials.gov GET {shown} failed {attempts} time(s); last: {r.what}") from None
                wait = r.retry_after if r.retry_after is not None else self._backoff(attempt)
                log.warning("GET %s failed: %s; retrying in %.1f s (attempt %d/%d)",
                            shown, r.what, wait, attempt + 1, attempts)
                self.stats.retries += 1
                self._sleep(wait)
        raise AssertionError("unreachable")

    def _backoff(self, attempt: int) -> float:
        # Exponential with jitter in [0.5, 1] of the step, so parallel pollers do not stampede.
        step = min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2 ** (attempt - 1))
        return step * (0.5 + 0.5 * self._jitter())

    def _attempt(self, path: str, params: dict[str, str], not_found: str | None) -> tuple[Any, bool]:
        url: str | httpx.URL = path
        query: dict[str, str] | None = params
        redirected = False
        # A listing page may hold many records; anything else is one record (or less).
        cap = self.max_page_bytes if path == "studies" else self.max_record_bytes
        for _hop in range(MAX_REDIRECTS + 1):
            resp, body = self._send(url, query, cap)
            if resp.status_code in (301, 302, 303, 307, 308):
                location = resp.headers.get("Location")
                if not location:
                    raise CtgovBadResponse(f"GET /{path}: HTTP {resp.status_code} without a Location header")
                url, query, redirected = resp.url.join(location), None, True
                continue
            return self._read(resp, body, path, not_found), redirected
        raise CtgovBadResponse(f"GET /{path}: more than {MAX_REDIRECTS} redirects")

    def _send(self, url: str | httpx.URL, params: dict[str, str] | None,
              cap: int) -> tuple[httpx.Response, bytes]:
        self._throttle()
        self.stats.requests += 1
        try:
            resp, body = self._get_capped(url, params, cap)
        except httpx.TimeoutException as e:
            raise _Retry(f"timed out after {self.timeout_s:g} s ({type(e).__name__})") from None
        except httpx.TransportError as e:  # refused, reset, dropped without a response, ...
            unreachable = _unreachable(e, self._answered)
            if unreachable:
                self._next_start = None  # nothing reached the server: no throttle slot was used
            raise _Retry(f"connection error: {type(e).__name__}: {e}", unreachable=unreachable) from None
        self._answered = True
        self.stats.bytes_received += len(body)
        return resp, body

    def _get_capped(self, url: str | httpx.URL, params: dict[str, str] | None,
                    cap: int) -> tuple[httpx.Response, bytes]:
        """GET, reading the body in chunks: one larger than ``cap`` bytes (decoded) is refused
        as soon as it passes the cap, never read whole into memory. Not retried: the same
        request would get the same body."""
        with self._http.stream("GET", url, params=params) as resp:
            declared = resp.headers.get("Content-Length", "")
            if declared.isdigit() and int(declared) > cap and resp.headers.get("Content-Encoding") is None:
                raise CtgovBadResponse(self._too_large(resp, f"{int(declared):,} bytes announced", cap))
            chunks: list[bytes] = []
            size = 0
            for chunk in resp.iter_bytes():
                size += len(chunk)
                if size > cap:
                    self.stats.bytes_received += size
                    raise CtgovBadResponse(self._too_large(resp, f"more than {cap:,} bytes", cap))
                chunks.append(chunk)
        return resp, b"".join(chunks)

    @staticmethod
    def _too_large(resp: httpx.Response, what: str, cap: int) -> str:
        key = "max_page_mb" if resp.url.path.rstrip("/").endswith("/studies") else "max_record_mb"
        return (f"ClinicalTrials.gov GET {resp.url.path} answered a body too large to read ({what}; the cap "
                f"is {cap / 1024 / 1024:g} MB, ctgov.{key})")

    def _throttle(self) -> None:
        # A minimum interval between request starts: the simplest limit that is never exceeded.
        now = self._clock()
        if self._next_start is not None and now < self._next_start:
            self._sleep(self._next_start - now)
            now = self._next_start
        self._next_start = now + self.min_interval_s

    def _read(self, resp: httpx.Response, body: bytes, path: str, not_found: str | None) -> Any:
        status = resp.status_code
        if status == 200:
            ctype = resp.headers.get("Content-Type", "")
            if "html" in ctype.lower():
                raise _Retry(f"HTTP 200 with an HTML page instead of JSON: {_excerpt(body)}", garbage=True)
            try:
                return json.loads(body)
            except ValueError as e:
                raise _Retry(f"HTTP 200 with a body that is not JSON ({e}; {len(body)} bytes): "
                             f"{_excerpt(body)}", garbage=True) from None
        if status == 429 or status >= 500 or status == 408:
            retry_after = parse_retry_after(resp.headers.get("Retry-After"), date_header=resp.headers.get("Date"))
            raise _Retry(f"HTTP {status}: {_excerpt(body) or resp.reason_phrase}", retry_after=retry_after)
        text = _excerpt(body)
        if status == 404 and not_found:
            raise TrialNotFound(f"ClinicalTrials.gov has no trial {not_found} (HTTP 404)"
                                + (f": {text}" if text else ""))
        if status == 400:
            raise CtgovBadResponse(f"ClinicalTrials.gov refused GET /{path} (HTTP 400): {text or 'no message'}",
                                   hint="The request parameters were refused; check the search terms and "
                                        "filters in config.yaml (e.g. phase is filter.advanced, not filter.phase).")
        if status == 403:
            raise CtgovUnavailable(f"ClinicalTrials.gov refused access to GET /{path} (HTTP 403): {text}",
                                   hint="The CT.gov edge blocks some clients; do not set a User-Agent that "
                                        "imitates another HTTP client, and check proxies in between.")
        raise CtgovBadResponse(f"ClinicalTrials.gov GET /{path}: unexpected HTTP {status}: {text}")


def int_base_url(base_url: str) -> str:
    """The internal API's base beside the v2 one: ``…/api/v2`` -> ``…/api/int``."""
    base = base_url.rstrip("/")
    if base.endswith("/api/v2"):
        return base[: -len("/api/v2")] + "/api/int"
    return str(httpx.URL(base).join("/api/int"))  # same host; config `history.url` overrides


def _check_page(page: Any) -> None:
    """A /studies page is ``{"studies": [study, ...], ...}``; anything else is refused whole."""
    if not isinstance(page, dict) or not isinstance(page.get("studies"), list):
        raise CtgovBadResponse(f"GET /studies answered JSON without a 'studies' list: {_excerpt(json.dumps(page))}")
    for i, s in enumerate(page["studies"]):
        if not is_study(s):
            raise CtgovBadResponse(f"GET /studies: element {i} of 'studies' is not a study record: "
                                   f"{_excerpt(json.dumps(s))}")
    token = page.get("nextPageToken")
    if token is not None and not isinstance(token, str):
        raise CtgovBadResponse(f"GET /studies: nextPageToken is not a string: {token!r}")


def record_aliases(record: dict) -> set[str]:
    """The NCT numbers a record lists as its aliases (``nctIdAliases``), normalised."""
    out = set()
    for a in record.get("protocolSection", {}).get("identificationModule", {}).get("nctIdAliases") or []:
        try:
            out.add(normalize_nct(a))
        except InvalidNctId:  # an unreadable alias is not our concern here
            pass
    return out


def _describe_params(params: dict[str, str]) -> str:
    return " ".join(f"{k}={v!r}" for k, v in params.items()) or "(all studies)"


__all__ = ["Client", "Fetched", "Version", "SearchResult", "Stats", "default_user_agent", "parse_retry_after",
           "record_aliases"]

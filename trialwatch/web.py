"""``trialwatch serve``: a small web app over the same database.

Status pages for physicians (watched trials, one trial before a referral), the double opt-in
subscription flow (subscribe -> confirmation mail -> confirm; manage; one-click unsubscribe; its
handlers are ``web_forms.FormPages``, mixed into ``Web``),
Atom feeds and ``/healthz``. Thin wiring: the store holds the data, ``notify`` sends mail,
``tokens`` signs links. Nothing is built at import time: ``create_app(config)`` builds the app.

Safety, in one place each:
* every POST form carries a signed double-submit CSRF token (``_csrf_ok``); the one exemption is
  the RFC 8058 one-click unsubscribe POST, which a mail client sends without any page, and
  which is authorised by its signed link instead;
* Jinja2 autoescape is always on: record text from ClinicalTrials.gov is untrusted;
* ``_SecurityHeaders`` puts CSP (no inline script or style), nosniff, no-referrer (tokens live in
  URLs) and DENY framing on every response, errors and static files included;
* redirects are only ever to relative paths: a normalised NCT number, or a route's own path
  without its trailing slash (never a URL built from the Host header).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import logging
import re
import secrets
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Awaitable, Callable

from . import record as rec
from . import untrusted
from .config import SEVERITIES, Config
from .errors import InvalidNctId, UsageError
from .web_forms import DIGESTS, MAX_CONFIRMS_PER_EMAIL, MAX_SUBSCRIBES_PER_CLIENT, FormPages  # noqa: F401  (re-exported)

if TYPE_CHECKING:
    import socket

    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response

    from .store import Store

log = logging.getLogger("trialwatch.web")
HERE = Path(__file__).resolve().parent
CSRF_COOKIE = "tw_csrf"
CSRF_FIELD = "csrf_token"
HEALTH_TIMEOUT_S = 2.0  # /healthz answers within this, database or not
PER_PAGE = 50  # trials per page of the home page

SECURITY_HEADERS = [
    (b"content-security-policy",
     b"default-src 'self'; style-src 'self'; script-src 'none'; img-src 'self'; "
     b"object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
]


class _SecurityHeaders:
    """Pure ASGI middleware: the security headers on every response, whatever produced it."""

    def __init__(self, app: Callable) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: dict) -> None:
            if message["type"] == "http.response.start":
                names = {k.lower() for k, _ in message.get("headers", [])}
                message["headers"] = list(message.get("headers", [])) + [
                    h for h in SECURITY_HEADERS if h[0] not in names]
            await send(message)

        await self.app(scope, receive, send_with_headers)


class Web(FormPages):
    """The routes, over one config and one (lazily opened) store; the subscriber forms
    (subscribe, confirm, manage, unsubscribe) are ``web_forms.FormPages``."""

    def __init__(self, config: Config, store: "Store | None") -> None:
        from jinja2 import Environment, FileSystemLoader

        self.config = config
        self._store = store
        self._store_lock = threading.Lock()
        self._probes = None  # the /healthz probe's threads, made on first use
        # The day a page's warnings are judged on (e.g. "status last verified 13 months ago"):
        # part of every cached page's key and validator, so a page cannot outlive its day.
        self.today = dt.date.today
        # Fails fast with a ConfigError naming the variable: every link we mail is signed.
        self.secret = config.secret_key()
        self.secure_cookies = config.email.public_url.startswith("https://")
        self.env = Environment(loader=FileSystemLoader(HERE / "templates" / "web"), autoescape=True,
                               trim_blocks=True, lstrip_blocks=True)
        self.env.filters.update(words=rec.words, when=_when, day=_day, plain=_plain,
                                safe_email=untrusted.safe_email, tel_href=untrusted.tel_href,
                                followed_because=_followed_because, place_name=_place_name)
        self.env.globals.update(severities=SEVERITIES, digests=DIGESTS, ctgov_url=rec.url)
        from starlette.concurrency import run_in_threadpool

        from . import __version__
        from .pagecache import PageCache, StampGate, fingerprint

        # What changes a page without a database write: this code, its templates, the config.
        self.pages = PageCache(fingerprint(__version__, config.trials, [sc.model_dump() for sc in config.searches],
                                           [x.trials for x in config.subscribers],
                                           config.email.public_url, template_dir=HERE / "templates" / "web"))
        self.stamps = StampGate(lambda: self.store.page_stamp(), run_in_threadpool)

    # -- plumbing -------------------------------------------------------------------------
    @property
    def store(self) -> "Store":
        # Opened on first use, not at start-up, so /healthz can answer 503 while the database
        # is unreachable and recover once it is back.
        # Requests run in worker threads: one lock, or the first concurrent requests would each
        # open (and all but one leak) an engine.
        if self._store is None:
            with self._store_lock:
                if self._store is None:
                    from .store import open_store

                    self._store = open_store(self.config.database_url)
        return self._store

    def render(self, request: "Request", template: str, status: int = 200, **ctx: Any) -> "Response":
        from starlette.responses import HTMLResponse

        nonce = request.cookies.get(CSRF_COOKIE) or ""
        fresh = len(nonce) < 32
        if fresh:
            nonce = secrets.token_urlsafe(32)
        html = self.env.get_template(template).render(
            csrf_token=self._csrf_token(nonce), **ctx)
        resp = HTMLResponse(html, status_code=status, headers={"cache-control": "no-store"})
        if fresh:
            resp.set_cookie(CSRF_COOKIE, nonce, httponly=True, samesite="lax",
                            secure=self.secure_cookies, path="/")
        return resp

    def render_public(self, template: str, **ctx: Any) -> bytes:
        """A page without forms, the same for every visitor: no CSRF token, no cookie, so
        it can be cached and shared (``cached``)."""
        return self.env.get_template(template).render(csrf_token="", **ctx).encode()

    def cached(self, fn: Callable, key: Callable[["Request"], tuple], *,
               media_type: str = "text/html; charset=utf-8", daily: bool = False) -> Callable:
        """A public page or feed, as an endpoint: validators from the store's page stamp (one
        read shared by the requests waiting for it, ``pagecache.StampGate``), 304 when the
        client's copy still holds, else the body from the cache. Only a miss runs
        ``fn(request)`` in a worker thread (bytes; a Response, such as a redirect or a 404, is
        passed through uncached and without validators): a hit never leaves the event loop.
        ``daily``: the page is judged on the day (a trial page's warnings), so the day is part of
        its key and validators and its Last-Modified is never before that day began."""
        from starlette.concurrency import run_in_threadpool
        from starlette.responses import Response

        from .pagecache import not_modified, validator_headers

        async def answer(request: "Request") -> "Response":
            stamp = await self.stamps.get()
            # A page judged on the day (``daily``) is a new page each day, write or no write.
            today = self.today() if daily else None
            k = (*key(request), today.isoformat()) if today else key(request)
            etag = self.pages.etag(k, stamp)
            modified = self.pages.last_modified(stamp, since=today)
            headers = validator_headers(etag, modified)
            if not_modified(request.headers, etag, modified):
                return Response(status_code=304, headers=headers)
            body = self.pages.get((k, stamp.key))
            if body is None:
                passed: list = []

                def build() -> bytes | None:
                    out = fn(request)
                    if isinstance(out, bytes):
                        return out
                    passed.append(out)
                    return None

                body = await run_in_threadpool(self.pages.body, (k, stamp.key), build)
                if body is None:
                    return passed[0]
            return Response(body, media_type=media_type, headers=headers)

        async def endpoint(request: "Request") -> "Response":
            return await self.guarded(request, answer(request))

        return endpoint

    def message(self, request: "Request", status: int, title: str, text: str) -> "Response":
        return self.render(request, "message.html", status=status, title=title, text=text)

    def _csrf_token(self, nonce: str) -> str:
        return hmac.new(self.secret.encode(), b"csrf|" + nonce.encode(), hashlib.sha256).hexdigest()

    def _csrf_ok(self, request: "Request", form: Any) -> bool:
        """Signed double submit: the form field must be our signature of the cookie's nonce, so
        a cross-site form (which can send the cookie but cannot read it) cannot forge it."""
        nonce = request.cookies.get(CSRF_COOKIE, "")
        sent = form.get(CSRF_FIELD, "") if form is not None else ""
        # Compared as bytes: compare_digest raises TypeError on a str with non-ASCII characters,
        # which a forged form can send.
        return bool(nonce) and isinstance(sent, str) and hmac.compare_digest(
            sent.encode(), self._csrf_token(nonce).encode())

    def page(self, fn: Callable, *, csrf: bool = True) -> Callable:
        """An endpoint: read the form (POST), check CSRF, then run ``fn`` in a worker thread
        (the store and the mailer are synchronous)."""
        from starlette.concurrency import run_in_threadpool

        async def endpoint(request: "Request") -> "Response":
            form = None
            if request.method == "POST":
                form = await request.form(max_files=0, max_fields=2000)
                if csrf and not self._csrf_ok(request, form):
                    return self.message(request, 403, "This form has expired",
                                        "Please go back, reload the page and submit the form again.")
            return await self.guarded(request, run_in_threadpool(fn, request, form))

        return endpoint

    async def guarded(self, request: "Request", work: Awaitable["Response"]) -> "Response":
        """``work``'s response, or the 503 / 500 page when it fails."""
        from .store import DATABASE_ERRORS

        try:
            return await work
        except DATABASE_ERRORS as e:
            log.error("database unavailable: %s", e)
            return self.message(request, 503, "Temporarily unavailable",
                                "The database cannot be reached right now. Please try again in a few minutes.")
        except Exception:
            # Answered here, inside our middleware, so even this page has the security headers.
            log.exception("error in %s %s", request.method, request.url.path)
            return self.message(request, 500, "Something went wrong",
                                "This page could not be shown. The error was logged; please try again later.")

    # -- what is watched ------------------------------------------------------------------
    def watched_ids(self) -> list[str]:
        """What the poller follows, no more: a page must not list a trial nobody polls."""
        return self.store.watched_ids(self.config)

    # -- status pages ---------------------------------------------------------------------
    def index(self, request: "Request") -> bytes:
        """The watched trials, PER_PAGE a page (``?page=N``), filtered by ``?q=`` (part of an
        NCT number, or words of the title)."""
        page, q = _index_params(request)
        data = self.store.index_page(self.config, page=page, per_page=PER_PAGE, q=q)
        last_poll = data.last_poll
        trials = [{"nct_id": r.nct_id, "row": r if r.found else None,
                   "missed_last_poll": _missed(r, last_poll)} for r in data.rows]
        searches = [{"cfg": sc, "members": data.search_members.get(sc.name, 0),
                     "last_change": data.search_last_change.get(sc.name)} for sc in self.config.searches]
        return self.render_public("index.html", trials=trials, searches=searches, last_poll=last_poll,
                                  page=data.page, pages=data.pages, total=data.total, q=q)

    def trial(self, request: "Request") -> "bytes | Response":
        raw = request.path_params["nct"]
        try:
            nct = self.store.resolve_alias(rec.normalize_nct(raw))
        except InvalidNctId:
            return self.not_found(request)
        if nct != raw:
            # Canonical path, relative and built from digits only: never an open redirect.
            from starlette.responses import RedirectResponse

            return RedirectResponse(f"/trials/{nct}", status_code=301)
        row = self.store.trial(nct)
        if row is None and nct not in self.config.all_trials():
            return self.not_found(request)
        latest = self.store.latest_record(nct)
        snaps, changes = self.store.history(nct)
        from . import trial_page
        from .history import timeline

        view = None
        if latest:
            view = trial_page.trial_view(latest, request.query_params, self.today(), path=f"/trials/{nct}",
                                         problems=trial_page.problems_of(row.problems if row else None))
        return self.render_public("trial.html", nct=nct, row=row, v=view, summary=view.summary if view else None,
                                  watched=nct in self.watched_ids(),
                                  followed_because=trial_page.followed_because(row.linked_from if row else None),
                                  changes=trial_page.ordered_changes(changes), status_runs=_status_runs(snaps, row),
                                  full_sweep_days=self.config.full_sweep_days,
                                  timeline=timeline(self.store, nct),
                                  alternatives=self.alternatives_section(request, nct, latest))

    def alternatives_section(self, request: "Request", nct: str, latest: dict | None) -> dict | None:
        """The "Recruiting alternatives" section of a trial that does not recruit: the poll's
        stored answer ranked by ``?near=`` locally (no request to the registry), or None."""
        from .alternatives_cache import ON_PAGE, shown
        from .errors import PlaceError
        from .places import resolve
        from .store import NOT_RECRUITING

        status = rec.get(latest, "protocolSection.statusModule.overallStatus") if latest else None
        if status not in NOT_RECRUITING:
            return None
        near = (request.query_params.get("near") or "").strip()[:200]
        place, place_error = None, None
        if near:
            try:
                place = resolve(near)
            except PlaceError as e:
                place_error = e.message
        row = self.store.alternatives_of([nct]).get(nct)
        return {"near": near, "place_error": place_error,
                "shown": shown(nct, row, place, ON_PAGE, own_ea=rec.get(
                    latest, "protocolSection.statusModule.expandedAccessInfo"))}

    def search(self, request: "Request") -> "bytes | Response":
        """A saved search: the trials it matches now, and who joined or left it, newest first."""
        name = request.path_params["name"]
        sc = next((x for x in self.config.searches if x.name == name), None)
        if sc is None:
            return self.not_found(request)
        data = self.store.search_page_data(name)
        return self.render_public("search.html", sc=sc,
                                  trials=[{"nct_id": i, "row": data.trials.get(i)} for i in data.nct_ids],
                                  events=data.events)

    def not_found(self, request: "Request", exc: Exception | None = None) -> "Response":
        return self.message(request, 404, "Not found",
                            "There is no such page here. Trials are listed on the home page.")

    # -- feeds ------------------------------------------------------------------------------
    def trial_feed(self, request: "Request") -> "bytes | Response":
        from . import feeds

        try:
            nct = self.store.resolve_alias(rec.normalize_nct(request.path_params["nct"]))
        except InvalidNctId:
            return self.not_found(request)
        if self.store.trial(nct) is None and nct not in self.config.all_trials():
            return self.not_found(request)
        return feeds.trial_feed(self.store, self.config, nct)

    def search_feed(self, request: "Request") -> "bytes | Response":
        from . import feeds

        name = request.path_params["name"]
        if name not in {sc.name for sc in self.config.searches}:
            return self.not_found(request)
        return feeds.search_feed(self.store, self.config, name)

    # -- health -----------------------------------------------------------------------------
    def healthz(self, request: "Request", form: Any) -> "Response":
        """The database's state within HEALTH_TIMEOUT_S, whatever the database does: a probe
        that does not finish in time (a server that accepts connections and never answers)
        is a 503, not a hung request."""
        from concurrent.futures import TimeoutError as ProbeTimeout

        from starlette.responses import JSONResponse

        from .store import DATABASE_ERRORS

        no_store = {"cache-control": "no-store"}
        try:
            last, backlog = self._probe_pool().submit(self._health_probe).result(timeout=HEALTH_TIMEOUT_S)
        except ProbeTimeout:
            log.error("health: the database did not answer within %g s", HEALTH_TIMEOUT_S)
            return JSONResponse({"database": "not answering", "last_complete_poll": None, "outbox_backlog": None},
                                status_code=503, headers=no_store)
        except DATABASE_ERRORS:
            return JSONResponse({"database": "unreachable", "last_complete_poll": None, "outbox_backlog": None},
                                status_code=503, headers=no_store)
        return JSONResponse({"database": "ok", "last_complete_poll": _iso(last), "outbox_backlog": backlog},
                            headers=no_store)

    def _probe_pool(self):  # noqa: ANN202
        # Two threads at most: probes stuck on a silent database queue up and time out here
        # rather than take every worker thread of the server.
        if self._probes is None:
            from concurrent.futures import ThreadPoolExecutor

            with self._store_lock:
                if self._probes is None:
                    self._probes = ThreadPoolExecutor(max_workers=2, thread_name_prefix="trialwatch-health")
        return self._probes

    def _health_probe(self) -> tuple[Any, Any]:
        return self.store.health()


# -- helpers ----------------------------------------------------------------------------------

def _followed_because(linked_from: str | None) -> str | None:
    from .trial_page import followed_because

    return followed_because(linked_from)


def _place_name(lat: float, lon: float) -> str:
    """Coordinates as a reader knows them: "Rochester, MN, United States (44.02, -92.46)"."""
    from .places import nearest_city

    name = nearest_city(float(lat), float(lon))
    return f"{name} ({lat}, {lon})" if name else f"{lat}, {lon}"


def _missed(trial: Any, last_poll: Any) -> bool:
    """True when the latest poll finished without getting to this trial. (A running poll has
    not got there yet; a skipped one, the registry had nothing new, fetches nothing.)"""
    return bool(trial and trial.last_checked_at and last_poll and last_poll.finished_at
                and not last_poll.skipped and trial.last_checked_at < last_poll.started_at)


def _status_runs(snaps: list, trial: Any) -> list[dict]:
    """Consecutive snapshots with the same overall status, most recent first."""
    runs: list[dict] = []
    for snap in snaps:
        if runs and runs[-1]["status"] == snap.overall_status:
            continue
        if runs:
            runs[-1]["until"] = snap.fetched_at
        runs.append({"status": snap.overall_status, "since": snap.fetched_at, "until": None})
    for run in runs:
        end = run["until"] or (trial.last_checked_at if trial and trial.last_checked_at else run["since"])
        run["days"] = max((end - run["since"]).days, 0)
    return list(reversed(runs))


ATOM = "application/atom+xml; charset=utf-8"


def _path(request: "Request") -> tuple:
    return (request.url.path,)


def _path_and_query(request: "Request") -> tuple:
    # A trial page varies with its query (``?near=`` ranks sites and alternatives); the cache
    # is bounded, so odd queries cost an entry, never memory without end.
    return (request.url.path, request.url.query[:500])


def _index_params(request: "Request") -> tuple[int, str]:
    """``?page=`` (1 when missing or not a number) and ``?q=`` (trimmed, at most 200 characters)."""
    raw = request.query_params.get("page", "1")
    page = int(raw) if raw.isascii() and raw.isdigit() and len(raw) < 7 else 1
    return max(page, 1), request.query_params.get("q", "").strip()[:200]


def _index_key(request: "Request") -> tuple:
    return ("/",) + _index_params(request)


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() + "Z" if value else None


def _when(value: dt.datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC") if value else "never"


_MD_ESCAPE = re.compile(r"\\([\\`*_{}\[\]()#+\-.!<>|~])")


def _plain(text: str | None) -> str:
    """Registry text is Markdown; drop its backslash escapes (``\\>`` -> ``>``). The result is
    still escaped by autoescape like any other text."""
    return _MD_ESCAPE.sub(r"\1", text or "")


def _day(value: dt.datetime | None) -> str:
    return value.strftime("%Y-%m-%d") if value else "—"


# -- the app ----------------------------------------------------------------------------------

def create_app(config: Config, store: "Store | None" = None) -> "Starlette":
    """The ASGI app. ``store`` defaults to ``open_store(config.database_url)``, opened on first use."""
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.routing import Mount, Route
    from starlette.staticfiles import StaticFiles

    web = Web(config, store)
    get, both = ["GET"], ["GET", "POST"]
    routes = [
        # Public pages and feeds: conditional GET and a shared cache (pagecache); no forms.
        Route("/", web.cached(web.index, _index_key), methods=get),
        Route("/trials/{nct}", web.cached(web.trial, _path_and_query, daily=True), methods=get),
        Route("/trials/{nct}/feed.atom", web.cached(web.trial_feed, _path, media_type=ATOM), methods=get),
        Route("/searches/{name}", web.cached(web.search, _path), methods=get),
        Route("/searches/{name}/feed.atom", web.cached(web.search_feed, _path, media_type=ATOM), methods=get),
        Route("/subscribe", web.page(web.subscribe), methods=both),
        Route("/confirm", web.page(web.confirm), methods=both),
        Route("/manage", web.page(web.manage), methods=both),
        # RFC 8058: the mail client POSTs "List-Unsubscribe=One-Click" with no page and no
        # CSRF token; the signed, purpose-bound token in the URL is the authority.
        Route("/unsubscribe", web.page(web.unsubscribe, csrf=False), methods=both),
        Route("/healthz", web.page(web.healthz), methods=get),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]

    async def http_error(request: "Request", exc: HTTPException) -> "Response":
        if exc.status_code == 404:
            return _without_slash(request, routes) or web.not_found(request)
        resp = web.message(request, exc.status_code, "Request not allowed", str(exc.detail))
        # e.g. the Allow header a 405 must carry (RFC 9110 15.5.6).
        resp.headers.update(exc.headers or {})
        return resp

    class App(Starlette):
        def build_middleware_stack(self) -> Callable:
            # Outside Starlette's ServerErrorMiddleware, so even its bare 500 carries the headers.
            return _SecurityHeaders(super().build_middleware_stack())

    app = App(routes=routes, exception_handlers={HTTPException: http_error})
    # Starlette's own slash redirect builds an absolute URL from the Host header
    # (``Host: evil.example`` -> ``Location: http://evil.example/...``); ``_without_slash`` does it
    # with a relative path instead.
    app.router.redirect_slashes = False
    app.state.web = web
    return app


def _without_slash(request: "Request", routes: list) -> "Response | None":
    """``/trials/NCT03268603/`` -> 307 to ``/trials/NCT03268603``, when that is a page.

    The Location is a path on this same site, never built from the Host header; one leading
    slash and percent-encoding keep it from reading as ``//other.host`` (or ``/\\other.host``).
    """
    from urllib.parse import quote

    from starlette.responses import RedirectResponse
    from starlette.routing import Match

    path = request.url.path
    if not path.endswith("/") or path.strip("/") == "":
        return None
    target = "/" + path.strip("/")
    scope = {**request.scope, "path": target}
    if not any(r.matches(scope)[0] is Match.FULL for r in routes):
        return None
    location = quote(target, safe="/-._~")
    if request.url.query:
        location += "?" + request.url.query
    return RedirectResponse(location, status_code=307)


def listen_socket(host: str, port: int) -> "socket.socket":
    """A listening TCP socket whose ``proto`` says TCP. ``socket.create_server`` leaves it 0,
    and asyncio turns Nagle off (TCP_NODELAY) only on accepted sockets whose proto is TCP: with
    it on, a response written in two parts (headers, then body) waited for the client's delayed
    ACK, about 40 ms, and the server answered ~450 requests a second instead of ~1,800."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.create_server((host, port), family=family)
    return socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP, fileno=sock.detach())


def serve(config: Config, host: str = "127.0.0.1", port: int = 8080, store: "Store | None" = None) -> None:
    """Run the app with uvicorn until interrupted. Behind a reverse proxy on the same machine,
    X-Forwarded-For from 127.0.0.1 is trusted (uvicorn's default; $FORWARDED_ALLOW_IPS widens
    it), so per-client rate limits see the real client rather than the proxy."""
    import uvicorn

    # Bind first: uvicorn reports a busy port by logging and exiting, which says nothing typed.
    try:
        sock = listen_socket(host, port)
    except OSError as e:
        import os

        raise UsageError(f"cannot listen on {host}:{port}: {os.strerror(e.errno) if e.errno else e}",
                         hint="Another program uses that port: pick another with --port, or stop it.") from None
    server = uvicorn.Server(uvicorn.Config(create_app(config, store), host=host, port=port, log_level="info",
                                           server_header=False))
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()

"""The ``trialwatch`` command: thin wiring over the library.

Results go to stdout (with ``--json``, only the JSON); logs and progress go to stderr. Every
error is a ``TrialwatchError`` whose exit code is documented in ``trialwatch --help`` and in
the README's table (``trialwatch.errors.EXIT_CODES``; tests/test_exit_codes.py checks all three).

Heavy modules (SQLAlchemy, httpx, Jinja2, Starlette) are imported inside the commands, so
``trialwatch --help`` starts fast.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import TYPE_CHECKING, Any

import click

from . import __version__
from .errors import MailError, TrialwatchError, UsageError

if TYPE_CHECKING:
    from .config import Config
    from .store import Store

log = logging.getLogger("trialwatch")

EXIT_CODES = """\b
Exit codes:
  0  ok
  1  unexpected error (a bug: run with -vv for a traceback)
  2  bad usage or input (bad NCT number, invalid config.yaml, bad link, port in use)
  3  trial not found on ClinicalTrials.gov
  4  ClinicalTrials.gov unreachable or answering garbage (nothing stored); poll did not finish
  5  database problem (cannot open, not SQLite, needs 'trialwatch db upgrade', poll lock held or lost)
  6  mail could not be delivered (it stays queued, or failed for good)"""


class Context:
    """What every command shares: the config path, loaded once on first use."""

    def __init__(self, config_path: str | None, verbose: int) -> None:
        self.config_path = config_path
        self.verbose = verbose
        self._config: Config | None = None
        self._store: Store | None = None

    @property
    def config(self) -> "Config":
        if self._config is None:
            from .config import load

            self._config = load(self.config_path)
        return self._config

    @property
    def store(self) -> "Store":
        if self._store is None:
            from .store import open_store

            self._store = open_store(self.config.database_url)
        return self._store

    def sync_subscribers(self) -> None:
        """Config subscribers into the database, so changes stored now reach them."""
        if self.config.subscribers:
            from .notify import sync_subscribers

            sync_subscribers(self.store, self.config)

    def close(self) -> None:
        if self._store is not None:
            self._store.close()


pass_ctx = click.make_pass_decorator(Context)


@click.group(epilog=EXIT_CODES, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", metavar="PATH", envvar="TRIALWATCH_CONFIG",
              help="config.yaml to use (default: $TRIALWATCH_CONFIG, else ./config.yaml, else built-in defaults).")
@click.option("-v", "--verbose", count=True, help="More log output on stderr (-vv for debug).")
@click.version_option(__version__, prog_name="trialwatch")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None, verbose: int) -> None:
    """Watch ClinicalTrials.gov records and tell subscribed physicians what changed."""
    # trialwatch's own log at INFO (-v: DEBUG); libraries (httpx logs every request at INFO)
    # only at WARNING unless -vv.
    logging.basicConfig(level=logging.DEBUG if verbose >= 2 else logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("trialwatch").setLevel(logging.DEBUG if verbose else logging.INFO)
    ctx.obj = Context(config_path, verbose)
    ctx.call_on_close(ctx.obj.close)


def _normalize_all(ids: tuple[str, ...]) -> list[str]:
    from .record import normalize_nct

    return list(dict.fromkeys(normalize_nct(raw) for raw in ids))


def _emit_json(obj: Any) -> None:
    click.echo(json.dumps(obj, ensure_ascii=False, default=str))


# -- check ------------------------------------------------------------------------------------

@cli.command()
@click.argument("nct_ids", nargs=-1, required=False, metavar="NCT_ID...")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per trial, one per line.")
@click.option("--near", metavar="PLACE",
              help="Rank open sites by distance from PLACE: lat,lon, a US ZIP code, or a city "
                   "('Rochester, MN', 'Lyon, France').")
@click.option("--limit", type=click.IntRange(min=1), default=None, metavar="N",
              help="How many nearest open sites to list with --near (default 5).")
@click.option("--eligibility", "show_criteria", is_flag=True,
              help="List every inclusion and exclusion criterion.")
@pass_ctx
def check(c: Context, nct_ids: tuple[str, ...], as_json: bool, near: str | None = None,
          limit: int | None = None, show_criteria: bool = False) -> None:
    """Fetch trials now, store any new version, and say what changed since the last check.

    With no NCT_ID, checks every trial in config.yaml. Each object printed by --json has:
    nct_id, title, status, status_words, why_stopped, enrollment {count, type}, phases,
    sponsor, url, first_snapshot, changed, previous_check, changes [{field, label, old, new,
    severity, detail, site}], most severe first; warnings [{kind, text}]; eligibility
    {inclusion, exclusion, other, sex, minimum_age, maximum_age, healthy_volunteers}; and with
    --near, nearest_sites [{facility, city, state, country, status, distance_km,
    distance_miles, contacts}].
    """
    from .check import check_trials

    ids = _normalize_all(nct_ids) if nct_ids else c.config.all_trials()
    if not ids:
        raise UsageError("no trial to check", hint="Name one, e.g. 'trialwatch check NCT03268603', "
                         "or list them under 'trials' in config.yaml.")
    if limit is not None and near is None:
        raise UsageError("--limit counts the nearest open sites, so it needs --near PLACE",
                         hint="e.g. 'trialwatch check NCT04267848 --near 55905 --limit 10'.")
    place = None
    if near is not None:  # before any request: a place that does not resolve costs nothing
        from .places import resolve

        place = resolve(near)
    c.sync_subscribers()
    results = check_trials(c.store, c.config, ids, near=place, limit=limit or 5)
    failures: list[TrialwatchError] = []
    for res in results:
        if res.error is not None:
            failures.append(res.error)
            if len(results) > 1:  # a lone trial's error is reported once, below
                click.echo(f"error: {res.nct_id}: {res.error.message}", err=True)
            continue
        for problem in res.problems:
            click.echo(f"warning: {res.nct_id}: {problem}", err=True)
        if as_json:
            _emit_json(res.to_dict())
        else:
            from .render_text import check_report

            click.echo(check_report(res, criteria=show_criteria))
    if failures:
        # The worst failure decides the exit code: not found (3) < unreachable (4).
        raise max(failures, key=lambda e: e.exit_code)


# -- the watch list -----------------------------------------------------------------------------

@cli.command()
@click.argument("nct_ids", nargs=-1, metavar="[NCT_ID...]")
@pass_ctx
def watch(c: Context, nct_ids: tuple[str, ...]) -> None:
    """Add trials to the watch list (checked now, then by every poll); with none, list what the
    poll follows and why. config.yaml's `trials` is the other way to watch a trial."""
    from sqlalchemy import update

    from .check import check_trials
    from .poller import watch_reasons
    from .store import Trial

    if not nct_ids:
        for nct, reasons in watch_reasons(c.store, c.config).items():
            click.echo(f"{nct}  {', '.join(reasons)}")
        return
    ids = _normalize_all(nct_ids)
    c.sync_subscribers()
    results = check_trials(c.store, c.config, ids)
    added = [r.nct_id for r in results if r.error is None]
    if added:
        with c.store.session() as s, s.begin():
            s.execute(update(Trial).where(Trial.nct_id.in_(added)).values(watched=True))
    for r in results:
        if r.error is None:
            from .untrusted import one_line  # record text: no escape sequences to the terminal

            click.echo(f"{r.nct_id}: watched ({one_line(r.summary.status_words)}); every poll now checks it.")
        else:
            click.echo(f"error: {r.nct_id}: {r.error.message}", err=True)
    failures = [r.error for r in results if r.error is not None]
    if failures:
        raise max(failures, key=lambda e: e.exit_code)


@cli.command()
@click.argument("nct_ids", nargs=-1, required=True, metavar="NCT_ID...")
@pass_ctx
def unwatch(c: Context, nct_ids: tuple[str, ...]) -> None:
    """Take trials added with `trialwatch watch` off the watch list (their history is kept)."""
    from sqlalchemy import update

    from .poller import watch_reasons
    from .store import Trial

    ids = [c.store.resolve_alias(n) for n in _normalize_all(nct_ids)]
    with c.store.session() as s, s.begin():
        s.execute(update(Trial).where(Trial.nct_id.in_(ids)).values(watched=False))
    reasons = watch_reasons(c.store, c.config)
    for nct in ids:
        still = [r for r in reasons.get(nct, []) if r != "trialwatch watch"]
        if still:
            click.echo(f"{nct}: no longer on the `trialwatch watch` list, but still followed: {', '.join(still)}")
        else:
            click.echo(f"{nct}: no longer watched; its stored history is kept.")


# -- history ----------------------------------------------------------------------------------

@cli.command()
@click.argument("nct_id")
@click.option("--json", "as_json", is_flag=True,
              help="{nct_id, registry_history, timeline: [...], snapshots: [...], changes: [...]}, oldest first.")
@pass_ctx
def history(c: Context, nct_id: str, as_json: bool) -> None:
    """Every stored version of a trial and the changes between them, oldest first, with the
    registry's status timeline."""
    from .history import timeline
    from .record import normalize_nct
    from .errors import TrialNotFound

    nct = c.store.resolve_alias(normalize_nct(nct_id))
    snaps, changes = c.store.history(nct)
    if not snaps and not changes:
        raise TrialNotFound(f"no stored snapshot of {nct}",
                            hint=f"Run 'trialwatch check {nct}' first.")
    tl = timeline(c.store, nct)
    by_snap: dict[int | None, list] = {}
    for ch in changes:
        by_snap.setdefault(ch.snapshot_id, []).append(ch)
    if as_json:
        _emit_json({
            "nct_id": nct,
            "registry_history": tl.state,
            "timeline": tl.to_json(),
            "snapshots": [{"seq": s.seq, "fetched_at": _iso(s.fetched_at), "content_hash": s.blob_hash,
                           "overall_status": s.overall_status, "last_update_posted": s.last_update_posted,
                           "source": s.source or "live", "version": s.registry_version,
                           "registry_date": s.registry_date,
                           "changes": [ch.to_dict() for ch in by_snap.get(s.id, [])]} for s in snaps],
            "changes": [ch.to_dict() for ch in changes],
        })
        return
    from .render_text import history_report

    click.echo(history_report(nct, snaps, changes, timeline=tl))


# -- backfill ---------------------------------------------------------------------------------

@cli.command()
@click.argument("nct_ids", nargs=-1, metavar="[NCT_ID...]")
@click.option("--all", "all_", is_flag=True, help="Every followed trial that has been checked.")
@click.option("--important-only", is_flag=True,
              help="Skip versions that changed only modules whose edits are never important or critical.")
@click.option("--json", "as_json", is_flag=True,
              help="{trials, lists_fetched, versions_stored, versions_skipped, changes, requests, ...}")
@pass_ctx
def backfill(c: Context, nct_ids: tuple[str, ...], all_: bool, important_only: bool, as_json: bool) -> None:
    """Fetch every registry version of trials not stored yet (oldest first) and the changes
    between them. Historical: never mailed. Resumable: a rerun fetches only what is missing."""
    from .ctgov import Client
    from .history import backfill as run_backfill, ids_for_backfill

    ids = ids_for_backfill(c.store, c.config, _normalize_all(nct_ids), all_)
    with Client.from_config(c.config.ctgov) as client, _BackfillProgress(enabled=sys.stderr.isatty()) as bar:
        report = run_backfill(c.store, c.config, client, ids, important_only=important_only, progress=bar)
    if as_json:
        _emit_json(report.to_dict())
    else:
        click.echo(f"{report.trials} trial(s): {report.versions_stored} version(s) stored, "
                   f"{report.changes} historical change(s), {report.lists_fetched} version list(s) fetched, "
                   f"{report.requests} request(s).")
        if report.versions_skipped:
            click.echo(f"{report.versions_skipped} version(s) skipped: they changed only modules whose "
                       "edits are never important or critical (--important-only).")
        for n in report.unavailable:
            click.echo(f"warning: {n}: the registry's history is unavailable", err=True)
        for err in report.errors:
            click.echo(f"warning: {err}", err=True)
    if not report.complete:
        from .errors import HistoryUnavailable

        raise HistoryUnavailable("the backfill did not finish: " + "; ".join(report.errors[:3]),
                                 hint="What was fetched is stored; run it again to fetch the rest.")


class _BackfillProgress:
    """A rich progress bar on stderr (trials, versions, ETA) when it is a terminal; quiet
    otherwise."""

    def __init__(self, enabled: bool, console: Any = None) -> None:
        self.enabled = enabled
        self.console = console  # a rich Console; default: stderr
        self.bar = None

    def __enter__(self) -> "_BackfillProgress":
        if self.enabled:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                TimeRemainingColumn(), console=self.console or Console(stderr=True),
                                transient=False)
            self.bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()

    def __call__(self, event: str, info: dict) -> None:
        if self.bar is None:
            return
        if event == "start":
            self.trials = self.bar.add_task("trials", total=info["trials"])
            self.versions = self.bar.add_task("versions", total=info["versions"])
        elif event == "version":
            self.bar.advance(self.versions)
        elif event == "trial":
            self.bar.advance(self.trials)


def _iso(t: Any) -> str | None:
    return t.isoformat() + "Z" if t is not None else None


# -- alternatives -------------------------------------------------------------------------------

@cli.command()
@click.argument("nct_id")
@click.option("--near", metavar="PLACE",
              help="Only trials with a site within --within miles of PLACE, nearest open site "
                   "shown: lat,lon, a US ZIP code, or a city ('Rochester, MN').")
@click.option("--within", "within", type=click.FloatRange(min=1, max=12500), default=None, metavar="MILES",
              help="Radius of --near in miles (default 500).")
@click.option("--limit", type=click.IntRange(min=1), default=10, show_default=True, metavar="N",
              help="How many recruiting alternatives to list.")
@click.option("--json", "as_json", is_flag=True,
              help="One object: nct_id, notice, alternatives [...], expanded_access [...], requests.")
@pass_ctx
def alternatives(c: Context, nct_id: str, near: str | None, within: float | None, limit: int,
                 as_json: bool) -> None:
    """Recruiting trials of the same condition and a similar intervention, and expanded access.

    Found by ClinicalTrials.gov's own search (query.cond, query.intr, filter.overallStatus, and
    filter.geo with --near): a starting point, not a recommendation or an eligibility judgement.
    Each --json alternative has: nct_id, title, status, phases, why, url, nearest_site; each
    expanded_access entry: nct_id, title, status, why, url (the trial's own first).
    """
    from .alternatives import DEFAULT_WITHIN_MILES, find
    from .ctgov import Client
    from .record import normalize_nct

    nct = normalize_nct(nct_id)
    if within is not None and near is None:
        raise UsageError("--within is the radius around --near PLACE, so it needs --near",
                         hint="e.g. 'trialwatch alternatives NCT03268603 --near 55905 --within 300'.")
    place = None
    if near is not None:  # before any request: a place that does not resolve costs nothing
        from .places import resolve

        place = resolve(near)
    canonical = c.store.resolve_alias(nct)
    record = c.store.latest_record(canonical)
    with Client.from_config(c.config.ctgov) as client:
        fetched = 0
        if record is None:  # not watched: read it live (not stored: this command only reads)
            record = client.study(nct).record
            fetched = client.stats.requests
        result = find(client, record, place, limit=limit,
                      within_miles=within if within is not None else DEFAULT_WITHIN_MILES)
        result.requests += fetched
    if as_json:
        _emit_json(result.to_dict())
        return
    from .render_text import alternatives_report

    click.echo(alternatives_report(result))


# -- db -----------------------------------------------------------------------------------------

@cli.group()
def db() -> None:
    """Database maintenance."""


@db.command("upgrade")
@pass_ctx
def db_upgrade(c: Context) -> None:
    """Create the database, or migrate an older one to this trialwatch's schema."""
    from .store import make_engine, upgrade, _safe_url

    engine = make_engine(c.config.database_url)
    try:
        before, after = upgrade(engine)
    finally:
        engine.dispose()
    where = _safe_url(c.config.database_url)
    if before == after:
        click.echo(f"{where}: already at migration {after}")
    else:
        click.echo(f"{where}: migrated {before or '(empty)'} -> {after}")


@db.command("status")
@pass_ctx
def db_status(c: Context) -> None:
    """Show the database's migration and how much it stores."""
    store = c.store
    from .store import current_revision

    sizes = store.storage_bytes()
    click.echo(f"migration: {current_revision(store.engine)}")
    for k, v in sizes.items():
        click.echo(f"{k}: {v}")


# -- polling ----------------------------------------------------------------------------------

@cli.command()
@click.option("--force", is_flag=True, help="Fetch everything even if ClinicalTrials.gov's data has not refreshed.")
@click.option("--no-send", is_flag=True, help="Poll and store, but leave mail in the outbox.")
@click.option("--json", "as_json", is_flag=True,
              help="One object: requests, trials_checked, trials_changed, changes, emails_sent, emails_queued, skipped, ...")
@pass_ctx
def poll(c: Context, force: bool, no_send: bool, as_json: bool) -> None:
    """One poll cycle over every watched trial, saved search and linked record; then mail."""
    from .poller import poll as run_poll

    c.sync_subscribers()
    if not no_send and c.config.subscribers:
        c.config.secret_key()  # fail at start, not after the poll, when mail cannot be signed
        c.config.resolve_places()  # a bad location is a config error before anything is sent
    report = _poll_until_signalled(lambda stop: run_poll(c.store, c.config, force=force,
                                                         send=not no_send, stop=stop))
    if as_json:
        _emit_json(report.to_dict())
    else:
        if report.skipped:
            click.echo(f"ClinicalTrials.gov data unchanged since the last complete poll "
                       f"({report.data_timestamp}); {report.requests} request.")
        else:
            click.echo(f"{report.trials_checked} trials checked, {report.trials_changed} changed "
                       f"({report.changes} changes, {report.events} events) in {report.requests} requests.")
        click.echo(f"mail: {report.emails_sent} sent, {report.emails_queued} queued, {report.emails_failed} failed")
    failure = report.failure()
    for err in report.errors:
        if err is not failure:
            click.echo(f"warning: {err.describe() if isinstance(err, TrialwatchError) else err}", err=True)
    if failure is None:
        return
    if isinstance(failure, MailError):
        raise failure
    # The typed error keeps its exit code (lock lost: 5, ClinicalTrials.gov: 4, stopped: 4).
    import copy

    stopped = copy.copy(failure)
    stopped.message = "the poll did not finish: " + failure.describe()
    done = "What was fetched is stored; the rest is fetched on the next poll."
    stopped.hint = failure.hint if done in failure.hint else f"{done} {failure.hint}"
    raise stopped


def _poll_until_signalled(fn):  # noqa: ANN001, ANN202
    """Run ``fn(stop)`` with SIGTERM and SIGINT setting ``stop``: the poll ends at its next step
    boundary and releases the poll lock on the way out, instead of dying with it held."""
    import signal
    import threading

    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        return fn(stop)

    def on_signal(signum: int, _frame) -> None:  # noqa: ANN001
        if stop.is_set():  # a second signal: stop now (the finally blocks still release the lock)
            raise KeyboardInterrupt
        log.warning("received %s: stopping at the next step", signal.Signals(signum).name)
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        return fn(stop)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@cli.command()
@click.option("--now", "poll_now", is_flag=True, help="Also poll once right away.")
@pass_ctx
def run(c: Context, poll_now: bool) -> None:
    """Run the daemon: poll on the configured schedule until SIGTERM or Ctrl-C."""
    from .daemon import Daemon

    c.sync_subscribers()
    if c.config.subscribers:
        c.config.secret_key()
        c.config.resolve_places()
    sys.exit(Daemon(c.store, c.config).run(poll_now=poll_now))


# -- mail -------------------------------------------------------------------------------------

@cli.command()
@click.option("--dry-run", is_flag=True, help="Compose and show what would be sent; send nothing.")
@click.option("--json", "as_json", is_flag=True, help="{sent: [...], queued: [...], failed: [...]}")
@pass_ctx
def send(c: Context, dry_run: bool, as_json: bool) -> None:
    """Send every queued digest now (retrying earlier failures at once)."""
    from .notify import send_pending, undelivered

    c.sync_subscribers()
    c.config.secret_key()
    c.config.resolve_places()
    report = send_pending(c.store, c.config, force=True, dry_run=dry_run)
    if as_json:
        _emit_json(report.to_dict())
    else:
        click.echo(report.describe())
    problem = undelivered(c.store, report)
    if problem is not None:
        raise problem


@cli.command()
@click.argument("nct_id")
@click.option("--to", "to", metavar="EMAIL", help="Render as it would be sent to this subscriber.")
@click.option("--html", "html_path", type=click.Path(dir_okay=False, writable=True), help="Also write the HTML part to FILE.")
@pass_ctx
def preview(c: Context, nct_id: str, to: str | None, html_path: str | None) -> None:
    """Render the latest digest for a trial without sending it (text part on stdout)."""
    from .notify import preview as render_preview
    from .record import normalize_nct

    c.sync_subscribers()
    rendered = render_preview(c.store, c.config, normalize_nct(nct_id), to=to)
    click.echo(f"Subject: {rendered.subject}\n")
    click.echo(rendered.text)
    if html_path:
        from pathlib import Path

        try:
            Path(html_path).write_text(rendered.html, encoding="utf-8")
        except OSError as e:
            raise UsageError(f"cannot write {html_path}: {e.strerror or e}",
                             hint="--html takes a file in an existing, writable folder.") from None
        click.echo(f"HTML part written to {html_path}", err=True)


@cli.command()
@click.argument("token")
@pass_ctx
def unsubscribe(c: Context, token: str) -> None:
    """Unsubscribe the physician a signed unsubscribe TOKEN belongs to (no web server needed)."""
    from .notify import unsubscribe as do_unsubscribe

    sub = do_unsubscribe(c.store, c.config, token)
    click.echo(f"{sub.email} is unsubscribed; no further alerts will be sent.")


@cli.command()
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def subscribers(c: Context, as_json: bool) -> None:
    """List subscribers, their state (pending, active, unsubscribed) and what they follow."""
    from sqlalchemy import select

    from .store import Subscriber

    c.sync_subscribers()
    with c.store.session() as s:
        subs = list(s.scalars(select(Subscriber).order_by(Subscriber.email)))
        rows = [{"email": x.email, "name": x.name, "state": x.state, "source": x.source,
                 "min_severity": x.min_severity, "digest": x.digest,
                 "trials": sorted(t.target for t in x.subscriptions if t.kind == "trial"),
                 "searches": sorted(t.target for t in x.subscriptions if t.kind == "search")} for x in subs]
    if as_json:
        _emit_json(rows)
        return
    if not rows:
        click.echo("no subscribers")
    for r in rows:
        follows = ", ".join(r["trials"] + [f"search:{x}" for x in r["searches"]]) or "nothing"
        click.echo(f"{r['email']:<36} {r['state']:<13} {r['source']:<7} {r['min_severity']:<10} "
                   f"{r['digest']:<10} {follows}")


# -- web ----------------------------------------------------------------------------------------

@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=int)
@pass_ctx
def serve(c: Context, host: str, port: int) -> None:
    """Serve the status pages, sign-up, manage and unsubscribe pages, and Atom feeds."""
    from .web import serve as run_server

    c.sync_subscribers()
    c.config.secret_key()
    run_server(c.config, host=host, port=port, store=c.store)


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the CLI, turn TrialwatchErrors into their exit codes."""
    try:
        cli.main(args=argv, prog_name="trialwatch", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 130
    except click.ClickException as e:
        e.show()
        return 2  # click's own usage errors
    except click.exceptions.Exit as e:
        return e.exit_code
    except TrialwatchError as e:
        click.echo(f"error: {e.message}", err=True)
        if e.hint:
            click.echo(f"  hint: {e.hint}", err=True)
        return e.exit_code
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # noqa: BLE001 - the last line of defence says what happened
        if logging.getLogger().isEnabledFor(logging.DEBUG):
            raise
        click.echo(f"error: unexpected {type(e).__name__}: {e}", err=True)
        click.echo("  hint: run again with -vv for a traceback, and report it.", err=True)
        return 1
    return 0


def console() -> None:
    """The ``trialwatch`` console script: ``main``, then an exit without the interpreter's
    teardown (~0.1 s of freeing every module and object of a process about to end). Everything
    is flushed and closed before: the click context closed the store when the command ended,
    output streams are flushed here. Only here, never in library code or in ``main`` (which
    tests call in-process)."""
    import os

    # Start-up costs of libraries that no trialwatch command uses (the process is ours alone):
    # pydantic scanning every installed package's entry points for plugins (~30 ms), and
    # httpx importing its optional command-line client, rich and pygments (~30 ms).
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
    sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
    code = main()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):  # a closed pipe: nothing more can be said anyway
        code = code or 1
    logging.shutdown()
    os._exit(code)


if __name__ == "__main__":  # pragma: no cover
    console()

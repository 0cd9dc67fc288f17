"""The ``trialwatch`` commands that run the service: db, poll, run, send, preview,
unsubscribe, subscribers, serve."""

from __future__ import annotations

import sys

import click

from .cli_common import Context, emit_json, end_startup, log, pass_ctx
from .errors import MailError, TrialwatchError, UsageError


@click.group()
def db() -> None:
    """Database maintenance."""


@db.command("upgrade")
@pass_ctx
def db_upgrade(c: Context) -> None:
    """Create the database, or migrate an older one to this trialwatch's schema."""
    from .store import make_engine, safe_url, upgrade

    engine = make_engine(c.config.database_url)
    end_startup()  # the migrations are the command's own work: the collector is on for them
    try:
        before, after = upgrade(engine)
    finally:
        engine.dispose()
    where = safe_url(c.config.database_url)
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

def _check_mail_config(c: Context) -> None:
    """Fail at start, not after a poll, when mail cannot be signed (no secret key) or a
    subscriber's location is no known place: a config error before anything is sent."""
    c.config.secret_key()
    c.config.resolve_places()


@click.command()
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
        _check_mail_config(c)
    report = _poll_until_signalled(lambda stop: run_poll(c.store, c.config, force=force,
                                                         send=not no_send, stop=stop))
    if as_json:
        emit_json(report.to_dict())
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


@click.command()
@click.option("--now", "poll_now", is_flag=True, help="Also poll once right away.")
@pass_ctx
def run(c: Context, poll_now: bool) -> None:
    """Run the daemon: poll on the configured schedule until SIGTERM or Ctrl-C."""
    from .daemon import Daemon

    c.sync_subscribers()
    if c.config.subscribers:
        _check_mail_config(c)
    sys.exit(Daemon(c.store, c.config).run(poll_now=poll_now))


# -- mail -------------------------------------------------------------------------------------

@click.command()
@click.option("--dry-run", is_flag=True, help="Compose and show what would be sent; send nothing.")
@click.option("--json", "as_json", is_flag=True, help="{sent: [...], queued: [...], failed: [...]}")
@pass_ctx
def send(c: Context, dry_run: bool, as_json: bool) -> None:
    """Send every queued digest now (retrying earlier failures at once)."""
    from .notify import send_pending, undelivered

    c.sync_subscribers()
    _check_mail_config(c)
    report = send_pending(c.store, c.config, force=True, dry_run=dry_run)
    if as_json:
        emit_json(report.to_dict())
    else:
        click.echo(report.describe())
    problem = undelivered(c.store, report)
    if problem is not None:
        raise problem


@click.command()
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


@click.command()
@click.argument("token")
@pass_ctx
def unsubscribe(c: Context, token: str) -> None:
    """Unsubscribe the physician a signed unsubscribe TOKEN belongs to (no web server needed)."""
    from .notify import unsubscribe as do_unsubscribe

    sub = do_unsubscribe(c.store, c.config, token)
    click.echo(f"{sub.email} is unsubscribed; no further alerts will be sent.")


@click.command()
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def subscribers(c: Context, as_json: bool) -> None:
    """List subscribers, their state (pending, active, unsubscribed) and what they follow."""
    c.sync_subscribers()
    rows = c.store.subscriber_list()
    if as_json:
        emit_json(rows)
        return
    if not rows:
        click.echo("no subscribers")
        return
    click.echo(f"{'ADDRESS':<36} {'STATE':<13} {'SOURCE':<7} {'SEVERITY':<10} {'DIGEST':<10} FOLLOWS")
    for r in rows:
        follows = ", ".join(r["trials"] + [f"search:{x}" for x in r["searches"]]) or "nothing"
        click.echo(f"{r['email']:<36} {r['state']:<13} {r['source']:<7} {r['min_severity']:<10} "
                   f"{r['digest']:<10} {follows}")


# -- web ----------------------------------------------------------------------------------------

@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=int)
@pass_ctx
def serve(c: Context, host: str, port: int) -> None:
    """Serve the status pages, sign-up, manage and unsubscribe pages, and Atom feeds."""
    from .web import serve as run_server

    c.sync_subscribers()
    c.config.secret_key()
    run_server(c.config, host=host, port=port, store=c.store)

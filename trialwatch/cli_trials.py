"""The ``trialwatch`` commands about trials: check, watch, unwatch, history, backfill,
alternatives."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import click

from .cli_common import Context, emit_json, iso, normalize_all, pass_ctx
from .errors import TrialwatchError, UsageError

if TYPE_CHECKING:
    from .places import Place


def _resolve_near(near: str | None) -> Place | None:
    """``--near PLACE``, resolved before any request: a place that does not resolve costs nothing."""
    if near is None:
        return None
    from .places import resolve

    return resolve(near)


# -- check ------------------------------------------------------------------------------------

@click.command()
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

    ids = normalize_all(nct_ids) if nct_ids else c.config.all_trials()
    if not ids:
        raise UsageError("no trial to check", hint="Name one, e.g. 'trialwatch check NCT03268603', "
                         "or list them under 'trials' in config.yaml.")
    if limit is not None and near is None:
        raise UsageError("--limit counts the nearest open sites, so it needs --near PLACE",
                         hint="e.g. 'trialwatch check NCT04267848 --near 55905 --limit 10'.")
    place = _resolve_near(near)
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
            emit_json(res.to_dict())
        else:
            from .render_text import check_report

            click.echo(check_report(res, criteria=show_criteria))
    if failures:
        # The worst failure decides the exit code: not found (3) < unreachable (4).
        raise max(failures, key=lambda e: e.exit_code)


# -- the watch list -----------------------------------------------------------------------------

@click.command()
@click.argument("nct_ids", nargs=-1, metavar="[NCT_ID...]")
@pass_ctx
def watch(c: Context, nct_ids: tuple[str, ...]) -> None:
    """Add trials to the watch list (checked now, then by every poll); with none, list what the
    poll follows and why. config.yaml's `trials` is the other way to watch a trial."""
    from .check import check_trials

    if not nct_ids:
        for nct, reasons in c.store.watch_reasons(c.config).items():
            click.echo(f"{nct}  {', '.join(reasons)}")
        return
    ids = normalize_all(nct_ids)
    c.sync_subscribers()
    results = check_trials(c.store, c.config, ids)
    added = [r.nct_id for r in results if r.error is None]
    c.store.watch(added)
    for r in results:
        if r.error is None:
            from .untrusted import one_line  # record text: no escape sequences to the terminal

            click.echo(f"{r.nct_id}: watched ({one_line(r.summary.status_words)}); every poll now checks it.")
        else:
            click.echo(f"error: {r.nct_id}: {r.error.message}", err=True)
    failures = [r.error for r in results if r.error is not None]
    if failures:
        raise max(failures, key=lambda e: e.exit_code)


@click.command()
@click.argument("nct_ids", nargs=-1, required=True, metavar="NCT_ID...")
@pass_ctx
def unwatch(c: Context, nct_ids: tuple[str, ...]) -> None:
    """Take trials added with `trialwatch watch` off the watch list (their history is kept)."""
    ids = [c.store.resolve_alias(n) for n in normalize_all(nct_ids)]
    c.store.unwatch(ids)
    reasons = c.store.watch_reasons(c.config)
    for nct in ids:
        still = [r for r in reasons.get(nct, []) if r != "trialwatch watch"]
        if still:
            click.echo(f"{nct}: no longer on the `trialwatch watch` list, but still followed: {', '.join(still)}")
        else:
            click.echo(f"{nct}: no longer watched; its stored history is kept.")


# -- history ----------------------------------------------------------------------------------

@click.command()
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
        emit_json({
            "nct_id": nct,
            "registry_history": tl.state,
            "timeline": tl.to_json(),
            "snapshots": [{"seq": s.seq, "fetched_at": iso(s.fetched_at), "content_hash": s.blob_hash,
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

@click.command()
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

    ids = ids_for_backfill(c.store, c.config, normalize_all(nct_ids), all_)
    with Client.from_config(c.config.ctgov) as client, BackfillProgress(enabled=sys.stderr.isatty()) as bar:
        report = run_backfill(c.store, c.config, client, ids, important_only=important_only, progress=bar)
    if as_json:
        emit_json(report.to_dict())
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


class BackfillProgress:
    """A rich progress bar on stderr (trials, versions, ETA) when it is a terminal; quiet
    otherwise."""

    def __init__(self, enabled: bool, console: Any = None) -> None:
        self.enabled = enabled
        self.console = console  # a rich Console; default: stderr
        self.bar = None

    def __enter__(self) -> "BackfillProgress":
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


@click.command()
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
    place = _resolve_near(near)
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
        emit_json(result.to_dict())
        return
    from .render_text import alternatives_report

    click.echo(alternatives_report(result))


# -- db -----------------------------------------------------------------------------------------

"""The ``trialwatch`` command: thin wiring over the library. This module is the group, its
exit codes and ``main``; the commands are in ``cli_trials`` (check, watch, history, backfill,
alternatives) and ``cli_ops`` (db, poll, run, send, preview, unsubscribe, subscribers, serve),
their shared context in ``cli_common``.

Results go to stdout (with ``--json``, only the JSON); logs and progress go to stderr. Every
error is a ``TrialwatchError`` whose exit code is documented in ``trialwatch --help`` and in
the README's table (``trialwatch.errors.EXIT_CODES``; tests/test_exit_codes.py checks all three).

Heavy modules (SQLAlchemy, httpx, Jinja2, Starlette) are imported inside the commands, so
``trialwatch --help`` starts fast.
"""

from __future__ import annotations

import logging
import sys

import click

from . import __version__, cli_ops, cli_trials
from .cli_common import Context
from .errors import TrialwatchError

EXIT_CODES = """\b
Exit codes:
  0  ok
  1  unexpected error (a bug: run with -vv for a traceback)
  2  bad usage or input (bad NCT number, invalid config.yaml, bad link, port in use)
  3  trial not found on ClinicalTrials.gov
  4  ClinicalTrials.gov unreachable or answering garbage (nothing stored); poll did not finish
  5  database problem (cannot open, not SQLite, needs 'trialwatch db upgrade', poll lock held or lost)
  6  mail could not be delivered (it stays queued, or failed for good)"""


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


for _command in (cli_trials.check, cli_trials.watch, cli_trials.unwatch, cli_trials.history,
                 cli_trials.backfill, cli_trials.alternatives, cli_ops.db, cli_ops.poll, cli_ops.run,
                 cli_ops.send, cli_ops.preview, cli_ops.unsubscribe, cli_ops.subscribers, cli_ops.serve):
    cli.add_command(_command)



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

    from .cli_common import begin_startup

    begin_startup()
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

"""The ``trialwatch`` console script (``cli.console``): ``main`` and then an exit that skips the
interpreter's teardown, so everything must be flushed and closed before it."""

from __future__ import annotations

import subprocess
import sys

RUN = "import sys\nfrom trialwatch.cli import console\nsys.argv = ['trialwatch', *sys.argv[1:]]\nconsole()\n"


def console(*args: str, cwd=None) -> subprocess.CompletedProcess:  # noqa: ANN001
    return subprocess.run([sys.executable, "-c", RUN, *args], capture_output=True, text=True, cwd=cwd,
                          timeout=60)


def test_output_written_to_a_pipe_is_complete_and_the_exit_code_is_kept(tmp_path):
    from trialwatch import __version__

    done = console("--version")
    assert done.returncode == 0 and done.stdout.strip() == f"trialwatch, version {__version__}"
    bad = console("--config", str(tmp_path / "missing.yaml"), "subscribers")
    assert bad.returncode == 2
    assert "error: config file" in bad.stderr and "hint:" in bad.stderr


def test_a_command_that_writes_the_database_leaves_it_complete(tmp_path):
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"database: sqlite:///{tmp_path / 'tw.db'}\nsubscribers:\n"
                   "  - email: dr@example.org\n    trials: [NCT03268603]\n")
    listed = console("--config", str(cfg), "subscribers", "--json")
    assert listed.returncode == 0, listed.stderr
    # A second process reads what the first committed and closed before its fast exit.
    again = console("--config", str(cfg), "subscribers")
    assert again.returncode == 0 and "dr@example.org" in again.stdout and "NCT03268603" in again.stdout

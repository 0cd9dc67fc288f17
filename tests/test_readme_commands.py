"""The README's "Using it" block and the CLI name the same commands."""

from __future__ import annotations

import re
from pathlib import Path

from trialwatch.cli import cli

ROOT = Path(__file__).resolve().parent.parent


def test_the_readme_command_list_and_the_cli_agree():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = text.split("## Using it", 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    in_readme = {m.group(1) for m in re.finditer(r"^trialwatch ([a-z]+)", block, re.M)}
    assert in_readme == set(cli.commands)

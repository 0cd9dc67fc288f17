"""The README's change table says what the code does: every kind of change in
``trialwatch.events`` has its row, with its label and the severities it can take, and no row
names a field the code does not make. (The exit-code table: ``test_exit_codes.py``; the
command list: ``test_readme_commands.py``.)"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from trialwatch import events

README = Path(__file__).resolve().parent.parent / "README.md"
SEVERITY_WORDS = re.compile(r"\b(critical|important|minor)\b", re.IGNORECASE)


def change_table() -> list[dict]:
    """The rows of the table under "What counts as a change": fields, label cell, severity cell."""
    text = README.read_text(encoding="utf-8")
    section = text.split("### What counts as a change", 1)[1]
    lines = []
    for line in section.lstrip("\n").splitlines():
        if line.startswith("|"):
            lines.append(line)
        elif lines:           # the first line after the table ends it
            break
    header, _rule, *rows = lines
    assert [c.strip() for c in header.strip("|").split("|")][:3] == ["field", "label", "severity"]
    out = []
    for line in rows:
        cells = [c.strip() for c in line.strip("|").split("|")]
        out.append({"fields": re.findall(r"`([^`]+)`", cells[0]), "first": cells[0], "label": cells[1],
                    "severities": {w.lower() for w in SEVERITY_WORDS.findall(cells[2])}})
    return out


ROWS = change_table()
DOCUMENTED = {f: row for row in ROWS for f in row["fields"]}


def test_the_readme_change_table_is_found_and_names_each_field_once():
    named = [f for row in ROWS for f in row["fields"]]
    assert len(ROWS) > 10
    assert len(named) == len(set(named))


def test_every_kind_of_change_has_a_row_and_every_row_a_kind():
    assert set(DOCUMENTED) == set(events.KINDS)


@pytest.mark.parametrize("field", sorted(events.KINDS))
def test_a_kinds_label_and_severities_are_the_ones_its_row_states(field):
    kind, row = events.KINDS[field], DOCUMENTED[field]
    # A row grouping several fields may write "…" for their labels; otherwise each is spelled out.
    if row["label"] != "…":
        assert kind.doc_label() in row["label"]
    assert {s.value for s in kind.severities} <= row["severities"]
    # The row claims no severity none of its fields can take.
    possible = {s.value for f in row["fields"] for s in events.KINDS[f].severities}
    assert row["severities"] == possible


def test_the_fallback_row_is_last_and_minor():
    last = ROWS[-1]
    assert last["fields"] == [] and "dotted JSON path" in last["first"]
    assert last["severities"] == {s.value for s in events.FALLBACK.severities}

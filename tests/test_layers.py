"""The store is the only place that queries: no module of trialwatch outside ``trialwatch/store/``
imports SQLAlchemy, builds a query (select / update / delete / insert / func / text) or runs one
(``.session()``, ``.execute()``, ``.scalar()``, ``.scalars()``). Pages, CLI, poller and the rest
call named operations on the store instead, so a schema change stays inside the store."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "trialwatch"
BUILDERS = {"select", "update", "delete", "insert", "func", "text", "or_", "and_"}
RUNNERS = {"session", "execute", "scalar", "scalars"}

# Modules that may still query, by path: none. Never add to it.
ALLOWED: set[str] = set()


def violations(source: str) -> list[str]:
    """Each SQLAlchemy import, query builder call and query run in ``source``, with its line."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [f"line {node.lineno}: import {a.name}" for a in node.names if a.name.split(".")[0] == "sqlalchemy"]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "sqlalchemy":
            found.append(f"line {node.lineno}: from {node.module} import ...")
        elif isinstance(node, ast.Call):
            f = node.func
            if isinstance(f, ast.Name) and f.id in BUILDERS:
                found.append(f"line {node.lineno}: {f.id}(...)")
            elif isinstance(f, ast.Attribute) and f.attr in RUNNERS:
                found.append(f"line {node.lineno}: .{f.attr}(...)")
            elif isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) and f.value.id == "func":
                found.append(f"line {node.lineno}: func.{f.attr}(...)")
    return found


# Every module of the package, subpackages included (notify/), except the store itself.
MODULES = sorted(p for p in PACKAGE.rglob("*.py") if "store" not in p.relative_to(PACKAGE).parts[:1])


def test_every_module_outside_the_store_is_checked():
    names = {p.relative_to(PACKAGE).as_posix() for p in MODULES}
    assert {"poller.py", "web.py", "cli.py", "check.py", "feeds.py", "history.py", "daemon.py",
            "notify/digest.py", "notify/outbox.py", "notify/subscribers.py"} <= names
    assert ALLOWED <= names, "an allowed module that no longer exists: take it off the list"


@pytest.mark.parametrize("path", [p for p in MODULES if p.relative_to(PACKAGE).as_posix() not in ALLOWED],
                         ids=lambda p: p.relative_to(PACKAGE).as_posix())
def test_module_builds_and_runs_no_query(path):
    assert violations(path.read_text(encoding="utf-8")) == []


def test_the_check_finds_what_it_forbids():
    source = ("from sqlalchemy import select\nimport sqlalchemy.orm\n"
              "def f(store):\n    with store.session() as s:\n"
              "        s.execute(update(T).values(x=1))\n        return s.scalar(select(func.count()))\n")
    assert {v.split(": ", 1)[1] for v in violations(source)} == {
        "from sqlalchemy import ...", "import sqlalchemy.orm", ".session(...)", ".execute(...)",
        "update(...)", ".scalar(...)", "select(...)", "func.count(...)"}
    # A dict's or a list's methods of the same name are not queries.
    assert violations("d = {}\nd.update(a=1)\nerrors = []\nerrors.insert(0, 'x')\nd.get('a')\n") == []


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_imports_another_modules_private_names(path):
    """A name another module needs is public: ``from .x import _y`` hides a dependency."""
    private = [f"line {n.lineno}: from {'.' * n.level}{n.module or ''} import {a.name}"
               for n in ast.walk(ast.parse(path.read_text(encoding="utf-8"))) if isinstance(n, ast.ImportFrom)
               for a in n.names if a.name.startswith("_") and not a.name.startswith("__")]
    assert private == []


# -- small rooms ------------------------------------------------------------------------------
# A module a maintainer can read in one sitting, a function she can hold in her head: no module
# of the package over 600 lines, no function over cyclomatic complexity 20 (radon's measure).
MAX_LINES = 600
MAX_COMPLEXITY = 20
EVERY_MODULE = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", EVERY_MODULE, ids=lambda p: p.relative_to(PACKAGE).as_posix())
def test_no_module_is_over_600_lines(path):
    assert len(path.read_text(encoding="utf-8").splitlines()) <= MAX_LINES


@pytest.mark.parametrize("path", EVERY_MODULE, ids=lambda p: p.relative_to(PACKAGE).as_posix())
def test_no_function_is_over_complexity_20(path):
    from radon.complexity import cc_visit

    blocks = cc_visit(path.read_text(encoding="utf-8"))
    assert [f"{b.name}: {b.complexity}" for b in blocks if b.complexity > MAX_COMPLEXITY] == []


def test_the_complexity_check_finds_a_function_over_the_limit():
    from radon.complexity import cc_visit

    branches = "".join(f"    if x == {i}:\n        return {i}\n" for i in range(MAX_COMPLEXITY + 1))
    (block,) = cc_visit(f"def f(x):\n{branches}    return -1\n")
    assert block.complexity > MAX_COMPLEXITY

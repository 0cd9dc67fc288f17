"""Shared fixtures: real records from ../shared/ctgov, and databases.

Every test that takes ``db_url`` runs on SQLite, and on PostgreSQL as well when
TRIALWATCH_TEST_DATABASE_URL is set (each test in a schema of its own, dropped afterwards).
"""

from __future__ import annotations

import copy
import json
import os
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("TRIALWATCH_SHARED", ROOT.parent / "shared"))
CTGOV = SHARED / "ctgov"
RECORDS = CTGOV / "records"
FIXTURES = Path(__file__).resolve().parent / "fixtures"
PG_URL = os.environ.get("TRIALWATCH_TEST_DATABASE_URL")


def load_record(name: str) -> dict:
    """A real record from ../shared/ctgov/records (or a fixture in tests/fixtures)."""
    for folder in (RECORDS, FIXTURES):
        p = folder / (name if name.endswith(".json") else f"{name}.json")
        if p.is_file():
            return json.loads(p.read_text(encoding="utf-8"))
    raise FileNotFoundError(name)


@pytest.fixture
def record():
    """record("NCT03934567") -> a fresh deep copy of that real record."""
    cache: dict[str, dict] = {}

    def get(name: str) -> dict:
        if name not in cache:
            cache[name] = load_record(name)
        return copy.deepcopy(cache[name])

    return get


def _pg_schema_url(base: str, schema: str) -> str:
    sep = "&" if "?" in base else "?"
    return f"{base}{sep}options=-csearch_path%3D{schema}"


@pytest.fixture(params=["sqlite"] + (["postgresql"] if PG_URL else []))
def db_url(request, tmp_path):
    """A URL of an empty database: SQLite in tmp_path, or a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'trialwatch.db'}"
        return
    from sqlalchemy import create_engine, text

    schema = f"tw_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield _pg_schema_url(PG_URL, schema)
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def store(db_url):
    from trialwatch.store import open_store

    s = open_store(db_url)
    yield s
    s.close()


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    """Tests never see the operator's environment (config path, database, secrets)."""
    for var in ("TRIALWATCH_CONFIG", "TRIALWATCH_DATABASE_URL", "TRIALWATCH_SECRET_KEY",
                "TRIALWATCH_SMTP_PASSWORD"):
        monkeypatch.delenv(var, raising=False)


# tests/standin.py and tests/smtp_server.py are helpers the tests import by module name.
import sys as _sys

_sys.path.insert(0, str(Path(__file__).resolve().parent))

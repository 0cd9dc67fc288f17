"""Shared fixtures: real records (the corpus: ../shared/ctgov or $TRIALWATCH_CORPUS, see
tests/corpus.py), and databases.

Every test that takes ``db_url`` runs on SQLite, and on PostgreSQL as well when
TRIALWATCH_TEST_DATABASE_URL is set (each test in a schema of its own, dropped afterwards).
"""

from __future__ import annotations

import copy
import json
import os
import sys
import uuid
from pathlib import Path

import pytest

# tests/standin.py, tests/corpus.py and tests/smtp_server.py are helpers the tests import by
# module name.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from corpus import CTGOV, RECORDS, SKIP_REASON  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
PG_URL = os.environ.get("TRIALWATCH_TEST_DATABASE_URL")


def load_record(name: str) -> dict:
    """A real record from the corpus (or a fixture in tests/fixtures). Without a corpus, the
    test asking for a real record is skipped."""
    for folder in (RECORDS, FIXTURES):
        p = folder / (name if name.endswith(".json") else f"{name}.json")
        if p.is_file():
            return json.loads(p.read_text(encoding="utf-8"))
    if CTGOV is None:
        pytest.skip(SKIP_REASON)
    raise FileNotFoundError(name)


def pytest_collection_modifyitems(config, items):
    """Tests marked ``corpus`` read real records: without a corpus they are skipped, all with
    the same reason."""
    if CTGOV is not None:
        return
    skip = pytest.mark.skip(reason=SKIP_REASON)
    for item in items:
        if item.get_closest_marker("corpus"):
            item.add_marker(skip)


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


# -- helpers the CLI and web tests share -------------------------------------------------------

WEB_SECRET = "test-secret-key-0123456789"
PUBLIC_URL = "https://trials.example.org"


def web_config(tmp_path, monkeypatch, body: str, *, name: str = "config.yaml"):
    """The web app's configuration for a test: ``body`` (YAML: database, trials, ...) plus file
    mail into tmp_path/outbox and the public URL, with a signing key in the environment."""
    from trialwatch import config as configmod

    monkeypatch.setenv("TRIALWATCH_SECRET_KEY", WEB_SECRET)
    path = tmp_path / name
    path.write_text(f"{body.strip()}\nemail:\n  transport: file\n  outbox_dir: {tmp_path / 'outbox'}\n"
                    f"  public_url: {PUBLIC_URL}\n")
    return configmod.load(path)


# The web app's fixtures. A web test module defines ``cfg`` (usually web_config(...)); these
# build on whichever ``cfg`` the requesting module has, and a module may override any of them.
@pytest.fixture
def db(cfg):
    from trialwatch.store import open_store

    s = open_store(cfg.database_url)
    yield s
    s.close()


@pytest.fixture
def app(cfg, db):
    from trialwatch.web import create_app

    return create_app(cfg, db)


@pytest.fixture
def client(app):
    from starlette.testclient import TestClient

    with TestClient(app, base_url="https://trials.example.org") as c:
        yield c


def cli_against(api_url: str, database: str, tmp_path, capsys, monkeypatch, *, max_retries: int = 1,
                extra: str = ""):
    """invoke(*args) -> (exit code, stdout, stderr) of the real CLI, configured for the stand-in
    at ``api_url`` (no throttle, real retries with short waits) and ``database``."""
    from trialwatch import ctgov
    from trialwatch.cli import main

    monkeypatch.setattr(ctgov, "BACKOFF_BASE_S", 0.01)
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"database: {database}\nctgov:\n  base_url: {api_url}\n  requests_per_minute: 6000\n"
                   f"  max_retries: {max_retries}\n  timeout_s: 5\n{extra}")

    def invoke(*args: str):
        code = main(["--config", str(cfg), *args])
        out, err = capsys.readouterr()
        return code, out, err

    return invoke

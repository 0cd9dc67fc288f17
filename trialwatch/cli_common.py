"""What the ``trialwatch`` commands share: the context (config and store, opened on first use)
and how they print JSON. Imports only click and the standard library (``--help`` stays fast)."""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from .config import Config
    from .store import Store

log = logging.getLogger("trialwatch")

_startup = {"gc_off": False}


def begin_startup() -> None:
    """The console script's start-up (``cli.console``): the cyclic garbage collector is off
    until ``end_startup``. Importing SQLAlchemy, pydantic and httpx creates ~150,000 objects
    that live as long as the process; the collector would traverse them over and over while
    they are made (about a tenth of a one-shot command's start-up), and none of them is garbage."""
    import gc

    gc.disable()
    _startup["gc_off"] = True


def end_startup() -> None:
    """Start-up is over (the config is loaded, the store open, the heavy modules imported): what
    exists now is frozen out of the collector's sight (it lives until exit anyway) and the
    collector is back on for the command's own work, so a long poll or the daemon frees its
    cycles as usual. A no-op unless ``begin_startup`` ran (tests call ``main`` in-process)."""
    if _startup["gc_off"]:
        import gc

        _startup["gc_off"] = False
        gc.freeze()
        gc.enable()


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
            end_startup()
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


def normalize_all(ids: tuple[str, ...]) -> list[str]:
    from .record import normalize_nct

    return list(dict.fromkeys(normalize_nct(raw) for raw in ids))


def emit_json(obj: Any) -> None:
    click.echo(json.dumps(obj, ensure_ascii=False, default=str))


def iso(t: Any) -> str | None:
    return t.isoformat() + "Z" if t is not None else None


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


# -- alternatives -------------------------------------------------------------------------------

"""Alembic environment for trialwatch.

trialwatch runs migrations itself (``trialwatch db upgrade``, or automatically on a fresh
database) and passes its open connection in ``config.attributes["connection"]``. Running the
``alembic`` command directly also works: set ``TRIALWATCH_DATABASE_URL`` or ``sqlalchemy.url``.
"""

import os

from alembic import context
from sqlalchemy import create_engine

from trialwatch.store import Base

target_metadata = Base.metadata
config = context.config


def _run(connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata,
                      render_as_batch=connection.dialect.name == "sqlite", compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_offline() -> None:
    url = os.environ.get("TRIALWATCH_DATABASE_URL") or config.get_main_option("sqlalchemy.url")
    context.configure(url=url, target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = os.environ.get("TRIALWATCH_DATABASE_URL") or config.get_main_option("sqlalchemy.url")
    engine = create_engine(url)
    with engine.begin() as conn:
        _run(conn)


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()

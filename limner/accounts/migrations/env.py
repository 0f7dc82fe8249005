"""Alembic environment for limner's accounts schema.

limner runs migrations itself (``Database.migrate``), passing an open connection in
``config.attributes["connection"]``; ``alembic -x url=...`` from a shell works too.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, create_engine

from limner.accounts.db import VERSION_TABLE, normalize_url
from limner.accounts.models import Base

config = context.config


def _configure(**kwargs: object) -> None:
    context.configure(
        target_metadata=Base.metadata,
        version_table=VERSION_TABLE,
        compare_type=True,
        **kwargs,  # type: ignore[arg-type]
    )


def _url() -> str:
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("no database URL: pass -x url=... or set sqlalchemy.url")
    return normalize_url(url)


def run_online(connection: Connection) -> None:
    _configure(connection=connection, render_as_batch=connection.dialect.name == "sqlite")
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    _configure(url=_url(), literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
elif (given := config.attributes.get("connection")) is not None:
    run_online(given)
else:
    with create_engine(_url()).begin() as opened:
        run_online(opened)

"""The server's own database, opened from the terminal for one command: what every command that reads or
changes accounts, jobs or webhooks shares (``limner tokens|credits|consumers|usage|jobs|webhooks``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import typer

from limner.accounts.db import Database
from limner.core.errors import LimnerError

T = TypeVar("T")


@contextmanager
def database() -> Iterator[Database]:
    """The database ``limner serve`` would use with these settings, disposed of afterwards."""
    from limner.accounts.service import Accounts
    from limner.settings import load_settings

    accounts = Accounts.open(load_settings())
    try:
        yield accounts.db
    finally:
        accounts.db.dispose()


def run(action: Callable[[Database], T]) -> T:
    """Run ``action`` on the database; limner errors become a message and exit status 1."""
    try:
        with database() as db:
            return action(db)
    except LimnerError as error:
        typer.echo(f"error: {error.message}", err=True)
        raise typer.Exit(1) from None

"""Writes a process still holds for a database (batched usage rows and charges), for readers to flush first.

``limner.accounts.usage.UsageWriter`` registers itself here; readers of usage rows and of the ledger call
``flush_pending`` so that, in the process that served a request, its row and charge are visible at once.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable

from limner.accounts.db import Database

_flushers: weakref.WeakKeyDictionary[Database, Callable[[], int]] = weakref.WeakKeyDictionary()


def register(db: Database, flush: Callable[[], int]) -> None:
    _flushers[db] = flush


def flush_pending(db: Database) -> int:
    """Write what this process is still holding for ``db`` (nothing outside a running server)."""
    flush = _flushers.get(db)
    return flush() if flush is not None else 0

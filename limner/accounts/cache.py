"""What a replica remembers between requests about who may call it, and how it learns to forget.

Checking a bearer token and reading its consumer's policy (limits, metered or not) took two database
round trips per request. ``AccountsCache`` keeps their answers in process, and every change that could
make one wrong bumps a counter in the database in the same transaction (``bump``: a revoked token, new
limits, a consumer created, granted credits or made unmetered). A replica reads that counter at most
once per ``interval`` (one second by default) and drops everything it remembered when it moved, so a
revocation made anywhere takes effect on every replica within about a second: not a guess at how long
an answer stays true, but a check that nothing changed.

Only positive answers are kept (an unknown token always asks the database, so a token made a moment
ago works at once), and an answer read before a change is never stored after the change was seen
(``generation``). Expiry needs no invalidation: a cached token carries its ``expires_at``.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

from sqlalchemy import Engine, event, select, update
from sqlalchemy.orm import Session

from limner.accounts.db import Database
from limner.accounts.models import AccountsVersion

DEFAULT_INTERVAL = 1.0
MAX_ENTRIES = 10_000
"""Past this many remembered tokens or policies, start again (bounds memory under many consumers)."""
VERSION_ROW = 1

T = TypeVar("T")
P = TypeVar("P")


def bump(session: Session) -> None:
    """Tell every replica's cache that tokens or consumers changed (call inside the changing transaction).

    Caches in this process on the same engine forget at once when the transaction commits; others, and
    other processes, at their next version check."""
    session.execute(
        update(AccountsVersion).where(AccountsVersion.id == VERSION_ROW).values(version=AccountsVersion.version + 1)
    )
    bind = session.get_bind()
    pool = (bind if isinstance(bind, Engine) else bind.engine).pool  # the writer's engine shares the pool

    def forget(_session: Session) -> None:
        for cache in list(_caches):
            if cache.db.engine.pool is pool:
                cache.clear()

    event.listen(session, "after_commit", forget, once=True)


def current_version(db: Database) -> int:
    with db.read() as session:
        return session.scalar(select(AccountsVersion.version).where(AccountsVersion.id == VERSION_ROW)) or 0


@dataclass(frozen=True)
class Remembered(Generic[T]):
    """A token's answer with what can still make it wrong without a database change: its expiry."""

    value: T
    expires_at: datetime | None


class AccountsCache(Generic[T, P]):
    """Token and policy answers, valid while the accounts version stays the same."""

    def __init__(
        self, db: Database, interval: float = DEFAULT_INTERVAL, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.db = db
        self.interval = interval
        self.clock = clock
        self.generation = 0
        """Goes up whenever the cache is dropped; an answer read under an older one is not stored."""
        self.tokens: dict[str, Remembered[T]] = {}
        self.policies: dict[str, P] = {}
        self._version: int | None = None
        self._checked = float("-inf")
        self._checking: asyncio.Future[None] | None = None
        _caches.add(self)

    @property
    def enabled(self) -> bool:
        return self.interval > 0

    async def fresh(self) -> None:
        """Make sure the cache reflects every change committed more than ``interval`` seconds ago."""
        if self.clock() - self._checked < self.interval:
            return
        if self._checking is None or self._checking.done():
            self._checking = asyncio.ensure_future(self._check())
        await asyncio.shield(self._checking)

    async def _check(self) -> None:
        started = self.clock()
        version = await self.db.call(current_version, self.db)
        if version != self._version:
            self.clear()
            self._version = version
        self._checked = started

    def clear(self) -> None:
        self.generation += 1
        self.tokens.clear()
        self.policies.clear()

    def remember_token(self, digest: str, value: T, expires_at: datetime | None, generation: int) -> None:
        if generation != self.generation:
            return
        if len(self.tokens) >= MAX_ENTRIES:
            self.tokens.clear()
        self.tokens[digest] = Remembered(value, expires_at)

    def remember_policy(self, name: str, value: P, generation: int) -> None:
        if generation != self.generation:
            return
        if len(self.policies) >= MAX_ENTRIES:
            self.policies.clear()
        self.policies[name] = value


_caches: weakref.WeakSet[AccountsCache[Any, Any]] = weakref.WeakSet()
"""Every cache in this process, for ``bump`` to clear the ones on the engine that changed."""

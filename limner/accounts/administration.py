"""What the operator asks of the ledger (consumers, credits, tokens, usage), as awaitable calls.

The admin API speaks to this and never to the database: each call runs its transaction on the database's
thread (``Database.call``), and the values it takes are the operator's as sent (an expiry such as ``30d``,
a ``since`` such as ``24h``), read here beside the rules that judge them."""

from __future__ import annotations

from dataclasses import dataclass

from limner.accounts import consumers, credits, tokens, usage
from limner.accounts.consumers import ConsumerInfo
from limner.accounts.db import Database
from limner.accounts.models import LedgerEntry, UsageRecord
from limner.accounts.tokens import IssuedToken, TokenInfo
from limner.accounts.usage import UsageSummary

MAX_PAGE = 1000


@dataclass(frozen=True)
class Credits:
    balance: int | None
    """Micro-credits; None: unmetered."""
    ledger: list[LedgerEntry]


@dataclass(frozen=True)
class Usage:
    summary: list[UsageSummary]
    records: list[UsageRecord]


class Administration:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def consumers(self) -> list[ConsumerInfo]:
        return await self.db.call(consumers.list_consumers, self.db)

    async def consumer(self, name: str) -> ConsumerInfo:
        """One consumer (``NotFound`` for an unknown name)."""
        return await self.db.call(consumers.get_consumer, self.db, name)

    async def create_consumer(self, name: str, *, rpm: int | None, ipm: int | None, note: str) -> ConsumerInfo:
        await self.db.call(consumers.create_consumer, self.db, name, rpm=rpm, ipm=ipm, note=note)
        return await self.consumer(name)

    async def set_limits(self, name: str, *, rpm: int | None, ipm: int | None) -> ConsumerInfo:
        return await self.db.call(consumers.set_limits, self.db, name, rpm=rpm, ipm=ipm)

    async def set_access(
        self,
        name: str,
        *,
        max_priority: int,
        start_deadline: float | None,
        models: list[str] | None,
        loras: list[str] | None,
    ) -> ConsumerInfo:
        return await self.db.call(
            consumers.set_access,
            self.db,
            name,
            max_priority=max_priority,
            start_deadline=start_deadline,
            models=models,
            loras=loras,
        )

    async def credits(self, name: str, *, limit: int) -> Credits:
        """The balance and the newest ``limit`` ledger entries (kept between 1 and ``MAX_PAGE``)."""
        balance = await self.db.call(credits.balance, self.db, name)
        entries = await self.db.call(credits.ledger, self.db, name, limit=_page(limit))
        return Credits(balance, entries)

    async def grant(self, name: str, micros: int, *, note: str) -> int:
        """The new balance."""
        return await self.db.call(credits.grant, self.db, name, micros, note=note)

    async def unmeter(self, name: str) -> None:
        await self.db.call(credits.set_unmetered, self.db, name)

    async def tokens(self, consumer: str | None) -> list[TokenInfo]:
        return await self.db.call(tokens.list_tokens, self.db, consumer)

    async def create_token(
        self, consumer: str, *, expires: str | None, label: str, rpm: int | None, ipm: int | None
    ) -> IssuedToken:
        expires_at = tokens.parse_expiry(expires)
        return await self.db.call(
            tokens.create_token, self.db, consumer, expires_at=expires_at, label=label, rpm=rpm, ipm=ipm
        )

    async def rotate_token(self, ident: str, *, expires: str | None, label: str) -> IssuedToken:
        expires_at = tokens.parse_expiry(expires)
        return await self.db.call(tokens.rotate_token, self.db, ident, expires_at=expires_at, label=label)

    async def usage(self, consumer: str | None, since: str | None, *, limit: int) -> Usage:
        """Totals per consumer and model, and the newest records (``since``: 24h, 7d or an ISO date)."""
        moment = usage.parse_since(since)
        summary = await self.db.call(usage.summary, self.db, consumer=consumer, since=moment)
        records = await self.db.call(usage.records, self.db, consumer=consumer, since=moment, limit=_page(limit))
        return Usage(summary, records)


def _page(limit: int) -> int:
    return min(max(limit, 1), MAX_PAGE)

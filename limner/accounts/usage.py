"""Usage: one record per request that reached the image service, and summaries of them.

A server does not write a request's row on its way out: ``UsageWriter`` keeps rows in a bounded
buffer and writes them in one transaction every ``interval`` (a quarter of a second by default), when
``batch`` rows are waiting, and when the server stops (SIGTERM included). A process killed outright
(``kill -9``, power loss) loses the rows of its last ``interval`` or so. Readers in the same process
see every row recorded so far (``records``, ``summary`` and ``credits.ledger`` flush first).

A delivered request with a credit hold goes into the same batches: its hold is committed in the
transaction that writes its row, so a charge never exists without its usage row. Its credits left the
balance when they were reserved, so the balance is exact all along; only the ``charge`` ledger entry
comes up to ``interval`` later. A process killed before writing it leaves the hold to recovery, which
refunds it: as for a process that dies between sending a response and committing, the error is in the
client's favour. Refunds (a request that failed) are not batched: the credits go back at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from dataclasses import dataclass
from datetime import datetime
from typing import cast

from sqlalchemy import Table, case, func, insert, select
from sqlalchemy.orm import Session
from sqlalchemy.sql import Select

from limner.accounts import credits, pending
from limner.accounts.credits import Hold
from limner.accounts.db import Database
from limner.accounts.models import UsageRecord, utcnow
from limner.core.errors import InvalidRequest

log = logging.getLogger(__name__)

FLUSH_INTERVAL = 0.25
FLUSH_BATCH = 256
"""Rows that wake the writer before its interval is up."""
MAX_PENDING = 20_000
"""Rows kept while the database is failing; past this the oldest are dropped (and logged)."""


@dataclass(frozen=True)
class UsageEvent:
    request_id: str
    consumer: str
    token_id: int | None
    model: str
    dialect: str
    images: int
    pixels: int
    seconds: float
    cost: int
    status: int
    error_code: str | None


@dataclass(frozen=True)
class UsageSummary:
    consumer: str
    model: str
    requests: int
    failed: int
    images: int
    pixels: int
    seconds: float
    cost: int


def _row(event: UsageEvent, now: datetime) -> dict[str, object]:
    return {
        "created_at": now,
        "request_id": event.request_id[:80],
        "consumer": event.consumer[:64],
        "token_id": event.token_id,
        "model": event.model[:200],
        "dialect": event.dialect[:32],
        "images": event.images,
        "pixels": event.pixels,
        "seconds": event.seconds,
        "cost": event.cost,
        "status": event.status,
        "error_code": event.error_code[:40] if event.error_code else None,
    }


def add(session: Session, event: UsageEvent, now: datetime | None = None) -> None:
    """Record ``event`` inside the caller's transaction (the one that settles its credits)."""
    session.add(UsageRecord(**_row(event, now or utcnow())))


@dataclass(frozen=True)
class _Pending:
    """A usage row waiting to be written, and the credit hold its write commits (None: nothing to commit)."""

    row: dict[str, object]
    hold: Hold | None = None


class UsageWriter:
    """Usage rows written in batches, off the request path (see the module doc).

    ``record`` only appends (it waits for a write only when ``max_pending`` rows are already waiting);
    ``commit`` does the same for a delivered request's hold, committed in the transaction that writes its
    row; ``flush`` writes what is waiting, from any thread; ``run`` flushes on a timer until cancelled."""

    def __init__(
        self,
        db: Database,
        *,
        interval: float = FLUSH_INTERVAL,
        batch: int = FLUSH_BATCH,
        max_pending: int = MAX_PENDING,
    ) -> None:
        self.db = db
        self.interval = interval
        self.batch = batch
        self.max_pending = max_pending
        self._pending: list[_Pending] = []
        self._lock = threading.Lock()
        self._writing = threading.Lock()
        """Held while a batch is written, so that a flush returns only once every earlier row is in."""
        self._wake = asyncio.Event()
        pending.register(db, self.flush)

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def record(self, event: UsageEvent) -> None:
        await self._add(_Pending(_row(event, utcnow())))

    async def commit(self, hold: Hold, event: UsageEvent) -> None:
        """Commit ``hold`` (a delivered request's) and record ``event``, together, in the next batch."""
        await self._add(_Pending(_row(event, utcnow()), hold))

    async def _add(self, item: _Pending) -> None:
        with self._lock:
            self._pending.append(item)
            waiting = len(self._pending)
        if waiting >= self.max_pending:
            await self.db.call(self.flush)  # the writer is behind: hold this request until it catches up
        elif waiting >= self.batch:
            self._wake.set()

    def flush(self) -> int:
        """Write every waiting row in one transaction; the number written. If that fails, each is tried
        alone: one the database refuses by itself is logged and dropped (its hold, never committed, is
        refunded by recovery: in the client's favour); if none goes in, they all wait for the next try
        (the oldest dropped past ``max_pending``) and the error is raised."""
        with self._writing:
            with self._lock:
                items, self._pending = self._pending, []
            if not items:
                return 0
            try:
                with self.db.write() as session:
                    _write(session, items)
                return len(items)
            except Exception:
                if len(items) == 1:
                    self._keep(items)
                    raise
            refused: list[_Pending] = []
            for item in items:
                try:
                    with self.db.write() as session:
                        _write(session, [item])
                except Exception as exc:
                    refused.append(item)
                    error = exc
            if len(refused) == len(items):  # the database, not a row: keep them all for the next try
                self._keep(items)
                raise error
            for item in refused:
                log.error("usage: dropped the row of request %s: the database refuses it", item.row["request_id"])
            written = len(items) - len(refused)
            return written

    def _keep(self, items: list[_Pending]) -> None:
        with self._lock:
            self._pending[:0] = items
            lost = len(self._pending) - self.max_pending
            if lost > 0:
                del self._pending[:lost]
                log.error("usage: the database refused %d rows for too long; dropped the oldest", lost)

    async def run(self) -> None:
        """Flush every ``interval`` (sooner when ``batch`` rows wait) until cancelled (then ``flush`` once more)."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval)
            self._wake.clear()
            try:
                await self.db.call(self.flush)
            except Exception:
                log.exception("writing usage rows failed; retrying")


def _write(session: Session, items: list[_Pending]) -> None:
    charges = [
        credits.Charge(item.hold, str(item.row["request_id"]), cast(datetime, item.row["created_at"]))
        for item in items
        if item.hold is not None
    ]
    committed = credits.commit_many(session, charges)
    rows = [
        item.row if item.hold is None or item.hold.id in committed else item.row | {"cost": 0}  # refunded first
        for item in items
    ]
    session.execute(insert(cast(Table, UsageRecord.__table__)), rows)  # Core's executemany: cheaper than the ORM's


def _filtered(query: Select, consumer: str | None, since: datetime | None):  # type: ignore[type-arg,no-untyped-def]
    if consumer is not None:
        query = query.where(UsageRecord.consumer == consumer)
    if since is not None:
        query = query.where(UsageRecord.created_at >= since)
    return query


def records(
    db: Database, *, consumer: str | None = None, since: datetime | None = None, limit: int = 100
) -> list[UsageRecord]:
    """The newest records first."""
    query = _filtered(select(UsageRecord), consumer, since).order_by(UsageRecord.id.desc()).limit(limit)
    pending.flush_pending(db)
    with db.read() as session:
        return list(session.scalars(query))


def summary(db: Database, *, consumer: str | None = None, since: datetime | None = None) -> list[UsageSummary]:
    """Totals per consumer and model."""
    query = _filtered(
        select(
            UsageRecord.consumer,
            UsageRecord.model,
            func.count(),
            func.sum(case((UsageRecord.error_code.is_not(None), 1), else_=0)),
            func.sum(UsageRecord.images),
            func.sum(UsageRecord.pixels),
            func.sum(UsageRecord.seconds),
            func.sum(UsageRecord.cost),
        ).group_by(UsageRecord.consumer, UsageRecord.model),
        consumer,
        since,
    ).order_by(UsageRecord.consumer, UsageRecord.model)
    pending.flush_pending(db)
    with db.read() as session:
        rows = session.execute(query).all()
    return [
        UsageSummary(c, m, int(n), int(f or 0), int(i or 0), int(p or 0), float(s or 0.0), int(cost or 0))
        for c, m, n, f, i, p, s, cost in rows
    ]


def parse_since(value: str | None, now: datetime | None = None) -> datetime | None:
    """``--since 24h`` / ``7d`` (that long ago) or an ISO date/time."""
    if not value:
        return None
    from limner.accounts.tokens import parse_duration, parse_moment

    now = now or utcnow()
    duration = parse_duration(value)
    try:
        return now - duration if duration is not None else parse_moment(value, now)
    except OverflowError:
        raise InvalidRequest(f"Invalid time {value!r}: before the year 1.", param="since") from None

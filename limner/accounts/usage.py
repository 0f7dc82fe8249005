"""Usage: one record per request that reached the image service, and summaries of them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session
from sqlalchemy.sql import Select

from limner.accounts.db import Database
from limner.accounts.models import UsageRecord, utcnow
from limner.core.errors import InvalidRequest


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


def add(session: Session, event: UsageEvent, now: datetime | None = None) -> None:
    """Record ``event`` inside the caller's transaction (the one that settles its credits)."""
    session.add(
        UsageRecord(
            created_at=now or utcnow(),
            request_id=event.request_id[:80],
            consumer=event.consumer[:64],
            token_id=event.token_id,
            model=event.model[:200],
            dialect=event.dialect[:32],
            images=event.images,
            pixels=event.pixels,
            seconds=event.seconds,
            cost=event.cost,
            status=event.status,
            error_code=event.error_code[:40] if event.error_code else None,
        )
    )


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

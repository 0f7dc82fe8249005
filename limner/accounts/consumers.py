"""Consumers: the apps and people that call limner, each with optional limits and an optional balance."""

from __future__ import annotations

import base64
import json
import re
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from limner.accounts.cache import bump
from limner.accounts.db import Database
from limner.accounts.models import ApiToken, Consumer, utcnow
from limner.core.errors import InvalidRequest, NotFound

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
MAX_LIMIT = 1_000_000_000
"""The largest requests/min or images/min limit (the columns are 32-bit integers)."""
LOCAL = "local"
"""The consumer of every request while the server is open (loopback, no tokens)."""
WEBHOOK_SECRET_PREFIX = "whsec_"
"""Standard Webhooks' secret format: this prefix, then the base64 of the HMAC key."""


def new_webhook_secret() -> str:
    """A random webhook signing secret (32 bytes): each consumer's own, stored with it."""
    return WEBHOOK_SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode("ascii")


MAX_PRIORITY = 100
"""The highest priority a consumer may be allowed (``Limner-Priority``); requests default to 0."""
MAX_START_DEADLINE = 86_400.0


@dataclass(frozen=True)
class Access:
    """How a consumer's requests are scheduled and what they may use (``None``: no limit of that kind)."""

    max_priority: int = 0
    start_deadline: float | None = None
    models: tuple[str, ...] | None = None
    loras: tuple[str, ...] | None = None

    def allows_model(self, model_id: str) -> bool:
        return self.models is None or model_id in self.models

    def allows_lora(self, name: str) -> bool:
        return self.loras is None or name in self.loras


@dataclass(frozen=True)
class Policy:
    """What the gate needs to know about a consumer: its id (None: not in the database), limits, balance,
    scheduling and access.

    A server caches policies (``limner.accounts.cache``), so ``balance`` may be out of date: only whether
    it is None (unmetered) is to be relied on; the reservation itself checks the real balance."""

    consumer_id: int | None
    balance: int | None
    rpm: int | None
    ipm: int | None
    access: Access = Access()


@dataclass(frozen=True)
class ConsumerInfo:
    id: int
    name: str
    created_at: datetime
    balance: int | None
    rpm: int | None
    ipm: int | None
    note: str
    active_tokens: int
    access: Access = Access()


def check_name(name: str) -> str:
    if not NAME.match(name):
        raise InvalidRequest(
            f"Invalid consumer name {name!r}: 1-64 letters, digits, '.', '_', '@' or '-', starting with a letter "
            "or digit.",
            param="consumer",
        )
    return name


def find(session: Session, name: str) -> Consumer:
    consumer = session.scalar(select(Consumer).where(Consumer.name == name)) if NAME.match(name) else None
    if consumer is None:
        raise NotFound(f"No consumer named {name!r}.", param="consumer")
    return consumer


def ensure(session: Session, name: str) -> tuple[Consumer, bool]:
    """The consumer named ``name``, created (unmetered, server-default limits, a random webhook secret) if missing."""
    consumer = session.scalar(select(Consumer).where(Consumer.name == check_name(name)))
    if consumer is not None:
        return consumer, False
    consumer = Consumer(name=name, created_at=utcnow(), note="", webhook_secret=new_webhook_secret())
    session.add(consumer)
    session.flush()
    bump(session)
    return consumer, True


def checked_limit(value: int | None, current: int | None) -> int | None:
    """None keeps the current limit; 0 clears it (back to the server default)."""
    if value is None:
        return current
    if value < 0:
        raise InvalidRequest("Limits must be positive (0 means the server default).")
    if value > MAX_LIMIT:
        raise InvalidRequest(f"Limits can be at most {MAX_LIMIT:,} per minute.")
    return value or None


def create_consumer(db: Database, name: str, *, rpm: int | None = None, ipm: int | None = None, note: str = "") -> None:
    with db.write() as session:
        consumer, created = ensure(session, name)
        if not created:
            raise InvalidRequest(f"Consumer {name!r} already exists.", param="consumer")
        consumer.rpm, consumer.ipm, consumer.note = checked_limit(rpm, None), checked_limit(ipm, None), note


def set_limits(db: Database, name: str, *, rpm: int | None = None, ipm: int | None = None) -> ConsumerInfo:
    with db.write() as session:
        consumer = find(session, name)
        consumer.rpm, consumer.ipm = checked_limit(rpm, consumer.rpm), checked_limit(ipm, consumer.ipm)
        bump(session)
    return get_consumer(db, name)


def policy(db: Database, name: str) -> Policy:
    with db.read() as session:
        row = session.execute(select(Consumer).where(Consumer.name == name)).scalar_one_or_none()
        if row is None:
            return Policy(None, None, None, None)
        return Policy(row.id, row.balance, row.rpm, row.ipm, access_of(row))


def access_of(row: Consumer) -> Access:
    return Access(
        max_priority=row.max_priority or 0,
        start_deadline=row.start_deadline,
        models=_names(row.allowed_models),
        loras=_names(row.allowed_loras),
    )


def set_access(
    db: Database,
    name: str,
    *,
    max_priority: int = 0,
    start_deadline: float | None = None,
    models: list[str] | None = None,
    loras: list[str] | None = None,
) -> ConsumerInfo:
    """Replace a consumer's scheduling and access settings (``None`` lists: every model or adapter)."""
    if not 0 <= max_priority <= MAX_PRIORITY:
        raise InvalidRequest(f"max_priority must be between 0 and {MAX_PRIORITY}.", param="max_priority")
    if start_deadline is not None and not 0 < start_deadline <= MAX_START_DEADLINE:
        raise InvalidRequest(
            f"start_deadline must be more than 0 and at most {MAX_START_DEADLINE:g} seconds.", param="start_deadline"
        )
    with db.write() as session:
        consumer = find(session, name)
        consumer.max_priority = max_priority or None
        consumer.start_deadline = start_deadline
        consumer.allowed_models = None if models is None else json.dumps(sorted(set(models)))
        consumer.allowed_loras = None if loras is None else json.dumps(sorted(set(loras)))
        bump(session)
    return get_consumer(db, name)


def _names(stored: str | None) -> tuple[str, ...] | None:
    return None if stored is None else tuple(json.loads(stored))


def list_consumers(db: Database) -> list[ConsumerInfo]:
    now = utcnow()
    active = (
        select(ApiToken.consumer_id, func.count().label("n"))
        .where(ApiToken.revoked_at.is_(None), (ApiToken.expires_at.is_(None)) | (ApiToken.expires_at > now))
        .group_by(ApiToken.consumer_id)
        .subquery()
    )
    with db.read() as session:
        rows = session.execute(
            select(Consumer, func.coalesce(active.c.n, 0))
            .outerjoin(active, active.c.consumer_id == Consumer.id)
            .order_by(Consumer.name)
        ).all()
    return [
        ConsumerInfo(c.id, c.name, c.created_at, c.balance, c.rpm, c.ipm, c.note, int(n), access_of(c)) for c, n in rows
    ]


def get_consumer(db: Database, name: str) -> ConsumerInfo:
    for info in list_consumers(db):
        if info.name == name:
            return info
    raise NotFound(f"No consumer named {name!r}.", param="consumer")

"""The accounts schema (SQLAlchemy 2.0 ORM), portable between SQLite and PostgreSQL.

Money is stored as integer micro-credits (1 credit = 1,000,000) so that the conditional
``balance >= cost`` check is exact on both databases; floats appear only at the edges (CLI, HTTP).
Times are stored as naive UTC and always read back timezone-aware (``UTCDateTime``), because SQLite
has no timezone type and comparisons must mean the same thing on both databases.

    consumers ─┬─< api_tokens      hashed bearer tokens, several active per consumer
               ├─< reservations    credits held for one request until committed or refunded
               └─< ledger          every change of a balance, signed, with the balance after it
    usage                          one row per request that reached the image service
    instances ──< reservations     each server process's lease (heartbeat); a dead one's holds are refunded
    jobs ──< webhook_deliveries    async jobs and idempotency keys (``limner.service.job_store``), and the
         ──< webhook_attempts      webhooks owed for them with each try (``limner.service.webhooks``)
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from limner.core.errors import InvalidRequest

MICROS = 1_000_000
"""Micro-credits per credit."""
MAX_MICROS = 10**18
"""The largest balance or grant (a trillion credits): well inside a signed 64-bit column."""

# BIGINT on PostgreSQL, but INTEGER on SQLite, where only INTEGER PRIMARY KEY autoincrements.
BigId = BigInteger().with_variant(Integer(), "sqlite")

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in Python, naive UTC in the database (the same on SQLite and PostgreSQL)."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):
            value = datetime.fromisoformat(value)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Consumer(Base):
    """An app or person that calls limner. ``balance`` NULL means unlimited credits."""

    __tablename__ = "consumers"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    balance: Mapped[int | None] = mapped_column(BigInteger, default=None)
    """Available micro-credits (reservations already taken off); NULL: not metered."""
    rpm: Mapped[int | None] = mapped_column(Integer, default=None)
    """Requests per minute per model; NULL: the server default."""
    ipm: Mapped[int | None] = mapped_column(Integer, default=None)
    """Images per minute per model; NULL: the server default."""
    note: Mapped[str] = mapped_column(String(200), default="")
    webhook_url: Mapped[str | None] = mapped_column(String(2048), default=None)
    """Where this consumer's async jobs report when a request names no webhook of its own."""
    webhook_secret_version: Mapped[int] = mapped_column(Integer, default=1)
    """Before 0005: bumped to rotate a webhook secret derived from the server's secret. Now only what a row
    from then, with no ``webhook_secret`` stored yet, derives its secret from (``limner.service.webhook_secrets``)."""
    webhook_secret: Mapped[str | None] = mapped_column(String(64), default=None)
    """The ``whsec_`` secret its webhooks are signed with: random, independent of the media signing key."""
    webhook_previous_secret: Mapped[str | None] = mapped_column(String(64), default=None)
    """The secret before the last rotation: events are signed with it too for a grace period after."""
    webhook_secret_rotated_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    max_priority: Mapped[int | None] = mapped_column(Integer, default=None)
    """The highest ``Limner-Priority`` its requests may ask for; NULL: 0 (none above the default)."""
    start_deadline: Mapped[float | None] = mapped_column(Float, default=None)
    """Seconds a request of its may wait to start when it names no ``Limner-Start-Deadline``; NULL: no limit."""
    allowed_models: Mapped[str | None] = mapped_column(Text, default=None)
    """A JSON list of the catalog ids it may use; NULL: every model."""
    allowed_loras: Mapped[str | None] = mapped_column(Text, default=None)
    """A JSON list of the LoRA adapter names it may use; NULL: every adapter of a model it may use."""


class ApiToken(Base):
    """A bearer token, stored as its SHA-256; ``prefix`` is the non-secret start shown in listings."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    consumer_id: Mapped[int] = mapped_column(ForeignKey("consumers.id", ondelete="CASCADE"), index=True)
    prefix: Mapped[str] = mapped_column(String(16), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    label: Mapped[str] = mapped_column(String(100), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    rotated_from_id: Mapped[int | None] = mapped_column(Integer, default=None)

    def is_active(self, now: datetime) -> bool:
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > now)


class Reservation(Base):
    """Credits held for one request: ``held`` until ``committed``, ``refunded`` or ``expired`` (recovered)."""

    __tablename__ = "reservations"
    __table_args__ = (Index("ix_reservations_state_expires_at", "state", "expires_at"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    consumer_id: Mapped[int] = mapped_column(ForeignKey("consumers.id", ondelete="CASCADE"), index=True)
    amount: Mapped[int] = mapped_column(BigInteger)
    instance_id: Mapped[str | None] = mapped_column(String(32), default=None, index=True)
    """The server process holding it (``instances``); NULL for holds made outside a server (and before 0002)."""
    model: Mapped[str] = mapped_column(String(200))
    request_id: Mapped[str] = mapped_column(String(80))
    state: Mapped[str] = mapped_column(String(16), default="held")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    settled_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)


class Instance(Base):
    """One server process's lease on the accounts: alive while ``heartbeat_at`` is recent and ``stopped_at``
    is NULL. ``lock_path`` is a file the process keeps locked (``flock``) while it lives, so another process
    on the same host can tell at once that it died, however recent its last heartbeat."""

    __tablename__ = "instances"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    hostname: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    lock_path: Mapped[str] = mapped_column(String(1024), default="")
    started_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    stopped_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)


class LedgerEntry(Base):
    """One change of a consumer's balance. ``delta`` sums to the balance; ``charge`` rows have delta 0
    (the credits left the balance at ``reserve``) and mark the reservation as paid for."""

    __tablename__ = "ledger"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    consumer_id: Mapped[int] = mapped_column(ForeignKey("consumers.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    kind: Mapped[str] = mapped_column(String(16))
    """grant | reserve | charge | refund | expire | unmeter"""
    delta: Mapped[int] = mapped_column(BigInteger)
    amount: Mapped[int] = mapped_column(BigInteger)
    balance_after: Mapped[int | None] = mapped_column(BigInteger, default=None)
    reservation_id: Mapped[str | None] = mapped_column(String(32), default=None, index=True)
    request_id: Mapped[str | None] = mapped_column(String(80), default=None)
    note: Mapped[str] = mapped_column(String(200), default="")


class UsageRecord(Base):
    """One request that reached the image service, whatever its outcome."""

    __tablename__ = "usage"
    __table_args__ = (Index("ix_usage_consumer_created_at", "consumer", "created_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    request_id: Mapped[str] = mapped_column(String(80))
    consumer: Mapped[str] = mapped_column(String(64))
    token_id: Mapped[int | None] = mapped_column(Integer, default=None, index=True)
    model: Mapped[str] = mapped_column(String(200))
    dialect: Mapped[str] = mapped_column(String(32))
    images: Mapped[int] = mapped_column(Integer, default=0)
    pixels: Mapped[int] = mapped_column(BigInteger, default=0)
    seconds: Mapped[float] = mapped_column(Float, default=0.0)
    cost: Mapped[int] = mapped_column(BigInteger, default=0)
    """Micro-credits charged (0 when refunded or free)."""
    status: Mapped[int] = mapped_column(Integer)
    """200, or the error's canonical HTTP status; 499 when the client went away."""
    error_code: Mapped[str | None] = mapped_column(String(40), default=None)


class JobRecord(Base):
    """A request kept beyond its connection: an async job (``asynchronous``), or a synchronous request made
    with an ``Idempotency-Key`` whose response is replayed to retries.

    ``status``: queued -> running -> done | failed | cancelled. A running row belongs to ``instance_id``; when
    that instance dies, the job is queued again (``attempts`` counts the runs) or failed with a refund.
    An async job's request is kept (``body``: its ``ImageRequest``, ``answer``: how its dialect answers it, see
    ``limner.service.job_requests``) until the job ends; the response (``response_*``) until the row expires."""

    __tablename__ = "jobs"
    __table_args__ = (
        UniqueConstraint("consumer", "idempotency_key"),
        Index("ix_jobs_status_created_at", "status", "created_at"),
        Index("ix_jobs_consumer_created_at", "consumer", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    consumer: Mapped[str] = mapped_column(String(64))
    token_id: Mapped[int | None] = mapped_column(Integer, default=None)
    idempotency_key: Mapped[str | None] = mapped_column(String(255), default=None)
    fingerprint: Mapped[str] = mapped_column(String(64))
    """SHA-256 of method, path, content type and body: a reused key with another body is refused."""
    asynchronous: Mapped[bool] = mapped_column(Boolean, default=False)
    method: Mapped[str] = mapped_column(String(8))
    path: Mapped[str] = mapped_column(String(1024))
    query: Mapped[str] = mapped_column(String(2048), default="")
    body: Mapped[bytes | None] = mapped_column(LargeBinary, default=None)
    answer: Mapped[str | None] = mapped_column(Text, default=None)
    status: Mapped[str] = mapped_column(String(16), default="queued")
    model: Mapped[str | None] = mapped_column(String(200), default=None)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    instance_id: Mapped[str | None] = mapped_column(String(32), default=None, index=True)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    step: Mapped[int] = mapped_column(Integer, default=0)
    total_steps: Mapped[int | None] = mapped_column(Integer, default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    response_status: Mapped[int | None] = mapped_column(Integer, default=None)
    response_headers: Mapped[str | None] = mapped_column(Text, default=None)
    response_body: Mapped[bytes | None] = mapped_column(LargeBinary, default=None)
    error_code: Mapped[str | None] = mapped_column(String(40), default=None)
    error_message: Mapped[str | None] = mapped_column(String(1000), default=None)
    webhook_url: Mapped[str | None] = mapped_column(String(2048), default=None)


class WebhookDelivery(Base):
    """One event owed to a webhook URL: ``pending`` until a 2xx (``delivered``) or the last try (``failed``).
    ``event_id`` is the ``webhook-id`` every retry repeats, so receivers can drop duplicates."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (Index("ix_webhook_deliveries_state_next_attempt_at", "state", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    consumer: Mapped[str] = mapped_column(String(64))
    event_id: Mapped[str] = mapped_column(String(64), unique=True)
    event_type: Mapped[str] = mapped_column(String(40))
    url: Mapped[str] = mapped_column(String(2048))
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    state: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)


class WebhookAttempt(Base):
    """One try of a delivery: the receiver's status code, or why there was none."""

    __tablename__ = "webhook_attempts"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    delivery_id: Mapped[int] = mapped_column(ForeignKey("webhook_deliveries.id", ondelete="CASCADE"), index=True)
    attempted_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    status_code: Mapped[int | None] = mapped_column(Integer, default=None)
    error: Mapped[str | None] = mapped_column(String(300), default=None)
    seconds: Mapped[float] = mapped_column(Float, default=0.0)


def to_micros(credits: float | int | str) -> int:
    """Credits (as typed by a person or configured as a price) to integer micro-credits, rounded.

    Refuses what no balance can hold: NaN, infinities, and amounts past ``MAX_MICROS``."""
    from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

    try:
        value = Decimal(str(credits))
    except InvalidOperation:
        shown = str(credits)[:40]
        raise InvalidRequest(f"Invalid amount {shown!r}: give a number of credits.", param="amount") from None
    if not value.is_finite() or abs(value) * MICROS > MAX_MICROS:
        raise InvalidRequest(
            f"Invalid amount {str(credits)[:40]}: credits must be a finite number of at most {MAX_MICROS // MICROS:,}.",
            param="amount",
        )
    return int((value * MICROS).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def from_micros(micros: int | None) -> float | None:
    return None if micros is None else micros / MICROS


class AccountsVersion(Base):
    """One row whose counter goes up with every change that a replica's in-process cache of tokens and
    consumer policies must not outlive (a revoked token, new limits, a consumer turned metered)."""

    __tablename__ = "accounts_version"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger, default=0)

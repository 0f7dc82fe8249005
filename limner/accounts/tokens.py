"""Bearer tokens: random, opaque, shown once, stored as hashes, compared in constant time.

A token is ``lim_`` + 43 URL-safe characters (256 random bits). The database keeps its SHA-256 and
its first 12 characters (``prefix``): the prefix finds the candidate rows through an index and names
the token in listings; the secret part never leaves the process that made it. A plain hash (no
pepper) is enough because tokens are random: there is no dictionary to try against a leaked hash.
Verification compares the full hash with ``hmac.compare_digest``, so response time does not depend
on how many characters of a guess were right.

Several tokens may be active per consumer (rotation: create the new one, move clients, revoke the
old one). A server remembers the tokens it verified (``limner.accounts.cache``); revoking one bumps
the accounts version in the same transaction, so the revocation takes effect on every replica within
about a second. Expiry is checked on every request.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from limner.accounts import consumers, pending
from limner.accounts.cache import bump
from limner.accounts.db import Database
from limner.accounts.models import ApiToken, Consumer, UsageRecord, utcnow
from limner.core.errors import InvalidRequest, NotFound

TOKEN_PREFIX = "lim_"
LOOKUP_CHARS = 12
MAX_TOKEN_CHARS = 256
_DUMMY_HASH = hashlib.sha256(b"limner: no such token").hexdigest()
_DURATION = re.compile(r"^(\d+)\s*([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_ID = re.compile(r"^[0-9]+$")
"""A token id: ASCII digits only (``str.isdigit`` also takes '²', which ``int`` refuses)."""
MAX_ID_DIGITS = 9
"""Ids are 32-bit integers; a longer number cannot be one (and would overflow the database's type)."""
_TOKEN_CHARS = re.compile(r"^[A-Za-z0-9_-]+$")
"""Every character a token (``lim_`` + URL-safe base64) can hold."""


@dataclass(frozen=True)
class Principal:
    """Who is calling: a consumer, and the token it used (None while the server is open)."""

    consumer: str
    consumer_id: int | None = None
    token_id: int | None = None


principal_var: ContextVar[Principal | None] = ContextVar("limner_principal", default=None)
"""The caller of the request being served (set by authentication), for code that records usage per token."""


@dataclass(frozen=True)
class IssuedToken:
    """A newly created token; ``token`` is the only copy of the secret there will ever be."""

    id: int
    token: str
    prefix: str
    consumer: str
    expires_at: datetime | None
    rotated_from_id: int | None = None


@dataclass(frozen=True)
class TokenInfo:
    id: int
    prefix: str
    consumer: str
    label: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    rotated_from_id: int | None
    last_used_at: datetime | None

    def status(self, now: datetime | None = None) -> str:
        now = now or utcnow()
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        return "active"


def new_secret() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def parse_duration(value: str) -> timedelta | None:
    """``30d``, ``12h``, ``90m``, ``3600s``, ``2w`` as a timedelta; None if ``value`` is not a duration."""
    match = _DURATION.match(value.strip().lower())
    if match is None:
        return None
    try:
        return timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])
    except OverflowError:
        raise InvalidRequest(f"Invalid duration {value!r}: longer than any calendar.", param="expires") from None


def parse_moment(value: str, now: datetime) -> datetime:
    """An ISO date or date-time (UTC unless it says otherwise)."""
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        raise InvalidRequest(
            f"Invalid time {value!r}: use a duration like 30d, 12h, 90m, or an ISO date.", param="expires"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=now.tzinfo)


def parse_expiry(value: str | None, now: datetime | None = None) -> datetime | None:
    """When a token made now should expire: a duration ahead, an ISO date/time, or none/never."""
    if value is None or value.strip().lower() in ("", "none", "never"):
        return None
    now = now or utcnow()
    duration = parse_duration(value)
    try:
        moment = now + duration if duration is not None else parse_moment(value, now)
        moment.astimezone(UTC)  # what the database stores; past 9999-12-31 UTC it cannot
    except OverflowError:
        raise InvalidRequest(f"Invalid expiry {value!r}: past the year 9999.", param="expires") from None
    if moment <= now:
        raise InvalidRequest("An expiry must be in the future.", param="expires")
    return moment


def _issue(
    session: Session, consumer: Consumer, *, expires_at: datetime | None, label: str, rotated_from: int | None
) -> IssuedToken:
    secret = new_secret()
    row = ApiToken(
        consumer_id=consumer.id,
        prefix=secret[:LOOKUP_CHARS],
        token_hash=hash_token(secret),
        label=label[:100],
        created_at=utcnow(),
        expires_at=expires_at,
        rotated_from_id=rotated_from,
    )
    session.add(row)
    session.flush()
    return IssuedToken(row.id, secret, row.prefix, consumer.name, expires_at, rotated_from)


def create_token(
    db: Database,
    consumer: str,
    *,
    expires_at: datetime | None = None,
    label: str = "",
    rpm: int | None = None,
    ipm: int | None = None,
) -> IssuedToken:
    """A new token for ``consumer`` (created if missing); ``rpm``/``ipm`` set the consumer's limits."""
    with db.write() as session:
        row, _ = consumers.ensure(session, consumer)
        row.rpm, row.ipm = consumers.checked_limit(rpm, row.rpm), consumers.checked_limit(ipm, row.ipm)
        bump(session)  # the consumer may be new or have new limits
        return _issue(session, row, expires_at=expires_at, label=label, rotated_from=None)


def find_token(session: Session, ident: str) -> ApiToken:
    """A token by numeric id, by the start of its listed prefix (8+ characters), or by the whole token."""
    ident = ident.strip()
    if _ID.match(ident):
        row = session.get(ApiToken, int(ident)) if len(ident) <= MAX_ID_DIGITS else None
        if row is None:
            raise NotFound(f"No token with id {ident[: MAX_ID_DIGITS + 2]}.")
        return row
    if not _TOKEN_CHARS.match(ident):
        raise InvalidRequest(
            f"Invalid token id or prefix {ident[:LOOKUP_CHARS]!r}: give a numeric id or the token's prefix (lim_...).",
            param="token",
        )
    if len(ident) < len(TOKEN_PREFIX) + 4:
        raise InvalidRequest("Give a token id or at least 8 characters of its prefix.")
    if len(ident) > LOOKUP_CHARS:  # a whole token: match it exactly, never by its prefix alone
        candidates = session.scalars(select(ApiToken).where(ApiToken.prefix == ident[:LOOKUP_CHARS])).all()
        rows = [row for row in candidates if hmac.compare_digest(row.token_hash, hash_token(ident))]
    else:
        rows = list(session.scalars(select(ApiToken).where(ApiToken.prefix.startswith(ident, autoescape=True))))
    if not rows:
        raise NotFound(f"No token matches {ident[:LOOKUP_CHARS]!r}.")
    if len(rows) > 1:
        raise InvalidRequest(f"{len(rows)} tokens match {ident!r}; give the id instead.")
    return rows[0]


def revoke_token(db: Database, ident: str) -> TokenInfo:
    """Revoke at once (idempotent); the next request with this token is refused on every replica."""
    with db.write() as session:
        row = find_token(session, ident)
        if row.revoked_at is None:
            row.revoked_at = utcnow()
            bump(session)
        token_id = row.id
    return get_token(db, token_id)


def rotate_token(db: Database, ident: str, *, expires_at: datetime | None = None, label: str = "") -> IssuedToken:
    """A new token for the same consumer; the old one stays active until it is revoked."""
    with db.write() as session:
        old = find_token(session, ident)
        if old.revoked_at is not None:
            raise InvalidRequest(f"Token {old.id} is revoked; create a new one instead.")
        consumer = session.get(Consumer, old.consumer_id)
        assert consumer is not None
        return _issue(session, consumer, expires_at=expires_at, label=label or old.label, rotated_from=old.id)


def list_tokens(db: Database, consumer: str | None = None) -> list[TokenInfo]:
    last_used = (
        select(UsageRecord.token_id, func.max(UsageRecord.created_at).label("last"))
        .where(UsageRecord.token_id.is_not(None))
        .group_by(UsageRecord.token_id)
        .subquery()
    )
    query = (
        select(ApiToken, Consumer.name, last_used.c.last)
        .join(Consumer, Consumer.id == ApiToken.consumer_id)
        .outerjoin(last_used, last_used.c.token_id == ApiToken.id)
        .order_by(ApiToken.id)
    )
    if consumer is not None:
        query = query.where(Consumer.name == consumer)
    pending.flush_pending(db)  # last use comes from the usage rows
    with db.read() as session:
        rows = session.execute(query).all()
    return [
        TokenInfo(t.id, t.prefix, name, t.label, t.created_at, t.expires_at, t.revoked_at, t.rotated_from_id, last)
        for t, name, last in rows
    ]


def get_token(db: Database, token_id: int) -> TokenInfo:
    for info in list_tokens(db):
        if info.id == token_id:
            return info
    raise NotFound(f"No token with id {token_id}.")


def any_tokens(db: Database) -> bool:
    """Whether a token was ever created: from then on the server requires one (revoking all keeps it closed)."""
    with db.read() as session:
        return session.scalar(select(ApiToken.id).limit(1)) is not None


def verify_token(db: Database, token: str, now: datetime | None = None) -> Principal | None:
    """The principal for an active token, or None. Every candidate is compared in constant time."""
    found = lookup_token(db, token, now)
    return found[0] if found is not None else None


def lookup_token(db: Database, token: str, now: datetime | None = None) -> tuple[Principal, datetime | None] | None:
    """The principal for an active token and when the token expires (for a cache to keep), or None."""
    now = now or utcnow()
    if not token.startswith(TOKEN_PREFIX) or len(token) > MAX_TOKEN_CHARS:
        hmac.compare_digest(_DUMMY_HASH, hash_token(token[:MAX_TOKEN_CHARS]))
        return None
    digest = hash_token(token)
    with db.read() as session:
        rows = session.execute(
            select(ApiToken, Consumer.name)
            .join(Consumer, Consumer.id == ApiToken.consumer_id)
            .where(ApiToken.prefix == token[:LOOKUP_CHARS])
        ).all()
    found: tuple[ApiToken, str] | None = None
    if not rows:
        hmac.compare_digest(_DUMMY_HASH, digest)  # the same work whether or not the prefix exists
    for row, name in rows:
        if hmac.compare_digest(row.token_hash, digest):
            found = (row, name)
    if found is None or not found[0].is_active(now):
        return None
    row, name = found
    return Principal(consumer=name, consumer_id=row.consumer_id, token_id=row.id), row.expires_at

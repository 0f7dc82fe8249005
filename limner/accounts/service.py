"""``Accounts``: the accounts package as the server and the CLI use it, built from settings.

It owns the database (migrated to head when opened) and the rate limiter, answers "who is this
bearer?" for the auth dependency, and recovers credit reservations left behind by a process that
died mid-request (at startup and then every ``reservation_sweep_seconds``, on every replica).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from limner.accounts import credits, tokens
from limner.accounts.consumers import LOCAL
from limner.accounts.db import Database, default_url
from limner.accounts.ratelimit import Limits, RateLimiter, build_limiter
from limner.accounts.tokens import Principal
from limner.core.errors import InvalidToken, MissingBearerToken, NoTokensConfigured

log = logging.getLogger("limner.accounts")


class AccountsConfig(Protocol):
    """The settings ``Accounts.open`` reads (``limner.settings.Settings`` has them all)."""

    @property
    def data_dir(self) -> Path: ...
    @property
    def database_url(self) -> str | None: ...
    @property
    def redis_url(self) -> str | None: ...
    @property
    def rate_limit_rpm(self) -> int | None: ...
    @property
    def rate_limit_ipm(self) -> int | None: ...
    @property
    def reservation_ttl_seconds(self) -> float: ...
    @property
    def reservation_sweep_seconds(self) -> float: ...


@dataclass(frozen=True)
class AccountsOptions:
    default_limits: Limits = field(default_factory=Limits)
    reservation_ttl: float = 3600.0
    sweep_interval: float = 60.0


class Accounts:
    def __init__(self, db: Database, limiter: RateLimiter, options: AccountsOptions | None = None) -> None:
        self.db = db
        self.limiter = limiter
        self.options = options or AccountsOptions()
        self._tokens_exist = False

    @classmethod
    def open(cls, settings: AccountsConfig, *, limiter: RateLimiter | None = None) -> Accounts:
        """Connect to ``settings.database_url`` (SQLite in ``data_dir`` by default) and migrate it."""
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        db = Database(settings.database_url or default_url(settings.data_dir))
        db.migrate()
        options = AccountsOptions(
            default_limits=Limits(settings.rate_limit_rpm, settings.rate_limit_ipm),
            reservation_ttl=settings.reservation_ttl_seconds,
            sweep_interval=settings.reservation_sweep_seconds,
        )
        return cls(db, limiter or build_limiter(settings.redis_url), options)

    async def tokens_configured(self) -> bool:
        """Whether any token was ever created. Once true it stays true (tokens are revoked, never deleted),
        so only the open state is looked up again on each request."""
        if not self._tokens_exist:
            self._tokens_exist = await self.db.call(tokens.any_tokens, self.db)
        return self._tokens_exist

    async def authenticate(self, authorization: str | None, *, open_allowed: bool) -> Principal:
        """The caller behind an ``Authorization`` header, or the auth error to answer with.

        No token ever created: open to everyone as consumer ``local`` when ``open_allowed`` (a loopback
        bind), else ``no_tokens_configured``. Otherwise a missing or non-Bearer header is
        ``missing_bearer_token`` and an unknown, revoked or expired token is ``invalid_token``.
        The token itself never appears in an error, a log line or a response.
        """
        if not await self.tokens_configured():
            if open_allowed:
                return Principal(LOCAL)
            raise NoTokensConfigured(
                "This server has no API tokens yet and is not bound to loopback, so it serves nobody. "
                "Create one with `limner tokens create --consumer NAME`."
            )
        scheme, _, token = (authorization or "").strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise MissingBearerToken("Missing bearer token: send the header 'Authorization: Bearer <token>'.")
        principal = await self.db.call(tokens.verify_token, self.db, token.strip())
        if principal is None:
            raise InvalidToken("Invalid API token.")
        return principal

    async def recover(self) -> int:
        return await self.db.call(credits.recover_expired, self.db)

    async def sweep_forever(self) -> None:
        """Recover expired reservations every ``sweep_interval`` seconds, until cancelled."""
        while True:
            await asyncio.sleep(self.options.sweep_interval)
            try:
                await self.recover()
            except Exception:
                log.exception("recovering expired credit reservations failed; retrying later")

    async def describe_policy(self, *, loopback: bool) -> None:
        """Log, once at startup, who the server will serve."""
        if await self.tokens_configured():
            log.info("accounts: bearer tokens required (%s)", self.db.dialect)
        elif loopback:
            log.warning(
                "accounts: no API tokens exist, so the server is open to anyone who can reach this loopback "
                "address (consumer 'local'). Create one with `limner tokens create --consumer NAME` to require tokens."
            )
        else:
            log.warning(
                "accounts: no API tokens exist and the bind is not loopback: every API route answers 503 "
                "no_tokens_configured until you create one with `limner tokens create --consumer NAME`."
            )

    async def aclose(self) -> None:
        await self.limiter.aclose()
        await asyncio.to_thread(self.db.dispose)

"""``Accounts``: the accounts package as the server and the CLI use it, built from settings.

It owns the database (migrated to head when opened) and the rate limiter, answers "who is this
bearer?" for the auth dependency, and recovers credit reservations left behind by a process that
died mid-request. A server holds a lease (``start``: an instance row with a heartbeat every
``instance_heartbeat_seconds``, and a locked file); at startup and then every
``reservation_sweep_seconds``, on every replica, the held reservations of dead instances are refunded
at once, whatever their age (``limner.accounts.leases`` says what counts as dead).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from limner.accounts import credits, leases, tokens
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
    @property
    def instance_heartbeat_seconds(self) -> float: ...
    @property
    def instance_lease_seconds(self) -> float: ...


@dataclass(frozen=True)
class AccountsOptions:
    default_limits: Limits = field(default_factory=Limits)
    reservation_ttl: float = 3600.0
    sweep_interval: float = 60.0
    heartbeat_interval: float = 10.0
    lease_seconds: float = 60.0


class Accounts:
    def __init__(self, db: Database, limiter: RateLimiter, options: AccountsOptions | None = None) -> None:
        self.db = db
        self.limiter = limiter
        self.options = options or AccountsOptions()
        self._tokens_exist = False
        self.lease: leases.Lease | None = None

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
            heartbeat_interval=settings.instance_heartbeat_seconds,
            lease_seconds=settings.instance_lease_seconds,
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

    @property
    def instance_id(self) -> str | None:
        """This process's lease id, stamped on every credit reservation it makes (None outside a server)."""
        return self.lease.id if self.lease is not None else None

    async def start(self, lock_dir: Path) -> None:
        """Take this process's lease (a server calls this once, before serving)."""
        self.lease = await self.db.call(leases.register, self.db, lock_dir)
        log.info("accounts: instance %s holds its lease", self.lease.id)

    async def recover(self) -> int:
        """Refund the holds of dead instances (whatever their age) and of expired reservations."""
        dead = await self.db.call(leases.dead, self.db, self.options.lease_seconds, own=self.instance_id)
        recovered = await self.db.call(credits.recover, self.db, dead)
        await self.db.call(leases.forget, self.db, dead)
        return recovered

    async def heartbeat(self) -> None:
        """Renew the lease; if another replica took this process for dead (a stall longer than the lease),
        take a new one, so that holds made from now on are not refunded under running requests."""
        if self.lease is None:
            return
        if not await self.db.call(leases.renew, self.db, self.lease):
            log.error("accounts: instance %s was taken for dead; taking a new lease", self.lease.id)
            lock_dir = self.lease.lock_path.parent.parent
            await self.db.call(leases.release, self.db, self.lease)
            await self.start(lock_dir)

    async def sweep_forever(self) -> None:
        """Heartbeat every ``heartbeat_interval`` and recover every ``sweep_interval`` seconds, until cancelled."""
        every = min(self.options.heartbeat_interval, self.options.sweep_interval)
        since_sweep = 0.0
        while True:
            await asyncio.sleep(every)
            since_sweep += every
            try:
                await self.heartbeat()
            except Exception:
                log.exception("renewing this instance's lease failed; retrying later")
            if since_sweep >= self.options.sweep_interval:
                since_sweep = 0.0
                try:
                    await self.recover()
                except Exception:
                    log.exception("recovering credit reservations failed; retrying later")

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
        if self.lease is not None:
            try:
                await self.db.call(leases.release, self.db, self.lease)
            except Exception:
                log.exception("releasing this instance's lease failed; it lapses after the lease time")
            self.lease = None
        await self.limiter.aclose()
        await asyncio.to_thread(self.db.dispose)

"""``Accounts``: the accounts package as the server and the CLI use it, built from settings.

It owns the database (migrated to head when opened) and the rate limiter, answers "who is this
bearer?" for the auth dependency, and recovers credit reservations left behind by a process that
died mid-request. A server holds a lease (``start``: an instance row with a heartbeat every
``instance_heartbeat_seconds``, and a locked file); at startup and then every
``reservation_sweep_seconds``, on every replica, the held reservations of dead instances are refunded
at once, whatever their age (``limner.accounts.leases`` says what counts as dead).

On the request path it asks the database as little as it can: verified tokens and consumer policies
are cached until the accounts version moves (``limner.accounts.cache``: revocations reach every replica
within ``accounts_cache_seconds``), and a started server writes usage rows in batches
(``limner.accounts.usage.UsageWriter``), flushed on ``aclose``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from limner.accounts import consumers, credits, leases, tokens, usage
from limner.accounts.cache import DEFAULT_INTERVAL, AccountsCache
from limner.accounts.consumers import LOCAL, Policy
from limner.accounts.db import Database, default_url
from limner.accounts.ratelimit import Limits, RateLimiter, build_limiter
from limner.accounts.tokens import Principal
from limner.core.errors import InvalidToken, MissingBearerToken, NoTokensConfigured
from limner.core.files import make_private

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
    @property
    def accounts_cache_seconds(self) -> float: ...
    @property
    def usage_flush_seconds(self) -> float: ...


@dataclass(frozen=True)
class AccountsOptions:
    default_limits: Limits = field(default_factory=Limits)
    reservation_ttl: float = 3600.0
    sweep_interval: float = 60.0
    heartbeat_interval: float = 10.0
    lease_seconds: float = 60.0
    cache_seconds: float = DEFAULT_INTERVAL
    usage_flush_seconds: float = usage.FLUSH_INTERVAL


class Accounts:
    def __init__(self, db: Database, limiter: RateLimiter, options: AccountsOptions | None = None) -> None:
        self.db = db
        self.limiter = limiter
        self.options = options or AccountsOptions()
        self._tokens_exist = False
        self.lease: leases.Lease | None = None
        self.cache: AccountsCache[tokens.Principal, Policy] = AccountsCache(db, self.options.cache_seconds)
        self.usage: usage.UsageWriter | None = None
        """Batches usage rows once the server started (``start``); until then each row is written at once."""
        self._usage_task: asyncio.Task[None] | None = None

    @classmethod
    def open(cls, settings: AccountsConfig, *, limiter: RateLimiter | None = None) -> Accounts:
        """Connect to ``settings.database_url`` (SQLite in ``data_dir`` by default) and migrate it."""
        make_private(settings.data_dir, create="directory")
        db = Database(settings.database_url or default_url(settings.data_dir))
        db.migrate()
        options = AccountsOptions(
            default_limits=Limits(settings.rate_limit_rpm, settings.rate_limit_ipm),
            reservation_ttl=settings.reservation_ttl_seconds,
            sweep_interval=settings.reservation_sweep_seconds,
            heartbeat_interval=settings.instance_heartbeat_seconds,
            lease_seconds=settings.instance_lease_seconds,
            cache_seconds=settings.accounts_cache_seconds,
            usage_flush_seconds=settings.usage_flush_seconds,
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
        principal = await self._verify(token.strip())
        if principal is None:
            raise InvalidToken("Invalid API token.")
        return principal

    async def _verify(self, token: str) -> Principal | None:
        if not self.cache.enabled:
            return await self.db.call(tokens.verify_token, self.db, token)
        if not token.startswith(tokens.TOKEN_PREFIX) or len(token) > tokens.MAX_TOKEN_CHARS:
            return await self.db.call(tokens.verify_token, self.db, token)  # never cached: no need to look
        await self.cache.fresh()
        digest = tokens.hash_token(token)
        known = self.cache.tokens.get(digest)
        if known is not None and (known.expires_at is None or known.expires_at > tokens.utcnow()):
            return known.value
        generation = self.cache.generation
        found = await self.db.call(tokens.lookup_token, self.db, token)
        if found is None:
            return None
        principal, expires_at = found
        self.cache.remember_token(digest, principal, expires_at, generation)
        return principal

    async def policy(self, consumer: str) -> Policy:
        """``consumer``'s limits and whether it is metered (cached like tokens; its balance may be stale)."""
        if not self.cache.enabled:
            return await self.db.call(consumers.policy, self.db, consumer)
        await self.cache.fresh()
        known = self.cache.policies.get(consumer)
        if known is not None:
            return known
        generation = self.cache.generation
        found = await self.db.call(consumers.policy, self.db, consumer)
        self.cache.remember_policy(consumer, found, generation)
        return found

    async def record_usage(self, event: usage.UsageEvent) -> None:
        """Record a request without a credit hold: batched in a started server, else written at once."""
        if self.usage is not None:
            await self.usage.record(event)
            return

        def write() -> None:
            with self.db.write() as session:
                usage.add(session, event)

        await self.db.call(write)

    async def commit_delivered(self, hold: credits.Hold, event: usage.UsageEvent) -> bool:
        """Commit a delivered request's hold with its usage row in the next batch; False when not batching
        (the caller then commits at once)."""
        if self.usage is None:
            return False
        await self.usage.commit(hold, event)
        return True

    def flush_usage(self) -> int:
        """Write the usage rows (and charges) still waiting in this process, from any thread; how many."""
        return self.usage.flush() if self.usage is not None else 0

    @property
    def instance_id(self) -> str | None:
        """This process's lease id, stamped on every credit reservation it makes (None outside a server)."""
        return self.lease.id if self.lease is not None else None

    async def start(self, lock_dir: Path) -> None:
        """Take this process's lease (a server calls this once, before serving)."""
        self.lease = await self.db.call(leases.register, self.db, lock_dir)
        log.info("accounts: instance %s holds its lease", self.lease.id)
        if self.options.usage_flush_seconds > 0 and self._usage_task is None:
            self.usage = usage.UsageWriter(self.db, interval=self.options.usage_flush_seconds)
            self._usage_task = asyncio.create_task(self.usage.run(), name="limner-usage-writer")

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
        if self._usage_task is not None and self.usage is not None:  # write every row still held, then stop
            self._usage_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._usage_task
            try:
                await self.db.call(self.usage.flush)
            except Exception:
                log.exception("writing the last usage rows failed")
            self._usage_task = self.usage = None
        if self.lease is not None:
            try:
                await self.db.call(leases.release, self.db, self.lease)
            except Exception:
                log.exception("releasing this instance's lease failed; it lapses after the lease time")
            self.lease = None
        await self.limiter.aclose()
        await asyncio.to_thread(self.db.dispose)

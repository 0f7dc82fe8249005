"""Rate limits: two token buckets per (consumer, model), requests per minute and images per minute.

A bucket holds up to ``limit`` tokens and refills at ``limit / 60`` per second, so a client may burst a
full minute's allowance and then continues at the steady rate. A request takes 1 request token and
``n`` image tokens, from both buckets or from neither; when either is short the answer is 429 with the
exact wait until both suffice (``Retry-After`` is that wait rounded up to whole seconds).

In-process by default (``MemoryRateLimiter``); with ``LIMNER_REDIS_URL`` the buckets live in Redis
and one Lua script checks and takes from both atomically, timed by the Redis server's clock, so
every replica sees the same buckets (``RedisRateLimiter``). If Redis cannot be reached, requests are
refused with 503 rather than let through unlimited.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from limner.accounts.tracing import trace_commands
from limner.core.errors import RateLimited, ServiceUnavailable

WINDOW = 60.0
"""Seconds for a bucket to refill from empty: limits are per minute."""


@dataclass(frozen=True)
class Limits:
    """Per-minute limits; None is unlimited."""

    rpm: int | None = None
    ipm: int | None = None

    @property
    def unlimited(self) -> bool:
        return self.rpm is None and self.ipm is None


class RateLimiter(Protocol):
    async def acquire(self, key: str, images: int, limits: Limits) -> None:
        """Take 1 request and ``images`` image tokens for ``key``, or raise ``RateLimited``."""

    async def aclose(self) -> None: ...


def limited(wait: float, limits: Limits, images: int) -> RateLimited:
    parts = [f"{limits.rpm} requests/min" if limits.rpm else "", f"{limits.ipm} images/min" if limits.ipm else ""]
    allowed = " and ".join(part for part in parts if part)
    return RateLimited(f"Rate limit reached ({allowed} per model); retry in {wait:.1f} s.", retry_after=wait)


class MemoryRateLimiter:
    """Buckets in this process; exact and cheap, but each replica counts on its own."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._buckets: dict[tuple[str, str], tuple[float, float]] = {}

    def _level(self, key: tuple[str, str], capacity: int, now: float) -> float:
        tokens, stamp = self._buckets.get(key, (float(capacity), now))
        return min(float(capacity), tokens + max(0.0, now - stamp) * capacity / WINDOW)

    async def acquire(self, key: str, images: int, limits: Limits) -> None:
        # No await between reading and writing the buckets: atomic on the event loop.
        now = self.clock()
        wanted = [(("r", key), limits.rpm, 1), (("i", key), limits.ipm, images)]
        levels: list[tuple[tuple[str, str], float, int]] = []
        wait = 0.0
        for bucket, capacity, cost in wanted:
            if capacity is None:
                continue
            level = self._level(bucket, capacity, now)
            if level < cost:
                wait = max(wait, (cost - level) * WINDOW / capacity)
            levels.append((bucket, level, cost))
        if wait > 0:
            raise limited(wait, limits, images)
        for bucket, level, cost in levels:
            self._buckets[bucket] = (level - cost, now)

    async def aclose(self) -> None:
        self._buckets.clear()


# KEYS: request bucket, image bucket. ARGV: request limit, image limit (0: unlimited), images.
# Returns {1, "0"} when allowed (tokens taken), {0, "<seconds to wait>"} when not (nothing taken).
TOKEN_BUCKETS_LUA = """
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) + tonumber(now_parts[2]) / 1000000
local window = 60
local limits = {tonumber(ARGV[1]), tonumber(ARGV[2])}
local costs = {1, tonumber(ARGV[3])}
local levels = {}
local wait = 0
for i = 1, 2 do
  if limits[i] > 0 then
    local state = redis.call('HMGET', KEYS[i], 'tokens', 'ts')
    local tokens = tonumber(state[1])
    local stamp = tonumber(state[2])
    if tokens == nil or stamp == nil then
      tokens = limits[i]
      stamp = now
    end
    local level = math.min(limits[i], tokens + math.max(0, now - stamp) * limits[i] / window)
    levels[i] = level
    if level < costs[i] then
      wait = math.max(wait, (costs[i] - level) * window / limits[i])
    end
  end
end
if wait > 0 then
  return {0, string.format('%.6f', wait)}
end
for i = 1, 2 do
  if limits[i] > 0 then
    redis.call('HSET', KEYS[i], 'tokens', string.format('%.9f', levels[i] - costs[i]), 'ts', string.format('%.6f', now))
    redis.call('PEXPIRE', KEYS[i], window * 1000 + 1000)
  end
end
return {1, '0'}
"""


class RedisRateLimiter:
    """Buckets in Redis, shared by every replica; one atomic script call per request."""

    def __init__(self, url: str, *, prefix: str = "limner:rl:") -> None:
        import redis.asyncio as aioredis

        self.client: Any = aioredis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        trace_commands(self.client)
        self.prefix = prefix
        self._script = self.client.register_script(TOKEN_BUCKETS_LUA)

    async def acquire(self, key: str, images: int, limits: Limits) -> None:
        from redis.exceptions import RedisError

        slot = "{" + key + "}"  # one hash slot for both buckets, so the script also runs on Redis Cluster
        try:
            allowed, wait = await self._script(
                keys=[f"{self.prefix}{slot}:r", f"{self.prefix}{slot}:i"],
                args=[limits.rpm or 0, limits.ipm or 0, images],
            )
        except RedisError as exc:
            raise ServiceUnavailable("The rate limiter (Redis) is unavailable; retry shortly.") from exc
        if not int(allowed):
            raise limited(float(wait), limits, images)

    async def aclose(self) -> None:
        await self.client.aclose()


def build_limiter(redis_url: str | None) -> RateLimiter:
    return RedisRateLimiter(redis_url) if redis_url else MemoryRateLimiter()

"""Rate limits: exact token-bucket arithmetic, exact ``Retry-After`` under a burst over HTTP, and one set
of buckets shared by two app instances through a real Redis."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from limner.accounts.ratelimit import Limits, MemoryRateLimiter, RedisRateLimiter
from limner.cli.local_services import free_port
from limner.core.errors import RateLimited, ServiceUnavailable
from limner.settings import Settings
from tests.accounts.helpers import generate, make_app, provision
from tests.support.live_server import live_server


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def waits(limiter: MemoryRateLimiter | RedisRateLimiter, key: str, images: int, limits: Limits) -> float:
    try:
        await limiter.acquire(key, images, limits)
    except RateLimited as limited:
        return limited.retry_after
    return 0.0


def test_memory_buckets_are_exact() -> None:
    clock = Clock()
    limiter = MemoryRateLimiter(clock)
    limits = Limits(rpm=3, ipm=10)

    async def scenario() -> None:
        assert [await waits(limiter, "a|m", 1, limits) for _ in range(3)] == [0, 0, 0]
        assert await waits(limiter, "a|m", 1, limits) == pytest.approx(20.0), "60 s / 3 requests"
        clock.now += 5
        assert await waits(limiter, "a|m", 1, limits) == pytest.approx(15.0), "refused requests take nothing"
        clock.now += 15
        assert await waits(limiter, "a|m", 1, limits) == 0
        assert await waits(limiter, "b|m", 1, limits) == 0, "each consumer and model has its own buckets"
        assert await waits(limiter, "a|other", 1, limits) == 0
        clock.now += 60
        assert await waits(limiter, "a|m", 7, limits) == 0
        assert await waits(limiter, "a|m", 4, limits) == pytest.approx(6.0), "(4 - 3 images left) x 6 s"
        assert await waits(limiter, "a|m", 3, limits) == 0, "the image bucket was not touched by the refusal"
        assert await waits(limiter, "unlimited|m", 1000, Limits()) == 0

    asyncio.run(scenario())


def test_burst_gets_429_with_exact_retry_after(priced: Settings) -> None:
    requests_token = provision(priced, "chatty", rpm=3)
    images_token = provision(priced, "greedy", ipm=4)
    app = make_app(priced)
    limiter = app.state.limner.accounts.limiter
    assert isinstance(limiter, MemoryRateLimiter)
    limiter.clock = Clock()  # time stands still: every wait is exact, however slow the requests
    with live_server(app) as url:
        burst = [generate(url, requests_token, model="pattern-free") for _ in range(5)]
        assert [r.status_code for r in burst] == [200, 200, 200, 429, 429]
        for refused in burst[3:]:
            assert refused.headers["retry-after"] == "20"
            assert refused.json()["error"]["code"] == "rate_limit_exceeded"
            assert "3 requests/min" in refused.json()["error"]["message"]
        first, second = generate(url, images_token, n=3), generate(url, images_token, n=3)
        assert (first.status_code, second.status_code) == (200, 429)
        assert second.headers["retry-after"] == "30", "(3 - 1 image left) x 15 s per image"
        too_many = generate(url, images_token, n=5)
        assert too_many.status_code == 400 and too_many.json()["error"]["param"] == "n"
        aigne = httpx.post(
            url + "/api/images/generations",
            json={"prompt": "x", "model": "pattern-free"},
            headers={"Authorization": f"Bearer {requests_token}"},
        )
        assert aigne.status_code == 429 and aigne.headers["retry-after"] == "20"
        metrics = httpx.get(url + "/metrics").text
    assert 'limner_errors_total{code="rate_limited"}' in metrics


def test_server_default_limits_apply_to_consumers_without_their_own(priced: Settings) -> None:
    token = provision(priced.with_overrides(rate_limit_rpm=2), "alice")
    with live_server(make_app(priced.with_overrides(rate_limit_rpm=2))) as url:
        assert [generate(url, token, model="pattern-free").status_code for _ in range(3)] == [200, 200, 429]


def test_redis_buckets_match_the_memory_ones(redis_url: str) -> None:
    async def scenario() -> None:
        limiter = RedisRateLimiter(redis_url, prefix="limner:test:exact:")
        try:
            limits = Limits(rpm=3, ipm=10)
            assert [await waits(limiter, "a|m", 1, limits) for _ in range(3)] == [0, 0, 0]
            assert await waits(limiter, "a|m", 1, limits) == pytest.approx(20.0, abs=0.5)
            assert await waits(limiter, "b|m", 9, limits) == 0
            assert await waits(limiter, "b|m", 4, limits) == pytest.approx(18.0, abs=0.5)
        finally:
            await limiter.aclose()

    asyncio.run(scenario())


def test_two_app_instances_share_buckets_through_redis(priced: Settings, redis_url: str) -> None:
    settings = priced.with_overrides(redis_url=redis_url)
    token = provision(settings, "shared", rpm=2)
    replica_a, replica_b = make_app(settings), make_app(settings)
    with live_server(replica_a) as url_a, live_server(replica_b) as url_b:
        assert generate(url_a, token, model="pattern-free").status_code == 200
        assert generate(url_b, token, model="pattern-free").status_code == 200
        refused_a = generate(url_a, token, model="pattern-free")
        refused_b = generate(url_b, token, model="pattern-free")
    assert (refused_a.status_code, refused_b.status_code) == (429, 429)
    # Redis's own clock times the shared bucket, so the wait shrinks while the requests run; the exact
    # arithmetic is test_redis_buckets_match_the_memory_ones'. At most one request's 30 s either way.
    assert all(1 <= int(refused.headers["retry-after"]) <= 30 for refused in (refused_a, refused_b))


def test_unreachable_redis_refuses_rather_than_letting_everything_through() -> None:
    async def scenario() -> None:
        limiter = RedisRateLimiter(f"redis://127.0.0.1:{free_port()}/0")
        try:
            with pytest.raises(ServiceUnavailable):
                await limiter.acquire("a|m", 1, Limits(rpm=5))
        finally:
            await limiter.aclose()

    asyncio.run(scenario())

"""Load generators over real HTTP on loopback: closed loop (N clients back to back) and open loop (Poisson).

Closed loop measures capacity: each of ``concurrency`` clients sends its next request as soon as the
last one returns. Open loop measures latency as users see it: arrivals follow a Poisson process at a
fixed rate whatever the server does, and each latency runs from the *scheduled* arrival, so a server
that falls behind cannot hide it by slowing the client down (no coordinated omission).

Both are bounded twice: by a request count and by a deadline, after which nothing new is sent and
what is in flight gets ``drain_s`` to finish before it is cancelled and counted as unfinished.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx

PATH = "/v1/images/generations"
COLORS = ("red", "blue", "green", "yellow", "purple", "orange", "black", "white")
THINGS = ("apple", "heart", "car", "cat face", "dog face", "star", "rocket", "tree", "ball", "house", "fish", "sun")


@dataclass(frozen=True)
class Workload:
    """What every request asks for; only prompt and seed change from one request to the next."""

    model: str
    size: str
    steps: int
    seed_base: int = 1000

    def body(self, index: int) -> dict[str, Any]:
        """Request ``index``: a distinct prompt and seed, so no cache or dedup could help (limner has none)."""
        prompt = f"{COLORS[index % len(COLORS)]} {THINGS[(index // len(COLORS)) % len(THINGS)]}"
        return {
            "model": self.model,
            "prompt": prompt,
            "n": 1,
            "size": self.size,
            "response_format": "b64_json",
            "seed": self.seed_base + index,
            "steps": self.steps,
        }


@dataclass
class Outcome:
    """Counts and latencies of one load run; latencies are of successful requests only."""

    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    retry_after_missing: int = 0
    transport_errors: int = 0
    unfinished: int = 0
    shed: int = 0
    """Open loop only: arrivals the client dropped because too many requests were already in flight."""
    messages: Counter[str] = field(default_factory=Counter)
    """Failures other than 429, by status and error message: what to fix when a figure has errors."""

    @property
    def ok(self) -> int:
        return self.statuses.get(200, 0)

    @property
    def server_errors(self) -> int:
        return sum(count for status, count in self.statuses.items() if status >= 500)

    @property
    def images_per_second(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0

    def summary(self) -> dict[str, Any]:
        ms = sorted(latency * 1000 for latency in self.latencies)
        data = asdict(self)
        data.pop("latencies")
        data["statuses"] = {str(status): count for status, count in sorted(self.statuses.items())}
        data["messages"] = dict(self.messages.most_common(5))
        data |= {
            "ok": self.ok,
            "requests_failed": sum(self.statuses.values()) - self.ok + self.transport_errors + self.unfinished,
            "server_errors": self.server_errors,
            "images_per_second": round(self.images_per_second, 4),
            "p50_ms": percentile(ms, 50),
            "p95_ms": percentile(ms, 95),
            "p99_ms": percentile(ms, 99),
            "max_ms": ms[-1] if ms else None,
        }
        return data


def percentile(sorted_values: list[float], pct: float) -> float | None:
    """Nearest-rank percentile of an already sorted list; None when empty."""
    if not sorted_values:
        return None
    rank = min(len(sorted_values) - 1, max(0, math.ceil(pct / 100 * len(sorted_values)) - 1))
    return round(sorted_values[rank], 2)


def client(timeout: float) -> httpx.AsyncClient:
    """One pooled keep-alive client, big enough that the pool never queues a request of ours."""
    return httpx.AsyncClient(
        timeout=httpx.Timeout(timeout, connect=10.0),
        limits=httpx.Limits(max_connections=512, max_keepalive_connections=512),
    )


async def _send(http: httpx.AsyncClient, url: str, body: dict[str, Any], outcome: Outcome, started: float) -> None:
    try:
        response = await http.post(url + PATH, json=body)
    except httpx.HTTPError:
        outcome.transport_errors += 1
        return
    outcome.statuses[response.status_code] += 1
    if response.status_code == 200:
        outcome.latencies.append(time.perf_counter() - started)
    elif response.status_code == 429:
        outcome.retry_after_missing += "retry-after" not in response.headers
    else:
        outcome.messages[f"{response.status_code} {_message(response)}"] += 1


def _message(response: httpx.Response) -> str:
    try:
        error = response.json()["error"]
        return str(error.get("message", error))[:160]
    except (ValueError, KeyError, TypeError, AttributeError):
        return response.text[:160]


async def closed_loop(
    http: httpx.AsyncClient,
    url: str,
    workload: Workload,
    *,
    concurrency: int,
    requests: int,
    deadline_s: float,
    first_index: int = 0,
) -> Outcome:
    """``concurrency`` clients back to back until ``requests`` are sent or ``deadline_s`` passes;
    throughput is completed requests over the time until the last one returned."""
    outcome = Outcome()
    counter = iter(range(first_index, first_index + requests))
    started = time.perf_counter()
    stop_at = started + deadline_s

    async def worker() -> None:
        for index in counter:
            if time.perf_counter() > stop_at:
                return
            await _send(http, url, workload.body(index), outcome, time.perf_counter())

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    outcome.seconds = time.perf_counter() - started
    return outcome


async def open_loop(
    http: httpx.AsyncClient,
    url: str,
    workload: Workload,
    *,
    rate: float,
    duration_s: float,
    drain_s: float,
    seed: int = 7,
    max_in_flight: int = 256,
    first_index: int = 0,
) -> Outcome:
    """Poisson arrivals at ``rate`` per second for ``duration_s``; throughput counts completions over
    the arrival window plus however long the backlog took to drain."""
    rng = random.Random(seed)
    arrivals: list[float] = []
    clock = rng.expovariate(rate)
    while clock < duration_s:
        arrivals.append(clock)
        clock += rng.expovariate(rate)
    outcome = Outcome()
    tasks: set[asyncio.Task[None]] = set()
    started = time.perf_counter()
    for offset, at in enumerate(arrivals):
        delay = started + at - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        if len(tasks) >= max_in_flight:
            outcome.shed += 1
            continue
        task = asyncio.create_task(_send(http, url, workload.body(first_index + offset), outcome, started + at))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        _, pending = await asyncio.wait(set(tasks), timeout=drain_s)
        for task in pending:
            task.cancel()
        outcome.unfinished = len(pending)
        await asyncio.gather(*pending, return_exceptions=True)
    outcome.seconds = time.perf_counter() - started
    return outcome


def run(coro: Any) -> Any:
    """Run one async benchmark step from synchronous code (each step gets a fresh event loop)."""
    return asyncio.run(coro)


def merge(outcomes: list[Outcome]) -> Outcome:
    """Several runs of the same load as one: times and counts add up, latencies pool."""
    total = Outcome()
    for outcome in outcomes:
        total.seconds += outcome.seconds
        total.latencies += outcome.latencies
        total.statuses.update(outcome.statuses)
        total.retry_after_missing += outcome.retry_after_missing
        total.transport_errors += outcome.transport_errors
        total.unfinished += outcome.unfinished
        total.shed += outcome.shed
        total.messages.update(outcome.messages)
    return total

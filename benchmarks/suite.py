"""One benchmark run: how much to measure (``Plan``) and the servers it shares between measurements (``Suite``).

Servers are started once per run and warmed before anything is timed, so the measurements that use
the same configuration (batching, latency and the naive comparison all use the batched limner) see
the same process, and the memory measurement can read every server's history at the end.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from benchmarks.harness import Server, Servers, builtin_entry
from benchmarks.load import Outcome, Workload, client, closed_loop, run
from limner.config.defaults import BUILTIN_MODEL_ID

NATIVE = "32x32"
"""The built-in model's own size: limner and what it is compared with make the very same pixels."""


@dataclass(frozen=True)
class Plan:
    """How much of everything; ``quick`` is a smoke run whose numbers are indicative only."""

    quick: bool
    steps: int
    threads: int
    window_ms: float = 25.0
    max_batch: int = 16
    levels: tuple[int, ...] = (1, 4, 8, 16)
    request_timeout: float = 120.0
    overload_queue: int = 4
    naive_concurrency: int = 8

    @property
    def overhead_pairs(self) -> int:
        return 6 if self.quick else 24

    @property
    def overhead_pairs_large(self) -> int:
        return 2 if self.quick else 8

    def closed_requests(self, concurrency: int) -> int:
        return max(2 * concurrency, 4) if self.quick else max(4 * concurrency, 16)

    @property
    def run_deadline_s(self) -> float:
        return 40.0 if self.quick else 240.0

    @property
    def open_duration_s(self) -> float:
        return 5.0 if self.quick else 25.0

    @property
    def overload_duration_s(self) -> float:
        return 6.0 if self.quick else 30.0

    @property
    def drain_s(self) -> float:
        return 15.0 if self.quick else 90.0

    @property
    def naive_rounds(self) -> int:
        return 1 if self.quick else 2

    @property
    def naive_requests(self) -> int:
        return 16 if self.quick else 32


class Suite:
    """Owns the servers of one run and what each measurement found, for the ones that build on others."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.servers = Servers(plan.threads, plan.request_timeout)
        self.workload = Workload(BUILTIN_MODEL_ID, NATIVE, plan.steps)
        self.results: dict[str, dict[str, Any]] = {}
        self.warnings: list[str] = []
        """Problems met outside a measurement (a failed warm-up), reported with the section that met them."""
        self._index = 0

    def indices(self, count: int) -> int:
        """The first of ``count`` request indices nobody has used in this run (distinct prompts and seeds)."""
        first, self._index = self._index, self._index + count
        return first

    # --- the servers, each started and warmed once ---

    def unbatched(self) -> Server:
        return self._limner("limner-unbatched", window_ms=0.0, max_queue=32, burst=0)

    def batched(self) -> Server:
        return self._limner("limner-batched", window_ms=self.plan.window_ms, max_queue=32, burst=self.plan.max_batch)

    def overloaded(self) -> Server:
        queue = self.plan.overload_queue
        return self._limner("limner-small-queue", window_ms=self.plan.window_ms, max_queue=queue, burst=0)

    def naive(self) -> Server:
        fresh = "naive" not in self.servers.running
        server = self.servers.naive()
        if fresh:
            self._warm(server, burst=0)
        return server

    def _limner(self, name: str, *, window_ms: float, max_queue: int, burst: int) -> Server:
        fresh = name not in self.servers.running
        entry = builtin_entry(window_ms=window_ms, max_batch=self.plan.max_batch, max_queue=max_queue)
        server = self.servers.limner(name, entry)
        server.notes = {"batch_window_ms": window_ms, "max_batch_images": self.plan.max_batch, "max_queue": max_queue}
        if fresh:
            self._warm(server, burst=burst)
        return server

    def _warm(self, server: Server, *, burst: int) -> None:
        """Load the weights and text encoder (first requests), and with ``burst`` run one full batch,
        so no measurement pays for first-call costs; the loaded RSS is read right after."""

        async def warm() -> Outcome | None:
            async with client(self.plan.request_timeout) as http:
                for _ in range(2):
                    response = await http.post(f"{server.url}/v1/images/generations", json=self.next_body())
                    if response.status_code != 200:
                        raise RuntimeError(f"{server.name} warm-up failed: {response.status_code} {response.text}")
                if not burst:
                    return None
                return await closed_loop(
                    http,
                    server.url,
                    self.workload,
                    concurrency=burst,
                    requests=burst,
                    deadline_s=self.plan.run_deadline_s,
                    first_index=self.indices(burst),
                )

        burst_outcome: Outcome | None = run(warm())
        if burst_outcome is not None and burst_outcome.ok < burst:
            failures = ", ".join(f"{count} x {message}" for message, count in burst_outcome.messages.items())
            self.warnings.append(
                f"{server.name}: warm-up batch of {burst}: only {burst_outcome.ok} succeeded ({failures})"
            )
        server.rss_loaded = server.rss()
        server.peak = max(server.peak, server.rss_loaded)

    def next_body(self) -> dict[str, Any]:
        """One request body with a prompt and seed not used before in this run."""
        return self.workload.body(self.indices(1))

    def close(self) -> None:
        self.servers.close()

"""Bounded concurrency with a bounded wait queue per model: full means 429 now, not a pile-up."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from limner.core.errors import QueueFull


class ModelSlots:
    """At most ``concurrency`` jobs run and ``max_queue`` wait; the next one is refused at once."""

    def __init__(self, model_id: str, concurrency: int = 1, max_queue: int = 16) -> None:
        self.model_id = model_id
        self.concurrency = max(1, concurrency)
        self.max_queue = max(0, max_queue)
        self._semaphore = asyncio.Semaphore(self.concurrency)
        self.waiting = 0
        self.running = 0
        self.recent_seconds = 1.0
        """Moving average of one job's duration, for ``Retry-After``."""

    def retry_after(self) -> float:
        return max(1.0, self.recent_seconds * (self.waiting + 1) / self.concurrency)

    @asynccontextmanager
    async def acquire(self) -> AsyncIterator[None]:
        if self._semaphore.locked() and self.waiting >= self.max_queue:
            raise QueueFull(
                f"Model '{self.model_id}' is busy: {self.running} running and {self.waiting} waiting. Retry later.",
                retry_after=self.retry_after(),
            )
        self.waiting += 1
        try:
            await self._semaphore.acquire()
        finally:
            self.waiting -= 1
        self.running += 1
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            yield
        finally:
            self.running -= 1
            self.recent_seconds = 0.7 * self.recent_seconds + 0.3 * (loop.time() - started)
            self._semaphore.release()

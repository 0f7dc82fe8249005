"""Bounded concurrency with a bounded wait queue per model: full means 429 now, not a pile-up.

Waiters stand in a line in arrival order (``asyncio.Semaphore`` wakes them in that order), so each
can be told its place: ``acquire(on_position=...)`` reports 1 for "next to run" and again whenever
someone ahead leaves the line, which is what the job status endpoint shows as ``queue_position``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from limner.core.errors import QueueFull

PositionCallback = Callable[[int], None]


class _Waiter:
    __slots__ = ("on_position", "position")

    def __init__(self, on_position: PositionCallback | None) -> None:
        self.on_position = on_position
        self.position = 0


class ModelSlots:
    """At most ``concurrency`` jobs run and ``max_queue`` wait; the next one is refused at once."""

    def __init__(self, model_id: str, concurrency: int = 1, max_queue: int = 16) -> None:
        self.model_id = model_id
        self.concurrency = max(1, concurrency)
        self.max_queue = max(0, max_queue)
        self._semaphore = asyncio.Semaphore(self.concurrency)
        self._line: list[_Waiter] = []
        self.running = 0
        self.recent_seconds = 1.0
        """Moving average of one job's duration, for ``Retry-After``."""

    @property
    def waiting(self) -> int:
        return len(self._line)

    def retry_after(self) -> float:
        return max(1.0, self.recent_seconds * (self.waiting + 1) / self.concurrency)

    @asynccontextmanager
    async def acquire(self, on_position: PositionCallback | None = None) -> AsyncIterator[None]:
        """Hold one slot for the block. ``on_position`` hears the 1-based place in line while waiting
        (not at all when a slot is free at once)."""
        if self._semaphore.locked() and self.waiting >= self.max_queue:
            raise QueueFull(
                f"Model '{self.model_id}' is busy: {self.running} running and {self.waiting} waiting. Retry later.",
                retry_after=self.retry_after(),
            )
        waiter = _Waiter(on_position)
        self._line.append(waiter)
        try:
            if self._semaphore.locked():
                self._renumber()
            await self._semaphore.acquire()
        finally:
            self._line.remove(waiter)
            self._renumber()
        self.running += 1
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            yield
        finally:
            self.running -= 1
            self.recent_seconds = 0.7 * self.recent_seconds + 0.3 * (loop.time() - started)
            self._semaphore.release()

    def _renumber(self) -> None:
        for position, waiter in enumerate(self._line, start=1):
            if waiter.position != position:
                waiter.position = position
                if waiter.on_position is not None:
                    waiter.on_position(position)

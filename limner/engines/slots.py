"""Bounded concurrency with a bounded wait queue per model: full means 429 now, not a pile-up.

Waiters stand in a line ordered by priority with ageing: a waiter's standing is its priority plus one
level for every ``AGEING_SECONDS`` it has waited, so a higher priority goes first but a low one is never
starved; equal standing goes in arrival order. A freed slot passes straight to the first in line. Each
waiter can be told its place: ``acquire(on_position=...)`` reports 1 for "next to run" and again whenever
its place changes, which is what the job status endpoint shows as ``queue_position``.

A waiter with a start deadline (``start_by``, on the event loop's clock) that has not got a slot by then
leaves the line with ``StartDeadlineExceeded``: it never started, so it costs nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from limner.core.errors import QueueFull, StartDeadlineExceeded

PositionCallback = Callable[[int], None]
AGEING_SECONDS = 10.0
"""Seconds of waiting worth one priority level."""


class _Waiter:
    __slots__ = ("future", "on_position", "position", "priority", "since")

    def __init__(self, on_position: PositionCallback | None, priority: int, since: float) -> None:
        self.on_position = on_position
        self.position = 0
        self.priority = priority
        self.since = since
        self.future: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def standing(self, now: float) -> float:
        return self.priority + (now - self.since) / AGEING_SECONDS


class ModelSlots:
    """At most ``concurrency`` jobs run and ``max_queue`` wait; the next one is refused at once."""

    def __init__(self, model_id: str, concurrency: int = 1, max_queue: int = 16) -> None:
        self.model_id = model_id
        self.concurrency = max(1, concurrency)
        self.max_queue = max(0, max_queue)
        self._free = self.concurrency
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
    async def acquire(
        self, on_position: PositionCallback | None = None, *, priority: int = 0, start_by: float | None = None
    ) -> AsyncIterator[None]:
        """Hold one slot for the block. ``on_position`` hears the 1-based place in line while waiting (not at
        all when a slot is free at once); ``start_by``: the loop time by which the slot must be had."""
        loop = asyncio.get_running_loop()
        if self._free > 0 and not self._line:
            self._free -= 1
        else:
            if self.waiting >= self.max_queue:
                raise QueueFull(
                    f"Model '{self.model_id}' is busy: {self.running} running and {self.waiting} waiting. Retry later.",
                    retry_after=self.retry_after(),
                )
            await self._wait(_Waiter(on_position, priority, loop.time()), start_by)
        self.running += 1
        started = loop.time()
        try:
            yield
        finally:
            self.running -= 1
            self.recent_seconds = 0.7 * self.recent_seconds + 0.3 * (loop.time() - started)
            self._release()

    async def _wait(self, waiter: _Waiter, start_by: float | None) -> None:
        self._line.append(waiter)
        self._renumber()
        try:
            async with asyncio.timeout_at(start_by):
                await asyncio.shield(waiter.future)
        except TimeoutError as exc:
            if not waiter.future.done():
                raise StartDeadlineExceeded(
                    f"The request did not start before its start deadline: model '{self.model_id}' was busy "
                    f"({self.running} running, {self.waiting - 1} others waiting). Nothing was charged."
                ) from exc
        except BaseException:
            if waiter.future.done():  # handed a slot just as it gave up: pass it on
                self._release()
            raise
        finally:
            if waiter in self._line:
                self._line.remove(waiter)
                self._renumber()

    def _release(self) -> None:
        """Hand the freed slot to the first in line, or keep it free."""
        if not self._line:
            self._free += 1
            return
        now = asyncio.get_running_loop().time()
        first = max(self._line, key=lambda waiter: (waiter.standing(now), -waiter.since))
        self._line.remove(first)
        first.future.set_result(None)
        self._renumber()

    def _renumber(self) -> None:
        now = asyncio.get_running_loop().time()
        ordered = sorted(self._line, key=lambda waiter: (-waiter.standing(now), waiter.since))
        for position, waiter in enumerate(ordered, start=1):
            if waiter.position != position:
                waiter.position = position
                if waiter.on_position is not None:
                    waiter.on_position(position)

"""Micro-batching: compatible requests that arrive within a short window run as one engine call.

Requests are compatible when everything but prompt and seeds matches (mode text-to-image, size,
steps, guidance, negative prompt, LoRA adapters and their weights, sampler). Each request keeps its own
seeds and gets its own images back.
A request cancelled while it waits leaves the batch before it runs; one cancelled while its batch runs
leaves at the engine's next step where the engine can drop rows (see ``EngineRequest.rows_wanted``), and
a batch whose callers all went away is cancelled. Batches run one at a time per ``concurrency`` so the
engine never sees more work than it can do.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any, TypeVar

from PIL import Image

from limner.core.errors import ModelError
from limner.core.models import Capabilities, EngineRequest, GeneratedImage, Mode
from limner.engines.base import Engine

T = TypeVar("T")
IDLE_WINDOW = 0.002
"""Seconds a request on an idle, uncontended engine waits for company (callers that arrived with it)."""


class _LiveRows:
    """Which images of a running batch are still wanted. The engine asks before each step; since a flag
    never turns back on, what it was last told is exactly which rows it dropped, so results map back."""

    def __init__(self, count: int) -> None:
        self._wanted = [True] * count
        self.seen: tuple[bool, ...] = tuple(self._wanted)

    def __call__(self) -> tuple[bool, ...]:  # the engine's worker thread
        self.seen = tuple(self._wanted)
        return self.seen

    def release(self, rows: range) -> None:
        for row in rows:
            self._wanted[row] = False

    @property
    def anyone_waiting(self) -> bool:
        return any(self._wanted)

    def place(self, items: Sequence[T]) -> list[T | None] | None:
        """The engine's ``items``, one per row it kept, back at their rows (None where dropped); None when
        their number fits neither all rows nor the kept ones."""
        if len(items) == len(self.seen):
            return list(items)
        kept = [row for row, wanted in enumerate(self.seen) if wanted]
        if len(items) != len(kept):
            return None
        placed: list[T | None] = [None] * len(self.seen)
        for row, item in zip(kept, items, strict=True):
            placed[row] = item
        return placed


@dataclass
class _Waiting:
    request: EngineRequest
    future: asyncio.Future[list[GeneratedImage]]


@dataclass
class _Batch:
    key: tuple[Any, ...]
    members: list[_Waiting] = field(default_factory=list)

    @property
    def images(self) -> int:
        return sum(member.request.n for member in self.members)


def batch_key(request: EngineRequest) -> tuple[Any, ...] | None:
    """What must match for two requests to share a call; None for requests that never batch."""
    if request.mode is not Mode.GENERATE or request.images or request.controls or request.references:
        return None  # each control or reference image is one request's own
    return (
        request.width,
        request.height,
        request.steps,
        request.guidance,
        request.negative_prompt,
        request.upstream_model,
        request.quality,
        request.background,
        request.rendering_style,
        request.effort,
        request.loras,  # adapters change the model itself: only requests using the same set share a call
        request.scheduler,
        request.exact,  # the cache is taken off for the whole call
    )


class BatchingEngine(Engine):
    """Wraps a local engine; joins compatible requests for ``window`` seconds up to ``max_images``."""

    def __init__(self, inner: Engine, *, window: float = 0.05, max_images: int = 8, concurrency: int = 1) -> None:
        self.inner = inner
        self.window = window
        self.max_images = max_images
        self._open: dict[tuple[Any, ...], _Batch] = {}
        self._running = asyncio.Semaphore(max(1, concurrency))
        self.batches_run = 0
        self._last_batch_size = 0

    @property
    def capabilities(self) -> Capabilities:  # type: ignore[override]
        return self.inner.capabilities

    @property
    def loaded(self) -> bool:
        return self.inner.loaded

    @property
    def loading(self) -> bool:
        return self.inner.loading

    @property
    def resident_bytes(self) -> int:
        return self.inner.resident_bytes

    async def load(self) -> None:
        await self.inner.load()

    async def aclose(self) -> None:
        await self.inner.aclose()

    async def generate(self, request: EngineRequest) -> list[GeneratedImage]:
        key = batch_key(request)
        if key is None or request.n >= self.max_images:
            async with self._running:
                self.batches_run += 1
                return await self.inner.generate(request)
        batch = self._open.get(key)
        if batch is None or batch.images + request.n > self.max_images:
            window = self._window_for_next()
            batch = self._open[key] = _Batch(key)
            asyncio.get_running_loop().create_task(self._flush_later(batch, window))
        waiting = _Waiting(request, asyncio.get_running_loop().create_future())
        batch.members.append(waiting)
        if batch.images >= self.max_images:
            self._close(batch)
        try:
            return await asyncio.shield(waiting.future)
        except asyncio.CancelledError:
            if waiting in batch.members and not waiting.future.done():
                batch.members.remove(waiting)  # still waiting: leave the batch before it runs
            waiting.future.cancel()
            raise

    def _close(self, batch: _Batch) -> None:
        if self._open.get(batch.key) is batch:
            del self._open[batch.key]

    def _window_for_next(self) -> float:
        """The window is only worth waiting when there is company: a lone caller on an idle engine (its
        last batch a single request) waits just long enough for callers arriving together to join it;
        any contention brings the full window back."""
        if self._last_batch_size <= 1 and not self._running.locked() and not self._open:
            return min(self.window, IDLE_WINDOW)
        return self.window

    async def _flush_later(self, batch: _Batch, window: float) -> None:
        """Run the batch once its window has passed and the engine is free (and, if it had to wait for the
        engine, once more a window); until then it stays open, so requests arriving while the engine is busy
        join it instead of forming batches of one."""
        await asyncio.sleep(window)
        waited = self._running.locked()
        async with self._running:
            if waited and window and batch.images < self.max_images:
                # The engine just finished another batch, whose callers (in a closed loop) are about to send
                # their next requests: a window from now lets them join this batch rather than the next.
                await asyncio.sleep(window)
            self._close(batch)
            members = [member for member in batch.members if not member.future.done()]
            batch.members = []  # running now: a caller that leaves is dropped by rows, not from this list
            if not members:
                return
            self.batches_run += 1
            self._last_batch_size = len(members)
            await self._run(members)

    async def _run(self, members: list[_Waiting]) -> None:
        first = members[0].request
        prompts = tuple(member.request.prompt for member in members for _ in member.request.seeds)
        seeds = [seed for member in members for seed in member.request.seeds]
        progress = [member.request.progress for member in members if member.request.progress is not None]
        live = _LiveRows(len(seeds))
        placement = list(zip(members, _rows(members), strict=True))

        def report(step: int, total: int) -> None:
            for callback in progress:
                callback(step, total)

        joined = replace(
            first,
            prompts=prompts,
            seeds=seeds,
            progress=report if progress else None,
            rows_wanted=live,
            **_previews(placement, live),
        )
        task = asyncio.ensure_future(self.inner.generate(joined))
        for member, rows in placement:
            member.future.add_done_callback(partial(_release, live, rows, task))
        try:
            images = await task
        except BaseException as exc:
            for member in members:
                if not member.future.done():
                    member.future.set_exception(exc if isinstance(exc, Exception) else RuntimeError("cancelled"))
            if not isinstance(exc, Exception) and live.anyone_waiting:
                raise
            return
        placed = live.place(images)
        for member, rows in placement:
            if member.future.done():
                continue
            share = [image for image in (placed or [])[rows.start : rows.stop] if image is not None]
            if len(share) == member.request.n:
                member.future.set_result(share)
            else:
                member.future.set_exception(ModelError(f"The model returned {len(images)} images for {len(seeds)}."))


def _rows(members: list[_Waiting]) -> list[range]:
    """Each member's rows in the joined call."""
    ranges, start = [], 0
    for member in members:
        ranges.append(range(start, start + member.request.n))
        start += member.request.n
    return ranges


def _release(live: _LiveRows, rows: range, task: asyncio.Future[Any], future: asyncio.Future[Any]) -> None:
    """A member's caller went away: its rows are no longer wanted, and the call is cancelled when none is."""
    if future.cancelled():
        live.release(rows)
        if not live.anyone_waiting:
            task.cancel()


def _previews(placement: list[tuple[_Waiting, range]], live: _LiveRows) -> dict[str, Any]:
    """Previews of a batch: each member still waiting gets its own images' slice, offered as often as the gcd
    of the members' spacings asks, so every member's spacing is met (its reporter keeps what it wants)."""
    wanted = [(rows, member.request.preview) for member, rows in placement if member.request.preview is not None]
    if not wanted:
        return {"preview": None, "preview_every": 0}

    def preview(step: int, images: list[Image.Image]) -> None:
        placed = live.place(images) or []
        for rows, callback in wanted:
            share = placed[rows.start : rows.stop]
            if len(share) == len(rows) and all(image is not None for image in share):
                callback(step, [image for image in share if image is not None])

    spacings = (max(1, member.request.preview_every) for member, _ in placement if member.request.preview is not None)
    return {"preview": preview, "preview_every": math.gcd(*spacings)}

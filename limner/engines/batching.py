"""Micro-batching: compatible requests that arrive within a short window run as one engine call.

Requests are compatible when everything but prompt and seeds matches (mode text-to-image, size,
steps, guidance, negative prompt). Each request keeps its own seeds and gets its own images back.
A request cancelled while it waits leaves the batch before it runs; batches run one at a time per
``concurrency`` so the engine never sees more work than it can do.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass, field, replace
from typing import Any

from PIL import Image

from limner.core.models import EngineRequest, GeneratedImage, Mode, PreviewCallback
from limner.engines.base import Capabilities, Engine


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
    if request.mode is not Mode.GENERATE or request.images:
        return None
    return (
        request.width,
        request.height,
        request.steps,
        request.guidance,
        request.negative_prompt,
        request.upstream_model,
        tuple(sorted(request.options.items())) if request.options else (),
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

    @property
    def capabilities(self) -> Capabilities:  # type: ignore[override]
        return self.inner.capabilities

    @property
    def loaded(self) -> bool:
        return self.inner.loaded

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
            batch = self._open[key] = _Batch(key)
            asyncio.get_running_loop().create_task(self._flush_later(batch))
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

    async def _flush_later(self, batch: _Batch) -> None:
        """Run the batch once its window has passed and the engine is free; until then it stays open,
        so requests arriving while the engine is busy join it instead of forming batches of one."""
        await asyncio.sleep(self.window)
        async with self._running:
            self._close(batch)
            members = [member for member in batch.members if not member.future.done()]
            batch.members = members
            if not members:
                return
            self.batches_run += 1
            await self._run(members)

    async def _run(self, members: list[_Waiting]) -> None:
        first = members[0].request
        prompts = tuple(member.request.prompt for member in members for _ in member.request.seeds)
        seeds = [seed for member in members for seed in member.request.seeds]
        progress = [member.request.progress for member in members if member.request.progress is not None]

        def report(step: int, total: int) -> None:
            for callback in progress:
                callback(step, total)

        joined = replace(
            first, prompts=prompts, seeds=seeds, progress=report if progress else None, **_previews(members)
        )
        try:
            images = await self.inner.generate(joined)
        except BaseException as exc:
            for member in members:
                if not member.future.done():
                    member.future.set_exception(exc if isinstance(exc, Exception) else RuntimeError("cancelled"))
            if not isinstance(exc, Exception):
                raise
            return
        start = 0
        for member in members:
            share = images[start : start + member.request.n]
            start += member.request.n
            if not member.future.done():
                member.future.set_result(share)


def _previews(members: list[_Waiting]) -> dict[str, Any]:
    """Previews of a batch: each member gets its own images' slice, offered as often as the gcd of
    the members' spacings asks, so every member's spacing is met (its reporter keeps what it wants)."""
    wanted: list[tuple[int, EngineRequest, PreviewCallback]] = []
    start = 0
    for member in members:
        if member.request.preview is not None:
            wanted.append((start, member.request, member.request.preview))
        start += member.request.n
    if not wanted:
        return {"preview": None, "preview_every": 0}

    def preview(step: int, images: list[Image.Image]) -> None:
        for offset, request, callback in wanted:
            callback(step, images[offset : offset + request.n])

    return {"preview": preview, "preview_every": math.gcd(*(max(1, request.preview_every) for _, request, _ in wanted))}

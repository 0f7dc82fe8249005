"""Micro-batching: compatible requests share one engine call and still get their own images."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace

import pytest
from PIL import Image

from limner.core.models import EngineRequest, GeneratedImage, Mode
from limner.engines.base import Engine
from limner.engines.batching import BatchingEngine
from limner.engines.testpattern import TestPatternEngine as PatternEngine
from tests.support.images import pixels


class CountingEngine(PatternEngine):
    def __init__(self) -> None:
        super().__init__()
        self.requests: list[EngineRequest] = []

    async def generate(self, request: EngineRequest) -> list[GeneratedImage]:
        self.requests.append(request)
        return await super().generate(request)


class GatedEngine(CountingEngine):
    """Busy from the moment a call arrives (``entered``) until the test opens ``gate``."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = asyncio.Event()
        self.gate = asyncio.Event()

    async def generate(self, request: EngineRequest) -> list[GeneratedImage]:
        self.requests.append(request)
        self.entered.set()
        await self.gate.wait()
        return await PatternEngine.generate(self, request)


def req(prompt: str, seeds: list[int], **extra: object) -> EngineRequest:
    return EngineRequest(mode=Mode.GENERATE, prompt=prompt, width=32, height=32, seeds=seeds, **extra)  # type: ignore[arg-type]


async def test_compatible_requests_run_as_one_call_with_their_own_images() -> None:
    inner = CountingEngine()
    engine = BatchingEngine(inner, window=0.05, max_images=8)
    results = await asyncio.gather(engine.generate(req("apple", [1, 2])), engine.generate(req("heart", [7])))
    assert len(inner.requests) == 1
    assert inner.requests[0].prompts == ("apple", "apple", "heart") and inner.requests[0].seeds == [1, 2, 7]
    alone = await PatternEngine().generate(req("heart", [7]))
    assert results[1][0].image.tobytes() == alone[0].image.tobytes()
    assert [image.seed for image in results[0]] == [1, 2]


async def test_incompatible_requests_do_not_share_and_full_batches_close() -> None:
    inner = CountingEngine()
    engine = BatchingEngine(inner, window=0.05, max_images=2)
    await asyncio.gather(
        engine.generate(req("a", [1])),
        engine.generate(EngineRequest(mode=Mode.GENERATE, prompt="b", width=64, height=32, seeds=[2])),
        engine.generate(req("c", [3])),
        engine.generate(req("d", [4])),
    )
    sizes = sorted(len(r.seeds) for r in inner.requests)
    assert sizes == [1, 1, 2], "32x32 a+c fill one batch of 2, d runs in the next, 64x32 alone"


async def test_a_cancelled_waiter_leaves_the_batch() -> None:
    inner = GatedEngine()
    engine = BatchingEngine(inner, window=0.1, max_images=8)
    busy = asyncio.create_task(engine.generate(EngineRequest(Mode.GENERATE, "busy", 64, 32, [0])))
    await inner.entered.wait()  # the engine is busy: the next batch waits its window, then for the engine
    leaving = asyncio.create_task(engine.generate(req("gone", [1])))
    staying = asyncio.create_task(engine.generate(req("here", [2])))
    await asyncio.sleep(0)  # one turn of the loop: both join the open batch
    leaving.cancel()
    inner.gate.set()
    [image] = await staying
    await busy
    assert inner.requests[1].prompts == ("here",)
    assert image.seed == 2
    with pytest.raises(asyncio.CancelledError):
        await leaving


async def test_a_lone_caller_on_an_idle_engine_does_not_wait_out_the_window() -> None:
    engine = BatchingEngine(CountingEngine(), window=30.0, max_images=8)
    [image] = await asyncio.wait_for(engine.generate(req("alone", [1])), timeout=5)
    assert image.seed == 1
    together = await asyncio.wait_for(
        asyncio.gather(engine.generate(req("a", [2])), engine.generate(req("b", [3]))), timeout=5
    )
    assert [images[0].seed for images in together] == [2, 3] and engine.batches_run == 2, "arrived together: joined"


async def test_engine_failure_reaches_every_member() -> None:
    class Failing(Engine):
        async def generate(self, request: EngineRequest) -> list[GeneratedImage]:
            raise RuntimeError("boom")

    engine = BatchingEngine(Failing(), window=0.02)
    outcomes = await asyncio.gather(
        engine.generate(req("a", [1])), engine.generate(req("b", [2])), return_exceptions=True
    )
    assert all(isinstance(o, RuntimeError) for o in outcomes)


async def test_the_service_batches_concurrent_requests_for_a_batching_entry(tmp_path: object) -> None:
    """Three requests that wait while the engine is busy run as one batch once it is free (no timing:
    the engine is held by another request while they arrive, however slowly each passes accounting)."""
    from pathlib import Path

    from limner.app import build_state
    from limner.core.models import ImageRequest, SizeSpec
    from limner.engines.catalog import ModelEntry
    from limner.settings import Settings
    from tests.support.waiting import until

    entry = ModelEntry(
        id="batched", engine="testpattern", batch_window_ms=80, max_batch_images=8, options={"delay": 0.5}
    )
    state = build_state(Settings(data_dir=Path(str(tmp_path)), models=[entry], default_model="batched"))
    engine = state.catalog.engine(entry)
    assert isinstance(engine, BatchingEngine)
    busy = asyncio.ensure_future(
        state.service.run(ImageRequest(prompt="busy", model="batched", seed=9, size=SizeSpec(64, 64)), "busy")
    )
    await until(engine._running.locked, what="the first request to hold the engine")
    requests = [ImageRequest(prompt=f"p{i}", model="batched", seed=i, size=SizeSpec(32, 32)) for i in range(3)]
    results = await asyncio.gather(*(state.service.run(r, f"r{i}") for i, r in enumerate(requests)))
    await busy
    assert engine.batches_run == 2, "the busy request's batch, then the three together"
    assert [result.images[0].seed for result in results] == [0, 1, 2]
    alone = await state.service.run(ImageRequest(prompt="p1", model="batched", seed=1, size=SizeSpec(32, 32)), "x")
    # the same pixels (the files differ: each carries its own signed Content Credentials)
    assert pixels(alone.images[0].data) == pixels(results[1].images[0].data)


async def test_previews_reach_each_member_of_a_batch_with_its_own_images() -> None:
    inner = CountingEngine()
    engine = BatchingEngine(inner, window=0.05, max_images=8)
    seen: dict[str, list[tuple[int, int]]] = {"apple": [], "heart": [], "plain": []}

    def watch(name: str) -> Callable[[int, list[Image.Image]], None]:
        return lambda step, images: seen[name].append((step, len(images)))

    await asyncio.gather(
        engine.generate(req("apple", [1, 2], steps=12, preview=watch("apple"), preview_every=4)),
        engine.generate(req("heart", [7], steps=12, preview=watch("heart"), preview_every=6)),
        engine.generate(req("plain", [9], steps=12)),
    )
    assert len(inner.requests) == 1 and inner.requests[0].preview_every == 2, "gcd of 4 and 6"
    assert seen["apple"] == [(step, 2) for step in (2, 4, 6, 8, 10)], "its two images, at every offer"
    assert seen["heart"] == [(step, 1) for step in (2, 4, 6, 8, 10)]
    assert seen["plain"] == []


class SteppingEngine(PatternEngine):
    """Runs ``steps`` steps, asking ``rows_wanted`` before each as limner's own pipelines do, and returns
    only the kept rows' images; records how many rows each step ran. Before step ``pause_at`` (once) it
    reports ``paused`` and waits for ``resume``, so a test acts at a known step instead of a guessed time."""

    def __init__(self, steps: int = 8, pause_at: int | None = None) -> None:
        super().__init__()
        self.steps = steps
        self.pause_at = pause_at
        self.paused = asyncio.Event()
        self.resume = asyncio.Event()
        self.rows_per_step: list[int] = []
        self.cancelled = False
        self.finished = asyncio.Event()

    async def generate(self, request: EngineRequest) -> list[GeneratedImage]:
        kept = list(range(request.n))
        try:
            for index in range(self.steps):
                if index == self.pause_at:
                    self.pause_at = None
                    self.paused.set()
                    await self.resume.wait()
                if request.rows_wanted is not None:
                    wanted = request.rows_wanted()
                    kept = [row for row in kept if wanted[row]]
                self.rows_per_step.append(len(kept))
                await asyncio.sleep(0)
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        finally:
            self.finished.set()
        prompts = request.prompts or (request.prompt,) * request.n
        images = []
        for row in kept:
            images += await super().generate(
                replace(request, prompt=prompts[row], prompts=(), seeds=[request.seeds[row]])
            )
        return images


async def test_a_caller_leaving_a_running_batch_is_dropped_at_the_next_step() -> None:
    inner = SteppingEngine(steps=10, pause_at=3)
    engine = BatchingEngine(inner, window=0.02, max_images=8)
    leaving = asyncio.create_task(engine.generate(req("gone", [1, 2])))
    staying = asyncio.create_task(engine.generate(req("here", [3])))
    await inner.paused.wait()
    leaving.cancel()
    with pytest.raises(asyncio.CancelledError):
        await leaving
    inner.resume.set()
    images = await staying
    assert [image.seed for image in images] == [3]
    alone = await PatternEngine().generate(req("here", [3]))
    assert images[0].image.tobytes() == alone[0].image.tobytes(), "its own image, not the departed caller's"
    assert inner.rows_per_step == [3, 3, 3] + [1] * 7, "dropped at the first step after it left"
    assert not inner.cancelled


async def test_a_running_batch_whose_callers_all_left_is_cancelled() -> None:
    inner = SteppingEngine(steps=50, pause_at=2)
    engine = BatchingEngine(inner, window=0.02, max_images=8)
    callers = [asyncio.create_task(engine.generate(req(p, [i]))) for i, p in enumerate(("a", "b"))]
    await inner.paused.wait()
    for caller in callers:
        caller.cancel()
    await asyncio.wait_for(inner.finished.wait(), 10)  # never resumed: only cancelling can end it
    assert inner.cancelled and inner.rows_per_step == [2, 2]
    follow_up = await engine.generate(req("next", [9]))  # the engine is free again
    assert [image.seed for image in follow_up] == [9]

"""Step-level continuous batching on tiny random-weight pipelines of every stepped UNet family (SD 1.x,
SD-Turbo-shaped, SDXL, SDXL-Turbo): a request joins a running batch at the next step, finishes first when it
needs fewer steps, leaves at the next step when cancelled, and keeps its own pixels in company."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # before diffusers / huggingface_hub read it

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from limner.core.models import EngineRequest, GeneratedImage, Mode
from limner.engines.diffusers_engine import DiffusersEngine, DiffusersSettings
from limner.engines.stepping import SteppingEngine
from tests.support.tiny_diffusers import build_tiny_sd
from tests.support.tiny_families import build_tiny_sdxl

pytestmark = pytest.mark.usefixtures("one_cpu_thread")

FAMILIES: dict[str, tuple[Callable[[Path], Path], dict[str, Any]]] = {
    "sd1": (build_tiny_sd, {}),
    # SD-Turbo's shape: no guidance, an ancestral sampler drawing noise from the request's generators
    "sd-turbo": (build_tiny_sd, {"family": "sd-turbo", "scheduler": "EulerAncestralDiscreteScheduler"}),
    "sdxl": (build_tiny_sdxl, {}),
    "sdxl-turbo": (lambda path: build_tiny_sdxl(path, turbo=True), {}),
}


@pytest.fixture(scope="module")
def engines(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, DiffusersEngine]]:
    root = tmp_path_factory.mktemp("stepping")
    built = {
        name: DiffusersEngine(DiffusersSettings(path=build(root / name), device="cpu", **extra))
        for name, (build, extra) in FAMILIES.items()
    }
    yield built
    for engine in built.values():
        asyncio.run(engine.aclose())


def request(prompt: str, seeds: list[int], steps: int, **fields: Any) -> EngineRequest:
    return EngineRequest(Mode.GENERATE, prompt, 64, 64, seeds, steps=steps, **fields)


def pixels(image: GeneratedImage) -> np.ndarray[Any, Any]:
    return np.asarray(image.image.convert("RGB"), dtype=np.int16)


class Steps:
    """Records (request name, step) in the order steps end, and wakes waiters at a given step."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, int]] = []
        self._loop = asyncio.get_running_loop()
        self._events: dict[tuple[str, int], asyncio.Event] = {}

    def progress(self, name: str) -> Callable[[int, int], None]:
        def report(step: int, total: int) -> None:  # the engine's worker thread
            self.seen.append((name, step))
            event = self._events.get((name, step))
            if event is not None:
                self._loop.call_soon_threadsafe(event.set)

        return report

    async def reached(self, name: str, step: int) -> None:
        event = self._events.setdefault((name, step), asyncio.Event())
        if (name, step) not in self.seen:
            await asyncio.wait_for(event.wait(), 60)


async def in_company(stepper: SteppingEngine, target: EngineRequest) -> tuple[list[GeneratedImage], Steps]:
    """``target`` sent as a longer two-image request ends its second step; its images and the step order."""
    steps = Steps()
    loop = asyncio.get_running_loop()
    sent: list[asyncio.Task[list[GeneratedImage]]] = []
    joined = stepper.joined_running

    async def arrive() -> list[GeneratedImage]:  # the target reaches the engine now (no await before it queues)
        steps.seen.append(("sent", max(step for name, step in steps.seen if name == "long")))
        return await stepper.generate(EngineRequest(**{**target.__dict__, "progress": steps.progress("target")}))

    def send() -> None:
        sent.append(loop.create_task(arrive()))

    def long_progress(step: int, total: int) -> None:  # the worker thread, before its step is over
        steps.progress("long")(step, total)
        if step == 2:
            loop.call_soon_threadsafe(send)

    long = asyncio.create_task(
        stepper.generate(request("a red barn", [5, 6], 8, progress=long_progress, negative_prompt="fog"))
    )
    await steps.reached("target", 1)
    images = await sent[0]
    assert stepper.joined_running == joined + 1, "it joined the running batch"
    assert not long.done(), "it finished before the longer batch it joined"
    await long
    return images, steps


@pytest.mark.parametrize("family", list(FAMILIES))
async def test_a_request_joins_at_the_next_step_and_keeps_its_pixels_bit_for_bit(
    engines: dict[str, DiffusersEngine], family: str
) -> None:
    engine = engines[family]
    stepper = SteppingEngine(engine, engine, max_images=8, invariant=True)
    target = request("a lighthouse", [3], 3)
    [alone] = await stepper.generate(target)
    [joined], steps = await in_company(stepper, target)
    [sent] = [step for name, step in steps.seen if name == "sent"]
    before = [step for name, step in steps.seen[: steps.seen.index(("target", 1))] if name == "long"]
    # The long request's step sent + 1 may be under way when the target arrives; the target's first step is
    # then in the very next denoiser call, the one of the long request's step sent + 2 (reported just before).
    assert max(before) <= sent + 2, f"joined at the next step boundary after it arrived: {steps.seen}"
    assert np.array_equal(pixels(joined), pixels(alone)), "identical pixels alone and in company"
    [other] = await stepper.generate(request("a lighthouse", [4], 3))
    assert np.abs(pixels(other) - pixels(alone)).mean() > 1.0, "another seed is another image"


@pytest.mark.parametrize("family", list(FAMILIES))
async def test_a_fused_batch_matches_the_whole_pipeline_up_to_float_rounding(
    engines: dict[str, DiffusersEngine], family: str
) -> None:
    """One denoiser call per step for the whole batch: the same noise and sampler path as the pipeline's own
    ``__call__``, and as alone, up to the last bit the batched kernels round differently."""
    engine = engines[family]
    stepper = SteppingEngine(engine, engine, max_images=8)
    target = request("a lighthouse", [3], 3)
    [whole] = await engine.generate(target)
    [alone] = await stepper.generate(target)
    [joined], _ = await in_company(stepper, target)
    [other] = await stepper.generate(request("a lighthouse", [4], 3))
    for got in (alone, joined):
        assert np.abs(pixels(got) - pixels(whole)).max() <= 2
    assert np.abs(pixels(other) - pixels(whole)).mean() > 1.0


async def test_a_cancelled_request_leaves_at_the_next_step(engines: dict[str, DiffusersEngine]) -> None:
    engine = engines["sd1"]
    stepper = SteppingEngine(engine, engine, max_images=8)
    rows: list[int] = []
    assert engine._pipe is not None
    hook = engine._pipe.unet.register_forward_hook(lambda module, args, output: rows.append(args[0].shape[0]))
    steps = Steps()
    try:
        leaving = asyncio.create_task(stepper.generate(request("a red barn", [5, 6], 10, progress=steps.progress("x"))))
        staying = asyncio.create_task(stepper.generate(request("a lighthouse", [3], 10)))
        await steps.reached("x", 3)
        leaving.cancel()
        [image] = await staying
    finally:
        hook.remove()
    with pytest.raises(asyncio.CancelledError):
        await leaving
    assert rows[0] == 2 * 3 and rows[-1] == 2 * 1 and len(rows) == 10, rows
    assert rows.count(6) <= 5, "the cancelled rows left within a step or two"
    assert image.image.size == (64, 64)


async def test_a_full_batch_takes_newcomers_as_others_finish(engines: dict[str, DiffusersEngine]) -> None:
    engine = engines["sd1"]
    stepper = SteppingEngine(engine, engine, max_images=2)
    rows: list[int] = []
    assert engine._pipe is not None
    hook = engine._pipe.unet.register_forward_hook(lambda module, args, output: rows.append(args[0].shape[0] // 2))
    try:
        results = await asyncio.gather(*(stepper.generate(request("a barn", [seed], 2 + seed)) for seed in range(4)))
    finally:
        hook.remove()
    assert [result[0].seed for result in results] == [0, 1, 2, 3]
    assert max(rows) == 2, "never more than the batch's images"
    assert stepper.joined_running >= 1, "a waiting request joined a running batch when one left"


async def test_requests_it_cannot_step_go_to_the_request_level_path(engines: dict[str, DiffusersEngine]) -> None:
    from PIL import Image

    engine = engines["sd1"]
    stepper = SteppingEngine(engine, engine, max_images=8)
    before = stepper.steps_run
    source = Image.new("RGB", (64, 64), (200, 30, 30))
    [edited] = await stepper.generate(
        EngineRequest(Mode.EDIT, "a barn", 64, 64, [1], steps=2, strength=0.5, images=[source])
    )
    assert edited.image.size == (64, 64) and stepper.steps_run == before

"""Step-level batching (``BuiltinSteps``) on the first-generation emoji diffusion pipeline, built tiny with
random weights: a request joins a running batch at its next step and keeps its own pixels, a cancelled one
leaves within a step or two, and a catalog entry for the pipeline gets this step function."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # before diffusers / huggingface_hub read it

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from limner.core.models import EngineRequest, GeneratedImage, Mode
from limner.engines.diffusers_engine import DiffusersEngine, DiffusersSettings
from limner.engines.step_builtin import BuiltinSteps
from limner.engines.stepping import SteppingEngine
from tests.support.tiny_emoji import PIPELINE_CLASS, build_tiny_emoji_diffusion, emoji_diffusion_entry

pytestmark = pytest.mark.usefixtures("one_cpu_thread")


@pytest.fixture(scope="module")
def emoji_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The pipeline at a third of its real width (block channels 16/32/64 for 48/96/192), random seeded weights."""
    return build_tiny_emoji_diffusion(tmp_path_factory.mktemp("tiny-emoji-diffusion"), width=16)


@pytest.fixture(scope="module")
def engine(emoji_dir: Path) -> Iterator[DiffusersEngine]:
    settings = DiffusersSettings(path=emoji_dir, pipeline_class=PIPELINE_CLASS, native_size=(32, 32), device="cpu")
    built = DiffusersEngine(settings)
    yield built
    asyncio.run(built.aclose())


def request(prompt: str, seeds: list[int], steps: int, **fields: Any) -> EngineRequest:
    return EngineRequest(Mode.GENERATE, prompt, 32, 32, seeds, steps=steps, **fields)


def pixels(image: GeneratedImage) -> np.ndarray[Any, Any]:
    return np.asarray(image.image.convert("RGB"), dtype=np.int16)


async def joined_and_left(stepper: SteppingEngine, joiner: EngineRequest) -> tuple[GeneratedImage, list[int], int]:
    """A two-image 16-step request runs; ``joiner`` arrives as its step 2 ends and it is cancelled as its step 4
    ends. The joiner's image, the images in each denoiser call, and the calls made before the joiner arrived."""
    engine = stepper.inner
    loop = asyncio.get_running_loop()
    rows: list[int] = []
    hook = engine._pipe.unet.register_forward_hook(  # guidance doubles the batch
        lambda module, args, output: rows.append(args[0].shape[0] // 2)
    )
    tasks: dict[str, asyncio.Task[list[GeneratedImage]]] = {}
    sent: list[int] = []

    async def arrive() -> list[GeneratedImage]:  # reaches the engine now, with no await before it queues
        sent.append(len(rows))
        return list(await stepper.generate(joiner))

    def join() -> None:
        tasks.setdefault("join", loop.create_task(arrive()))

    def at_step(step: int, total: int) -> None:  # the worker thread
        if step == 2:
            loop.call_soon_threadsafe(join)
        if step == 4:
            loop.call_soon_threadsafe(tasks["leave"].cancel)

    try:
        tasks["leave"] = asyncio.create_task(stepper.generate(request("pizza", [5, 6], 16, progress=at_step)))
        with pytest.raises(asyncio.CancelledError):
            await tasks["leave"]
        [image] = await tasks["join"]
    finally:
        hook.remove()
    return image, rows, sent[0]


async def test_a_joiner_keeps_its_pixels_and_a_leaver_leaves_within_a_step_or_two(engine: DiffusersEngine) -> None:
    """Fused denoiser calls: the joiner's pixels are those it makes alone and those of the pipeline's own
    ``__call__``, up to the last bit batched kernels round differently on a CPU."""
    stepper = SteppingEngine(engine, engine, max_images=8)
    joiner = request("red apple", [7], 6)
    [whole] = await engine.generate(joiner)  # the pipeline's own loop, request-level
    image, rows, sent = await joined_and_left(stepper, joiner)
    assert stepper.joined_running == 1, "it joined the running batch"
    [alone] = await stepper.generate(joiner)
    [other_seed] = await stepper.generate(request("red apple", [8], 6))

    assert isinstance(engine.step_function(), BuiltinSteps)
    assert rows[:2] == [2, 2], f"the two-image request ran alone first: {rows}"
    assert 3 in rows and rows.index(3) <= sent + 1, f"joined at the next step after it arrived: {rows}, {sent}"
    # 16-step leaver cancelled after its step 4 (4 calls) + up to 2 more in flight; the joiner's 6 steps follow.
    assert len(rows) <= 4 + 2 + 6 and rows[-1] == 1, f"the leaver left within a step or two: {rows}"
    got = pixels(image)
    assert np.abs(got - pixels(alone)).max() <= 2
    assert np.abs(got - pixels(whole)).max() <= 2, "the step function draws what the pipeline draws"
    assert np.abs(got - pixels(other_seed)).mean() > 10 * max(np.abs(got - pixels(alone)).mean(), 0.1)


async def test_with_batch_invariant_a_joiner_keeps_its_pixels_bit_for_bit(engine: DiffusersEngine) -> None:
    """One denoiser call per request within each step: the joiner's pixels are bit for bit its own."""
    stepper = SteppingEngine(engine, engine, max_images=8, invariant=True)
    joiner = request("red apple", [7], 6)
    image, rows, _ = await joined_and_left(stepper, joiner)
    [alone] = await stepper.generate(joiner)
    assert stepper.joined_running == 1, "it joined the running batch"
    assert rows.count(1) == 6 and rows.count(2) <= 4 + 2, f"the leaver left within a step or two: {rows}"
    assert np.array_equal(pixels(image), pixels(alone)), "identical pixels alone and in company"


async def test_a_catalog_entry_for_the_pipeline_steps_in_batches(emoji_dir: Path, tmp_path: Path) -> None:
    """An ``engine = "diffusers"`` entry naming the pipeline class: the service's requests share denoiser calls."""
    from limner.app import build_state
    from limner.core.models import ImageRequest, SizeSpec
    from limner.settings import Settings

    entry = emoji_diffusion_entry(emoji_dir, default_steps=2)
    state = build_state(Settings(data_dir=tmp_path, models=[entry], default_model=entry.id, result_cache_bytes=0))
    try:
        stepper = state.catalog.engine(state.catalog.resolve(entry.id))
        assert isinstance(stepper, SteppingEngine)
        requests = [ImageRequest(prompt=f"emoji {i}", model=entry.id, seed=i, size=SizeSpec(32, 32)) for i in range(8)]
        results = await asyncio.gather(*(state.service.run(r, f"b{i}") for i, r in enumerate(requests)))
        assert isinstance(stepper.inner.step_function(), BuiltinSteps)
        assert [result.images[0].seed for result in results] == list(range(8))
        assert 0 < stepper.steps_run < 8 * 2, "requests shared denoiser calls"
    finally:
        await state.catalog.aclose()

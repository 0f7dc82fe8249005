"""The shipped built-in model, loaded through the default catalog and served by the diffusers engine."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from limner.app import build_state
from limner.builtin import BUILTIN_MODEL_DIR
from limner.core.models import ImageRequest, SizeSpec, SourceImage
from limner.engines.catalog import BUILTIN_MODEL_ID
from limner.http.deps import AppState
from limner.settings import Settings

pytestmark = pytest.mark.skipif(not (BUILTIN_MODEL_DIR / "model_index.json").exists(), reason="weights not shipped")


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppState]:
    torch.set_num_threads(1)
    settings = Settings(data_dir=tmp_path_factory.mktemp("data"))  # the default catalog
    yield build_state(settings)


async def run(state: AppState, **fields: object) -> list[Image.Image]:
    request = ImageRequest(**{"prompt": "red apple", "model": "dall-e-2", "steps": 8, **fields})  # type: ignore[arg-type]
    result = await state.service.run(request, "test")
    return [Image.open(io.BytesIO(image.data)) for image in result.images]


def test_default_catalog_serves_the_shipped_model_for_every_dialect_default(state: AppState) -> None:
    for name in ("dall-e-2", "gpt-image-1", "image-gen.pro-1.0", "google/gemini-2.5-flash-image", "text-to-image"):
        assert state.catalog.resolve(name).id == BUILTIN_MODEL_ID
    assert state.catalog.resolve(BUILTIN_MODEL_ID).path == BUILTIN_MODEL_DIR


async def test_generates_at_any_requested_size_deterministically(state: AppState) -> None:
    first = await run(state, seed=3, size=SizeSpec(96, 64), n=2)
    again = await run(state, seed=3, size=SizeSpec(96, 64), n=2)
    assert [image.size for image in first] == [(96, 64), (96, 64)]
    assert [image.tobytes() for image in first] == [image.tobytes() for image in again]
    assert first[0].tobytes() != first[1].tobytes(), "each image in a batch has its own seed"


async def test_different_prompts_give_different_images(state: AppState) -> None:
    apple = np.asarray((await run(state, seed=1))[0], dtype=np.float32)
    heart = np.asarray((await run(state, prompt="blue heart", seed=1))[0], dtype=np.float32)
    assert np.abs(apple - heart).mean() > 5


async def test_image_to_image_keeps_the_layout_at_low_strength(state: AppState) -> None:
    source = Image.new("RGB", (32, 32), "white")
    source.paste(Image.new("RGB", (16, 32), (20, 20, 200)), (0, 0))  # left half blue
    request_image = SourceImage(source, "image")
    [edited] = await run(state, images=[request_image], strength=0.3, size=SizeSpec(32, 32), seed=2, steps=10)
    pixels = np.asarray(edited.convert("RGB"), dtype=np.float32)
    original = np.asarray(source, dtype=np.float32)
    to_source = np.abs(pixels - original).mean()
    to_mirror = np.abs(pixels - original[:, ::-1]).mean()
    assert to_source < 0.6 * to_mirror, f"the layout is kept: {to_source:.1f} from the source, {to_mirror:.1f} mirrored"
    left, right = pixels[:, :16].mean(axis=(0, 1)), pixels[:, 16:].mean(axis=(0, 1))
    assert left[2] - left[0] > right[2] - right[0] + 30, "the left half stays the bluer one"
    assert right.mean() > left.mean() + 40, "the white half stays light"


async def test_masked_edit_keeps_unmasked_pixels(state: AppState, tmp_path: Path) -> None:
    source = Image.new("RGB", (32, 32), (30, 160, 30))
    mask = Image.new("L", (32, 32), 0)
    mask.paste(255, (8, 8, 24, 24))
    [edited] = await run(
        state,
        images=[SourceImage(source, "image")],
        mask=SourceImage(mask.convert("RGB"), "mask"),
        size=SizeSpec(32, 32),
        seed=4,
        steps=6,
    )
    pixels = np.asarray(edited.convert("RGB"), dtype=np.int16)
    assert np.abs(pixels[:4, :4] - np.array([30, 160, 30])).max() <= 3


async def test_many_concurrent_requests_share_steps_beyond_one_request_limit(state: AppState) -> None:
    from limner.engines.stepping import SteppingEngine

    engine = state.catalog.engine(state.catalog.resolve(BUILTIN_MODEL_ID))
    assert isinstance(engine, SteppingEngine)
    before = engine.steps_run
    requests = [
        ImageRequest(prompt=f"emoji {i}", model="dall-e-2", steps=2, seed=i, size=SizeSpec(32, 32)) for i in range(12)
    ]
    import asyncio

    results = await asyncio.gather(*(state.service.run(r, f"b{i}") for i, r in enumerate(requests)))
    assert [result.images[0].seed for result in results] == list(range(12))
    assert engine.steps_run - before < 12 * 2, "requests shared denoiser calls"


async def test_the_built_in_model_steps_in_company_with_its_own_pixels(state: AppState) -> None:
    """A request joining the built-in model's running batch at its next step, and another leaving it when its
    caller goes away: the stayer's pixels are those it makes alone (up to CPU batch-size rounding), and bit
    for bit those with ``batch_invariant``."""
    import asyncio

    from limner.core.models import EngineRequest, Mode
    from limner.engines.stepping import SteppingEngine

    engine = state.catalog.engine(state.catalog.resolve(BUILTIN_MODEL_ID))
    assert isinstance(engine, SteppingEngine)
    await engine.load()
    rows_per_step: list[int] = []
    hook = engine.inner._pipe.unet.register_forward_hook(  # type: ignore[attr-defined]
        lambda module, args, output: rows_per_step.append(args[0].shape[0] // 2)  # guidance doubles the batch
    )
    loop = asyncio.get_running_loop()
    tasks: dict[str, asyncio.Task[list[object]]] = {}

    def request(prompt: str, seeds: list[int], steps: int, **extra: object) -> EngineRequest:
        return EngineRequest(Mode.GENERATE, prompt, 32, 32, seeds, steps=steps, **extra)  # type: ignore[arg-type]

    def at_step(step: int, total: int) -> None:  # the worker thread
        if step == 2:
            loop.call_soon_threadsafe(lambda: tasks.setdefault("join", loop.create_task(engine.generate(joiner))))
        if step == 4:
            loop.call_soon_threadsafe(tasks["leave"].cancel)

    joiner = request("red apple", [7], 6)
    invariant = SteppingEngine(engine.inner, engine.fallback, invariant=True)
    try:
        tasks["leave"] = asyncio.create_task(engine.generate(request("pizza", [5, 6], 16, progress=at_step)))
        with pytest.raises(asyncio.CancelledError):
            await tasks["leave"]
        [image] = await tasks["join"]  # type: ignore[misc]
        rows_seen = list(rows_per_step)
        [alone] = await engine.generate(joiner)
        [other_seed] = await engine.generate(request("red apple", [8], 6))
        tasks.clear()
        tasks["leave"] = asyncio.create_task(invariant.generate(request("pizza", [5, 6], 16, progress=at_step)))
        with pytest.raises(asyncio.CancelledError):
            await tasks["leave"]
        [exact_in_company] = await tasks["join"]  # type: ignore[misc]
        [exact_alone] = await invariant.generate(joiner)
    finally:
        hook.remove()
    assert rows_seen[:3] == [2, 2, 3], f"joined at the third step: {rows_seen}"
    assert len(rows_seen) <= 4 + 2 + 6 and rows_seen[-1] == 1, f"the leaver left within a step or two: {rows_seen}"
    got, want, different = (np.asarray(i.image, dtype=np.int16) for i in (image, alone, other_seed))  # type: ignore[attr-defined]
    assert np.abs(got - want).max() <= 2
    assert np.abs(got - different).mean() > 10 * max(np.abs(got - want).mean(), 0.1)
    exact = (np.asarray(i.image) for i in (exact_in_company, exact_alone))  # type: ignore[attr-defined]
    assert np.array_equal(*exact)

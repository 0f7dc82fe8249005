"""The shipped built-in model, loaded through the default catalog and served by the diffusers engine."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from PIL import Image

from limner.app import build_state
from limner.builtin import BUILTIN_MODEL_DIR
from limner.builtin.glyph_pipeline import EmojiGlyphPipeline
from limner.config.defaults import BUILTIN_MODEL_ID, BUILTIN_OLD_IDS
from limner.core.models import EngineRequest, ImageRequest, ImageResult, Mode, SizeSpec, SourceImage
from limner.engines.batching import BatchingEngine
from limner.http.deps import AppState
from limner.settings import Settings

pytestmark = pytest.mark.skipif(not (BUILTIN_MODEL_DIR / "model_index.json").exists(), reason="weights not shipped")


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppState]:
    torch.set_num_threads(1)
    settings = Settings(data_dir=tmp_path_factory.mktemp("data"))  # the default catalog
    yield build_state(settings)


async def result_of(state: AppState, **fields: object) -> ImageResult:
    request = ImageRequest(**{"prompt": "a slice of pizza", "model": "dall-e-2", **fields})  # type: ignore[arg-type]
    return await state.service.run(request, "test")


async def run(state: AppState, **fields: object) -> list[Image.Image]:
    result = await result_of(state, **fields)
    return [Image.open(io.BytesIO(image.data)) for image in result.images]


def test_default_catalog_serves_the_shipped_model_for_every_dialect_default_and_its_old_id(state: AppState) -> None:
    names = ("dall-e-2", "gpt-image-1", "image-gen.pro-1.0", "google/gemini-2.5-flash-image", "text-to-image")
    for name in (*names, *BUILTIN_OLD_IDS):
        assert state.catalog.resolve(name).id == BUILTIN_MODEL_ID
    assert state.catalog.resolve(BUILTIN_MODEL_ID).path == BUILTIN_MODEL_DIR


async def test_a_slice_of_pizza_at_1024_is_drawn_there_with_its_own_transparency(state: AppState) -> None:
    [image] = await run(state, seed=1, size=SizeSpec(1024, 1024), background="transparent")
    assert (image.size, image.mode) == ((1024, 1024), "RGBA")
    alpha = np.asarray(image.getchannel("A"))
    assert alpha[:40, :40].max() == 0, "the corners are transparent"
    assert 0.2 < (alpha > 250).mean() < 0.8, "the emoji covers part of the canvas, opaque"
    # Pepperoni red and crust yellow, the pizza's colours; not an apple's or a heart's.
    opaque = np.asarray(image.convert("RGB"))[alpha > 250].astype(np.float32)
    red, green, blue = opaque.mean(axis=0)
    assert red > 180 and green > 90 and blue < 120, (red, green, blue)


async def test_sizes_are_drawn_exactly_and_seeds_are_reproducible(state: AppState) -> None:
    first = await run(state, seed=3, size=SizeSpec(96, 64), n=2)
    again = await run(state, seed=3, size=SizeSpec(96, 64), n=2)
    assert [image.size for image in first] == [(96, 64), (96, 64)]
    assert [image.tobytes() for image in first] == [image.tobytes() for image in again]
    assert first[0].tobytes() != first[1].tobytes(), "each image in a batch has its own seed"


@pytest.mark.parametrize(
    ("fields", "transparent"),
    [
        ({"background": "transparent"}, True),
        ({}, True),
        ({"background": "opaque"}, False),
        ({"output_format": "jpeg"}, False),
        ({"output_format": "webp", "background": "transparent"}, True),
    ],
)
async def test_transparency_is_delivered_and_reported_only_where_asked(
    state: AppState, fields: dict[str, object], transparent: bool
) -> None:
    result = await result_of(state, seed=2, size=SizeSpec(128, 128), **fields)
    image = Image.open(io.BytesIO(result.images[0].data))
    assert result.transparent is transparent
    if transparent:
        assert image.mode == "RGBA" and image.getchannel("A").getextrema() == (0, 255)
    else:
        corner = np.asarray(image.convert("RGBA"))[:8, :8]
        assert corner[..., 3].min() == 255 and corner[..., :3].min() >= 245, "composited on white"


async def test_a_style_filter_keeps_the_transparency(state: AppState) -> None:
    [image] = await run(state, seed=2, size=SizeSpec(128, 128), style="comic-book")
    alpha = np.asarray(image.getchannel("A"))
    assert image.mode == "RGBA" and alpha[:8, :8].max() == 0 and alpha.max() == 255


async def test_different_prompts_draw_different_emoji(state: AppState) -> None:
    pizza = np.asarray((await run(state, seed=1, size=SizeSpec(64, 64)))[0].convert("RGBA"), dtype=np.float32)
    heart = np.asarray(
        (await run(state, prompt="a blue heart", seed=1, size=SizeSpec(64, 64)))[0].convert("RGBA"), dtype=np.float32
    )
    assert np.abs(pizza - heart).mean() > 10
    blue = heart[heart[..., 3] > 250][:, :3].mean(axis=0)
    assert blue[2] > blue[0] + 60, f"the blue heart is blue: {blue}"


async def test_an_edit_draws_over_the_source_and_claims_no_transparency(state: AppState) -> None:
    source = Image.new("RGB", (128, 128), (20, 40, 200))
    result = await result_of(state, images=[SourceImage(source, "image")], size=SizeSpec(128, 128), seed=2)
    edited = Image.open(io.BytesIO(result.images[0].data))
    assert edited.mode == "RGB" and result.transparent is False
    pixels = np.asarray(edited, dtype=np.int16)
    assert np.abs(pixels[:6, :6] - np.array([20, 40, 200])).max() <= 3, "the source shows around the emoji"
    assert np.abs(pixels[56:72, 56:72] - np.array([20, 40, 200])).mean() > 40, "the emoji covers the middle"


async def test_a_masked_edit_draws_inside_the_mask_only(state: AppState) -> None:
    source = Image.new("RGB", (128, 128), (30, 160, 30))
    mask = Image.new("L", (128, 128), 0)
    mask.paste(255, (64, 64, 128, 128))
    [edited] = await run(
        state,
        images=[SourceImage(source, "image")],
        mask=SourceImage(mask.convert("RGB"), "mask"),
        size=SizeSpec(128, 128),
        seed=4,
    )
    pixels = np.asarray(edited.convert("RGB"), dtype=np.int16)
    assert np.abs(pixels[:64, :] - np.array([30, 160, 30])).max() <= 3, "nothing outside the mask changes"
    assert np.abs(pixels[80:112, 80:112] - np.array([30, 160, 30])).mean() > 30, "the emoji is drawn in it"


async def test_a_negative_prompt_pushes_its_emoji_away(state: AppState) -> None:
    engine = state.catalog.engine(state.catalog.resolve(BUILTIN_MODEL_ID))
    await engine.load()
    pipe = engine.inner._pipe  # type: ignore[attr-defined]
    assert isinstance(pipe, EmojiGlyphPipeline)
    [plain] = pipe.choose(["a red heart"])
    [pushed] = pipe.choose(["a red heart"], [pipe.emoji[plain]["label"]])
    assert pipe.emoji[plain]["label"] == "red heart" and pushed != plain


async def test_many_concurrent_requests_share_batches_beyond_one_request_limit(state: AppState) -> None:
    engine = state.catalog.engine(state.catalog.resolve(BUILTIN_MODEL_ID))
    assert isinstance(engine, BatchingEngine)
    before = engine.batches_run
    requests = [ImageRequest(prompt=f"emoji {i}", model="dall-e-2", seed=i, size=SizeSpec(64, 64)) for i in range(12)]
    results = await asyncio.gather(*(state.service.run(r, f"b{i}") for i, r in enumerate(requests)))
    assert [result.images[0].seed for result in results] == list(range(12))
    assert engine.batches_run - before < 12, "requests were joined"


async def test_a_departed_caller_leaves_a_running_batch_of_the_real_pipeline(state: AppState) -> None:
    """The built-in pipeline drops a departed caller's rows before its next stage; the others' images are
    exactly the ones they get alone."""
    engine = state.catalog.engine(state.catalog.resolve(BUILTIN_MODEL_ID))
    assert isinstance(engine, BatchingEngine)
    await engine.load()
    rows_per_stage: list[int] = []
    hook = engine.inner._pipe.upsampler.register_forward_hook(  # type: ignore[attr-defined]
        lambda module, args, output: rows_per_stage.append(args[0].shape[0])
    )
    loop = asyncio.get_running_loop()
    leaving: asyncio.Task[object] | None = None

    def leave_at_once(step: int, total: int) -> None:
        if step == 1 and leaving is not None:
            loop.call_soon_threadsafe(leaving.cancel)

    def request(prompt: str, seeds: list[int], **extra: object) -> EngineRequest:
        return EngineRequest(Mode.GENERATE, prompt, 1024, 1024, seeds, **extra)  # type: ignore[arg-type]

    try:
        leaving = asyncio.create_task(engine.generate(request("pizza", [5, 6], progress=leave_at_once)))
        staying = asyncio.create_task(engine.generate(request("red apple", [7])))
        [image] = await staying
        with pytest.raises(asyncio.CancelledError):
            await leaving
        rows_seen = list(rows_per_stage)
        [alone] = await engine.generate(request("red apple", [7]))
    finally:
        hook.remove()
    assert rows_seen[-1] == 1 and len(rows_seen) == 2, rows_seen
    got, want = (np.asarray(i.image, dtype=np.int16) for i in (image, alone))
    assert np.abs(got - want).max() <= 2, "the same image, up to CPU batch-size rounding"

"""DiffusersEngine against real (tiny, random-weight) diffusers pipelines built offline by the fixtures."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # before diffusers / huggingface_hub read it

import asyncio
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from limner.builtin.pipeline import EmojiDiffusionPipeline
from limner.builtin.train import build_unet, inference_scheduler
from limner.core.errors import InvalidRequest, ModelError, ModelNotAvailable, UnsupportedOperation
from limner.core.models import EngineRequest, GeneratedImage, Mode, ProgressCallback
from limner.engines.diffusers_engine import DiffusersEngine, DiffusersSettings
from tests.support.tiny_diffusers import build_tiny_sd_single_file

EMOJI_CLASS = "limner.builtin.pipeline:EmojiDiffusionPipeline"


class ImageOnlyPipeline(EmojiDiffusionPipeline):
    """A custom pipeline that edits but cannot inpaint: its ``__call__`` has ``image`` but no ``mask_image``."""

    def __call__(self, prompt: str, image: Image.Image | None = None, **kwargs: Any) -> Any:  # type: ignore[override]
        raise AssertionError("the engine refuses masks before loading")


class TextOnlyPipeline(EmojiDiffusionPipeline):
    """A custom pipeline that only does text-to-image."""

    def __call__(self, prompt: str, **kwargs: Any) -> Any:  # type: ignore[override]
        raise AssertionError("the engine refuses edits before loading")


pytestmark = pytest.mark.usefixtures("one_cpu_thread")


@pytest.fixture(scope="module")
def sd_single_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_sd_single_file(tmp_path_factory.mktemp("tiny-sd-single"))


@pytest.fixture(scope="module")
def emoji_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tiny-emoji")
    torch.manual_seed(0)
    pipe: Any = EmojiDiffusionPipeline(build_unet(width=16), inference_scheduler())  # type: ignore[arg-type]
    pipe.save_pretrained(path)
    return path


def _engine(settings: DiffusersSettings) -> Iterator[DiffusersEngine]:
    engine = DiffusersEngine(settings)
    yield engine
    asyncio.run(engine.aclose())


@pytest.fixture(scope="module")
def sd(sd_dir: Path) -> Iterator[DiffusersEngine]:
    """One loaded engine for the module; each test drives it from its own event loop."""
    yield from _engine(DiffusersSettings(path=sd_dir, device="cpu", default_steps=2))


@pytest.fixture(scope="module")
def emoji(emoji_dir: Path) -> Iterator[DiffusersEngine]:
    settings = DiffusersSettings(path=emoji_dir, pipeline_class=EMOJI_CLASS, native_size=(32, 32), default_steps=3)
    yield from _engine(settings)


def make_request(
    mode: Mode = Mode.GENERATE,
    *,
    seeds: tuple[int, ...] = (1,),
    width: int = 64,
    height: int = 64,
    steps: int | None = 2,
    images: list[Image.Image] | None = None,
    mask: Image.Image | None = None,
    strength: float | None = None,
    progress: ProgressCallback | None = None,
) -> EngineRequest:
    return EngineRequest(
        mode=mode,
        prompt="a red circle",
        width=width,
        height=height,
        seeds=list(seeds),
        negative_prompt="blurry",
        steps=steps,
        strength=strength,
        images=images or [],
        mask=mask,
        progress=progress,
    )


def pixels(result: GeneratedImage) -> np.ndarray:
    return np.asarray(result.image.convert("RGB"), dtype=np.int16)


def source_image(size: tuple[int, int] = (64, 64)) -> Image.Image:
    ramp = np.linspace(0, 255, size[0], dtype=np.uint8)
    array = np.stack([np.tile(ramp, (size[1], 1))] * 3, axis=-1)
    array[..., 2] = 255 - array[..., 2]
    return Image.fromarray(array)


def half_mask(size: tuple[int, int] = (64, 64)) -> Image.Image:
    """White (repaint) on the right half."""
    mask = Image.new("L", size, 0)
    mask.paste(255, (size[0] // 2, 0, size[0], size[1]))
    return mask


# --- loading ---


def test_capabilities_are_known_before_load(sd_dir: Path) -> None:
    engine = DiffusersEngine(DiffusersSettings(path=sd_dir, default_steps=7))
    caps = engine.capabilities
    assert not engine.loaded
    assert caps.modes == {Mode.GENERATE, Mode.EDIT}
    assert caps.supports_mask
    assert caps.default_size == (64, 64)  # UNet sample_size 8 x VAE scale factor 8
    assert caps.size_multiple == 8
    assert caps.default_steps == 7


async def test_loads_from_directory(sd: DiffusersEngine) -> None:
    await sd.load()
    assert sd.loaded
    assert sd.capabilities.extras["pipeline"] == "StableDiffusionPipeline"
    assert sd.capabilities.supports_mask


async def test_missing_path_is_model_not_available(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    engine = DiffusersEngine(DiffusersSettings(path=missing, device="cpu"))
    with pytest.raises(ModelNotAvailable, match=str(missing)):
        await engine.load()
    with pytest.raises(ModelNotAvailable, match="does not exist"):
        await engine.generate(make_request())
    assert not engine.loaded
    await engine.aclose()


async def test_single_file_matches_directory(sd: DiffusersEngine, sd_single_file: Path) -> None:
    settings = DiffusersSettings(
        path=sd_single_file,
        config_dir=sd_single_file.parent / "config",
        single_file_class="StableDiffusionPipeline",
        device="cpu",
        default_steps=2,
    )
    engine = DiffusersEngine(settings)
    assert engine.capabilities.supports_mask and engine.capabilities.default_size == (64, 64)
    try:
        [from_file] = await engine.generate(make_request(seeds=(5,)))
    finally:
        await engine.aclose()
    [from_dir] = await sd.generate(make_request(seeds=(5,)))
    np.testing.assert_array_equal(pixels(from_file), pixels(from_dir))  # same weights, same seed


async def test_single_file_needs_local_config(sd_single_file: Path) -> None:
    engine = DiffusersEngine(DiffusersSettings(path=sd_single_file, device="cpu"))
    with pytest.raises(ModelNotAvailable, match="config_dir"):
        await engine.load()
    await engine.aclose()


async def test_scheduler_setting(sd_dir: Path) -> None:
    engine = DiffusersEngine(DiffusersSettings(path=sd_dir, device="cpu", scheduler="EulerAncestralDiscreteScheduler"))
    try:
        results = await engine.generate(make_request(seeds=(1, 1)))
        pipe: Any = engine._tasks["generate"]
        assert type(pipe.scheduler).__name__ == "EulerAncestralDiscreteScheduler"
        np.testing.assert_array_equal(pixels(results[0]), pixels(results[1]))  # ancestral noise is per-image too
    finally:
        await engine.aclose()
    unknown = DiffusersEngine(DiffusersSettings(path=sd_dir, device="cpu", scheduler="NoSuchScheduler"))
    with pytest.raises(ModelNotAvailable, match="NoSuchScheduler"):
        await unknown.load()
    await unknown.aclose()


# --- text to image ---


async def test_text_to_image_size_and_count(sd: DiffusersEngine) -> None:
    results = await sd.generate(make_request(seeds=(1, 2), width=64, height=128))
    assert [r.seed for r in results] == [1, 2]
    assert [r.image.size for r in results] == [(64, 128), (64, 128)]


async def test_same_seed_same_pixels_in_any_batch(sd: DiffusersEngine) -> None:
    [alone] = await sd.generate(make_request(seeds=(7,)))
    [again] = await sd.generate(make_request(seeds=(7,)))
    batch = await sd.generate(make_request(seeds=(3, 7, 9)))
    np.testing.assert_array_equal(pixels(alone), pixels(again))
    np.testing.assert_array_equal(pixels(alone), pixels(batch[1]))
    assert not np.array_equal(pixels(batch[0]), pixels(batch[1]))
    assert not np.array_equal(pixels(batch[0]), pixels(batch[2]))


async def test_progress_is_reported_per_step(sd: DiffusersEngine) -> None:
    calls: list[tuple[int, int]] = []
    await sd.generate(make_request(steps=3, progress=lambda step, total: calls.append((step, total))))
    assert calls == [(1, 3), (2, 3), (3, 3)]


async def test_event_loop_keeps_running_during_generation(sd: DiffusersEngine) -> None:
    await sd.load()
    loop = asyncio.get_running_loop()
    answered: list[bool] = []

    def progress(step: int, total: int) -> None:
        # Mid-generation, ask the event loop to run something and wait for it: that only returns if
        # the pipeline runs off the loop's thread and leaves the loop free.
        ran = threading.Event()
        loop.call_soon_threadsafe(ran.set)
        answered.append(ran.wait(10))

    await sd.generate(make_request(steps=3, progress=progress))
    assert answered == [True, True, True], "the loop answered during every step"


async def test_cancelled_generation_stops_at_the_next_step(sd: DiffusersEngine) -> None:
    await sd.load()
    steps: list[int] = []
    running, cancelled = threading.Event(), threading.Event()

    def progress(step: int, total: int) -> None:
        steps.append(step)
        running.set()
        cancelled.wait(10)  # the first step ends only once the call has been cancelled

    task = asyncio.create_task(sd.generate(make_request(steps=20, progress=progress)))
    assert await asyncio.to_thread(running.wait, 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    cancelled.set()
    [image] = await sd.generate(make_request())  # queued behind the cancelled call in the worker
    assert image.image.size == (64, 64)
    assert steps == [1], "stopped at the step after the cancel"


async def test_bad_size_is_invalid_request(sd: DiffusersEngine) -> None:
    with pytest.raises(InvalidRequest, match="multiples of 8") as info:
        await sd.generate(make_request(width=65))
    assert info.value.param == "size"


async def test_pipeline_value_errors_become_invalid_request(sd: DiffusersEngine) -> None:
    request = make_request(Mode.EDIT, images=[source_image()], strength=1.5)
    with pytest.raises(InvalidRequest, match="strength") as info:
        await sd.generate(request)
    assert isinstance(info.value.__cause__, ValueError)


async def test_runtime_errors_become_model_error(sd_dir: Path) -> None:
    class Exploding:
        def __call__(self, prompt: str, **kwargs: Any) -> Any:
            raise RuntimeError("device-side assert triggered")

    engine = DiffusersEngine(DiffusersSettings(path=sd_dir, device="cpu"))
    await engine.load()
    engine._tasks["generate"] = Exploding()
    with pytest.raises(ModelError, match="device-side assert") as info:
        await engine.generate(make_request())
    assert isinstance(info.value.__cause__, RuntimeError)
    await engine.aclose()
    assert not engine.loaded


# --- previews ---


def recording_previews(
    steps: list[int], sizes: list[list[tuple[int, int]]]
) -> Callable[[int, list[Image.Image]], None]:
    def preview(step: int, images: list[Image.Image]) -> None:
        steps.append(step)
        sizes.append([image.size for image in images])

    return preview


async def test_stock_pipelines_preview_decoded_latents_without_changing_the_result(sd: DiffusersEngine) -> None:
    steps: list[int] = []
    sizes: list[list[tuple[int, int]]] = []
    request = replace(make_request(seeds=(3, 7), steps=6), preview=recording_previews(steps, sizes), preview_every=2)
    previewed = await sd.generate(request)
    assert steps == [2, 4], "every second step, never after the last"
    assert sizes == [[(64, 64), (64, 64)]] * 2, "one decoded image per seed"
    plain = await sd.generate(make_request(seeds=(3, 7), steps=6))
    np.testing.assert_array_equal(pixels(previewed[0]), pixels(plain[0]))


async def test_limner_pipelines_preview_the_predicted_clean_image(emoji: DiffusersEngine) -> None:
    steps: list[int] = []
    sizes: list[list[tuple[int, int]]] = []
    request = replace(make_request(seeds=(1, 2), steps=5), preview=recording_previews(steps, sizes), preview_every=2)
    previewed = await emoji.generate(request)
    assert steps == [2, 4] and sizes == [[(32, 32), (32, 32)]] * 2
    plain = await emoji.generate(make_request(seeds=(1, 2), steps=5))
    np.testing.assert_array_equal(pixels(previewed[1]), pixels(plain[1]))


# --- image to image, inpainting ---


async def test_image_to_image(sd: DiffusersEngine) -> None:
    calls: list[tuple[int, int]] = []
    request = make_request(
        Mode.EDIT,
        seeds=(4, 5),
        steps=4,
        images=[source_image((96, 80))],  # resized to the requested size
        strength=0.5,
        progress=lambda step, total: calls.append((step, total)),
    )
    results = await sd.generate(request)
    assert [r.image.size for r in results] == [(64, 64), (64, 64)]
    assert calls == [(1, 2), (2, 2)]  # strength 0.5 of 4 steps
    [generated] = await sd.generate(make_request(seeds=(4,), steps=4))
    assert not np.array_equal(pixels(results[0]), pixels(generated))


async def test_inpainting_with_a_four_channel_unet(sd: DiffusersEngine) -> None:
    request = make_request(Mode.EDIT, seeds=(4, 5), steps=3, images=[source_image()], mask=half_mask())
    first = await sd.generate(request)
    again = await sd.generate(request)
    assert [r.image.size for r in first] == [(64, 64), (64, 64)]
    np.testing.assert_array_equal(pixels(first[0]), pixels(again[0]))
    assert type(sd._tasks["inpaint"]).__name__ == "StableDiffusionInpaintPipeline"
    [edited] = await sd.generate(make_request(Mode.EDIT, seeds=(4,), steps=3, images=[source_image()]))
    assert not np.array_equal(pixels(first[0]), pixels(edited))


# --- limner's own pipeline class ---


async def test_custom_pipeline_class(emoji: DiffusersEngine) -> None:
    caps = emoji.capabilities
    assert caps.modes == {Mode.GENERATE, Mode.EDIT} and caps.supports_mask
    assert caps.native_size == (32, 32)
    calls: list[tuple[int, int]] = []
    request = make_request(seeds=(1, 2), width=256, height=256, steps=None, progress=lambda s, t: calls.append((s, t)))
    results = await emoji.generate(request)
    assert [r.image.size for r in results] == [(32, 32), (32, 32)]  # native; the service scales
    assert calls == [(1, 3), (2, 3), (3, 3)]
    assert emoji.capabilities.extras["pipeline"] == "EmojiDiffusionPipeline"


async def test_custom_pipeline_inpainting_keeps_unmasked_pixels(emoji: DiffusersEngine) -> None:
    source = source_image((32, 32))
    request = make_request(Mode.EDIT, width=32, height=32, images=[source], mask=half_mask((32, 32)))
    [result] = await emoji.generate(request)
    kept = pixels(result)[:, :16]
    np.testing.assert_allclose(kept, np.asarray(source, dtype=np.int16)[:, :16], atol=1)


async def test_directory_with_a_foreign_class_needs_pipeline_class(emoji_dir: Path) -> None:
    engine = DiffusersEngine(DiffusersSettings(path=emoji_dir, device="cpu"))
    with pytest.raises(ModelNotAvailable, match="module:Class"):
        await engine.load()
    await engine.aclose()


async def test_mask_without_inpainting_is_unsupported(emoji_dir: Path) -> None:
    pipeline_class = f"{__name__}:ImageOnlyPipeline"
    engine = DiffusersEngine(DiffusersSettings(path=emoji_dir, pipeline_class=pipeline_class, native_size=(32, 32)))
    assert engine.capabilities.modes == {Mode.GENERATE, Mode.EDIT}
    request = make_request(Mode.EDIT, images=[source_image()], mask=half_mask())
    with pytest.raises(UnsupportedOperation, match="does not support masks"):
        await engine.generate(request)
    assert not engine.loaded  # refused before reading any weights


async def test_edit_without_image_to_image_is_unsupported(emoji_dir: Path) -> None:
    engine = DiffusersEngine(DiffusersSettings(path=emoji_dir, pipeline_class=f"{__name__}:TextOnlyPipeline"))
    with pytest.raises(UnsupportedOperation, match="does not support edit"):
        await engine.generate(make_request(Mode.EDIT, images=[source_image()]))

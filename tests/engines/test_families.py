"""Every pipeline family on tiny random-weight pipelines: detection, defaults, text-to-image, image-to-image,
inpainting, negative prompts only where the family takes them, samplers from the allow-list, SDXL's refiner."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # before diffusers / huggingface_hub read it

import asyncio
import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from limner.core.errors import InvalidRequest, UnsupportedOperation
from limner.core.models import EngineRequest, GeneratedImage, Mode
from limner.engines.diffusers_engine import DiffusersEngine, DiffusersSettings
from limner.engines.families import FAMILIES, detect_family
from tests.support.tiny_diffusers import build_tiny_sd
from tests.support.tiny_families import build_tiny_flux, build_tiny_sd3, build_tiny_sdxl, build_tiny_sdxl_refiner

BUILDERS: dict[str, Callable[[Path], Path]] = {
    "sd1": build_tiny_sd,
    "sdxl": build_tiny_sdxl,
    "sdxl-turbo": lambda path: build_tiny_sdxl(path, turbo=True),
    "sd3": build_tiny_sd3,
    "flux-schnell": build_tiny_flux,
    "flux-dev": lambda path: build_tiny_flux(path, dev=True),
}


pytestmark = pytest.mark.usefixtures("one_cpu_thread")


@pytest.fixture(scope="module")
def dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("families")
    built = {name: build(root / name) for name, build in BUILDERS.items()}
    built["sdxl-refiner"] = build_tiny_sdxl_refiner(root / "refiner")
    return built


@pytest.fixture(scope="module")
def engines(dirs: dict[str, Path]) -> Iterator[dict[str, DiffusersEngine]]:
    """One engine per family, loaded on first use and shared by the module's tests."""
    built = {name: DiffusersEngine(DiffusersSettings(path=dirs[name], device="cpu")) for name in BUILDERS}
    yield built
    for engine in built.values():
        asyncio.run(engine.aclose())


def request(mode: Mode = Mode.GENERATE, *, seed: int = 1, **fields: Any) -> EngineRequest:
    fields.setdefault("steps", 2)
    return EngineRequest(mode=mode, prompt="a lighthouse", width=64, height=64, seeds=[seed], **fields)


def source() -> Image.Image:
    ramp = np.linspace(0, 255, 64, dtype=np.uint8)
    return Image.fromarray(np.stack([np.tile(ramp, (64, 1))] * 3, axis=-1))


def mask() -> Image.Image:
    white_right = Image.new("L", (64, 64), 0)
    white_right.paste(255, (32, 0, 64, 64))
    return white_right


def pixels(results: list[GeneratedImage]) -> np.ndarray:
    [result] = results
    assert result.image.size == (64, 64)
    return np.asarray(result.image.convert("RGB"), dtype=np.int16)


@pytest.mark.parametrize("name", list(BUILDERS))
def test_family_is_detected_from_the_configs(engines: dict[str, DiffusersEngine], name: str) -> None:
    engine = engines[name]
    family = FAMILIES[name]
    assert engine.family is family and engine.capabilities.extras["family"] == name
    assert engine.capabilities.default_steps == family.steps
    assert engine.capabilities.supports_negative_prompt is family.negative_prompt
    assert engine.capabilities.modes == {Mode.GENERATE, Mode.EDIT} and engine.capabilities.supports_mask
    # From the UNet's or SD 3 transformer's sample size; FLUX's configs name none, so its family's size.
    expected = (1024, 1024) if name.startswith("flux") else (64, 64)
    assert engine.capabilities.default_size == expected


@pytest.mark.parametrize("name", list(BUILDERS))
async def test_text_image_to_image_and_inpainting_run(engines: dict[str, DiffusersEngine], name: str) -> None:
    engine = engines[name]
    first = pixels(await engine.generate(request(seed=1)))
    np.testing.assert_array_equal(pixels(await engine.generate(request(seed=1))), first)
    assert not np.array_equal(pixels(await engine.generate(request(seed=2))), first)
    edited = pixels(await engine.generate(request(Mode.EDIT, images=[source()], strength=0.7)))
    painted = pixels(await engine.generate(request(Mode.EDIT, images=[source()], mask=mask(), strength=1.0)))
    assert not np.array_equal(edited, painted)
    assert type(engine._tasks["edit"]).__name__.endswith("Img2ImgPipeline")
    assert type(engine._tasks["inpaint"]).__name__.endswith("InpaintPipeline")


@pytest.mark.parametrize("name", list(BUILDERS))
async def test_family_defaults_fill_what_the_request_leaves_out(engines: dict[str, DiffusersEngine], name: str) -> None:
    engine, family = engines[name], FAMILIES[name]
    await engine.load()
    pipe = engine._tasks["generate"]
    kwargs = engine._call_arguments(pipe, request(steps=None), [], threading.Event())
    assert (kwargs["num_inference_steps"], kwargs["guidance_scale"]) == (family.steps, family.guidance)
    assert kwargs.get("max_sequence_length") == family.max_sequence_length
    edit = engine._call_arguments(engine._tasks["edit"], request(Mode.EDIT, images=[source()]), [], threading.Event())
    assert edit["strength"] == family.strength
    assert edit["num_inference_steps"] * family.strength >= 1, "image-to-image always runs at least one step"


async def test_negative_prompts_only_where_the_family_takes_them(engines: dict[str, DiffusersEngine]) -> None:
    with pytest.raises(UnsupportedOperation, match="negative prompts") as info:
        await engines["flux-schnell"].generate(request(negative_prompt="blurry"))
    assert info.value.param == "negative_prompt"
    for name in ("sd1", "sdxl", "sd3"):
        pixels(await engines[name].generate(request(negative_prompt="blurry")))


async def test_samplers_come_from_the_family_allow_list(engines: dict[str, DiffusersEngine]) -> None:
    sdxl, flux = engines["sdxl"], engines["flux-dev"]
    default = pixels(await sdxl.generate(request()))
    ancestral = pixels(await sdxl.generate(request(scheduler="euler_a")))
    assert not np.array_equal(default, ancestral)
    np.testing.assert_array_equal(pixels(await sdxl.generate(request())), default)  # the next request: its own
    assert type(task(sdxl, "generate").scheduler).__name__ == "EulerDiscreteScheduler"
    pixels(await flux.generate(request(scheduler="flow_euler")))
    with pytest.raises(InvalidRequest, match="Unknown sampler 'euler' for this model: expected one of flow_euler"):
        await flux.generate(request(scheduler="euler"))


async def test_sdxl_refiner_finishes_text_to_image(dirs: dict[str, Path], engines: dict[str, DiffusersEngine]) -> None:
    settings = DiffusersSettings(path=dirs["sdxl"], device="cpu", refiner=dirs["sdxl-refiner"], refiner_start=0.5)
    engine = DiffusersEngine(settings)
    try:
        refined = pixels(await engine.generate(request(steps=4)))
        np.testing.assert_array_equal(pixels(await engine.generate(request(steps=4))), refined)
        assert engine._refiner is not None and engine._refiner.vae is pipeline(engine).vae, "the VAE is shared"
    finally:
        await engine.aclose()
    assert not np.array_equal(refined, pixels(await engines["sdxl"].generate(request(steps=4))))


async def test_a_refiner_alone_only_edits(dirs: dict[str, Path]) -> None:
    engine = DiffusersEngine(DiffusersSettings(path=dirs["sdxl-refiner"], device="cpu"))
    try:
        assert engine.family is FAMILIES["sdxl-refiner"]
        assert engine.capabilities.modes == {Mode.EDIT}
        with pytest.raises(UnsupportedOperation, match="does not support generate"):
            await engine.generate(request())
        pixels(await engine.generate(request(Mode.EDIT, images=[source()], steps=4)))
    finally:
        await engine.aclose()


def test_sd2_and_turbo_are_told_apart_by_their_configs(tmp_path: Path) -> None:
    def configs(cross: int, spacing: str) -> Path:
        root = tmp_path / f"{cross}-{spacing}"
        for name, data in {
            "model_index.json": {"_class_name": "StableDiffusionPipeline"},
            "unet/config.json": {"cross_attention_dim": cross},
            "scheduler/scheduler_config.json": {"timestep_spacing": spacing},
        }.items():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_text(json.dumps(data))
        return root

    detected = {
        (cross, spacing): getattr(detect_family("StableDiffusionPipeline", configs(cross, spacing)), "name", None)
        for cross in (768, 1024)
        for spacing in ("leading", "trailing")
    }
    assert detected == {
        (768, "leading"): "sd1",
        (768, "trailing"): "sd1",
        (1024, "leading"): "sd2",
        (1024, "trailing"): "sd-turbo",
    }
    assert detect_family("EmojiDiffusionPipeline", None) is None, "custom pipelines keep their own behaviour"


def test_catalog_family_overrides_detection(dirs: dict[str, Path]) -> None:
    engine = DiffusersEngine(DiffusersSettings(path=dirs["sdxl"], family="sdxl-turbo"))
    assert engine.family is FAMILIES["sdxl-turbo"] and engine.capabilities.default_steps == 1


def pipeline(engine: DiffusersEngine) -> Any:
    """The loaded base pipeline (typed loosely, as diffusers pipelines are)."""
    return engine._pipe


def task(engine: DiffusersEngine, name: str) -> Any:
    return engine._tasks[name]

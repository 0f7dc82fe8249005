"""Controls (ControlNet, T2I-Adapter) and reference images (IP-Adapter) on tiny SDXL and SD pipelines:
they change the pixels, scale 0 is the model untouched, two controls run together, none switches back."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # before diffusers / huggingface_hub read it

import asyncio
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from limner.core.errors import InvalidRequest
from limner.core.models import EngineControl, EngineReference, EngineRequest, GeneratedImage, Mode
from limner.core.preprocess import canny
from limner.engines.batching import batch_key
from limner.engines.controls import ControlSpec, ReferenceSpec
from limner.engines.diffusers_engine import DiffusersEngine, DiffusersSettings
from tests.support.tiny_controls import build_tiny_controlnet, build_tiny_ip_adapter, build_tiny_t2i_adapter
from tests.support.tiny_diffusers import build_tiny_sd
from tests.support.tiny_families import build_tiny_sd3, build_tiny_sdxl

pytestmark = pytest.mark.usefixtures("one_cpu_thread")


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("controls")
    sdxl, sd = build_tiny_sdxl(root / "sdxl"), build_tiny_sd(root / "sd")
    ip, encoder = build_tiny_ip_adapter(sdxl, root / "ip")
    sd_ip, sd_encoder = build_tiny_ip_adapter(sd, root / "sd-ip")
    return {
        "sdxl": sdxl,
        "sd": sd,
        "canny": build_tiny_controlnet(sdxl, root / "canny", seed=1),
        "depth": build_tiny_controlnet(sdxl, root / "depth", seed=5),
        "sketch": build_tiny_t2i_adapter(sdxl, root / "sketch", seed=2),
        "sketch2": build_tiny_t2i_adapter(sdxl, root / "sketch2", seed=6),
        "sd-canny": build_tiny_controlnet(sd, root / "sd-canny", seed=3),
        "ip": ip,
        "encoder": encoder,
        "sd-ip": sd_ip,
        "sd-encoder": sd_encoder,
    }


def _engine(base: Path, controls: tuple[ControlSpec, ...], ip: ReferenceSpec | None) -> DiffusersEngine:
    return DiffusersEngine(
        DiffusersSettings(path=base, device="cpu", default_steps=2, controls=controls, ip_adapter=ip)
    )


@pytest.fixture(scope="module")
def engine(files: dict[str, Path]) -> Iterator[DiffusersEngine]:
    controls = (
        ControlSpec("canny", files["canny"]),
        ControlSpec("depth", files["depth"]),
        ControlSpec("sketch", files["sketch"], type="t2i-adapter"),
        ControlSpec("sketch2", files["sketch2"], type="t2i-adapter"),
        ControlSpec("sd-canny", files["sd-canny"]),  # undeclared base: refused when it does not fit
        ControlSpec("declared-sd1", files["canny"], base="sd1"),
    )
    engine = _engine(files["sdxl"], controls, ReferenceSpec(files["ip"], files["encoder"]))
    yield engine
    asyncio.run(engine.aclose())


def shape() -> Image.Image:
    image = Image.new("RGB", (64, 64), "black")
    ImageDraw.Draw(image).ellipse((12, 12, 52, 52), fill="white")
    return image


def photo() -> Image.Image:
    image = Image.new("RGB", (64, 64), (40, 90, 200))
    ImageDraw.Draw(image).rectangle((8, 30, 56, 60), fill=(230, 180, 40))
    return image


def control(name: str, scale: float = 1.0, **more: object) -> EngineControl:
    return EngineControl(name, shape(), scale, **more)  # type: ignore[arg-type]


def request(
    *controls: EngineControl, references: tuple[EngineReference, ...] = (), mode: Mode = Mode.GENERATE
) -> EngineRequest:
    images = [photo()] if mode is Mode.EDIT else []
    return EngineRequest(
        mode=mode,
        prompt="a fox",
        width=64,
        height=64,
        seeds=[4],
        images=images,
        strength=0.8 if images else None,
        controls=controls,
        references=references,
    )


def pixels(results: list[GeneratedImage]) -> np.ndarray:
    return np.asarray(results[0].image.convert("RGB"), dtype=np.int16)


async def test_a_controlnet_steers_and_scale_zero_is_the_model_untouched(engine: DiffusersEngine) -> None:
    base = pixels(await engine.generate(request()))
    steered = pixels(await engine.generate(request(control("canny"))))
    half = pixels(await engine.generate(request(control("canny", 0.5))))
    zero = pixels(await engine.generate(request(control("canny", 0.0))))
    late = pixels(await engine.generate(request(control("canny", start=0.5))))
    plain = pixels(await engine.generate(request()))
    assert np.abs(steered - base).mean() > 2, "the control changes the image"
    assert np.abs(half - steered).mean() > 0.5, "the scale matters"
    assert np.abs(late - steered).mean() > 0.5, "so does when it starts"
    np.testing.assert_array_equal(zero, base)
    np.testing.assert_array_equal(plain, base)  # and a request without controls runs the model as it was
    assert engine.controls.loads == 1, "the ControlNet was read from disk once"


async def test_two_controlnets_at_once(engine: DiffusersEngine) -> None:
    one = pixels(await engine.generate(request(control("canny"))))
    two = pixels(await engine.generate(request(control("canny"), control("depth", 0.8))))
    other = pixels(await engine.generate(request(control("depth", 0.8))))
    assert np.abs(two - one).mean() > 0.5 and np.abs(two - other).mean() > 0.5, "both steer the image"


async def test_the_control_reads_its_image_and_canny_is_drawn_first(engine: DiffusersEngine) -> None:
    drawn = pixels(await engine.generate(request(control("canny", preprocess="canny"))))
    ready = EngineControl("canny", canny(shape()), 1.0)  # the same edges, sent as a ready-made map
    sent = pixels(await engine.generate(request(ready)))
    filled = pixels(await engine.generate(request(control("canny"))))
    other = pixels(await engine.generate(request(EngineControl("canny", photo(), 1.0))))
    np.testing.assert_array_equal(drawn, sent)
    assert np.abs(other - filled).mean() > 0.5, "another control image, another picture"


async def test_t2i_adapters_steer_alone_and_together(engine: DiffusersEngine) -> None:
    base = pixels(await engine.generate(request()))
    one = pixels(await engine.generate(request(control("sketch"))))
    zero = pixels(await engine.generate(request(control("sketch", 0.0))))
    two = pixels(await engine.generate(request(control("sketch"), control("sketch2", 0.7))))
    assert np.abs(one - base).mean() > 2
    assert np.abs(two - one).mean() > 0.5
    np.testing.assert_array_equal(zero, base)


async def test_a_controlnet_steers_image_to_image(engine: DiffusersEngine) -> None:
    edit = pixels(await engine.generate(request(mode=Mode.EDIT)))
    steered = pixels(await engine.generate(request(control("canny"), mode=Mode.EDIT)))
    assert np.abs(steered - edit).mean() > 1


async def test_reference_images_steer_and_scale_zero_is_none(engine: DiffusersEngine) -> None:
    base = pixels(await engine.generate(request()))
    ref = pixels(await engine.generate(request(references=(EngineReference(photo(), 1.0),))))
    zero = pixels(await engine.generate(request(references=(EngineReference(photo(), 0.0),))))
    two = pixels(
        await engine.generate(request(references=(EngineReference(photo(), 1.0), EngineReference(shape(), 1.0))))
    )
    after = pixels(await engine.generate(request()))
    assert np.abs(ref - base).mean() > 2, "the reference changes the image"
    assert np.abs(two - ref).mean() > 0.5, "a second reference changes it again"
    np.testing.assert_array_equal(zero, base)
    np.testing.assert_array_equal(after, base)  # without references the adapter is out again


async def test_a_reference_and_a_control_together(engine: DiffusersEngine) -> None:
    steered = pixels(await engine.generate(request(control("canny"))))
    both = pixels(await engine.generate(request(control("canny"), references=(EngineReference(photo(), 1.0),))))
    assert np.abs(both - steered).mean() > 1


async def test_controls_that_do_not_fit_are_refused(engine: DiffusersEngine) -> None:
    with pytest.raises(InvalidRequest, match="made for sd1 models; this model is sdxl") as declared:
        await engine.generate(request(control("declared-sd1")))
    with pytest.raises(InvalidRequest, match="does not fit this model's denoiser") as measured:
        await engine.generate(request(control("sd-canny")))
    with pytest.raises(InvalidRequest, match="T2I-Adapters steer text to image") as edit:
        await engine.generate(request(control("sketch"), mode=Mode.EDIT))
    with pytest.raises(InvalidRequest, match="Unknown control 'nope'") as unknown:
        await engine.generate(request(control("nope")))
    for refused in (declared, measured, edit, unknown):
        assert refused.value.param == "controls"
    after = pixels(await engine.generate(request(control("canny"))))  # the engine still works
    assert after.shape == (64, 64, 3)


async def test_an_sd1_model_takes_a_controlnet_and_references(files: dict[str, Path]) -> None:
    engine = _engine(
        files["sd"], (ControlSpec("canny", files["sd-canny"]),), ReferenceSpec(files["sd-ip"], files["sd-encoder"])
    )
    try:
        base = pixels(await engine.generate(request()))
        steered = pixels(await engine.generate(request(control("canny"))))
        ref = pixels(await engine.generate(request(references=(EngineReference(photo(), 1.0),))))
        zero = pixels(await engine.generate(request(control("canny", 0.0))))
    finally:
        await engine.aclose()
    assert np.abs(steered - base).mean() > 2
    assert np.abs(ref - base).mean() > 2
    np.testing.assert_array_equal(zero, base)


async def test_reference_images_on_a_model_without_an_ip_adapter(files: dict[str, Path]) -> None:
    engine = _engine(files["sd"], (), None)
    try:
        with pytest.raises(InvalidRequest, match="takes no reference images") as refused:
            await engine.generate(request(references=(EngineReference(photo(), 1.0),)))
    finally:
        await engine.aclose()
    assert refused.value.param == "reference_images"


def test_controlled_requests_never_join_a_batch() -> None:
    assert batch_key(request()) is not None
    assert batch_key(request(control("canny"))) is None
    assert batch_key(request(references=(EngineReference(photo(), 1.0),))) is None


async def test_sd3_models_refuse_unet_controls_and_references(
    files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> None:
    sd3 = build_tiny_sd3(tmp_path_factory.mktemp("sd3") / "sd3")
    engine = _engine(sd3, (ControlSpec("canny", files["canny"]),), ReferenceSpec(files["ip"], files["encoder"]))
    try:
        with pytest.raises(InvalidRequest, match=r"Controls run on Stable Diffusion 1\.x and SDXL models") as control:
            await engine.generate(request(EngineControl("canny", shape(), 1.0)))
        with pytest.raises(InvalidRequest, match=r"Reference images run on Stable Diffusion 1\.x and SDXL") as ref:
            await engine.generate(request(references=(EngineReference(photo(), 1.0),)))
        plain = pixels(await engine.generate(request()))
    finally:
        await engine.aclose()
    assert (control.value.param, ref.value.param) == ("controls", "reference_images")
    assert plain.shape == (64, 64, 3)

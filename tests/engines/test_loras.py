"""LoRA adapters on a tiny SDXL pipeline: loaded once, switched per request, refused when they do not fit."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # before diffusers / huggingface_hub read it

import asyncio
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from limner.core.errors import InvalidRequest, ModelNotAvailable
from limner.core.models import EngineRequest, GeneratedImage, LoraChoice, Mode
from limner.engines.adapters import LoraSpec, resolve_loras
from limner.engines.batching import batch_key
from limner.engines.catalog import Catalog, LoraEntry, ModelEntry
from limner.engines.diffusers_engine import DiffusersEngine, DiffusersSettings
from tests.support.tiny_diffusers import build_tiny_sd
from tests.support.tiny_families import build_tiny_sdxl
from tests.support.tiny_loras import build_tiny_lora

pytestmark = pytest.mark.usefixtures("one_cpu_thread")


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("loras")
    sdxl, sd = build_tiny_sdxl(root / "sdxl"), build_tiny_sd(root / "sd")
    return {
        "sdxl": sdxl,
        "ink": build_tiny_lora(sdxl, root / "ink", seed=1),
        "glow": build_tiny_lora(sdxl, root / "glow", seed=2).parent,  # a directory, as a pulled repo is
        "sd-only": build_tiny_lora(sd, root / "sd-only", seed=3),
    }


@pytest.fixture(scope="module")
def engine(files: dict[str, Path]) -> Iterator[DiffusersEngine]:
    specs = (
        LoraSpec("ink", files["ink"], weight=1.0),
        LoraSpec("glow", files["glow"], weight=0.5),
        LoraSpec("sd-only", files["sd-only"]),
        LoraSpec("declared-sd1", files["ink"], base="sd1"),
        LoraSpec("missing", files["ink"].parent / "no-such.safetensors"),
    )
    engine = DiffusersEngine(DiffusersSettings(path=files["sdxl"], device="cpu", default_steps=2, loras=specs))
    yield engine
    asyncio.run(engine.aclose())


def request(*loras: tuple[str, float], seed: int = 4) -> EngineRequest:
    choices = tuple(LoraChoice(name, weight) for name, weight in loras)
    return EngineRequest(mode=Mode.GENERATE, prompt="a fox", width=64, height=64, seeds=[seed], loras=choices)


def pixels(results: list[GeneratedImage]) -> np.ndarray:
    return np.asarray(results[0].image.convert("RGB"), dtype=np.int16)


async def test_adapters_change_images_and_switch_back_without_reloading(engine: DiffusersEngine) -> None:
    base = pixels(await engine.generate(request()))
    pipe, resident = engine._pipe, engine.resident_bytes
    ink = pixels(await engine.generate(request(("ink", 1.0))))
    both = pixels(await engine.generate(request(("ink", 1.0), ("glow", 0.5))))
    half = pixels(await engine.generate(request(("ink", 0.5))))
    again = pixels(await engine.generate(request(("ink", 1.0))))
    plain = pixels(await engine.generate(request()))
    assert np.abs(ink - base).mean() > 1, "the adapter changes the image"
    assert np.abs(both - ink).mean() > 0.5, "a second adapter changes it again"
    assert np.abs(half - ink).mean() > 0.1, "the weight matters"
    np.testing.assert_array_equal(again, ink)  # switching is exact: same set, same pixels
    np.testing.assert_array_equal(plain, base)  # and none means the base model, untouched
    assert engine._pipe is pipe, "the base model was never reloaded"
    assert engine.loras.loads == 2, "each adapter was read from disk once"
    assert set(engine.loras.loaded) == {"ink", "glow"}
    assert engine.resident_bytes > resident, "the adapters' weights count towards the model's memory"


async def test_adapter_for_another_base_is_a_clear_400_remembered(engine: DiffusersEngine) -> None:
    for _ in range(2):
        with pytest.raises(InvalidRequest, match="LoRA 'sd-only' cannot be used with this model") as info:
            await engine.generate(request(("sd-only", 1.0)))
        assert info.value.param == "loras" and "another base model" in info.value.message
    [image] = await engine.generate(request(("ink", 1.0)))  # the model still works
    assert image.image.size == (64, 64)


async def test_declared_base_is_checked_before_any_weights_are_read(engine: DiffusersEngine) -> None:
    with pytest.raises(InvalidRequest, match="made for sd1 models; this model is sdxl"):
        await engine.generate(request(("declared-sd1", 1.0)))
    with pytest.raises(InvalidRequest, match="Unknown LoRA 'nope'"):
        await engine.generate(request(("nope", 1.0)))


async def test_missing_adapter_file_says_where(engine: DiffusersEngine) -> None:
    with pytest.raises(ModelNotAvailable, match=r"no-such\.safetensors does not exist"):
        await engine.generate(request(("missing", 1.0)))


def test_batches_join_only_requests_with_the_same_adapters() -> None:
    plain, ink, ink_half = request(), request(("ink", 1.0)), request(("ink", 0.5))
    assert batch_key(plain) != batch_key(ink) != batch_key(ink_half)
    assert batch_key(ink) == batch_key(replace(request(("ink", 1.0), seed=9), prompt="another prompt"))
    assert batch_key(replace(plain, scheduler="euler_a")) != batch_key(plain)


# --- checks against the catalog (service side) ---


def catalog(tmp_path: Path) -> Catalog:
    lora = tmp_path / "x.safetensors"
    return Catalog(
        [
            ModelEntry(
                id="xl",
                engine="diffusers",
                path=tmp_path,
                loras=[LoraEntry(name="ink", path=lora, weight=0.8), LoraEntry(name="glow", path=lora)],
            ),
            ModelEntry(id="one", engine="diffusers", path=tmp_path, loras=[LoraEntry(name="sketch", path=lora)]),
            ModelEntry(id="plain", engine="diffusers", path=tmp_path),
        ],
        {},
    )


def test_resolve_fills_default_weights(tmp_path: Path) -> None:
    cat = catalog(tmp_path)
    resolved = resolve_loras(cat.resolve("xl"), [LoraChoice("ink"), LoraChoice("glow", 0.3)], cat)
    assert resolved == (LoraChoice("ink", 0.8), LoraChoice("glow", 0.3))


@pytest.mark.parametrize(
    ("model", "choices", "message"),
    [
        ("xl", [LoraChoice("nope")], "Unknown LoRA 'nope' for model 'xl'; it offers: ink, glow."),
        ("xl", [LoraChoice("sketch")], "LoRA 'sketch' is for model 'one', not 'xl'; it offers: ink, glow."),
        ("plain", [LoraChoice("ink")], "LoRA 'ink' is for model 'xl', not 'plain'; it offers no LoRA adapters."),
        ("xl", [LoraChoice("ink"), LoraChoice("ink", 0.2)], "LoRA 'ink' is listed twice."),
        ("xl", [LoraChoice("ink", 7)], "LoRA 'ink' weight 7 is out of range: between -4 and 4."),
        ("xl", [LoraChoice("ink")] * 9, "At most 8 LoRA adapters per request; got 9."),
    ],
)
def test_resolve_refuses_with_a_message(tmp_path: Path, model: str, choices: list[LoraChoice], message: str) -> None:
    cat = catalog(tmp_path)
    with pytest.raises(InvalidRequest) as info:
        resolve_loras(cat.resolve(model), choices, cat)
    assert (info.value.message, info.value.param) == (message, "loras")


def test_catalog_refuses_duplicate_adapter_names_and_unknown_families(tmp_path: Path) -> None:
    lora = LoraEntry(name="ink", path=tmp_path)
    with pytest.raises(ValueError, match="lists a LoRA name twice"):
        ModelEntry(id="xl", engine="diffusers", path=tmp_path, loras=[lora, lora])
    with pytest.raises(ValueError, match="unknown model family 'sdxxl'"):
        ModelEntry(id="xl", engine="diffusers", path=tmp_path, family="sdxxl")
    with pytest.raises(ValueError, match="unknown schedulers \\['warp'\\]"):
        ModelEntry(id="xl", engine="diffusers", path=tmp_path, schedulers=["euler", "warp"])
    with pytest.raises(ValueError, match="String should match pattern"):
        LoraEntry(name="bad name", path=tmp_path)


@pytest.mark.parametrize("family", ["sd1", "sd3", "flux-schnell"])
async def test_adapters_work_on_every_family(tmp_path: Path, family: str) -> None:
    from tests.support.tiny_families import build_tiny_flux, build_tiny_sd3

    build = {"sd1": build_tiny_sd, "sd3": build_tiny_sd3, "flux-schnell": build_tiny_flux}[family]
    model = build(tmp_path / "model")
    lora = build_tiny_lora(model, tmp_path / "lora")
    settings = DiffusersSettings(path=model, device="cpu", default_steps=2, loras=(LoraSpec("style", lora),))
    engine = DiffusersEngine(settings)
    try:
        assert engine.family is not None and engine.family.name == family
        base = pixels(await engine.generate(request()))
        styled = pixels(await engine.generate(request(("style", 1.0))))
        assert np.abs(styled - base).mean() > 0.1
        np.testing.assert_array_equal(pixels(await engine.generate(request())), base)
    finally:
        await engine.aclose()

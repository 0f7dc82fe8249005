"""Quantised weights on a tiny pipeline: the CPU modes load, quantise what they say and stay close to float32;
the CUDA-only modes are a load error that says what would work here."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # before diffusers / huggingface_hub read it

from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from limner.core.errors import ModelNotAvailable
from limner.core.models import EngineRequest, Mode
from limner.engines.catalog import ModelEntry
from limner.engines.diffusers_engine import DiffusersEngine, DiffusersSettings

pytestmark = pytest.mark.usefixtures("one_cpu_thread")

REQUEST = EngineRequest(mode=Mode.GENERATE, prompt="a boat", width=64, height=64, seeds=[3], steps=2)


async def pixels(sd_dir: Path, **options: object) -> tuple[np.ndarray, DiffusersEngine]:
    engine = DiffusersEngine(DiffusersSettings(path=sd_dir, device="cpu", **options))  # type: ignore[arg-type]
    try:
        [image] = await engine.generate(REQUEST)
    finally:
        await engine.aclose()
    return np.asarray(image.image, dtype=np.float32), engine


@pytest.mark.parametrize(
    ("mode", "components", "quantized", "tolerance"),
    [
        ("int8-weight", ("denoiser",), ["unet"], 4.0),
        ("int8-weight", ("denoiser", "text_encoders"), ["unet", "text_encoder"], 4.0),
        ("int8-dynamic", ("denoiser",), ["unet"], 12.0),
    ],
)
async def test_cpu_modes_stay_close_to_full_precision(
    sd_dir: Path, mode: str, components: tuple[str, ...], quantized: list[str], tolerance: float
) -> None:
    """Mean absolute pixel difference from float32, out of 255: int8 weights lose little; dynamic int8
    activations lose more."""
    full, _ = await pixels(sd_dir)
    low, engine = await pixels(sd_dir, quantization=mode, quantize=components)
    assert engine.quantized == quantized and engine.precision == "float32"
    difference = float(np.abs(full - low).mean())
    assert 0 < difference < tolerance, f"{mode}: {difference:.2f} of 255 from float32"


@pytest.mark.parametrize("mode", ["fp8-weight", "int4-weight"])
async def test_cuda_only_modes_say_what_works_here(sd_dir: Path, mode: str) -> None:
    engine = DiffusersEngine(DiffusersSettings(path=sd_dir, device="cpu", quantization=mode))
    with pytest.raises(ModelNotAvailable) as refused:
        await engine.load()
    assert refused.value.message == (
        f"quantization = '{mode}' needs a CUDA GPU, and this model runs on cpu: "
        "use 'int8-weight' or 'int8-dynamic' here, or 'none'."
    )
    assert not engine.loaded


def test_the_catalog_names_modes_and_components() -> None:
    entry = ModelEntry(id="m", engine="diffusers", path=Path("/m"), quantization="int8-weight")
    assert entry.quantize == ["denoiser"]
    with pytest.raises(ValidationError, match="quantization"):
        ModelEntry(id="m", engine="diffusers", path=Path("/m"), quantization="int3")  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="quantize"):
        ModelEntry(id="m", engine="diffusers", path=Path("/m"), quantize=["vae"])  # type: ignore[list-item]


async def test_int8_weights_are_counted_at_their_own_size(sd_dir: Path) -> None:
    """The memory budget reads ``resident_bytes``: int8 linear weights count one byte each (plus their scales),
    not four as their nominal float32 dtype would say."""
    import torch

    full = DiffusersEngine(DiffusersSettings(path=sd_dir, device="cpu"))
    low = DiffusersEngine(
        DiffusersSettings(path=sd_dir, device="cpu", quantization="int8-weight", quantize=("denoiser", "text_encoders"))
    )
    try:
        await full.load()
        await low.load()
        pipe = full._pipe
        assert pipe is not None
        layers = [m for c in (pipe.unet, pipe.text_encoder) for m in c.modules() if isinstance(m, torch.nn.Linear)]
        linear = sum(int(layer.weight.numel()) for layer in layers)
        saved = full.resident_bytes - low.resident_bytes
    finally:
        await full.aclose()
        await low.aclose()
    assert 2.5 * linear < saved <= 3 * linear, f"{saved} bytes saved on {linear} int8 weights"

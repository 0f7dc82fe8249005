"""Memory options: CUDA-only ones are a clear load error elsewhere; slicing and VAE tiling work everywhere."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # before diffusers / huggingface_hub read it

import asyncio
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch

from limner.core.errors import ModelNotAvailable
from limner.core.models import EngineRequest, Mode
from limner.engines.catalog import ModelEntry
from limner.engines.diffusers_engine import DiffusersEngine, DiffusersSettings
from limner.engines.diffusers_tuning import auto_dtype
from limner.engines.families import FAMILIES
from limner.engines.registry import default_factories

pytestmark = pytest.mark.usefixtures("one_cpu_thread")


def request(side: int) -> EngineRequest:
    return EngineRequest(mode=Mode.GENERATE, prompt="a boat", width=side, height=side, seeds=[1], steps=1)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"dtype": "float16"}, "dtype = 'float16' needs a CUDA device, and this model runs on cpu"),
        ({"dtype": "bf16"}, "dtype = 'bf16' needs a CUDA device"),
        ({"cpu_offload": True}, "cpu_offload needs a CUDA device"),
        ({"dtype": "fp16", "cpu_offload": True}, "dtype = 'fp16', cpu_offload need a CUDA device"),
    ],
)
async def test_cuda_only_options_are_a_clear_error_elsewhere(
    sd_dir: Path, options: dict[str, Any], message: str
) -> None:
    engine = DiffusersEngine(DiffusersSettings(path=sd_dir, device="cpu", **options))
    with pytest.raises(ModelNotAvailable, match=message):
        await engine.load()
    assert not engine.loaded
    await engine.aclose()


def test_auto_precision_is_chosen_per_family() -> None:
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert auto_dtype(FAMILIES["flux-dev"], cuda) == "bfloat16", "FLUX overflows in float16"
    assert auto_dtype(FAMILIES["sdxl"], cuda) == auto_dtype(None, cuda) == "float16"
    assert auto_dtype(FAMILIES["flux-dev"], cpu) == "float32"


async def test_vae_tiles_only_past_the_family_size_unless_told(sd_dir: Path) -> None:
    """Tiling starts past twice the family's trained area; here a family trained at 48x48, so that 128x128
    tiles (the tiny VAE's tiles are 64 pixels) and 64x64 does not."""
    engine = DiffusersEngine(DiffusersSettings(path=sd_dir, device="cpu", attention_slicing=True))
    engine.family = replace(FAMILIES["sd1"], size=48)
    forced = DiffusersEngine(DiffusersSettings(path=sd_dir, device="cpu", vae_tiling=True))
    try:
        [small] = await engine.generate(request(64))
        assert small.image.size == (64, 64) and not pipeline(engine).vae.use_tiling
        [large] = await engine.generate(request(128))
        assert large.image.size == (128, 128) and pipeline(engine).vae.use_tiling
        await engine.generate(request(64))
        assert not pipeline(engine).vae.use_tiling, "tiling follows each request's size"
        await forced.generate(request(64))
        assert pipeline(forced).vae.use_tiling
        processors = {type(p).__name__ for p in pipeline(engine).unet.attn_processors.values()}
        assert processors == {"SlicedAttnProcessor"}, "attention slicing was applied"
    finally:
        await engine.aclose()
        await forced.aclose()


def test_catalog_fields_reach_the_engine(sd_dir: Path) -> None:
    entry = ModelEntry(
        id="m",
        engine="diffusers",
        path=sd_dir,
        family="sd1",
        vae_tiling=False,
        compile=True,
        cpu_offload=True,
        schedulers=["euler", "ddim"],
        options={"attention_slicing": True},  # the older spelling still works
        step_batching=False,
    )
    engine: Any = default_factories()["diffusers"](entry)
    settings = engine.settings
    assert (settings.vae_tiling, settings.compile, settings.cpu_offload, settings.attention_slicing) == (
        False,
        True,
        True,
        True,
    )
    assert engine.samplers.allowed == ("euler", "ddim")
    asyncio.run(engine.aclose())


def pipeline(engine: DiffusersEngine) -> Any:
    """The loaded base pipeline (typed loosely, as diffusers pipelines are)."""
    return engine._pipe

"""``compile = true`` on the CPU with a tiny model: the model reports loading while its warm-up image compiles the
denoiser, the compiled code lands in the data directory's compile cache, and the images match the eager model's.

Compiling takes a minute or more on a busy CPU, so one load serves every check here; the restart that reads the
cache back instead of compiling is measured in ``benchmarks/compile_warm_start.py``."""

from __future__ import annotations

import asyncio
import os

os.environ["HF_HUB_OFFLINE"] = "1"  # before diffusers / huggingface_hub read it

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from limner.core.models import EngineRequest, Mode
from limner.engines.compiling import CACHE_VARIABLE
from limner.engines.diffusers_engine import DiffusersEngine, DiffusersSettings

pytestmark = pytest.mark.usefixtures("one_cpu_thread")

REQUEST = EngineRequest(mode=Mode.GENERATE, prompt="a boat", width=64, height=64, seeds=[3], steps=2)


async def test_compile_happens_at_load_into_the_data_directory(
    sd_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CACHE_VARIABLE, "")
    monkeypatch.delenv(CACHE_VARIABLE)  # restored (unset) after the test, whatever the engine sets
    cache = tmp_path / "data" / "compile-cache"
    eager = DiffusersEngine(DiffusersSettings(path=sd_dir, device="cpu"))
    compiled = DiffusersEngine(
        DiffusersSettings(path=sd_dir, device="cpu", compile=True, compile_cache=cache, default_size=(64, 64))
    )
    try:
        loading = asyncio.create_task(compiled.load())
        while not compiled.loading:
            assert not loading.done(), loading.exception() if loading.done() else None
            await asyncio.sleep(0.01)
        assert not compiled.loaded  # takes no traffic until compiled: a request now waits for the load
        await loading
        assert compiled.loaded and not compiled.loading
        assert compiled.warm_up_seconds is not None and compiled.warm_up_seconds > 0
        assert os.environ[CACHE_VARIABLE] == str(cache)
        written = [path for path in cache.rglob("*") if path.is_file()]
        assert written, "the warm-up left no compiled code in the compile cache"
        [fast] = await compiled.generate(REQUEST)
        [slow] = await eager.generate(REQUEST)
    finally:
        await compiled.aclose()
        await eager.aclose()
    difference = np.abs(np.asarray(fast.image, dtype=np.float32) - np.asarray(slow.image, dtype=np.float32))
    assert float(difference.mean()) < 0.5, "compiled kernels reorder float sums, nothing more"


async def test_a_compiled_model_swaps_lora_adapters_into_one_slot(
    sd_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Adapters of different ranks swapped into the compiled model's one slot give the eager model's images with
    the same adapter; two at once is refused, since the slot holds one."""
    from limner.core.errors import InvalidRequest
    from limner.core.models import LoraChoice
    from limner.engines.adapters import LoraSpec
    from tests.support.tiny_loras import build_tiny_lora

    monkeypatch.setenv(CACHE_VARIABLE, str(tmp_path / "compile-cache"))
    specs = (
        LoraSpec("ink", build_tiny_lora(sd_dir, tmp_path / "ink", seed=1, rank=4)),
        LoraSpec("pixel", build_tiny_lora(sd_dir, tmp_path / "pixel", seed=2, rank=8)),
    )
    common = {"path": sd_dir, "device": "cpu", "loras": specs, "default_size": (64, 64)}
    eager = DiffusersEngine(DiffusersSettings(**common))  # type: ignore[arg-type]
    compiled = DiffusersEngine(DiffusersSettings(**common, compile=True))  # type: ignore[arg-type]

    async def pixels(engine: DiffusersEngine, *loras: LoraChoice) -> np.ndarray:
        [image] = await engine.generate(replace(REQUEST, loras=loras))
        return np.asarray(image.image, dtype=np.float32)

    try:
        await compiled.load()
        assert compiled.loras.hotswap and not eager.loras.hotswap
        for loras in ((LoraChoice("pixel", 0.8),), (), (LoraChoice("ink", 1.0),), (LoraChoice("pixel", 1.0),)):
            difference = np.abs(await pixels(compiled, *loras) - await pixels(eager, *loras)).mean()
            assert difference < 0.5, f"{loras}: {difference:.2f} of 255 from the eager model"
        with pytest.raises(InvalidRequest, match="compiled and applies one LoRA adapter at a time"):
            await pixels(compiled, LoraChoice("ink", 1.0), LoraChoice("pixel", 1.0))
    finally:
        await compiled.aclose()
        await eager.aclose()

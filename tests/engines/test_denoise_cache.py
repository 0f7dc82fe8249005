"""Denoising caches on a tiny FLUX pipeline: the cache does less work (attention projections counted), changes the
pixels a little, and ``exact`` gives back exactly the uncached pixels; a UNet has no cache hooks and says so."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # before diffusers / huggingface_hub read it

import base64
import io
from pathlib import Path
from typing import Any

import numpy as np
import openai
import pytest
from PIL import Image
from pydantic import ValidationError

from limner.app import create_app
from limner.core.errors import ModelNotAvailable
from limner.core.models import EngineRequest, Mode
from limner.engines.catalog import ModelEntry
from limner.engines.diffusers_engine import DiffusersEngine, DiffusersSettings
from limner.settings import Settings
from tests.support.live_server import live_server
from tests.support.sdk import data_of
from tests.support.tiny_families import build_tiny_flux

pytestmark = pytest.mark.usefixtures("one_cpu_thread")

STEPS = 8


@pytest.fixture(scope="module")
def flux_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_flux(tmp_path_factory.mktemp("tiny-flux"))


class Work:
    """Counts the attention projections the transformer runs: what a cache saves."""

    def __init__(self, engine: DiffusersEngine) -> None:
        self.calls = 0
        transformer: Any = engine._pipe.transformer  # type: ignore[union-attr]
        for block in (*transformer.transformer_blocks, *transformer.single_transformer_blocks):
            block.attn.to_q.register_forward_pre_hook(self._count)

    def _count(self, *_: object) -> None:
        self.calls += 1

    async def run(self, engine: DiffusersEngine, *, exact: bool = False) -> tuple[np.ndarray, int]:
        before = self.calls
        request = EngineRequest(Mode.GENERATE, "a boat", 64, 64, seeds=[1], steps=STEPS, exact=exact)
        [image] = await engine.generate(request)
        return np.asarray(image.image, dtype=np.float32), self.calls - before


async def loaded(flux_dir: Path, **options: Any) -> tuple[DiffusersEngine, Work]:
    engine = DiffusersEngine(DiffusersSettings(path=flux_dir, device="cpu", **options))
    await engine.load()
    return engine, Work(engine)


@pytest.mark.parametrize(
    ("cache", "knob"),
    [("first-block", {"cache_threshold": 5.0}), ("taylorseer", {"cache_interval": 2})],
)
async def test_a_cache_saves_work_and_exact_gives_the_uncached_pixels(
    flux_dir: Path, cache: str, knob: dict[str, Any]
) -> None:
    plain, plain_work = await loaded(flux_dir)
    cached, cached_work = await loaded(flux_dir, cache=cache, **knob)
    try:
        full, full_calls = await plain_work.run(plain)
        fast, fast_calls = await cached_work.run(cached)
        exact, exact_calls = await cached_work.run(cached, exact=True)
        again, again_calls = await cached_work.run(cached)
    finally:
        await plain.aclose()
        await cached.aclose()
    assert full_calls == STEPS * 2  # one double-stream and one single-stream block per step
    assert fast_calls < full_calls, f"{cache}: {fast_calls} of {full_calls} attention calls"
    assert 0 < float(np.abs(fast - full).mean()) < 8, "the cached image is close to the full one, not equal"
    assert exact_calls == full_calls and np.array_equal(exact, full)
    assert again_calls == fast_calls and np.array_equal(again, fast)  # put back, and no state left from before


async def test_a_unet_has_no_cache_hooks_and_the_load_says_so(sd_dir: Path) -> None:
    engine = DiffusersEngine(DiffusersSettings(path=sd_dir, device="cpu", cache="first-block"))
    with pytest.raises(ModelNotAvailable) as refused:
        await engine.load()
    assert refused.value.message == (
        "cache = 'first-block' needs a denoiser with diffusers' cache hooks (FLUX's transformer among limner's "
        "families), and this model's UNet2DConditionModel has none: set cache = 'none'."
    )
    assert not engine.loaded


def test_the_catalog_ties_each_knob_to_its_cache() -> None:
    entry = ModelEntry(id="m", engine="diffusers", path=Path("/m"), cache="first-block", cache_threshold=0.1)
    assert (entry.cache, entry.cache_threshold) == ("first-block", 0.1)
    with pytest.raises(ValidationError, match="cache_interval is for cache = 'taylorseer', and its cache is 'none'"):
        ModelEntry(id="m", engine="diffusers", path=Path("/m"), cache_interval=3)
    with pytest.raises(ValidationError, match="cache"):
        ModelEntry(id="m", engine="diffusers", path=Path("/m"), cache="teacache")  # type: ignore[arg-type]


def test_exact_over_the_openai_sdk_gives_the_uncached_model_s_pixels(flux_dir: Path, tmp_path: Path) -> None:
    models = [
        ModelEntry(id="flux", engine="diffusers", path=flux_dir, default_steps=STEPS),
        ModelEntry(
            id="flux-cached",
            engine="diffusers",
            path=flux_dir,
            default_steps=STEPS,
            cache="first-block",
            cache_threshold=5.0,
        ),
    ]
    with live_server(create_app(Settings(data_dir=tmp_path, models=models))) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0)

        def pixels(model: str, **extra: object) -> np.ndarray:
            result = client.images.generate(
                model=model, prompt="a boat", size="64x64", response_format="b64_json", extra_body={"seed": 4, **extra}
            )
            image = Image.open(io.BytesIO(base64.b64decode(data_of(result)[0].b64_json or "")))
            return np.asarray(image.convert("RGB"), dtype=np.float32)

        full = pixels("flux")
        assert np.array_equal(pixels("flux-cached", exact=True), full)
        assert not np.array_equal(pixels("flux-cached"), full)
        with pytest.raises(openai.BadRequestError) as refused:
            pixels("flux-cached", exact="yes")
    assert refused.value.status_code == 400 and refused.value.body["param"] == "exact"  # type: ignore[index]

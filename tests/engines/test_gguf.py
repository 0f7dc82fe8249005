"""GGUF single-file denoisers: a GGUF file this test writes loads through the catalog and the server, stays close
to the full-precision model, and the refusals (no config_dir, quantising it again, nf4 without CUDA) say why."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # before diffusers / huggingface_hub read it

import base64
import io
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest
from PIL import Image

from limner.app import create_app
from limner.core.errors import ModelNotAvailable
from limner.core.models import EngineRequest, Mode
from limner.engines.catalog import Catalog, ModelEntry
from limner.engines.diffusers_engine import DiffusersEngine, DiffusersSettings
from limner.engines.registry import default_factories
from limner.settings import Settings
from tests.support.live_server import live_server
from tests.support.sdk import data_of
from tests.support.tiny_gguf import build_tiny_gguf

pytestmark = pytest.mark.usefixtures("one_cpu_thread")

REQUEST = EngineRequest(mode=Mode.GENERATE, prompt="a boat", width=64, height=64, seeds=[3], steps=2)


@pytest.fixture(scope="module")
def tiny_gguf(sd_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, int]:
    return build_tiny_gguf(sd_dir, tmp_path_factory.mktemp("tiny-gguf"))


async def generate(engine: DiffusersEngine) -> np.ndarray:
    try:
        [image] = await engine.generate(REQUEST)
    finally:
        await engine.aclose()
    return np.asarray(image.image, dtype=np.float32)


async def test_a_gguf_denoiser_loads_through_the_catalog_and_stays_close(
    sd_dir: Path, tiny_gguf: tuple[Path, Path, int]
) -> None:
    """Q8_0 weights: mean absolute pixel difference from the float32 model under 2 of 255, but not zero (the
    weights really are the file's quantised ones; the config directory has no UNet weights at all)."""
    path, config_dir, quantized = tiny_gguf
    assert quantized > 0 and not list((config_dir / "unet").glob("*.safetensors"))
    entry = ModelEntry(
        id="tiny-gguf", engine="diffusers", path=path, config_dir=config_dir, device="cpu", step_batching=False
    )
    engine = Catalog([entry], default_factories()).engine(entry)
    assert isinstance(engine, DiffusersEngine)
    await engine.load()
    linear = engine._pipe.unet.down_blocks[1].attentions[0].transformer_blocks[0].attn1.to_q  # type: ignore[union-attr]
    assert type(linear).__name__ == "GGUFLinear"
    assert engine.capabilities.extras["family"] == "sd1"
    low = await generate(engine)
    full = await generate(DiffusersEngine(DiffusersSettings(path=sd_dir, device="cpu")))
    difference = float(np.abs(full - low).mean())
    assert 0 < difference < 2.0, f"GGUF Q8_0: {difference:.3f} of 255 from float32"
    assert entry.precision_fields() == {"precision": "auto", "quantization": "gguf (denoiser)"}


def test_a_gguf_model_answers_the_openai_sdk_and_lists_its_quantization(
    tiny_gguf: tuple[Path, Path, int], tmp_path: Path
) -> None:
    path, config_dir, _ = tiny_gguf
    entry = ModelEntry(
        id="tiny-gguf",
        engine="diffusers",
        path=path,
        config_dir=config_dir,
        default_steps=2,
        quantization="int8-weight",
        quantize=["text_encoders"],
    )
    with live_server(create_app(Settings(data_dir=tmp_path, models=[entry]))) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0)
        result = client.images.generate(model="tiny-gguf", prompt="a boat", size="64x64", response_format="b64_json")
        image = Image.open(io.BytesIO(base64.b64decode(data_of(result)[0].b64_json or "")))
        assert image.size == (64, 64) and np.asarray(image.convert("RGB")).std() > 1  # a picture, not a fill
        listed = {item["id"]: item for item in httpx.get(url + "/v1/models").json()["data"]}["tiny-gguf"]
    assert listed["quantization"] == "gguf (denoiser), int8-weight (text_encoders)"


async def test_a_gguf_denoiser_needs_the_other_components(tiny_gguf: tuple[Path, Path, int]) -> None:
    path, _, _ = tiny_gguf
    engine = DiffusersEngine(DiffusersSettings(path=path, device="cpu"))
    with pytest.raises(ModelNotAvailable) as refused:
        await engine.load()
    assert refused.value.message == (
        f"{path} is a single-file GGUF denoiser: set config_dir to a diffusers directory of the same model with "
        "its configs and the other components' weights (limner never downloads them)."
    )


async def test_a_gguf_denoiser_is_not_quantised_twice(tiny_gguf: tuple[Path, Path, int]) -> None:
    path, config_dir, _ = tiny_gguf
    engine = DiffusersEngine(
        DiffusersSettings(path=path, config_dir=config_dir, device="cpu", quantization="int8-weight")
    )
    with pytest.raises(ModelNotAvailable) as refused:
        await engine.load()
    assert refused.value.message == (
        "quantization = 'int8-weight' cannot apply to a GGUF denoiser, which is quantised already: "
        "set quantize = [\"text_encoders\"], or quantization = 'none'."
    )
    assert not engine.loaded


async def test_nf4_needs_cuda_and_says_what_works_here(sd_dir: Path) -> None:
    engine = DiffusersEngine(DiffusersSettings(path=sd_dir, device="cpu", quantization="nf4"))
    with pytest.raises(ModelNotAvailable) as refused:
        await engine.load()
    assert refused.value.message == (
        "quantization = 'nf4' needs a CUDA GPU, and this model runs on cpu: "
        "use 'int8-weight' or 'int8-dynamic' here, or 'none'."
    )

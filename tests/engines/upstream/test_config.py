"""The README's promise: put an OpenAI or Gemini key in the environment, add catalog entries to
``limner.toml``, and call those models through all five dialects (here with the providers' URLs
pointed at the fakes)."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from limner.app import create_app
from limner.engines.upstream.gemini import GeminiEngine
from limner.engines.upstream.openai import OpenAIEngine
from limner.settings import Settings
from tests.engines.upstream.conftest import Fake
from tests.engines.upstream.fakes.common import KEY
from tests.support.live_server import live_server

README_TOML = """
[[models]]
id = "gpt-image-1"
engine = "openai"
api_key_env = "OPENAI_API_KEY"
price_per_image = 0.04
fallbacks = ["nano-banana"]

[[models]]
id = "dall-e-3"
engine = "openai"
api_key_env = "OPENAI_API_KEY"
price_per_image = 0.04
price_scale = { hd = 2.0, "1792x1024" = 1.5, "1024x1792" = 1.5 }

[[models]]
id = "nano-banana"
engine = "gemini"
upstream_model = "gemini-2.5-flash-image"
api_key_env = "GEMINI_API_KEY"
aliases = ["google/gemini-2.5-flash-image", "image-gen.pro-1.0", "text-to-image", "image-edit"]
price_per_image = 0.039
timeout = 60
"""


@pytest.fixture
def configured(fakes: dict[str, Fake], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    config = tmp_path / "limner.toml"
    config.write_text(README_TOML)
    monkeypatch.setenv("LIMNER_CONFIG", str(config))
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("GEMINI_API_KEY", KEY)
    settings = Settings(data_dir=tmp_path / "data", default_model="gpt-image-1")
    for entry in settings.models:  # only to reach the fakes instead of the real providers
        fake = fakes["openai" if entry.engine == "openai" else "gemini"]
        entry.provider_url = fake.url
        entry.allow_private_urls = True
    return settings


@pytest.fixture
def server(configured: Settings) -> Iterator[str]:
    with live_server(create_app(configured)) as url:
        yield url


def size_of(data: bytes) -> tuple[int, int]:
    return Image.open(io.BytesIO(data)).size


def test_the_readme_entries_build_provider_engines(configured: Settings) -> None:
    from limner.engines.catalog import Catalog
    from limner.engines.fallback import FallbackEngine
    from limner.engines.registry import default_factories

    catalog = Catalog(configured.models, default_factories())
    primary = catalog.engine(catalog.resolve("gpt-image-1"))
    assert isinstance(primary, FallbackEngine) and isinstance(primary.primary, OpenAIEngine)
    gemini = catalog.engine(catalog.resolve("google/gemini-2.5-flash-image"))
    assert isinstance(gemini, GeminiEngine) and gemini.model == "gemini-2.5-flash-image"
    assert catalog.resolve("dall-e-3").price_for(1, 1792, 1024, "hd") == pytest.approx(0.12)


def test_openai_and_aigne_dialects(server: str, fakes: dict[str, Fake]) -> None:
    openai_response = httpx.post(
        server + "/v1/images/generations",
        timeout=30,
        json={"model": "dall-e-3", "prompt": "a kite", "size": "1792x1024", "n": 2},
    )
    assert openai_response.status_code == 200, openai_response.text
    assert len(openai_response.json()["data"]) == 2 and len(fakes["openai"].control.posts()) == 2
    hub = httpx.post(
        server + "/api/images/generations",
        timeout=30,
        json={"model": "gpt-image-1", "prompt": "a kite", "response_format": "b64_json"},
    )
    assert hub.status_code == 200, hub.text
    assert size_of(base64.b64decode(hub.json()["data"][0]["b64_json"])) == (1024, 1024)


def test_aiml_milady_and_imagineart_dialects(server: str, fakes: dict[str, Fake]) -> None:
    body = {"model": "image-gen.pro-1.0", "prompt": "a kite", "size": "1K", "response_format": "b64_json"}
    aiml = httpx.post(server + "/v1/generation/images", timeout=30, json=body)
    assert aiml.status_code == 200, aiml.text
    milady = httpx.post(
        server + "/api/v1/generate-image",
        timeout=30,
        json={"model": "google/gemini-2.5-flash-image", "prompt": "a kite", "aspectRatio": "9:16"},
    )
    assert milady.status_code == 200, milady.text
    assert milady.json()["images"][0]["text"] == "Here is your image (0 inputs)."
    imagineart = httpx.post(
        server + "/v1/images/generations",
        timeout=30,
        files={"prompt": (None, "a kite"), "aspect_ratio": (None, "16:9"), "resolution": (None, "1K")},
    )
    assert imagineart.status_code == 200, imagineart.text
    assert imagineart.headers["x-model"] == "nano-banana" and imagineart.headers["content-type"] == "image/png"
    assert len(fakes["gemini"].control.posts()) == 3

"""limner behind limner: a gateway limner whose AI.ML, Milady, AIGNE Hub, ImagineArt and OpenAI
upstream engines point at a second limner (test-pattern models, tokens required), both on
127.0.0.1, answering real requests end to end through the gateway's own dialects."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import openai
import pytest
from PIL import Image

from limner.app import create_app
from limner.engines.catalog import ModelEntry
from limner.settings import Settings
from tests.conftest import pattern_models
from tests.support.accounts import TestTokens, locked_server
from tests.support.live_server import live_server

TOKEN_ENV = "LIMNER_TEST_UPSTREAM_LIMNER_TOKEN"
REVOKED_ENV = "LIMNER_TEST_UPSTREAM_LIMNER_REVOKED"


@dataclass(frozen=True)
class Limners:
    gateway: str
    upstream: str
    tokens: TestTokens


def gateway_models(upstream: str) -> list[ModelEntry]:
    common: dict[str, Any] = {
        "provider_url": upstream,
        "api_key_env": TOKEN_ENV,
        "allow_private_urls": True,
        "timeout": 60.0,
        "options": {"backoff": 0.01},
    }
    return [
        ModelEntry(id="via-aiml", engine="aiml", upstream_model="image-gen.pro-1.0", **common),
        ModelEntry(id="via-milady", engine="milady", upstream_model="google/gemini-2.5-flash-image", **common),
        ModelEntry(
            id="via-aigne",
            engine="aigne",
            upstream_model="dall-e-2",
            **{**common, "options": {"response_format": "url"}},
        ),
        ModelEntry(id="via-imagineart", engine="imagineart", aliases=["text-to-image", "image-edit"], **common),
        ModelEntry(
            id="via-openai",
            engine="openai",
            upstream_model="gpt-image-1",
            **{**common, "provider_url": upstream + "/v1"},
        ),
        ModelEntry(id="via-missing", engine="aiml", upstream_model="no-such-model", **common),
        ModelEntry(
            id="via-revoked", engine="aigne", upstream_model="dall-e-2", **{**common, "api_key_env": REVOKED_ENV}
        ),
    ]


@pytest.fixture(scope="module")
def limners(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Limners]:
    root = tmp_path_factory.mktemp("limners")
    upstream_settings = Settings(data_dir=root / "upstream", models=pattern_models(), default_model="pattern")
    with locked_server(upstream_settings) as (upstream, issued), pytest.MonkeyPatch.context() as env:
        env.setenv(TOKEN_ENV, issued.valid)
        env.setenv(REVOKED_ENV, issued.revoked)
        settings = Settings(data_dir=root / "gateway", models=gateway_models(upstream), default_model="via-aigne")
        with live_server(create_app(settings)) as gateway:
            yield Limners(gateway, upstream, issued)


def decode(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def png(color: tuple[int, int, int], size: tuple[int, int] = (40, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, "PNG")
    return buffer.getvalue()


def test_openai_sdk_through_the_aigne_hub_engine(limners: Limners) -> None:
    client = openai.OpenAI(base_url=limners.gateway + "/v1", api_key="unused-on-loopback", max_retries=0)
    result = client.images.generate(model="via-aigne", prompt="a teapot", n=2, size="512x512", response_format="url")
    assert result.data is not None and len(result.data) == 2
    for item in result.data:
        assert item.url and item.url.startswith(limners.gateway + "/media/")
        assert decode(httpx.get(item.url).content).size == (512, 512)


def test_openai_sdk_through_the_openai_engine(limners: Limners) -> None:
    client = openai.OpenAI(base_url=limners.gateway + "/v1", api_key="unused-on-loopback", max_retries=0)
    result = client.images.generate(model="via-openai", prompt="a teapot", size="1536x1024", response_format="b64_json")
    assert result.data is not None and result.data[0].b64_json
    assert decode(base64.b64decode(result.data[0].b64_json)).size == (1536, 1024)


def test_aiml_dialect_through_the_aiml_engine(limners: Limners) -> None:
    body = {"model": "via-aiml", "prompt": "a forest at sunrise", "size": "1024x768", "response_format": "url"}
    response = httpx.post(limners.gateway + "/v1/generation/images", json=body, timeout=60)
    assert response.status_code == 200, response.text
    backend = response.json()["data"]["image"]["url"]
    assert backend.startswith("/v1/media/images/")
    presigned = httpx.get(limners.gateway + backend, timeout=30).json()["url"]
    assert decode(httpx.get(presigned).content).size == (1024, 768)


def test_aiml_composition_of_two_images(limners: Limners) -> None:
    sources = [f"data:image/png;base64,{base64.b64encode(png(color)).decode()}" for color in ((255, 0, 0), (0, 0, 255))]
    body = {
        "model": "via-aiml",
        "prompt": "image 1 beside image 2",
        "image": sources,
        "size": "512x512",
        "response_format": "b64_json",
    }
    response = httpx.post(limners.gateway + "/v1/generation/images", json=body, timeout=60)
    assert response.status_code == 200, response.text
    assert decode(base64.b64decode(response.json()["data"]["image"]["b64_json"])).size == (512, 512)


def test_milady_dialect_through_the_milady_engine(limners: Limners) -> None:
    body = {"prompt": "a serene mountain", "model": "via-milady", "aspectRatio": "16:9", "numImages": 2}
    response = httpx.post(limners.gateway + "/api/v1/generate-image", json=body, timeout=60)
    assert response.status_code == 200, response.text
    images = response.json()["images"]
    assert response.json()["numImages"] == 2 and [item["text"] for item in images] == ["", ""]
    for item in images:
        assert item["url"].startswith(limners.gateway + "/media/") and item["mimeType"] == "image/png"
        width, height = decode(httpx.get(item["url"]).content).size
        assert abs(width / height - 16 / 9) < 0.01


def test_imagineart_dialect_through_the_imagineart_engine_keeps_the_seed(limners: Limners) -> None:
    form = {"prompt": "a chef plating ramen", "aspect_ratio": "1:1", "resolution": "1K", "seed": "1234"}
    via = httpx.post(
        limners.gateway + "/v1/images/generations", files={k: (None, v) for k, v in form.items()}, timeout=60
    )
    assert via.status_code == 200, via.text
    assert via.headers["content-type"] == "image/png" and via.headers["x-seed"] == "1234"
    assert via.headers["x-model"] == "via-imagineart"
    direct = httpx.post(
        limners.upstream + "/v1/images/generations",
        files={k: (None, v) for k, v in form.items()},
        headers={"Authorization": f"Bearer {limners.tokens.valid}"},
        timeout=60,
    )
    assert direct.status_code == 200, direct.text
    assert decode(via.content).tobytes() == decode(direct.content).tobytes()  # same pixels, one hop further


def test_imagineart_edit_through_the_imagineart_engine(limners: Limners) -> None:
    files: list[tuple[str, Any]] = [
        ("prompt", (None, "make it sunset")),
        ("resolution", (None, "1K")),
        ("images", ("a.png", png((0, 128, 0), (64, 32)), "image/png")),
        ("images", ("b.png", png((0, 0, 128)), "image/png")),
    ]
    response = httpx.post(limners.gateway + "/v1/images/edits", files=files, timeout=60)
    assert response.status_code == 200, response.text
    width, height = decode(response.content).size
    assert abs(width / height - 2) < 0.02  # aspect_ratio auto: the first image's shape


def test_upstream_refusals_map_to_gateway_errors(limners: Limners) -> None:
    missing = httpx.post(
        limners.gateway + "/v1/images/generations", json={"model": "via-missing", "prompt": "x"}, timeout=60
    )
    assert missing.status_code == 502 and missing.json()["error"]["code"] == "model_not_available"
    assert "no-such-model" in missing.json()["error"]["message"]
    revoked = httpx.post(
        limners.gateway + "/v1/images/generations", json={"model": "via-revoked", "prompt": "x"}, timeout=60
    )
    assert revoked.status_code == 502 and revoked.json()["error"]["code"] == "model_auth_error"
    for response in (missing, revoked):
        for secret in (limners.tokens.valid, limners.tokens.revoked):
            assert secret not in response.text

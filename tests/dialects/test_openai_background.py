"""``background: "transparent"`` is real or refused: a model that paints no alpha delivers it through its
matting model (alpha where the foreground is, colours as painted), or is refused with a 400 naming
``background`` and the models that can; no answer says ``transparent`` over an opaque image, DALL-E 3's
included. One test runs a real tiny diffusers pipeline, whose engine says it paints no alpha."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from limner.app import create_app
from limner.core.models import EngineRequest, GeneratedImage
from limner.engines import testpattern
from limner.engines.catalog import MattingEntry, ModelEntry
from limner.settings import Settings
from tests.dialects.conftest import decode
from tests.support.fakes import consumer_from_header, factories
from tests.support.images import pixel_at
from tests.support.tiny_diffusers import build_tiny_sd
from tests.support.tiny_matting import write_matting

URL = "/v1/images/generations"


class OpaquePainter(testpattern.TestPatternEngine):
    """Paints a bright square on a dark ground, with no alpha, and says so (as diffusers models do)."""

    capabilities = replace(testpattern.TestPatternEngine.capabilities, transparency=False)

    async def generate(self, request: EngineRequest) -> list[GeneratedImage]:
        images = []
        for seed in request.seeds:
            image = Image.new("RGB", (request.width, request.height), (10, 10, 10))
            image.paste(
                (250, 250, 250),
                (request.width // 4, request.height // 4, request.width * 3 // 4, request.height * 3 // 4),
            )
            images.append(GeneratedImage(image=image, seed=seed))
        return images


@pytest.fixture
def client(settings: Settings, tmp_path: Path) -> Iterator[TestClient]:
    matting = MattingEntry(path=write_matting(tmp_path / "matting.onnx"), size=64)
    models = [
        ModelEntry(id="painter", engine="opaque", aliases=["dall-e-3"], matting=matting),
        ModelEntry(id="plain", engine="opaque", aliases=["dall-e-2"]),
        ModelEntry(id="pattern", engine="testpattern", aliases=["gpt-image-1"]),
    ]
    app = create_app(
        settings.with_overrides(models=models, default_model="plain"),
        factories=factories(opaque=lambda e: OpaquePainter()),
    )
    consumer_from_header(app)
    with TestClient(app) as test_client:
        yield test_client


def image_of(payload: dict[str, Any]) -> Image.Image:
    return decode(base64.b64decode(payload["data"][0]["b64_json"]))


@pytest.mark.parametrize("model", ["painter", "dall-e-3"])
def test_matting_makes_the_background_transparent(client: TestClient, model: str) -> None:
    body = {"model": model, "prompt": "a sticker", "size": "64x64", "background": "transparent"}
    response = client.post(URL, json={**body, "response_format": "b64_json"})
    assert response.status_code == 200, response.text
    assert response.json()["background"] == "transparent"
    image = image_of(response.json())
    assert image.mode == "RGBA"
    assert image.getpixel((32, 32)) == (250, 250, 250, 255)
    assert image.getpixel((3, 3)) == (10, 10, 10, 0)


@pytest.mark.parametrize("background", ["opaque", "auto", None])
def test_without_transparent_the_matting_model_stays_out(client: TestClient, background: str | None) -> None:
    body = {"model": "dall-e-3", "prompt": "x", "size": "64x64", "response_format": "b64_json"}
    response = client.post(URL, json={**body, **({"background": background} if background else {})})
    assert response.status_code == 200, response.text
    assert image_of(response.json()).mode == "RGB"
    assert response.json().get("background") == ("opaque" if background == "opaque" else None)


@pytest.mark.parametrize("model", ["plain", "dall-e-2"])
def test_a_model_without_alpha_or_matting_is_refused(client: TestClient, model: str) -> None:
    response = client.post(URL, json={"model": model, "prompt": "x", "background": "transparent"})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["code"], error["param"]) == ("unsupported_value", "background")
    assert error["message"] == (
        f"Model '{model}' cannot make a transparent background (it paints no alpha and has no matting model); "
        "models that can: painter, pattern."
    )


def test_edits_too(client: TestClient) -> None:
    source = Image.new("RGB", (64, 64), (10, 10, 10))
    buffer = io.BytesIO()
    source.save(buffer, "PNG")
    response = client.post(
        "/v1/images/edits",
        files={"image": ("in.png", buffer.getvalue(), "image/png")},
        data={"model": "plain", "prompt": "x", "background": "transparent"},
    )
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "background"


def test_a_diffusers_model_delivers_alpha_only_through_matting(settings: Settings, tmp_path: Path) -> None:
    pipeline = build_tiny_sd(tmp_path / "sd")
    matting = MattingEntry(path=write_matting(tmp_path / "matting.onnx", 32))
    models = [
        ModelEntry(id="sd", engine="diffusers", path=pipeline, default_steps=2),
        ModelEntry(id="sd-matted", engine="diffusers", path=pipeline, default_steps=2, matting=matting),
    ]
    app = create_app(settings.with_overrides(models=models, default_model="sd"))
    body = {"prompt": "a fox", "size": "64x64", "background": "transparent", "response_format": "b64_json"}
    with TestClient(app) as client:
        refused = client.post(URL, json={**body, "model": "sd"})
        assert refused.status_code == 400, refused.text
        assert refused.json()["error"]["message"].endswith("models that can: sd-matted.")
        made = client.post(URL, json={**body, "model": "sd-matted"})
        assert made.status_code == 200, made.text
    image = image_of(made.json())
    assert image.mode == "RGBA" and image.size == (64, 64)
    low, high = cast(tuple[int, int], image.getchannel("A").getextrema())
    assert low < 30 and high > 225  # the brightest pixels kept, the darkest cut out (a 32x32 map, resampled)
    brightest = max(range(64 * 64), key=lambda i: sum(pixel_at(image, (i % 64, i // 64))[:3]))
    assert pixel_at(image, (brightest % 64, brightest // 64))[3] > 200

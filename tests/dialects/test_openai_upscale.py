"""``POST /v1/images/upscale`` and ``upscale`` on generations, in-process: exact 2x and 4x sizes from the
built-in upscaler and from a tiny random-weight ESRGAN file loaded by spandrel, every input form, the hires
fix's refining pass, and every refusal with its status, code, ``param`` and message."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from limner.app import create_app
from limner.config.defaults import DIALECT_DEFAULT_ALIASES
from limner.core.models import Mode
from limner.engines import testpattern
from limner.engines.catalog import ModelEntry
from limner.settings import Settings
from tests.dialects.conftest import decode
from tests.support.fakes import RecordingEngine, consumer_from_header, factories
from tests.support.images import pixel_at
from tests.support.tiny_upscalers import write_upscaler

URL = "/v1/images/upscale"


class NativeSizeEngine(RecordingEngine):
    """A model that always paints 32x32 (as the built-in one does): it cannot refine a larger image."""

    capabilities = replace(testpattern.TestPatternEngine.capabilities, native_size=(32, 32))


class SmallEngine(RecordingEngine):
    """A model that paints at most 512x512."""

    capabilities = replace(testpattern.TestPatternEngine.capabilities, max_side=512, max_pixels=512 * 512)


def png(size: tuple[int, int], mode: str = "RGB") -> bytes:
    """A picture with structure: a red left half and a blue right half (and a transparent top row in RGBA)."""
    image = Image.new(mode, size, (200, 30, 30, 255) if mode == "RGBA" else (200, 30, 30))
    image.paste((30, 30, 200, 255) if mode == "RGBA" else (30, 30, 200), (size[0] // 2, 0, size[0], size[1]))
    if mode == "RGBA":
        image.paste((0, 0, 0, 0), (0, 0, size[0], 4))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture
def recorder() -> RecordingEngine:
    return RecordingEngine()


@pytest.fixture
def client(settings: Settings, tmp_path: Path, recorder: RecordingEngine) -> Iterator[TestClient]:
    models = [
        ModelEntry(id="rec", engine="recording", aliases=list(DIALECT_DEFAULT_ALIASES)),
        ModelEntry(id="esrgan-x4", engine="upscaler", path=write_upscaler(tmp_path / "x4.pth", scale=4)),
        ModelEntry(id="esrgan-x2", engine="upscaler", path=write_upscaler(tmp_path / "x2.safetensors", scale=2)),
        ModelEntry(id="sticker", engine="native"),
        ModelEntry(id="small", engine="small"),
    ]
    app = create_app(
        settings.with_overrides(models=models, default_model="rec"),
        factories=factories(
            recording=lambda e: recorder, native=lambda e: NativeSizeEngine(), small=lambda e: SmallEngine()
        ),
    )
    consumer_from_header(app)
    with TestClient(app) as test_client:
        yield test_client


def image_of(payload: dict[str, Any]) -> Image.Image:
    return decode(base64.b64decode(payload["data"][0]["b64_json"]))


def assert_error(response: Any, status: int, code: str, param: str, words: str) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert (error["code"], error["param"]) == (code, param)
    assert words in error["message"], error["message"]


@pytest.mark.parametrize("scale", [2, 4])
def test_builtin_upscaler_multipart_gives_exact_size_and_keeps_colours(client: TestClient, scale: int) -> None:
    response = client.post(
        URL,
        files={"image": ("in.png", png((40, 24)), "image/png")},
        data={"scale": str(scale), "response_format": "b64_json"},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    image = image_of(body)
    assert image.size == (40 * scale, 24 * scale)
    assert body["size"] == f"{40 * scale}x{24 * scale}"
    assert image.getpixel((4 * scale, 12 * scale)) == pytest.approx((200, 30, 30), abs=3)
    assert image.getpixel((36 * scale, 12 * scale)) == pytest.approx((30, 30, 200), abs=3)


@pytest.mark.parametrize(("model", "scale"), [("esrgan-x4", 4), ("esrgan-x4", 2), ("esrgan-x2", 2), ("esrgan-x2", 4)])
def test_model_upscaler_json_base64_gives_exact_size(client: TestClient, model: str, scale: int) -> None:
    payload = {"image": base64.b64encode(png((20, 12))).decode(), "model": model, "scale": scale}
    response = client.post(URL, json={**payload, "response_format": "b64_json"})
    assert response.status_code == 200, response.text
    image = image_of(response.json())
    assert image.size == (20 * scale, 12 * scale)
    assert image.mode == "RGB"
    assert len(image.getcolors(maxcolors=1 << 16) or ()) > 1  # the model's own pixels, not one flat colour


def test_data_url_and_alpha_survive(client: TestClient) -> None:
    data_url = "data:image/png;base64," + base64.b64encode(png((16, 16), "RGBA")).decode()
    response = client.post(URL, json={"image": data_url, "model": "esrgan-x2", "response_format": "b64_json"})
    assert response.status_code == 200, response.text
    image = image_of(response.json())
    assert image.size == (32, 32)
    assert image.mode == "RGBA"
    assert pixel_at(image, (16, 0))[3] == 0  # the transparent top row stays transparent
    assert pixel_at(image, (16, 20))[3] == 255


def test_url_answer_links_the_stored_image(client: TestClient) -> None:
    response = client.post(URL, files={"image": ("in.png", png((10, 10)), "image/png")}, data={"scale": "4"})
    assert response.status_code == 200, response.text
    url = response.json()["data"][0]["url"]
    fetched = client.get(url)
    assert fetched.status_code == 200
    assert decode(fetched.content).size == (40, 40)


@pytest.mark.parametrize(
    ("body", "status", "code", "param", "words"),
    [
        ({"scale": 3}, 400, "invalid_value", "scale", "scale must be 2 or 4; got 3"),
        ({"model": "nope"}, 404, "model_not_found", "model", "Unknown model 'nope'"),
        ({"model": "rec"}, 400, "invalid_value", "model", "Model 'rec' is not an upscaler"),
        ({"image": None}, 400, "invalid_value", "image", "exactly one 'image'"),
        ({"image": "not an image"}, 400, "invalid_image", "image", "image"),
        ({"strength": 0.5}, 400, "invalid_value", "strength", "Unrecognized request argument supplied: 'strength'"),
    ],
)
def test_refusals(client: TestClient, body: dict[str, Any], status: int, code: str, param: str, words: str) -> None:
    payload = {"image": base64.b64encode(png((8, 8))).decode(), **body}
    assert_error(client.post(URL, json={k: v for k, v in payload.items() if v is not None}), status, code, param, words)


def test_an_image_too_large_for_its_result_is_refused(client: TestClient) -> None:
    response = client.post(URL, files={"image": ("big.png", png((2100, 2100)), "image/png")}, data={"scale": "4"})
    assert_error(response, 400, "invalid_value", "image", "image is 2100x2100; a 4x upscale takes at most")


def test_multipart_image_must_be_a_file(client: TestClient) -> None:
    response = client.post(URL, data={"image": "aGVsbG8=", "scale": "2"}, files={"x": ("x", b"", "text/plain")})
    assert_error(response, 400, "invalid_value", "image", "send image as a file")


def test_generation_upscale_with_refine_runs_the_model_again_at_the_larger_size(
    client: TestClient, recorder: RecordingEngine
) -> None:
    body = {"prompt": "a fox", "size": "64x48", "response_format": "b64_json", "seed": 7}
    response = client.post(
        "/v1/images/generations", json={**body, "upscale": {"model": "esrgan-x2", "scale": 2, "refine": 0.3}}
    )
    assert response.status_code == 200, response.text
    assert image_of(response.json()).size == (128, 96)
    assert response.json()["size"] == "128x96"
    first, refine = recorder.requests
    assert (first.mode, first.width, first.height) == (Mode.GENERATE, 64, 48)
    assert (refine.mode, refine.width, refine.height, refine.strength) == (Mode.EDIT, 128, 96, 0.3)
    assert refine.images[0].size == (128, 96)
    assert refine.seeds == [7]
    assert refine.prompt == "a fox"


def test_generation_upscale_without_refine_uses_the_builtin_upscaler(
    client: TestClient, recorder: RecordingEngine
) -> None:
    body = {"prompt": "a fox", "size": "64x48", "n": 2, "response_format": "b64_json", "upscale": {"scale": 4}}
    response = client.post("/v1/images/generations", json=body)
    assert response.status_code == 200, response.text
    assert [decode(base64.b64decode(item["b64_json"])).size for item in response.json()["data"]] == [(256, 192)] * 2
    assert len(recorder.requests) == 1


def test_edit_form_takes_upscale_as_json_text(client: TestClient) -> None:
    response = client.post(
        "/v1/images/edits",
        files={"image": ("in.png", png((32, 32)), "image/png")},
        data={"prompt": "x", "size": "32x32", "response_format": "b64_json", "upscale": json.dumps({"scale": 2})},
    )
    assert response.status_code == 200, response.text
    assert image_of(response.json()).size == (64, 64)


@pytest.mark.parametrize(
    ("upscale", "model", "status", "code", "param", "words"),
    [
        ({"scale": 8}, "rec", 400, "invalid_value", "upscale.scale", "scale must be 2 or 4; got 8"),
        ({"model": "nope"}, "rec", 404, "model_not_found", "upscale.model", "Unknown model 'nope'"),
        ({"model": "sticker"}, "rec", 400, "invalid_value", "upscale.model", "not an upscaler"),
        ({"refine": 1.5}, "rec", 400, "invalid_value", "upscale.refine", "refine must be between 0 and 1"),
        ({"refine": 0.3}, "sticker", 400, "unsupported_value", "upscale.refine", "cannot refine an upscaled image"),
        ({"scale": "2"}, "rec", 400, "invalid_value", "upscale.scale", ""),
    ],
)
def test_generation_upscale_refusals(
    client: TestClient,
    recorder: RecordingEngine,
    upscale: dict[str, Any],
    model: str,
    status: int,
    code: str,
    param: str,
    words: str,
) -> None:
    body = {"prompt": "a fox", "model": model, "upscale": upscale}
    assert_error(client.post("/v1/images/generations", json=body), status, code, param, words)
    assert recorder.requests == []  # refused before the model ran


def test_an_upscaler_is_no_model_to_generate_with(client: TestClient, recorder: RecordingEngine) -> None:
    response = client.post("/v1/images/generations", json={"model": "esrgan-x4", "prompt": "a fox"})
    assert_error(response, 400, "invalid_value", "model", "Model 'esrgan-x4' is an upscaler: send images to")


@pytest.mark.parametrize(
    ("model", "size", "upscale", "words"),
    [
        ("rec", "2048x2048", {"scale": 4}, "would be 8192x8192; the upscaler makes images of at most 16777216 pixels"),
        ("small", "512x256", {"scale": 2, "refine": 0.2}, "'small' makes images of at most 262144 pixels and 512"),
    ],
)
def test_an_upscale_past_the_limits_is_refused_before_the_model_runs(
    client: TestClient, recorder: RecordingEngine, model: str, size: str, upscale: dict[str, Any], words: str
) -> None:
    body = {"model": model, "prompt": "a fox", "size": size, "upscale": upscale}
    assert_error(client.post("/v1/images/generations", json=body), 400, "invalid_value", "upscale.scale", words)
    assert recorder.requests == []

"""Outpainting (``expand`` on OpenAI edits): the canvas grows by pixels or to an aspect ratio, the model
inpaints only the new area at full strength, the image's own pixels come back as they were (PNG: exactly;
JPEG: within its encoding), the rest is the model's; the built-in model outpaints too; every refusal."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from limner.app import create_app
from limner.config.defaults import DIALECT_DEFAULT_ALIASES, default_models
from limner.core.models import Mode
from limner.engines import testpattern
from limner.engines.catalog import ModelEntry
from limner.settings import Settings
from tests.dialects.conftest import decode
from tests.support.fakes import RecordingEngine, consumer_from_header, factories
from tests.support.images import pixel_at

URL = "/v1/images/edits"


class NoInpainting(RecordingEngine):
    capabilities = replace(testpattern.TestPatternEngine.capabilities, supports_mask=False)


def source_png(size: tuple[int, int] = (40, 24)) -> bytes:
    """Four coloured quarters, so that a shifted or rescaled original would show."""
    image = Image.new("RGB", size, (200, 30, 30))
    width, height = size
    image.paste((30, 200, 30), (width // 2, 0, width, height // 2))
    image.paste((30, 30, 200), (0, height // 2, width // 2, height))
    image.paste((230, 230, 40), (width // 2, height // 2, width, height))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture
def recorder() -> RecordingEngine:
    return RecordingEngine()


@pytest.fixture
def client(settings: Settings, recorder: RecordingEngine) -> Iterator[TestClient]:
    models = [
        ModelEntry(id="rec", engine="recording", aliases=list(DIALECT_DEFAULT_ALIASES)),
        ModelEntry(id="flat", engine="noinpaint"),
    ]
    app = create_app(
        settings.with_overrides(models=models, default_model="rec"),
        factories=factories(recording=lambda e: recorder, noinpaint=lambda e: NoInpainting()),
    )
    consumer_from_header(app)
    with TestClient(app) as test_client:
        yield test_client


def edit(client: TestClient, expand: Any, source: bytes | None = None, **fields: Any) -> Any:
    data = {"prompt": "more sky", "response_format": "b64_json", "expand": json.dumps(expand), **fields}
    return client.post(URL, files={"image": ("in.png", source or source_png(), "image/png")}, data=data)


def image_of(response: Any) -> Image.Image:
    assert response.status_code == 200, response.text
    return decode(base64.b64decode(response.json()["data"][0]["b64_json"]))


def test_pixels_per_side_grow_the_canvas_and_keep_the_original(client: TestClient, recorder: RecordingEngine) -> None:
    result = image_of(edit(client, {"left": 8, "right": 16, "top": 4}))
    assert result.size == (64, 28)
    original = decode(source_png()).convert("RGB")
    assert np.array_equal(np.asarray(result.crop((8, 4, 48, 28))), np.asarray(original))
    new_area = np.asarray(result.crop((48, 0, 64, 28))).reshape(-1, 3)
    stretched_edge = np.asarray(original.crop((39, 0, 40, 24))).reshape(-1, 3)
    assert not {tuple(pixel) for pixel in new_area} <= {tuple(pixel) for pixel in stretched_edge}  # painted

    (request,) = recorder.requests
    assert (request.mode, request.strength) == (Mode.EDIT, 1.0)
    assert request.images[0].size == (64, 28)
    mask = request.mask
    assert mask is not None and mask.size == (64, 28)
    assert mask.convert("L").getpixel((2, 2)) == 255 and pixel_at(mask, (2, 2))[3] == 0  # paint: white, clear
    assert mask.convert("L").getpixel((20, 10)) == 0 and pixel_at(mask, (20, 10))[3] == 255  # keep: black, opaque
    assert request.images[0].getpixel((60, 10)) == original.getpixel((39, 10))  # the start: edges stretched


def test_an_aspect_ratio_grows_the_short_sides_evenly(client: TestClient) -> None:
    result = image_of(edit(client, {"aspect_ratio": "16:9"}, source_png((64, 64))))
    assert result.size == (114, 64)
    original = np.asarray(decode(source_png((64, 64))).convert("RGB"))
    assert np.array_equal(np.asarray(result.crop((25, 0, 89, 64))), original)
    tall = image_of(edit(client, {"aspect_ratio": "1:2"}, source_png((40, 24))))
    assert tall.size == (40, 80)
    assert np.array_equal(np.asarray(tall.crop((0, 28, 40, 52))), np.asarray(decode(source_png()).convert("RGB")))


def test_jpeg_keeps_the_original_within_its_encoding(client: TestClient) -> None:
    result = image_of(edit(client, {"right": 24}, source_png((64, 64)), output_format="jpeg"))
    assert result.size == (88, 64)
    original = np.asarray(decode(source_png((64, 64))).convert("RGB"), dtype=np.int16)
    kept = np.asarray(result.crop((0, 0, 64, 64)).convert("RGB"), dtype=np.int16)
    assert np.abs(kept - original).mean() < 6


def test_the_builtin_model_outpaints(settings: Settings) -> None:
    app = create_app(settings.with_overrides(models=default_models(), default_model="limner-emoji-32"))
    with TestClient(app) as client:
        result = image_of(edit(client, {"left": 32, "right": 32}, source_png((64, 64)), model="limner-emoji-32"))
    assert result.size == (128, 64)
    original = np.asarray(decode(source_png((64, 64))).convert("RGB"))
    assert np.array_equal(np.asarray(result.convert("RGB").crop((32, 0, 96, 64))), original)
    painted = np.asarray(result.convert("RGB").crop((0, 0, 32, 64)), dtype=np.int16)
    stretched = np.repeat(original[:, :1].astype(np.int16), 32, axis=1)
    changed = (np.abs(painted - stretched).max(axis=2) > 30).mean()
    assert changed > 0.02, f"the model painted there, not the stretched start ({changed:.1%} of it changed)"


@pytest.mark.parametrize(
    ("expand", "fields", "status", "code", "param", "words"),
    [
        ({"left": 8}, {"size": "64x64"}, 400, "invalid_value", "size", "With expand the result is the grown canvas"),
        ({"left": 8, "aspect_ratio": "16:9"}, {}, 400, "invalid_value", "expand", "not both"),
        ({}, {}, 400, "invalid_value", "expand", "at least one side"),
        ({"left": -4}, {}, 400, "invalid_value", "expand", "0 to 4096 pixels on a side"),
        ({"aspect_ratio": "wide"}, {}, 400, "invalid_value", "expand.aspect_ratio", "Invalid aspect ratio 'wide'"),
        ({"aspect_ratio": "5:3"}, {}, 400, "invalid_value", "expand", "already has aspect ratio 5:3"),
        ({"left": 4000, "right": 4000}, {}, 400, "invalid_value", "expand", "would be 8040x24"),
        ({"left": 8}, {"model": "flat"}, 400, "unsupported_value", "expand", "Model 'flat' cannot outpaint"),
        ({"top": "8"}, {}, 400, "invalid_value", "expand.top", ""),
        ({"left": 8, "spread": 2}, {}, 400, "invalid_value", "expand.spread", ""),
    ],
)
def test_refusals(
    client: TestClient,
    recorder: RecordingEngine,
    expand: dict[str, Any],
    fields: dict[str, str],
    status: int,
    code: str,
    param: str,
    words: str,
) -> None:
    response = edit(client, expand, None, **fields)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert (error["code"], error["param"]) == (code, param)
    assert words in error["message"]
    assert recorder.requests == []


def test_expand_with_a_mask_is_refused(client: TestClient) -> None:
    data = {"prompt": "x", "expand": json.dumps({"left": 8})}
    files = [("image", ("in.png", source_png(), "image/png")), ("mask", ("m.png", source_png(), "image/png"))]
    response = client.post(URL, files=files, data=data)
    assert response.status_code == 400
    assert (response.json()["error"]["param"], response.json()["error"]["message"]) == (
        "expand",
        "expand makes its own mask (the new area); omit mask.",
    )


def test_expand_takes_one_image(client: TestClient) -> None:
    files = [("image[]", (f"{i}.png", source_png(), "image/png")) for i in range(2)]
    response = client.post(URL, files=files, data={"prompt": "x", "expand": json.dumps({"left": 8})})
    assert response.status_code == 400
    assert (response.json()["error"]["param"], response.json()["error"]["message"]) == (
        "expand",
        "expand takes exactly one image (an edit).",
    )

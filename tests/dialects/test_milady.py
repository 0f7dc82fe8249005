"""Milady ``POST /api/v1/generate-image``: every field, value, default, limit, response shape and error."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from limner.core.models import Mode, SizeSpec
from limner.core.styles import PRESETS
from limner.dialects.milady import GenerateImageParams, parse, to_image_request
from tests.dialects.conftest import decode, image_bytes
from tests.support.fakes import RecordingEngine, fail_storage

URL = "/api/v1/generate-image"
RATIOS = {"1:1": 1.0, "16:9": 16 / 9, "9:16": 9 / 16, "4:3": 4 / 3, "3:4": 3 / 4, "21:9": 21 / 9, "9:21": 9 / 21}
SOURCE = "data:image/png;base64," + base64.b64encode(image_bytes((10, 200, 10), (80, 60))).decode()

REFERENCE_MODELS = (
    "google/gemini-2.5-flash-image",
    "google/gemini-3.1-flash-image-preview",
    "google/gemini-3-pro-image",
    "openai/gpt-5-nano",
    "bfl/flux-kontext-max",
)
"""The reference's model list: every one answers on a default server (they are catalog aliases)."""


def error_of(response: Any, status: int) -> str:
    assert response.status_code == status, response.text
    payload = response.json()
    assert isinstance(payload["error"], str)
    return str(payload["error"])


def test_translation_defaults() -> None:
    params = parse({"prompt": "A serene mountain landscape at sunset"})
    assert params == GenerateImageParams(prompt="A serene mountain landscape at sunset")
    request = to_image_request(params, "alice")
    assert request.model == "google/gemini-2.5-flash-image"
    assert request.n == 1
    assert request.size == SizeSpec(aspect_ratio="1:1", resolution="1K")
    assert request.style is None and request.images == [] and request.output_format == "png"
    assert (request.dialect, request.consumer) == ("milady", "alice")


def test_reference_request_and_response_shape(client: TestClient) -> None:
    response = client.post(
        URL,
        json={
            "prompt": "A serene mountain landscape at sunset",
            "model": "google/gemini-2.5-flash-image",
            "aspectRatio": "1:1",
            "numImages": 1,
        },
    )
    assert response.status_code == 200
    payload = response.json()
    assert list(payload) == ["images", "numImages"] and payload["numImages"] == 1
    (item,) = payload["images"]
    assert list(item) == ["url", "text", "mimeType", "fileSize"]
    assert item["url"].startswith("http://testserver/media/") and "signature=" in item["url"]
    assert (item["text"], item["mimeType"]) == ("", "image/png")
    data = client.get(item["url"]).content
    assert item["fileSize"] == len(data)
    image = decode(data)
    assert (image.format, image.size) == ("PNG", (1024, 1024))


@pytest.mark.parametrize(("ratio", "value"), RATIOS.items())
def test_every_aspect_ratio(client: TestClient, ratio: str, value: float) -> None:
    item = client.post(URL, json={"prompt": "x", "aspectRatio": ratio}).json()["images"][0]
    width, height = decode(client.get(item["url"]).content).size
    assert abs(width / height - value) < 0.01
    assert abs(width * height / 1024**2 - 1) < 0.02, "about one megapixel"


@pytest.mark.parametrize("ratio", ["2:1", "4:5", "3:2", "1:1 ", "auto", "", 1])
def test_other_aspect_ratios_are_refused(client: TestClient, ratio: Any) -> None:
    assert "aspectRatio" in error_of(client.post(URL, json={"prompt": "x", "aspectRatio": ratio}), 400)


@pytest.mark.parametrize("count", [1, 2, 3, 4])
def test_num_images(client: TestClient, count: int) -> None:
    payload = client.post(URL, json={"prompt": "Cyberpunk cityscape at night", "numImages": count}).json()
    assert payload["numImages"] == count == len(payload["images"])
    assert len({item["url"] for item in payload["images"]}) == count, "each image of the batch differs"


@pytest.mark.parametrize("count", [0, 5, -1, 2.5, "many"])
def test_num_images_out_of_range(client: TestClient, count: Any) -> None:
    assert "numImages" in error_of(client.post(URL, json={"prompt": "x", "numImages": count}), 400)


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_style_preset_transforms_every_image(
    recording: TestClient, recorder: RecordingEngine, preset: str
) -> None:
    response = recording.post(URL, json={"prompt": "Portrait of a woman", "stylePreset": preset, "numImages": 2})
    assert response.status_code == 200
    request = recorder.requests[-1]
    expected, negative = PRESETS[preset].apply("Portrait of a woman", None)
    assert (request.prompt, request.negative_prompt, request.n) == (expected, negative, 2)
    if preset != "none":
        assert request.prompt != "Portrait of a woman"


def test_unknown_style_preset(client: TestClient) -> None:
    message = error_of(client.post(URL, json={"prompt": "x", "stylePreset": "cubism"}), 400)
    assert message.startswith("Unknown style preset 'cubism'") and "3d-model" in message


@pytest.mark.parametrize("model", REFERENCE_MODELS)
def test_every_listed_model(client: TestClient, model: str) -> None:
    assert client.post(URL, json={"prompt": "x", "model": model}).status_code == 200


@pytest.mark.parametrize("model", ["gpt-9", "", 7, None])
def test_invalid_model(client: TestClient, model: Any) -> None:
    assert error_of(client.post(URL, json={"prompt": "x", "model": model}), 400).startswith("Invalid model")


@pytest.mark.parametrize("prompt", [None, "", "   ", 42, ["a"]])
def test_invalid_prompt(client: TestClient, prompt: Any) -> None:
    payload = {"prompt": prompt} if prompt is not None else {}
    assert error_of(client.post(URL, json=payload), 400).startswith("Invalid prompt")


def test_source_image_is_image_to_image(recording: TestClient, recorder: RecordingEngine) -> None:
    response = recording.post(URL, json={"prompt": "Transform this into a watercolor painting", "sourceImage": SOURCE})
    assert response.status_code == 200
    request = recorder.requests[-1]
    assert request.mode is Mode.EDIT
    assert request.images[0].size == (80, 60) and request.images[0].getpixel((0, 0)) == (10, 200, 10)


@pytest.mark.parametrize(
    "source",
    [
        base64.b64encode(image_bytes()).decode(),  # base64 without the data: prefix
        "https://example.com/a.png",
        "data:image/png,rawbytes",  # not base64
        "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAA...",  # the reference's elided example
        "data:image/png;base64,",
    ],
)
def test_source_image_must_be_a_base64_data_url_of_an_image(client: TestClient, source: str) -> None:
    response = client.post(URL, json={"prompt": "x", "sourceImage": source})
    assert error_of(response, 400)
    assert response.json()["code"] == "invalid_image"


def test_unknown_fields_are_ignored(client: TestClient) -> None:
    assert client.post(URL, json={"prompt": "x", "seed": 3, "quality": "hd"}).status_code == 200


def test_storage_failure_falls_back_to_inline_base64(app: FastAPI, client: TestClient) -> None:
    fail_storage(app)
    payload = client.post(URL, json={"prompt": "x", "numImages": 2}).json()
    assert payload["numImages"] == 2
    for item in payload["images"]:
        assert item["url"] is None
        prefix, data = item["image"].split(",", 1)
        assert prefix == "data:image/png;base64"
        raw = base64.b64decode(data)
        assert item["fileSize"] == len(raw)
        assert decode(raw).size == (1024, 1024)


def test_malformed_json(client: TestClient) -> None:
    response = client.post(URL, content=b"not json", headers={"content-type": "application/json"})
    assert error_of(response, 400) == "Request body is not valid JSON."

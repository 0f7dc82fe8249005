"""Milady ``POST /api/v1/generate-image``: every field, value, default, limit, response shape and error."""

from __future__ import annotations

import base64
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from limner.core.models import Mode, SizeSpec
from limner.core.styles import PRESETS
from limner.dialects.milady import PROMPT_LIMIT, GenerateImageParams, parse, to_image_request
from limner.service.media_access import PERMANENT_EXPIRY
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


@pytest.mark.parametrize("count", ["2", 2.0, True, [2]])
def test_num_images_must_be_an_integer(client: TestClient, count: Any) -> None:
    """The reference types it integer: a string, a float or a boolean is not one, even when it could pass."""
    message = error_of(client.post(URL, json={"prompt": "x", "numImages": count}), 400)
    assert message.startswith("Invalid value for 'numImages'") and "valid integer" in message


def test_prompt_length_is_capped(recording: TestClient, recorder: RecordingEngine) -> None:
    assert recording.post(URL, json={"prompt": "a" * PROMPT_LIMIT}).status_code == 200
    assert len(recorder.requests[-1].prompt) == PROMPT_LIMIT
    message = error_of(recording.post(URL, json={"prompt": "a" * (PROMPT_LIMIT + 1)}), 400)
    assert message == f"Invalid prompt: prompt must be at most {PROMPT_LIMIT} characters; got {PROMPT_LIMIT + 1}."


def test_text_that_is_not_unicode_is_an_invalid_prompt(client: TestClient) -> None:
    raw = b'{"prompt": "cat \\ud800"}'
    response = client.post(URL, content=raw, headers={"content-type": "application/json"})
    message = error_of(response, 400)
    assert message.startswith("Invalid prompt: ") or "not valid UTF-8" in message
    assert "Traceback" not in response.text and "surrogate" in message


def test_urls_are_permanent(app: FastAPI, client: TestClient) -> None:
    """The reference calls ``url`` a permanent link: it outlives ``url_ttl_seconds`` by any margin."""
    url = client.post(URL, json={"prompt": "a lighthouse"}).json()["images"][0]["url"]
    query = parse_qs(urlsplit(url).query)
    key = urlsplit(url).path.rsplit("/", 1)[1]
    assert int(query["expires"][0]) == PERMANENT_EXPIRY
    signer = app.state.limner.signer
    in_fifty_years = time.time() + 50 * 365 * 86400
    assert signer.verify(key, query["expires"][0], query["signature"][0], now=in_fifty_years)
    assert decode(client.get(url).content).format == "PNG"
    assert client.get(url.replace("signature=", "signature=x")).status_code == 403, "still unguessable"
    openai_url = client.post("/v1/images/generations", json={"prompt": "x", "model": "dall-e-2"}).json()
    expires = int(parse_qs(urlsplit(openai_url["data"][0]["url"]).query)["expires"][0])
    assert expires <= time.time() + app.state.limner.settings.url_ttl_seconds + 5, "other dialects keep the TTL"


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

"""The OpenAI dialect in-process: what its fields ask of the engine, what its answers report, and the
envelope of the errors raised before (or instead of) a handler."""

from __future__ import annotations

import base64
import io
import typing
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from limner.app import create_app
from limner.config.defaults import DIALECT_DEFAULT_ALIASES
from limner.core.models import EngineRequest, GeneratedImage
from limner.dialects.openai.protocol import REPORTED_BACKGROUNDS, REPORTED_QUALITIES
from limner.engines.catalog import ModelEntry
from limner.settings import Settings
from tests.dialects.conftest import decode
from tests.support.fakes import RecordingEngine, consumer_from_header, factories

URL = "/v1/images/generations"


class AlphaEngine(RecordingEngine):
    """The test pattern with a half-transparent left half, as a model that paints stickers would."""

    async def generate(self, request: EngineRequest) -> list[GeneratedImage]:
        images = await super().generate(request)
        for item in images:
            rgba = item.image.convert("RGBA")
            rgba.paste((0, 0, 0, 0), (0, 0, rgba.width // 2, rgba.height))
            item.image = rgba
        return images


@pytest.fixture
def alpha(settings: Settings) -> Iterator[TestClient]:
    entry = ModelEntry(id="alpha", engine="alpha", aliases=list(DIALECT_DEFAULT_ALIASES))
    app = create_app(
        settings.with_overrides(models=[entry], default_model="alpha"),
        factories=factories(alpha=lambda e: AlphaEngine()),
    )
    consumer_from_header(app)
    with TestClient(app) as client:
        yield client


def b64_image(payload: dict[str, Any]) -> Image.Image:
    return decode(base64.b64decode(payload["data"][0]["b64_json"]))


@pytest.mark.parametrize(
    ("fields", "reported", "mode"),
    [
        ({}, "transparent", "RGBA"),
        ({"background": "transparent"}, "transparent", "RGBA"),
        ({"background": "opaque"}, "opaque", "RGB"),
        ({"output_format": "jpeg"}, "opaque", "RGB"),
    ],
)
def test_background_reports_whether_the_image_kept_its_alpha(
    alpha: TestClient, fields: dict[str, Any], reported: str, mode: str
) -> None:
    response = alpha.post(URL, json={"model": "gpt-image-2", "prompt": "a sticker", "size": "64x64", **fields})
    assert response.status_code == 200, response.text
    assert response.json()["background"] == reported
    assert b64_image(response.json()).mode == mode


def test_complexity_high_runs_more_steps(recording: TestClient, recorder: RecordingEngine) -> None:
    for complexity, effort, steps in (("high", "high", 20), ("medium", "normal", None), ("low", "normal", None)):
        body = {"model": "gpt-image-2", "prompt": "x", "size": "64x64", "complexity": complexity}
        assert recording.post(URL, json=body).status_code == 200
        assert (recorder.requests[-1].effort, recorder.requests[-1].steps) == (effort, steps)


def test_quality_reaches_the_engine_as_asked(recording: TestClient, recorder: RecordingEngine) -> None:
    for quality in ("xhigh", "max", "low"):
        response = recording.post(URL, json={"model": "gpt-image-2.5-flare", "prompt": "x", "quality": quality})
        assert response.json()["quality"] == quality
        assert recorder.requests[-1].quality == quality


def test_dalle_answers_keep_their_shape(client: TestClient) -> None:
    payload = client.post(URL, json={"model": "dall-e-3", "prompt": "a fox", "size": "64x64"}).json()
    assert set(payload["data"][0]) == {"url", "revised_prompt", "seed"}
    assert payload["data"][0]["revised_prompt"] == "a fox"
    assert "usage" not in payload and "safety_identifier" not in payload
    dalle2 = client.post(URL, json={"model": "dall-e-2", "prompt": "a fox", "size": "64x64"}).json()
    assert "revised_prompt" not in dalle2["data"][0]


def sdk_literals(field: str) -> set[str]:
    """The values the ``openai`` SDK types ``ImagesResponse.<field>`` with."""
    from openai.types import ImagesResponse

    annotation = ImagesResponse.model_fields[field].annotation
    return {value for arg in typing.get_args(annotation) for value in typing.get_args(arg)}


def test_reported_words_are_the_sdks() -> None:
    assert set(REPORTED_QUALITIES) == sdk_literals("quality") == {"low", "medium", "high", "xhigh", "max"}
    assert set(REPORTED_BACKGROUNDS) == sdk_literals("background") == {"transparent", "opaque"}


@pytest.mark.parametrize("model", ["dall-e-2", "dall-e-3"])
@pytest.mark.parametrize(
    ("fields", "reported"),
    [
        ({"quality": "hd"}, {}),
        ({"quality": "standard"}, {}),
        ({"quality": "auto", "background": "auto"}, {}),
        ({"quality": "high", "background": "opaque"}, {"quality": "high", "background": "opaque"}),
        # asked for, not made: the test-pattern engine draws no alpha, and the answer says what it delivered
        ({"background": "transparent"}, {"background": "opaque"}),
    ],
)
def test_dalle_answers_use_only_openais_published_words(
    client: TestClient, model: str, fields: dict[str, str], reported: dict[str, str]
) -> None:
    response = client.post(URL, json={"model": model, "prompt": "a fox", "size": "64x64", **fields})
    assert response.status_code == 200, response.text
    payload = response.json()
    assert {name: payload[name] for name in ("quality", "background") if name in payload} == reported
    assert payload.get("quality", "low") in sdk_literals("quality")
    assert payload.get("background", "opaque") in sdk_literals("background")


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("n", "2", "Invalid value for 'n' \"2\": Input should be a valid integer."),
        ("n", 2.0, "Invalid value for 'n' 2.0: Input should be a valid integer."),
        ("n", True, "Invalid value for 'n' true: Input should be a valid integer."),
        ("stream", "true", "Invalid value for 'stream' \"true\": Input should be a valid boolean."),
        ("seed", "7", "Invalid value for 'seed' \"7\": Input should be a valid integer."),
    ],
)
def test_mistyped_json_is_refused_naming_the_field(client: TestClient, field: str, value: Any, message: str) -> None:
    response = client.post(URL, json={"model": "dall-e-2", "prompt": "x", "size": "64x64", field: value})
    assert response.status_code == 400, response.text
    assert response.json()["error"] == {
        "message": message,
        "type": "invalid_request_error",
        "param": field,
        "code": "invalid_value",
    }


def test_form_fields_are_still_read_from_text(client: TestClient) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32)).save(buffer, "PNG")
    fields = {"prompt": "x", "n": "2", "size": "64x64", "response_format": "b64_json", "seed": "7"}
    for path in ("/v1/images/edits", "/v1/images/variations"):
        data = {name: value for name, value in fields.items() if path.endswith("edits") or name != "prompt"}
        response = client.post(path, data=data, files=[("image", ("a.png", buffer.getvalue(), "image/png"))])
        assert response.status_code == 200, (path, response.text)
        assert [item["seed"] for item in response.json()["data"]] == [7, 8]


def test_edit_form_spelling_of_svg_is_refused_by_name(client: TestClient) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32)).save(buffer, "PNG")
    response = client.post(
        "/v1/images/edits",
        data={"prompt": "x", "svg[model]": "gpt-5", "svg[reasoning][effort]": "low"},
        files=[("image", ("a.png", buffer.getvalue(), "image/png"))],
    )
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "svg"
    assert response.json()["error"]["code"] == "unsupported_value"


# --- errors raised before a handler: wrong methods, authentication -----------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "allow", "fields"),
    [
        ("GET", "/v1/images/variations", "POST", {"message", "type", "param", "code"}),
        ("DELETE", "/v1/models/dall-e-2", "GET", {"message", "type", "param", "code"}),
        ("GET", "/api/images/generations", "POST", {"message", "type", "param", "code"}),
        ("GET", "/v1/images/generations", "POST", {"message", "type", "param", "code", "request_id"}),
        ("PUT", "/v1/images/edits", "POST", {"message", "type", "param", "code", "request_id"}),
        ("POST", "/v1/models", "GET", {"message", "type", "param", "code", "request_id"}),
        ("GET", "/v1/generation/images", "POST", {"code", "message", "request_id"}),
        ("POST", "/v1/media/images/x", "GET", {"code", "message", "request_id"}),
    ],
)
def test_a_wrong_method_answers_in_the_paths_envelope(
    client: TestClient, method: str, path: str, allow: str, fields: set[str]
) -> None:
    response = client.request(method, path)
    assert response.status_code == 405
    assert response.headers["allow"] == allow
    error = response.json()["error"]
    assert set(error) == fields
    assert error["message"] == f"Method {method} is not allowed on {path}; use {allow}."


def test_a_wrong_method_on_milady_answers_in_its_envelope(client: TestClient) -> None:
    response = client.get("/api/v1/generate-image")
    assert (response.status_code, response.headers["allow"]) == (405, "POST")
    assert response.json() == {
        "error": "Method GET is not allowed on /api/v1/generate-image; use POST.",
        "code": "unknown_request",
    }


def test_an_sdk_request_on_a_shared_path_gets_openai_envelope(client: TestClient) -> None:
    response = client.post("/v1/models", headers={"X-Stainless-Lang": "python"})
    assert response.status_code == 405
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}


def test_aigne_hub_answers_in_the_shape_of_the_model_it_names(client: TestClient) -> None:
    gpt = client.post("/api/images/generations", json={"model": "gpt-image-1", "prompt": "x", "quality": "low"}).json()
    assert (gpt["quality"], gpt["usage"]["output_tokens"]) == ("low", 272)
    dalle = client.post("/api/images/generations", json={"prompt": "x", "size": "256x256"}).json()
    assert "quality" not in dalle and "usage" not in dalle
    assert set(dalle["data"][0]) == {"url", "seed"}

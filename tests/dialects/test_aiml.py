"""AI.ML ``POST /v1/generation/images`` and ``GET /v1/media/images/{path}``: every field, value and error."""

from __future__ import annotations

import base64
import re
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from limner.app import create_app
from limner.core.models import Mode, SizeSpec
from limner.dialects.aiml import GenerationParams, media_path, size_spec, to_image_request
from limner.engines.catalog import ModelEntry
from limner.engines.testpattern import pattern
from limner.settings import Settings
from tests.dialects.conftest import decode, image_bytes
from tests.support.fakes import RecordingEngine, SingleInputEngine, factories, fail_storage

URL = "/v1/generation/images"
MEDIA_PATH = re.compile(r"^/v1/media/images/local%2Fimages%2F[0-9a-f]{64}\.png$")


def body(**fields: Any) -> dict[str, Any]:
    return {"model": "image-gen.pro-1.0", "prompt": "a forest at sunrise", **fields}


def data_url(color: tuple[int, int, int], size: tuple[int, int] = (64, 48)) -> str:
    return "data:image/png;base64," + base64.b64encode(image_bytes(color, size)).decode()


def fetch_image(client: TestClient, backend_url: str, consumer: str | None = None) -> bytes:
    headers = {"x-test-consumer": consumer} if consumer else {}
    resolved = client.get(backend_url, headers=headers)
    assert resolved.status_code == 200, resolved.text
    presigned = resolved.json()["url"]
    assert presigned.startswith("http://testserver/media/") and "signature=" in presigned
    expires = int(parse_qs(urlsplit(presigned).query)["expires"][0])
    assert time.time() < expires <= time.time() + 3600, "presigned links expire (url_ttl_seconds)"
    download = client.get(presigned)
    assert download.status_code == 200
    return download.content


def error_of(response: Any, status: int, code: str = "invalid_request") -> str:
    assert response.status_code == status, response.text
    payload = response.json()["error"]
    assert payload["code"] == code
    assert payload["request_id"] == response.headers["x-request-id"]
    return str(payload["message"])


# --- translation --------------------------------------------------------------------------------


def test_translation_defaults() -> None:
    params = GenerationParams.model_validate(body())
    assert (params.image, params.sequential_image_generation, params.response_format) == (None, "disabled", "url")
    assert (params.size, params.stream, params.watermark) == (None, False, False)
    request = to_image_request(params, "alice")
    assert (request.model, request.prompt, request.dialect, request.consumer) == (
        "image-gen.pro-1.0",
        "a forest at sunrise",
        "aiml",
        "alice",
    )
    assert request.n == 1 and request.size == SizeSpec() and request.watermark is False


@pytest.mark.parametrize(
    ("size", "has_images", "spec"),
    [
        ("1K", False, SizeSpec(resolution="1K")),
        ("2K", False, SizeSpec(resolution="2K")),
        ("4K", False, SizeSpec(resolution="4K")),
        ("2k", False, SizeSpec(resolution="2K")),
        ("2K", True, SizeSpec(aspect_ratio="auto", resolution="2K")),
        ("1024x768", False, SizeSpec(1024, 768)),
        ("1024x768", True, SizeSpec(1024, 768)),
    ],
)
def test_size_values(size: str, has_images: bool, spec: SizeSpec) -> None:
    assert size_spec(size, has_images=has_images) == spec


def test_media_path_is_one_percent_encoded_segment() -> None:
    key = "a" * 64 + ".png"
    assert media_path("orgs/64", key) == f"/v1/media/images/orgs%2F64%2Fimages%2F{key}"


# --- over HTTP ------------------------------------------------------------------------------------


def test_text_to_image_url_resolves_to_a_presigned_download(client: TestClient) -> None:
    response = client.post(URL, json=body())
    assert response.status_code == 200
    payload = response.json()
    assert list(payload) == ["data"] and list(payload["data"]) == ["image"]
    url = payload["data"]["image"]["url"]
    assert MEDIA_PATH.match(url), url
    image = decode(fetch_image(client, url))
    assert (image.format, image.size) == ("PNG", (256, 256)), "no size: the model's default"


@pytest.mark.parametrize(("size", "pixels"), [("1K", (1024, 1024)), ("2K", (2048, 2048)), ("640x480", (640, 480))])
def test_sizes(client: TestClient, size: str, pixels: tuple[int, int]) -> None:
    response = client.post(URL, json=body(size=size, response_format="b64_json"))
    assert decode(base64.b64decode(response.json()["data"]["image"]["b64_json"])).size == pixels


def test_4k(recording: TestClient, recorder: RecordingEngine) -> None:
    response = recording.post(URL, json=body(size="4K", response_format="presigned_url"))
    assert response.status_code == 200
    assert (recorder.requests[-1].width, recorder.requests[-1].height) == (4096, 4096)


@pytest.mark.parametrize("size", ["3K", "big", "0x0", "", "2K2"])
def test_bad_sizes(client: TestClient, size: str) -> None:
    message = error_of(client.post(URL, json=body(size=size)), 400)
    assert "1K, 2K, 4K or WIDTHxHEIGHT" in message or "positive" in message


def test_size_beyond_the_model_limits(client: TestClient) -> None:
    assert "not supported by this model" in error_of(client.post(URL, json=body(size="8192x8192")), 400)


def test_presigned_url_downloads_without_auth(client: TestClient) -> None:
    url = client.post(URL, json=body(response_format="presigned_url")).json()["data"]["image"]["url"]
    assert url.startswith("http://testserver/media/")
    assert decode(client.get(url).content).format == "PNG"


def test_b64_json(client: TestClient) -> None:
    image = client.post(URL, json=body(response_format="b64_json")).json()["data"]["image"]
    assert list(image) == ["b64_json"]
    assert decode(base64.b64decode(image["b64_json"])).format == "PNG"


@pytest.mark.parametrize("value", ["jpeg", "URL", "", None])
def test_bad_response_format(client: TestClient, value: Any) -> None:
    assert "response_format" in error_of(client.post(URL, json=body(response_format=value)), 400)


def test_one_image_is_an_edit(recording: TestClient, recorder: RecordingEngine) -> None:
    response = recording.post(URL, json=body(image=data_url((255, 0, 0)), response_format="b64_json"))
    assert response.status_code == 200
    request = recorder.requests[-1]
    assert request.mode is Mode.EDIT and len(request.images) == 1


def test_several_images_compose_in_order(recording: TestClient, recorder: RecordingEngine) -> None:
    colors = [(255, 0, 0), (0, 0, 255), (0, 255, 0)]
    response = recording.post(URL, json=body(image=[data_url(color) for color in colors], size="1K"))
    assert response.status_code == 200
    request = recorder.requests[-1]
    assert request.mode is Mode.COMPOSE
    assert [image.getpixel((0, 0)) for image in request.images] == colors, "image 1 is the first URL"
    assert abs(request.width / request.height - 4 / 3) < 0.01, "a preset keeps image 1's shape"
    assert abs(request.width * request.height / 1024**2 - 1) < 0.01, "at the preset's area"


def test_engines_that_take_one_image(settings: Settings) -> None:
    """Several images reach a one-image engine side by side (image 1 leftmost) or are a clear 400."""
    engine = SingleInputEngine()
    models = [ModelEntry(id="layout", engine="single"), ModelEntry(id="strict", engine="single", compose="none")]
    app = create_app(settings.with_overrides(models=models), factories=factories(single=lambda entry: engine))
    images = [data_url((255, 0, 0), (40, 40)), data_url((0, 0, 255), (40, 40))]
    with TestClient(app) as client:
        assert client.post(URL, json=body(model="layout", image=images)).status_code == 200
        (laid_out,) = engine.requests[-1].images
        assert engine.requests[-1].mode is Mode.EDIT and laid_out.size == (80, 40)
        assert (laid_out.getpixel((0, 0)), laid_out.getpixel((79, 0))) == ((255, 0, 0), (0, 0, 255))
        message = error_of(client.post(URL, json=body(model="strict", image=images)), 400, "unsupported")
        assert "takes at most 1 input image(s); got 2" in message


def test_image_list_limits(client: TestClient) -> None:
    assert "at least one" in error_of(client.post(URL, json=body(image=[])), 400)
    many = [data_url((1, 2, 3))] * 17
    assert "At most 16 images" in error_of(client.post(URL, json=body(image=many)), 400)


def test_undecodable_image(client: TestClient) -> None:
    message = error_of(client.post(URL, json=body(image="data:image/png;base64,AAAA")), 400, "invalid_image")
    assert message.startswith("image:")
    message = error_of(client.post(URL, json=body(image=[data_url((1, 1, 1)), "ftp://x/y.png"])), 400, "invalid_image")
    assert message.startswith("image 2:")


def test_sequential_image_generation(client: TestClient) -> None:
    assert client.post(URL, json=body(sequential_image_generation="disabled")).status_code == 200
    assert "not enabled" in error_of(client.post(URL, json=body(sequential_image_generation="enabled")), 400)
    assert "sequential_image_generation" in error_of(
        client.post(URL, json=body(sequential_image_generation="auto")), 400
    )


def test_stream(client: TestClient) -> None:
    """``stream: true`` answers server-sent events (see ``tests/integration/test_streaming.py``)."""
    assert client.post(URL, json=body(stream=False)).status_code == 200
    streamed = client.post(URL, json=body(stream=True))
    assert streamed.status_code == 200 and streamed.headers["content-type"].startswith("text/event-stream")
    assert "event: completed" in streamed.text
    assert "Unknown model" in error_of(client.post(URL, json=body(stream=True, model="nope")), 400, "model_not_found")


def test_watermark_marks_the_bottom_right_corner(recording: TestClient, recorder: RecordingEngine) -> None:
    for watermark in (False, True):
        response = recording.post(URL, json=body(size="512x512", watermark=watermark, response_format="b64_json"))
        image = decode(base64.b64decode(response.json()["data"]["image"]["b64_json"])).convert("RGB")
        request = recorder.requests[-1]
        plain = pattern(request.prompt, request.seeds[0], 512, 512)
        grid = [(x, y) for x in range(0, 512, 4) for y in range(0, 512, 4)]
        diff = [(x, y) for x, y in grid if image.getpixel((x, y)) != plain.getpixel((x, y))]
        if watermark:
            assert diff and min(x for x, _ in diff) > 256 and min(y for _, y in diff) > 400
        else:
            assert diff == []


@pytest.mark.parametrize(
    ("fields", "fragment"),
    [
        ({"model": None}, "model"),
        ({"prompt": None}, "prompt"),
        ({"prompt": ""}, "prompt"),
        ({"watermark": "maybe"}, "watermark"),
        ({"n": 2}, "Unrecognized request argument supplied: 'n'"),
    ],
)
def test_bad_fields(client: TestClient, fields: dict[str, Any], fragment: str) -> None:
    payload = {key: value for key, value in body(**fields).items() if value is not None}
    assert fragment in error_of(client.post(URL, json=payload), 400)


def test_missing_fields_name_them(client: TestClient) -> None:
    assert error_of(client.post(URL, json={"prompt": "x"}), 400) == "Missing required parameter: 'model'."
    assert error_of(client.post(URL, json={"model": "pattern"}), 400) == "Missing required parameter: 'prompt'."


def test_unknown_model_is_400(client: TestClient) -> None:
    assert "Unknown model 'sdxl'" in error_of(client.post(URL, json=body(model="sdxl")), 400, "model_not_found")


def test_malformed_json(client: TestClient) -> None:
    response = client.post(URL, content=b"{oops", headers={"content-type": "application/json"})
    assert error_of(response, 400) == "Request body is not valid JSON."


# --- the media resolver ------------------------------------------------------------------------------


def test_media_belongs_to_its_consumer(client: TestClient) -> None:
    url = client.post(URL, json=body(), headers={"x-test-consumer": "alice"}).json()["data"]["image"]["url"]
    assert "/v1/media/images/alice%2Fimages%2F" in url
    assert decode(fetch_image(client, url, "alice")).format == "PNG"
    unknown = url[: url.rindex("%2F") + 3] + "0" * 64 + ".png"
    # Someone else's image answers exactly as an image that does not exist: a 403 would tell bob that
    # the key is alice's (and that alice's key made it).
    for consumer in ("bob", None):
        headers = {"x-test-consumer": consumer} if consumer else {}
        theirs, missing = client.get(url, headers=headers), client.get(unknown, headers=headers)
        assert error_of(theirs, 404, "not_found") == error_of(missing, 404, "not_found") == "No such image."


def test_unknown_and_malformed_media_paths_are_404(client: TestClient) -> None:
    for path in (
        "/v1/media/images/local%2Fimages%2F" + "0" * 64 + ".png",
        "/v1/media/images/local%2Fimages%2F..%2F..%2Fsigning.key",
        "/v1/media/images/nothing",
        "/v1/media/images/",
    ):
        error_of(client.get(path), 404, "not_found")


def test_owner_segment_must_match(client: TestClient) -> None:
    url = client.post(URL, json=body()).json()["data"]["image"]["url"]
    error_of(client.get(url.replace("local%2F", "mallory%2F")), 404, "not_found")


def test_a_backend_media_path_can_be_edited_again(recording: TestClient, recorder: RecordingEngine) -> None:
    url = recording.post(URL, json=body(size="96x64")).json()["data"]["image"]["url"]
    response = recording.post(URL, json=body(image=url, prompt="make it blue"))
    assert response.status_code == 200, response.text
    assert recorder.requests[-1].images[0].size == (96, 64)
    other = recording.post(URL, json=body(image=url), headers={"x-test-consumer": "bob"})
    assert error_of(other, 404, "not_found") == "No such image."


def test_storage_failure(app: FastAPI, client: TestClient) -> None:
    fail_storage(app)
    assert "could not be stored" in error_of(client.post(URL, json=body()), 500, "internal_error")
    assert client.post(URL, json=body(response_format="presigned_url")).status_code == 500
    inline = client.post(URL, json=body(response_format="b64_json"))
    assert inline.status_code == 200
    assert decode(base64.b64decode(inline.json()["data"]["image"]["b64_json"])).format == "PNG"

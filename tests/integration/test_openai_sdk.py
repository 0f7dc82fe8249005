"""The OpenAI dialect through the official ``openai`` SDK over real HTTP on 127.0.0.1."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from typing import Literal

import httpx
import openai
import pytest
from PIL import Image

from limner.media.encode import read_png_text
from tests.support.sdk import data_of


@pytest.fixture
def client(pattern_server: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=pattern_server + "/v1", api_key="unused", max_retries=0) as sdk:
        yield sdk


def decode(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def png_bytes(
    color: tuple[int, int, int] = (200, 30, 30), size: tuple[int, int] = (64, 64), mode: str = "RGB"
) -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, color if mode == "RGB" else (*color, 255)).save(buffer, "PNG")
    return buffer.getvalue()


def test_generate_urls_download_as_png_of_requested_size(client: openai.OpenAI) -> None:
    result = client.images.generate(model="dall-e-2", prompt="a red apple", n=3, size="256x256")
    assert len(data_of(result)) == 3
    images = [decode(httpx.get(item.url or "").content) for item in data_of(result)]
    assert all(image.format == "PNG" and image.size == (256, 256) for image in images)
    assert len({image.tobytes() for image in images}) == 3, "each image of a batch has its own seed"


def test_generate_b64_json_in_each_output_format(client: openai.OpenAI) -> None:
    formats: list[tuple[Literal["png", "jpeg", "webp"], str]] = [("png", "PNG"), ("jpeg", "JPEG"), ("webp", "WEBP")]
    for fmt, pil_name in formats:
        result = client.images.generate(
            model="pattern", prompt="a cat", response_format="b64_json", output_format=fmt, size="320x192"
        )
        image = decode(base64.b64decode(data_of(result)[0].b64_json or ""))
        assert (image.format, image.size) == (pil_name, (320, 192))
        assert result.output_format == fmt
        assert result.size == "320x192"


def test_gpt_image_models_default_to_base64(client: openai.OpenAI) -> None:
    result = client.images.generate(model="gpt-image-1", prompt="a dog")
    assert data_of(result)[0].b64_json and data_of(result)[0].url is None


def test_same_seed_same_pixels_and_different_seed_different_pixels(client: openai.OpenAI) -> None:
    def pixels(seed: int, prompt: str = "a blue heart") -> bytes:
        result = client.images.generate(
            model="pattern", prompt=prompt, response_format="b64_json", extra_body={"seed": seed}
        )
        return decode(base64.b64decode(data_of(result)[0].b64_json or "")).tobytes()

    assert pixels(42) == pixels(42)
    assert pixels(42) != pixels(43)
    assert pixels(42, "a green tree") != pixels(42)


def test_png_carries_generation_parameters(client: openai.OpenAI) -> None:
    result = client.images.generate(
        model="pattern", prompt="a sun", response_format="b64_json", size="64x64", extra_body={"seed": 7}
    )
    text = read_png_text(base64.b64decode(data_of(result)[0].b64_json or ""))
    assert text["prompt"] == "a sun"
    assert text["seed"] == "7"
    assert text["model"] == "pattern"
    assert text["size"] == "64x64"


def test_edit_with_and_without_mask_and_several_images(client: openai.OpenAI) -> None:
    plain = client.images.edit(
        image=("in.png", png_bytes(), "image/png"), prompt="add a hat", size="128x128", response_format="b64_json"
    )
    assert decode(base64.b64decode(data_of(plain)[0].b64_json or "")).size == (128, 128)
    masked = client.images.edit(
        image=("in.png", png_bytes(), "image/png"),
        mask=("mask.png", png_bytes((0, 0, 0), mode="RGBA"), "image/png"),
        prompt="add a hat",
        n=2,
        response_format="b64_json",
    )
    assert len(data_of(masked)) == 2
    several = client.images.edit(
        image=[("a.png", png_bytes((255, 0, 0)), "image/png"), ("b.png", png_bytes((0, 0, 255)), "image/png")],
        prompt="image 1 next to image 2",
        response_format="url",
    )
    assert decode(httpx.get(data_of(several)[0].url or "").content).format == "PNG"


# The SDK marks images.create_variation deprecated; limner still serves /v1/images/variations, so the test calls it.
@pytest.mark.filterwarnings("ignore:deprecated$:DeprecationWarning")
def test_variation(client: openai.OpenAI) -> None:
    result = client.images.create_variation(image=("in.png", png_bytes(), "image/png"), n=2, size="256x256")
    assert len(data_of(result)) == 2
    assert decode(httpx.get(data_of(result)[0].url or "").content).size == (256, 256)


def test_models_list_and_retrieve(client: openai.OpenAI) -> None:
    ids = {model.id for model in client.models.list()}
    assert {"pattern", "dall-e-2", "gpt-image-1"} <= ids
    assert client.models.retrieve("dall-e-3").id == "dall-e-3"
    with pytest.raises(openai.NotFoundError) as caught:
        client.models.retrieve("no-such-model")
    assert caught.value.code == "model_not_found"


@pytest.mark.parametrize(
    ("kwargs", "param", "fragment"),
    [
        ({"n": 0}, "n", "greater than or equal to 1"),
        ({"n": 11}, "n", "less than or equal to 10"),
        ({"size": "big"}, "size", "Invalid size 'big'"),
        ({"size": "10x10"}, "size", "not supported by this model"),
        ({"output_format": "gif"}, "output_format", "output_format 'gif' is not available on this server"),
        ({"extra_body": {"style_preset": "cubism"}}, "style", "Unknown style preset 'cubism'"),
    ],
)
def test_bad_generation_parameters(client: openai.OpenAI, kwargs: dict, param: str, fragment: str) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.images.generate(model="pattern", prompt="x", **kwargs)
    error = caught.value
    assert error.status_code == 400
    assert error.body["param"] == param  # type: ignore[index]
    assert fragment in error.body["message"]  # type: ignore[index]
    assert error.body["type"] == "invalid_request_error"  # type: ignore[index]


def test_unknown_model_names_it_and_lists_available(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.images.generate(model="sdxl-nope", prompt="x")
    assert caught.value.code == "model_not_found"
    assert "Unknown model 'sdxl-nope'" in caught.value.message
    assert "pattern" in caught.value.message


def test_missing_prompt_malformed_json_and_wrong_content_type(pattern_server: str) -> None:
    url = pattern_server + "/v1/images/generations"
    missing = httpx.post(url, json={"model": "pattern"})
    assert missing.status_code == 400
    assert missing.json()["error"] == {
        "message": "Missing required parameter: 'prompt'.",
        "type": "invalid_request_error",
        "param": "prompt",
        "code": "invalid_value",
    }
    malformed = httpx.post(url, content=b"{not json", headers={"content-type": "application/json"})
    assert malformed.status_code == 400
    assert malformed.json()["error"]["message"] == "Request body is not valid JSON."
    wrong = httpx.post(url, content=b"prompt=x", headers={"content-type": "text/plain"})
    assert wrong.status_code == 400
    assert "Unsupported content type 'text/plain'" in wrong.json()["error"]["message"]


def test_corrupt_and_oversized_images(client: openai.OpenAI, pattern_server: str) -> None:
    with pytest.raises(openai.BadRequestError) as corrupt:
        client.images.edit(image=("in.png", b"\x89PNG\r\n\x1a\nnot really", "image/png"), prompt="x")
    assert corrupt.value.code == "invalid_image"
    assert "image" in corrupt.value.message and "decode" in corrupt.value.message
    with pytest.raises(openai.BadRequestError) as gif:
        buffer = io.BytesIO()
        Image.new("RGB", (8, 8)).save(buffer, "GIF")
        client.images.edit(image=("in.gif", buffer.getvalue(), "image/gif"), prompt="x")
    assert "unsupported format GIF" in gif.value.message


def test_every_response_has_a_request_id(pattern_server: str) -> None:
    ok = httpx.post(pattern_server + "/v1/images/generations", json={"model": "pattern", "prompt": "x"})
    bad = httpx.post(pattern_server + "/v1/images/generations", json={"model": "pattern"})
    assert ok.headers["x-request-id"].startswith("req_")
    assert bad.headers["x-request-id"] != ok.headers["x-request-id"]
    echoed = httpx.get(pattern_server + "/health", headers={"x-request-id": "client-chosen-id-1"})
    assert echoed.headers["x-request-id"] == "client-chosen-id-1"
    assert echoed.json() == {"ok": True}


def test_tampered_and_expired_media_links_are_refused(client: openai.OpenAI) -> None:
    url = data_of(client.images.generate(model="pattern", prompt="x"))[0].url or ""
    assert httpx.get(url).status_code == 200
    tampered = url.replace("signature=", "signature=A")
    assert httpx.get(tampered).status_code == 403
    expired = httpx.get(url.split("?")[0] + "?expires=1&signature=abc")
    assert expired.status_code == 403
    missing = httpx.get(url.split("/media/")[0] + "/media/" + "0" * 64 + ".png?expires=1&signature=abc")
    assert missing.status_code == 403, "an unsigned link says nothing about whether the file exists"

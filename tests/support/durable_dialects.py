"""Every dialect's image POST as a client makes it, for the durable-jobs tests: how to send it (with extra
headers, and a prompt that makes two requests differ), how to read its image and its error envelope, and
the codes it gives limner's errors."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, cast

import httpx
import openai
from PIL import Image

from tests.support.durable import Server, b64_image, decode, png

SOURCE = png((200, 40, 40))

Send = Callable[[Server, str, dict[str, str], str], httpx.Response]


def sdk_response(call: Callable[[], Any]) -> httpx.Response:
    """The raw HTTP response of an official OpenAI SDK call, error or not."""
    try:
        raw = call()
    except openai.APIStatusError as error:
        return cast(httpx.Response, error.response)  # the SDK's httpx may be a vendored copy: the same API
    return cast(httpx.Response, raw.http_response)


def sdk(server: Server, token: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key=token, max_retries=0, timeout=60)


def openai_generation(server: Server, token: str, headers: dict[str, str], prompt: str) -> httpx.Response:
    with sdk(server, token) as client:
        return sdk_response(
            lambda: client.images.with_raw_response.generate(
                prompt=prompt, model="dall-e-2", size="256x256", response_format="b64_json", extra_headers=headers
            )
        )


def openai_edit(server: Server, token: str, headers: dict[str, str], prompt: str) -> httpx.Response:
    with sdk(server, token) as client:
        return sdk_response(
            lambda: client.images.with_raw_response.edit(
                image=("cat.png", SOURCE, "image/png"),
                prompt=prompt,
                size="256x256",
                response_format="b64_json",
                extra_headers=headers,
            )
        )


def openai_variation(server: Server, token: str, headers: dict[str, str], prompt: str) -> httpx.Response:
    """Variations take no prompt: a different request is a different size."""
    size: Literal["256x256", "512x512"] = "256x256" if prompt == "first" else "512x512"
    with sdk(server, token) as client:
        return sdk_response(
            lambda: client.images.with_raw_response.create_variation(
                image=("cat.png", SOURCE, "image/png"), size=size, response_format="b64_json", extra_headers=headers
            )
        )


def imagineart_generation(server: Server, token: str, headers: dict[str, str], prompt: str) -> httpx.Response:
    form = {"prompt": prompt, "aspect_ratio": "1:1", "resolution": "1K", "seed": "7"}
    return server.post("/v1/images/generations", token=token, headers=headers, data=form)


def imagineart_edit(server: Server, token: str, headers: dict[str, str], prompt: str) -> httpx.Response:
    form = {"prompt": prompt, "aspect_ratio": "auto", "resolution": "1K", "seed": "7"}
    files = [("images", ("portrait.png", SOURCE, "image/png"))]
    return server.post("/v1/images/edits", token=token, headers=headers, data=form, files=files)


def aigne(server: Server, token: str, headers: dict[str, str], prompt: str) -> httpx.Response:
    body = {"prompt": prompt, "size": "256x256", "response_format": "b64_json"}
    return server.post("/api/images/generations", token=token, headers=headers, json=body)


def aiml(server: Server, token: str, headers: dict[str, str], prompt: str) -> httpx.Response:
    body = {"model": "image-gen.pro-1.0", "prompt": prompt, "size": "512x512", "response_format": "b64_json"}
    return server.post("/v1/generation/images", token=token, headers=headers, json=body)


def milady(server: Server, token: str, headers: dict[str, str], prompt: str) -> httpx.Response:
    body = {"prompt": prompt, "model": "google/gemini-2.5-flash-image", "aspectRatio": "1:1"}
    return server.post("/api/v1/generate-image", token=token, headers=headers, json=body)


def openai_image(server: Server, response: httpx.Response) -> Image.Image:
    return b64_image(response.json()["data"][0]["b64_json"])


def png_image(server: Server, response: httpx.Response) -> Image.Image:
    assert response.headers["content-type"] == "image/png" and response.headers["x-seed"] == "7"
    return decode(response.content)


def aiml_image(server: Server, response: httpx.Response) -> Image.Image:
    return b64_image(response.json()["data"]["image"]["b64_json"])


def milady_image(server: Server, response: httpx.Response) -> Image.Image:
    fetched = httpx.get(response.json()["images"][0]["url"], timeout=30)
    assert fetched.status_code == 200
    return decode(fetched.content)


def nested_error(response: httpx.Response) -> tuple[str, str, str | None]:
    error = response.json()["error"]
    return error["code"], error["message"], error.get("param")


def milady_error(response: httpx.Response) -> tuple[str, str, str | None]:
    body = response.json()
    return body["code"], body["error"], None


@dataclass(frozen=True)
class Dialect:
    name: str
    send: Send
    image: Callable[[Server, httpx.Response], Image.Image]
    error: Callable[[httpx.Response], tuple[str, str, str | None]]
    reused_code: str
    """The dialect's code for limner's ``idempotency_key_reused`` (its status is 422 everywhere)."""
    in_use_code: str
    """... for ``idempotency_key_in_use`` (409 everywhere)."""
    invalid_code: str
    """... for ``invalid_request`` (400 everywhere)."""
    short: tuple[int, str]
    """... status and code for ``insufficient_credits``."""
    failed: tuple[int, str]
    """... status and code for ``model_error`` (an engine that failed)."""
    size: tuple[int, int]

    def __str__(self) -> str:
        return self.name


OPENAI = {
    "error": nested_error,
    "reused_code": "idempotency_key_reused",
    "in_use_code": "idempotency_key_in_use",
    "invalid_code": "invalid_value",
    "short": (429, "insufficient_quota"),
    "failed": (502, "model_error"),
}
# errors raised before the shared path picks ImagineArt carry its code in the combined envelope
IMAGINEART = {
    "error": nested_error,
    "reused_code": "invalid_request",
    "in_use_code": "invalid_request",
    "invalid_code": "invalid_request",
    "short": (401, "invalid_token"),
    "failed": (502, "model_error"),
}
DIALECTS = [
    Dialect("openai-generations", openai_generation, openai_image, size=(256, 256), **OPENAI),  # type: ignore[arg-type]
    Dialect("openai-edits", openai_edit, openai_image, size=(256, 256), **OPENAI),  # type: ignore[arg-type]
    Dialect("openai-variations", openai_variation, openai_image, size=(256, 256), **OPENAI),  # type: ignore[arg-type]
    Dialect("imagineart-generations", imagineart_generation, png_image, size=(1024, 1024), **IMAGINEART),  # type: ignore[arg-type]
    Dialect("imagineart-edits", imagineart_edit, png_image, size=(1024, 1024), **IMAGINEART),  # type: ignore[arg-type]
    Dialect("aigne", aigne, openai_image, size=(256, 256), **OPENAI),  # type: ignore[arg-type]
    Dialect(
        "aiml",
        aiml,
        aiml_image,
        nested_error,
        reused_code="idempotency_key_reused",
        in_use_code="idempotency_key_in_use",
        invalid_code="invalid_request",
        short=(403, "insufficient_credits"),
        failed=(502, "model_error"),
        size=(512, 512),
    ),
    Dialect(
        "milady",
        milady,
        milady_image,
        milady_error,
        reused_code="idempotency_key_reused",
        in_use_code="idempotency_key_in_use",
        invalid_code="invalid_request",
        short=(402, "insufficient_credits"),
        failed=(500, "model_error"),
        size=(1024, 1024),
    ),
]
BY_NAME = {dialect.name: dialect for dialect in DIALECTS}

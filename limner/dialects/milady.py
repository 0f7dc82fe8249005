"""Milady: ``POST /api/v1/generate-image`` (JSON), 1-4 images per request.

Every image of a batch gets the same ``stylePreset`` (a documented prompt transformation from
``limner.core.styles``); images are PNG at about one megapixel in the requested ``aspectRatio``.
Each answer item has an absolute ``url`` that, as the reference promises, is permanent: a capability
link signed without an expiry, valid as long as the image is stored (``ImageRequest.permanent_links``);
when storing fails the item carries the image inline instead, as a base64 data URL in ``image`` with
``url`` null, like the reference service.

Errors are ``{"error": "<message>", "code": ...}`` plus ``required`` on 402 and ``retryAfter`` on 429;
prompt and model problems start with "Invalid prompt" / "Invalid model" as in the reference table.
"""

from __future__ import annotations

import base64
import re
from typing import Any, Literal

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr
from pydantic.json_schema import SkipJsonSchema

from limner.core.errors import InsufficientCredits, InvalidImage, InvalidRequest, LimnerError, retry_after_seconds
from limner.core.models import ImageRequest, ImageResult, SizeSpec
from limner.dialects.controls import ControlList, ReferenceList, control_choices, reference_choices
from limner.dialects.images import encoded
from limner.dialects.loras import LoraList, lora_choices
from limner.http import openapi
from limner.http.context import current_request_id
from limner.http.deps import AppState, get_consumer, get_state
from limner.http.dialect import Envelope, VendorDialect
from limner.http.errors import error_response, lookup
from limner.http.routing import dialect_route, read_json, validate
from limner.http.scheduling import read_scheduling
from limner.http.urls import absolute

DIALECT = "milady"
DEFAULT_MODEL = "google/gemini-2.5-flash-image"
PROMPT_LIMIT = 32000
"""The longest prompt, in characters: the reference states none; this is every other dialect's limit."""
RESOLUTION = "1K"
"""Milady has no size field: outputs are about one megapixel, like the Gemini image models it fronts."""
AspectRatio = Literal["1:1", "16:9", "9:16", "4:3", "3:4", "21:9", "9:21"]
_DATA_URL = re.compile(r"^data:[\w.+-]+/[\w.+-]+;base64,", re.IGNORECASE)


class GenerateImageParams(BaseModel):
    """The request body, fields (camelCase, as on the wire) in the reference's order; unknown fields are
    ignored like the reference."""

    model_config = ConfigDict(extra="ignore")

    prompt: StrictStr
    model: StrictStr = DEFAULT_MODEL
    aspectRatio: AspectRatio = "1:1"
    numImages: StrictInt = Field(1, ge=1, le=4)
    stylePreset: StrictStr | None = None
    sourceImage: StrictStr | None = None
    # limner extensions
    loras: LoraList | None = None
    controls: ControlList | None = None
    reference_images: ReferenceList | None = None
    scheduler: StrictStr | None = None
    exact: StrictBool = False


class MiladyImage(BaseModel):
    url: str | None = Field(
        description="A permanent link to the image (unguessable, signed without expiry); null when storing it failed."
    )
    text: str = Field(description="Text the model answered alongside the image, if any.")
    mimeType: str
    fileSize: int = Field(description="Size of the image in bytes.")
    image: str | SkipJsonSchema[None] = Field(
        None, description="Only when storing failed: the image as a base64 data URL (url is then null)."
    )


class MiladyImagesResponse(BaseModel):
    images: list[MiladyImage]
    numImages: int


class MiladyErrorResponse(BaseModel):
    """``{"error": "<message>", "code": ...}``, plus ``required`` (402) and ``retryAfter`` (429)."""

    error: str = Field(description='The message; starts "Invalid prompt", "Invalid model" or "Generation failed".')
    code: str = Field(description="limner's stable error code.")
    required: float | SkipJsonSchema[None] = Field(None, description="402 only: the credits the request needs.")
    retryAfter: int | SkipJsonSchema[None] = Field(None, description="429 only: seconds to wait before retrying.")


class _AnyObject(BaseModel):
    """Any JSON object: ``parse`` checks the fields itself so its messages match the reference."""

    model_config = ConfigDict(extra="allow")


# limner code -> HTTP status, following the reference table (400, 402, 429, 500) plus auth and 404.
ERROR_STATUS: dict[str, int] = {
    "invalid_request": 400,
    "invalid_image": 400,
    "unsupported": 400,
    "payload_too_large": 413,
    "model_not_found": 400,
    "unknown_request": 404,
    "missing_bearer_token": 401,
    "invalid_token": 401,
    "forbidden": 403,
    "idempotency_key_reused": 422,
    "idempotency_key_in_use": 409,
    "insufficient_credits": 402,
    "rate_limited": 429,
    "queue_full": 429,
    "model_error": 500,
    "model_not_available": 500,
    "model_auth_error": 500,
    "timeout": 500,
    "internal_error": 500,
    "no_tokens_configured": 503,
    "unavailable": 503,
}
_GENERATION_FAILED = frozenset({"model_error", "model_not_available", "model_auth_error", "timeout"})


def render_error(error: LimnerError, request_id: str) -> Response:
    """``{"error": message, "code": code}`` with ``required`` (402) and ``retryAfter`` (429)."""
    status = lookup(ERROR_STATUS, error)
    message = error.message
    if error.code == "model_not_found" or (error.param == "model" and not message.startswith("Invalid model")):
        message = f"Invalid model: {message}"
    elif error.param == "prompt" and not message.startswith("Invalid prompt"):
        message = f"Invalid prompt: {message}"
    elif error.code in _GENERATION_FAILED:
        message = f"Generation failed: {message}"
    body: dict[str, Any] = {"error": message, "code": error.code}
    if isinstance(error, InsufficientCredits):
        body["required"] = error.required
    retry = retry_after_seconds(error)
    if retry is not None:
        body["retryAfter"] = retry
    return error_response(body, status, error)


def parse(data: dict[str, Any]) -> GenerateImageParams:
    """Validate, with the reference's "Invalid prompt" / "Invalid model" wording."""
    prompt = data.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise InvalidRequest("Invalid prompt: prompt is required and must be a non-empty string.", param="prompt")
    if len(prompt) > PROMPT_LIMIT:
        raise InvalidRequest(
            f"Invalid prompt: prompt must be at most {PROMPT_LIMIT} characters; got {len(prompt)}.", param="prompt"
        )
    if "model" in data and (not isinstance(data["model"], str) or not data["model"].strip()):
        raise InvalidRequest("Invalid model: model must be a non-empty string.", param="model")
    params = validate(GenerateImageParams, data)
    if params.sourceImage is not None and not _DATA_URL.match(params.sourceImage):
        raise InvalidImage(
            "sourceImage must be a base64 data URL: data:{mimeType};base64,{base64Data}.", param="sourceImage"
        )
    return params


def to_image_request(params: GenerateImageParams, consumer: str) -> ImageRequest:
    """Everything but the source image, which the handler decodes."""
    return ImageRequest(
        prompt=params.prompt,
        model=params.model,
        dialect=DIALECT,
        n=params.numImages,
        size=SizeSpec(aspect_ratio=params.aspectRatio, resolution=RESOLUTION),
        style=None if params.stylePreset in (None, "none") else params.stylePreset,
        output_format="png",
        consumer=consumer,
        permanent_links=True,
        loras=lora_choices(params.loras),
        controls=control_choices(params.controls),
        reference_images=reference_choices(params.reference_images),
        scheduler=params.scheduler,
        exact=params.exact,
    )


def render_result(result: ImageResult, request: Request, state: AppState) -> Response:
    images: list[dict[str, Any]] = []
    for image in result.images:
        item: dict[str, Any] = {
            "url": None if result.storage_error else absolute(request, state.settings, image.url),
            "text": image.text or "",
            "mimeType": image.mime_type,
            "fileSize": image.file_size,
        }
        if result.storage_error:
            item["image"] = f"data:{image.mime_type};base64,{base64.b64encode(image.data).decode()}"
        images.append(item)
    return JSONResponse({"images": images, "numImages": len(images)})


async def generate_image(request: Request) -> Response:
    """Generate 1-4 images from a prompt, optionally transforming a source image."""
    state = get_state(request)
    params = parse((await read_json(request, _AnyObject)).model_dump())
    image_request = read_scheduling(request, to_image_request(params, get_consumer(request)))
    if params.sourceImage is not None:
        image_request.images = encoded([params.sourceImage], label="sourceImage", param="sourceImage")
    result = await state.service.run(image_request, current_request_id())
    return render_result(result, request, state)


def build_router(envelope: Envelope) -> APIRouter:
    router = APIRouter(route_class=dialect_route(envelope), tags=["Milady"])
    router.add_api_route(
        "/api/v1/generate-image",
        generate_image,
        methods=["POST"],
        openapi_extra=openapi.request_body(openapi.json_body(GenerateImageParams, name="MiladyGenerateImageParams")),
        responses={
            **openapi.ok("The images, each with a signed URL.", MiladyImagesResponse),
            **openapi.error_responses(MiladyErrorResponse, openapi.statuses(ERROR_STATUS)),
        },
    )
    return router


MILADY = VendorDialect(DIALECT, ERROR_STATUS, render_error, lambda dialect, _mount: build_router(dialect))
"""Milady: its error envelope (a status per code), tokens over any transport."""

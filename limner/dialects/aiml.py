"""AI.ML: ``POST /v1/generation/images`` (JSON) and the media resolver ``GET /v1/media/images/{path}``.

``image`` turns a generation into an edit (one URL) or a composition (two or more, passed to the core
in order, so "image 1" in the prompt is the first URL). The answer holds one image:

- ``response_format="url"`` (default): a backend media path, ``/v1/media/images/<owner>%2Fimages%2F<key>``,
  percent-encoded as one path segment like the reference. It is relative to where this dialect is
  mounted (the reference client resolves it against its own base URL); an authorized ``GET`` on it
  answers ``{"url": "<absolute presigned URL>"}``, which downloads without auth until it expires.
- ``"presigned_url"``: that absolute presigned URL directly; ``"b64_json"``: the bytes inline.

Media belongs to the consumer who made it: resolving someone else's media is 404 ``not_found``, the
same answer as for media that does not exist, so a key's answers never tell whose images are whose.
A backend media path from an earlier answer may be sent back as ``image`` (chained edits).

``stream: true`` (the reference names the field but no wire format; this one is limner's) answers
``200 text/event-stream`` once the request is accepted; errors before that are the usual JSON::

    event: progress
    data: {"id":"req_...","model":"...","status":"queued","queue_position":2,"step":0,"total_steps":20,...}

    event: progress
    data: {"id":"req_...","model":"...","status":"running","queue_position":null,"step":7,...}

    event: completed
    data: {"data":{"image":{"url":"/v1/media/images/..."}}}

Each ``progress`` carries the job status of ``GET /v1/jobs/{id}`` (``limner.http.jobs``) when the
place in line or the step changes; ``completed`` carries exactly the non-streaming response body.
An error after the stream started is ``event: error`` with this dialect's error body. Idle
stretches carry SSE comments (``: keep-alive``), which SSE clients ignore.
"""

from __future__ import annotations

import base64
import re
from typing import Any, Literal
from urllib.parse import quote, unquote

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictBool
from pydantic.json_schema import SkipJsonSchema

from limner.core.errors import InvalidRequest, LimnerError, NotFound
from limner.core.models import ImageRequest, ImageResult, MediaRef, SizeSpec
from limner.core.sizes import parse_size
from limner.dialects.controls import ControlList, ReferenceList, control_choices, reference_choices
from limner.dialects.images import encoded, references
from limner.dialects.loras import LoraList, lora_choices
from limner.http import openapi
from limner.http.context import current_request_id
from limner.http.deps import AppState, get_consumer, get_state
from limner.http.dialect import Envelope, VendorDialect
from limner.http.errors import error_response, lookup
from limner.http.jobs import job_status
from limner.http.routing import dialect_route, read_json
from limner.http.scheduling import read_scheduling
from limner.http.streaming import event_stream, job_events, sse, start_job
from limner.http.urls import absolute
from limner.service.jobs import JobEvent

DIALECT = "aiml"
MEDIA_ROUTE = "/v1/media/images/"
SIZE_PRESETS = ("1K", "2K", "4K")
_PRESET = re.compile(r"^\s*([124])[kK]\s*$")
ResponseFormat = Literal["url", "presigned_url", "b64_json"]


class GenerationParams(BaseModel):
    """The request body, fields in the reference's order."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1)
    prompt: str = Field(min_length=1, max_length=32000)
    image: str | list[str] | None = None
    sequential_image_generation: Literal["disabled", "enabled"] = "disabled"
    response_format: ResponseFormat = "url"
    size: str | None = None
    stream: StrictBool = False
    watermark: StrictBool = False
    # limner extensions: LoRA adapters, the sampler and exact results (no denoising cache) of a local model
    loras: LoraList | None = None
    controls: ControlList | None = None
    reference_images: ReferenceList | None = None
    scheduler: str | None = Field(None, max_length=64)
    exact: StrictBool = False


class AimlImage(BaseModel):
    url: str | SkipJsonSchema[None] = Field(
        None,
        description="response_format url: a backend media path (GET it, authorized, for a presigned URL); "
        "presigned_url: the absolute presigned download URL.",
    )
    b64_json: str | SkipJsonSchema[None] = Field(
        None, description="response_format b64_json: the image, base64-encoded."
    )


class AimlImageData(BaseModel):
    image: AimlImage


class AimlImageResponse(BaseModel):
    """``{"data": {"image": {...}}}``: one image per answer."""

    data: AimlImageData


class AimlMediaUrl(BaseModel):
    url: str = Field(description="A presigned URL that downloads the image without auth until it expires.")


class AimlError(BaseModel):
    code: str = Field(description="The machine-readable cause.")
    message: str
    request_id: str


class AimlErrorResponse(BaseModel):
    """``{"error": {"code", "message", "request_id"}}``."""

    error: AimlError


# limner code -> (HTTP status, AI.ML error code). Statuses follow the reference: 400 invalid fields,
# 401 token, 403 not allowed (also spent credits: the reference has no 402), 404 unknown media, 429, 5xx.
ERROR_MAP: dict[str, tuple[int, str]] = {
    "invalid_request": (400, "invalid_request"),
    "invalid_image": (400, "invalid_image"),
    "unsupported": (400, "unsupported"),
    "payload_too_large": (413, "payload_too_large"),
    "model_not_found": (400, "model_not_found"),
    "unknown_request": (404, "not_found"),
    "missing_bearer_token": (401, "missing_bearer_token"),
    "invalid_token": (401, "invalid_token"),
    "forbidden": (403, "forbidden"),
    "idempotency_key_reused": (422, "idempotency_key_reused"),
    "idempotency_key_in_use": (409, "idempotency_key_in_use"),
    "insufficient_credits": (403, "insufficient_credits"),
    "rate_limited": (429, "rate_limited"),
    "queue_full": (429, "rate_limited"),
    "model_error": (502, "model_error"),
    "model_not_available": (502, "model_not_available"),
    "model_auth_error": (502, "model_auth_error"),
    "no_tokens_configured": (503, "no_tokens_configured"),
    "unavailable": (503, "unavailable"),
    "timeout": (504, "timeout"),
    "internal_error": (500, "internal_error"),
}


def error_body(error: LimnerError, request_id: str) -> dict[str, Any]:
    code = lookup(ERROR_MAP, error)[1]
    return {"error": {"code": code, "message": error.message, "request_id": request_id}}


def render_error(error: LimnerError, request_id: str) -> Response:
    """``{"error": {"code", "message", "request_id"}}``; ``Retry-After`` on 429."""
    return error_response(error_body(error, request_id), lookup(ERROR_MAP, error)[0], error)


def size_spec(size: str | None, *, has_images: bool) -> SizeSpec:
    """``1K``/``2K``/``4K`` (case-insensitive) or ``WxH``; presets keep a source image's shape."""
    if size is None:
        return SizeSpec()
    preset = _PRESET.match(size)
    if preset:
        return SizeSpec(aspect_ratio="auto" if has_images else None, resolution=f"{preset[1]}K")
    try:
        parsed = parse_size(size)
    except InvalidRequest:
        raise InvalidRequest(
            f"Invalid size '{size}': expected one of {', '.join(SIZE_PRESETS)} or WIDTHxHEIGHT (e.g. 2048x2048).",
            param="size",
        ) from None
    return SizeSpec(*parsed) if parsed else SizeSpec()


def to_image_request(params: GenerationParams, consumer: str) -> ImageRequest:
    """Everything but the source images, which the handler loads (they may need fetching)."""
    if params.sequential_image_generation == "enabled":
        raise InvalidRequest(
            "Sequential image generation is not enabled on this server; send 'disabled'.",
            param="sequential_image_generation",
        )
    return ImageRequest(
        prompt=params.prompt,
        model=params.model,
        dialect=DIALECT,
        size=size_spec(params.size, has_images=params.image is not None),
        watermark=params.watermark,
        keep_media=params.response_format == "url",
        links=params.response_format != "b64_json",
        loras=lora_choices(params.loras),
        controls=control_choices(params.controls),
        reference_images=reference_choices(params.reference_images),
        scheduler=params.scheduler,
        exact=params.exact,
        consumer=consumer,
    )


def media_path(owner: str, key: str) -> str:
    """The backend media path: ``<owner>/images/<key>`` percent-encoded as one segment."""
    return MEDIA_ROUTE + quote(f"{owner}/images/{key}", safe="")


def parse_media_path(path: str) -> MediaRef:
    """``<owner>/images/<key>`` (already percent-decoded) -> the stored image it names; else not found."""
    owner, _, key = path.rpartition("/images/")
    if not owner or not key:
        raise NotFound("No such image.")
    return MediaRef(owner, key)


def source_for(ref: str) -> str | MediaRef:
    """An ``image`` reference: a backend media path sent back (chained edits) names stored media."""
    if ref.startswith(MEDIA_ROUTE):
        return parse_media_path(unquote(ref.removeprefix(MEDIA_ROUTE).split("?", 1)[0]))
    return ref


def render_result(result: ImageResult, response_format: ResponseFormat, request: Request, state: AppState) -> Response:
    return JSONResponse(result_body(result, response_format, request, state))


def result_body(
    result: ImageResult, response_format: ResponseFormat, request: Request, state: AppState
) -> dict[str, Any]:
    """``{"data": {"image": {...}}}``: the response body, and the data of a stream's ``completed`` event."""
    image = result.images[0]
    if response_format == "b64_json":
        item: dict[str, Any] = {"b64_json": base64.b64encode(image.data).decode()}
    elif result.storage_error:
        raise LimnerError(f"The image was generated but could not be stored ({result.storage_error}).")
    elif response_format == "presigned_url":
        item = {"url": absolute(request, state.settings, image.url)}
    else:
        item = {"url": media_path(get_consumer(request), image.key)}
    return {"data": {"image": item}}


async def generate_image(request: Request) -> Response:
    """Generate an image from text, edit one image, or compose several into a new one."""
    state = get_state(request)
    params = await read_json(request, GenerationParams)
    image_request = read_scheduling(request, to_image_request(params, get_consumer(request)))
    image_request.images = encoded([source_for(ref) for ref in references(params.image)], param="image")
    if params.stream:
        running = await start_job(state.service, image_request, current_request_id())
        request_id = current_request_id()
        return event_stream(
            job_events(
                running,
                on_event=ProgressEvents(),
                on_result=lambda result: [
                    sse("completed", result_body(result, params.response_format, request, state))
                ],
                on_error=lambda error: sse("error", error_body(error, request_id)),
            )
        )
    result = await state.service.run(image_request, current_request_id())
    return render_result(result, params.response_format, request, state)


class ProgressEvents:
    """A ``progress`` event each time the place in line or the step changes (not for every job event)."""

    def __init__(self) -> None:
        self.last: tuple[object, ...] = ()

    def __call__(self, event: JobEvent) -> list[bytes]:
        if event.kind not in ("queued", "running", "progress"):
            return []
        status = job_status(event.job)
        key = (status["status"], status["queue_position"], status["step"])
        if key == self.last:
            return []
        self.last = key
        return [sse("progress", status)]


async def resolve_media(request: Request, path: str) -> Response:
    """Exchange a backend media path for a presigned download URL (owner only)."""
    state = get_state(request)
    signed = await state.service.media.signed_path(get_consumer(request), parse_media_path(path))
    return JSONResponse({"url": absolute(request, state.settings, signed)})


ERROR_RESPONSES = openapi.error_responses(AimlErrorResponse, openapi.statuses(ERROR_MAP))
IMAGE_OK = openapi.ok(
    "The image (stream true: server-sent events, see below).",
    AimlImageResponse,
    content=openapi.event_stream(
        "stream true: progress events (the job status of GET /v1/jobs/{id}) when the place in line or the step "
        "changes, then one completed event whose data is the non-streaming response body; an error after the "
        "start is an error event with the error body."
    ),
)


def build_router(envelope: Envelope) -> APIRouter:
    router = APIRouter(route_class=dialect_route(envelope), tags=["AI.ML"])
    router.add_api_route(
        "/v1/generation/images",
        generate_image,
        methods=["POST"],
        openapi_extra=openapi.request_body(openapi.json_body(GenerationParams, name="AimlGenerationParams")),
        responses={**IMAGE_OK, **ERROR_RESPONSES},
    )
    router.add_api_route(
        MEDIA_ROUTE + "{path:path}",
        resolve_media,
        methods=["GET"],
        responses={**openapi.ok("A presigned download URL.", AimlMediaUrl), **ERROR_RESPONSES},
    )
    return router


AIML = VendorDialect(DIALECT, ERROR_MAP, render_error, lambda dialect, _mount: build_router(dialect))
"""AI.ML: its error envelope, tokens over any transport."""

"""AI.ML: ``POST /v1/generation/images`` (JSON) and the media resolver ``GET /v1/media/images/{path}``.

``image`` turns a generation into an edit (one URL) or a composition (two or more, passed to the core
in order, so "image 1" in the prompt is the first URL). The answer holds one image:

- ``response_format="url"`` (default): a backend media path, ``/v1/media/images/<owner>%2Fimages%2F<key>``,
  percent-encoded as one path segment like the reference. It is relative to where this dialect is
  mounted (the reference client resolves it against its own base URL); an authorized ``GET`` on it
  answers ``{"url": "<absolute presigned URL>"}``, which downloads without auth until it expires.
- ``"presigned_url"``: that absolute presigned URL directly; ``"b64_json"``: the bytes inline.

Media belongs to the consumer who made it: resolving someone else's media is 403 ``forbidden``.
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
from collections.abc import AsyncIterator
from typing import Any, Literal
from urllib.parse import quote, unquote

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from limner.core.errors import Forbidden, InvalidRequest, LimnerError, NotFound, retry_after_seconds
from limner.core.models import ImageRequest, ImageResult, SizeSpec
from limner.core.sizes import parse_size
from limner.dialects.base import dialect_route, read_json
from limner.http.context import current_request_id
from limner.http.deps import AppState, get_consumer, get_state
from limner.http.jobs import job_status
from limner.http.streaming import SSE_COMMENT, RunningJob, event_stream, sse, start_job
from limner.http.urls import absolute
from limner.media.store import is_valid_key

DIALECT = "aiml"
MEDIA_ROUTE = "/v1/media/images/"
MAX_IMAGES = 16
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
    stream: bool = False
    watermark: bool = False


# limner code -> (HTTP status, AI.ML error code). Statuses follow the reference: 400 invalid fields,
# 401 token, 403 not allowed (also spent credits: the reference has no 402), 404 unknown media, 429, 5xx.
ERROR_MAP: dict[str, tuple[int, str]] = {
    "invalid_request": (400, "invalid_request"),
    "invalid_image": (400, "invalid_image"),
    "unsupported": (400, "unsupported"),
    "model_not_found": (400, "model_not_found"),
    "unknown_request": (404, "not_found"),
    "missing_bearer_token": (401, "missing_bearer_token"),
    "invalid_token": (401, "invalid_token"),
    "forbidden": (403, "forbidden"),
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
    code = ERROR_MAP.get(error.code, (error.status, error.code))[1]
    return {"error": {"code": code, "message": error.message, "request_id": request_id}}


def render_error(error: LimnerError, request_id: str) -> Response:
    """``{"error": {"code", "message", "request_id"}}``; ``Retry-After`` on 429."""
    status = ERROR_MAP.get(error.code, (error.status, error.code))[0]
    headers = {}
    retry = retry_after_seconds(error)
    if retry is not None:
        headers["Retry-After"] = str(retry)
    return JSONResponse(error_body(error, request_id), status_code=status, headers=headers)


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


def references(params: GenerationParams) -> list[str]:
    refs = [params.image] if isinstance(params.image, str) else list(params.image or [])
    if params.image is not None and not refs:
        raise InvalidRequest("'image' must hold at least one image URL; omit it for text to image.", param="image")
    if len(refs) > MAX_IMAGES:
        raise InvalidRequest(f"At most {MAX_IMAGES} images can be given; got {len(refs)}.", param="image")
    return refs


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
        consumer=consumer,
    )


def media_path(owner: str, key: str) -> str:
    """The backend media path: ``<owner>/images/<key>`` percent-encoded as one segment."""
    return MEDIA_ROUTE + quote(f"{owner}/images/{key}", safe="")


def parse_media_path(path: str) -> tuple[str, str]:
    """``<owner>/images/<key>`` (already percent-decoded) -> (owner, key); anything else is not found."""
    owner, _, key = path.rpartition("/images/")
    if not owner or not is_valid_key(key):
        raise NotFound("No such image.")
    return owner, key


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


async def owned_key(state: AppState, consumer: str, path: str) -> str:
    """The store key behind a backend media path, if ``consumer`` may read it."""
    owner, key = parse_media_path(path)
    owners = await state.store.owners(key)  # NotFound when absent
    if owner not in owners:
        raise NotFound("No such image.")
    if consumer not in owners:
        raise Forbidden("This image belongs to another consumer.")
    return key


async def _source(state: AppState, consumer: str, ref: str) -> str:
    """A backend media path sent back as ``image`` becomes a signed link the loader reads locally."""
    if ref.startswith(MEDIA_ROUTE):
        key = await owned_key(state, consumer, unquote(ref.removeprefix(MEDIA_ROUTE).split("?", 1)[0]))
        return state.signer.path_for(key)
    return ref


async def generate_image(request: Request) -> Response:
    """Generate an image from text, edit one image, or compose several into a new one."""
    state = get_state(request)
    params = await read_json(request, GenerationParams)
    consumer = get_consumer(request)
    image_request = to_image_request(params, consumer)
    refs = references(params)
    image_request.images = [
        await state.loader.load(
            await _source(state, consumer, ref), f"image {index}" if len(refs) > 1 else "image", param="image"
        )
        for index, ref in enumerate(refs, start=1)
    ]
    if params.stream:
        running = await start_job(state.service, image_request, current_request_id())
        return event_stream(_events(running, params.response_format, request, state))
    result = await state.service.run(image_request, current_request_id())
    return render_result(result, params.response_format, request, state)


async def _events(
    running: RunningJob, response_format: ResponseFormat, request: Request, state: AppState
) -> AsyncIterator[bytes]:
    """``progress`` when the place in line or the step changes, then ``completed`` (or ``error``)."""
    last: tuple[object, ...] = ()
    try:
        async for item in running:
            if item is None:
                yield SSE_COMMENT
            elif isinstance(item, ImageResult):
                yield sse("completed", result_body(item, response_format, request, state))
            elif item.kind in ("queued", "running", "progress"):
                status = job_status(item.job)
                key = (status["status"], status["queue_position"], status["step"])
                if key != last:
                    last = key
                    yield sse("progress", status)
    except LimnerError as error:
        yield sse("error", error_body(error, current_request_id()))
    finally:
        await running.cancel()


async def resolve_media(request: Request, path: str) -> Response:
    """Exchange a backend media path for a presigned download URL (owner only)."""
    state = get_state(request)
    key = await owned_key(state, get_consumer(request), path)
    return JSONResponse({"url": absolute(request, state.settings, state.signer.path_for(key))})


def build_router() -> APIRouter:
    router = APIRouter(route_class=dialect_route(render_error), tags=["AI.ML"])
    router.add_api_route("/v1/generation/images", generate_image, methods=["POST"])
    router.add_api_route(MEDIA_ROUTE + "{path:path}", resolve_media, methods=["GET"])
    return router

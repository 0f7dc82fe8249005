"""OpenAI image streaming (``stream: true``), event for event as OpenAI sends it, so ``client.images.
generate(..., stream=True)`` and ``client.images.edit(..., stream=True)`` parse it unchanged::

    event: image_generation.partial_image
    data: {"type":"image_generation.partial_image","b64_json":"...","created_at":1767000000,
           "size":"1024x1024","quality":"auto","background":"auto","output_format":"png","partial_image_index":0}

    event: image_generation.completed
    data: {"type":"image_generation.completed","b64_json":"...","created_at":1767000001,"size":"1024x1024",
           "quality":"auto","background":"auto","output_format":"png","usage":{"input_tokens":0,...}}

Edits send ``image_edit.partial_image`` / ``image_edit.completed``. ``partial_images`` (0-3) previews
come evenly spaced over the denoising steps, at the final size and in the final format; fewer may come
when the image is done sooner (a short img2img run), as OpenAI also allows. With ``n`` > 1 each round
sends one partial per image (all with that round's ``partial_image_index``) and the end one completed
event per image, in order. ``usage`` is all zeros: limner does not meter tokens (it prices images).

Errors before the stream starts (validation, auth, rate limits, credits, a full queue) are the usual
JSON errors; once it has started, an error is ``event: error`` with ``{"type": "error", "error":
{message, type, param, code}}``, which the SDK raises as ``openai.APIError``. Idle stretches (a long
queue) carry SSE comments, which clients ignore.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from typing import Any, Literal

from fastapi import Response

from limner.core.errors import LimnerError
from limner.core.models import ImageRequest, ImageResult
from limner.http.context import current_request_id
from limner.http.streaming import event_stream, job_events, sse, start_job
from limner.service.image_service import ImageService
from limner.service.jobs import Preview

StreamKind = Literal["image_generation", "image_edit"]
ErrorBody = Callable[[LimnerError], dict[str, Any]]
QUALITIES = frozenset({"low", "medium", "high", "auto"})
QUALITY_ALIASES = {"hd": "high", "standard": "medium"}
NO_USAGE = {"input_tokens": 0, "input_tokens_details": {"image_tokens": 0, "text_tokens": 0}, "output_tokens": 0,
            "total_tokens": 0}  # fmt: skip


async def stream_images(service: ImageService, request: ImageRequest, kind: StreamKind, errors: ErrorBody) -> Response:
    """Start the job, then answer its events as a stream (errors until it is accepted are raised).
    ``errors`` is the dialect's ``{"error": {...}}`` body for an error, sent as ``event: error``."""
    running = await start_job(service, request, current_request_id())
    return event_stream(
        job_events(
            running,
            on_event=lambda event: _partials(event.preview, request, kind) if event.preview is not None else [],
            on_result=lambda result: _completed(result, request, kind),
            on_error=lambda error: sse("error", {"type": "error", **errors(error)}),
        )
    )


def _settings(request: ImageRequest, size: tuple[int, int]) -> dict[str, Any]:
    quality = QUALITY_ALIASES.get(request.quality or "auto", request.quality or "auto")
    return {
        "size": f"{size[0]}x{size[1]}",
        "quality": quality if quality in QUALITIES else "auto",
        "background": request.background or "auto",
        "output_format": request.output_format,
    }


def _partials(preview: Preview, request: ImageRequest, kind: StreamKind) -> list[bytes]:
    return [
        sse(
            f"{kind}.partial_image",
            {
                "type": f"{kind}.partial_image",
                "b64_json": base64.b64encode(data).decode(),
                "created_at": int(time.time()),
                **_settings(request, preview.size),
                "partial_image_index": preview.index,
            },
        )
        for data in preview.images
    ]


def _completed(result: ImageResult, request: ImageRequest, kind: StreamKind) -> list[bytes]:
    return [
        sse(
            f"{kind}.completed",
            {
                "type": f"{kind}.completed",
                "b64_json": base64.b64encode(image.data).decode(),
                "created_at": int(time.time()),
                **_settings(request, (image.width, image.height)),
                "usage": NO_USAGE,
            },
        )
        for image in result.images
    ]

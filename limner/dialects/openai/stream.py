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
event per image, in order. ``usage`` counts the request in OpenAI's image tokens (``limner.core.usage``):
each completed event carries its own image's output tokens, and the first also the request's input tokens,
so the events add up to the request. ``quality`` is the tier that ran (``auto`` resolved), ``background``
on completed events what was delivered (``transparent`` or ``opaque``), and ``safety_identifier`` the
effective one when the request named one.

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

from limner.core.answer import Answer
from limner.core.errors import LimnerError
from limner.core.models import ImageRequest, ImageResult, TokenUsage
from limner.core.usage import reported_quality
from limner.dialects.openai.render import error_body
from limner.http.context import current_request_id
from limner.http.streaming import event_stream, job_events, sse, start_job
from limner.service.image_service import ImageService
from limner.service.jobs import Preview

StreamKind = Literal["image_generation", "image_edit"]
ErrorBody = Callable[[LimnerError], dict[str, Any]]


STREAM_KINDS: dict[str, StreamKind] = {"generation": "image_generation", "edit": "image_edit"}


async def stream_answer(service: ImageService, request: ImageRequest, answer: Answer) -> Response:
    """``stream_images`` for a translated request: its kind from the endpoint, OpenAI's error body."""
    kind = STREAM_KINDS[answer.endpoint]
    return await stream_images(service, request, kind, error_body, safety_identifier=answer.safety_identifier)


def stream_events(request: ImageRequest, result: ImageResult, answer: Answer) -> bytes:
    """A finished result as the stream's completed events (an async job that asked for a stream)."""
    return b"".join(_completed(result, request, STREAM_KINDS[answer.endpoint], answer.safety_identifier))


async def stream_images(
    service: ImageService,
    request: ImageRequest,
    kind: StreamKind,
    errors: ErrorBody,
    *,
    safety_identifier: str | None = None,
) -> Response:
    """Start the job, then answer its events as a stream (errors until it is accepted are raised).
    ``errors`` is the dialect's ``{"error": {...}}`` body for an error, sent as ``event: error``."""
    running = await start_job(service, request, current_request_id())
    return event_stream(
        job_events(
            running,
            on_event=lambda event: _partials(event.preview, request, kind) if event.preview is not None else [],
            on_result=lambda result: _completed(result, request, kind, safety_identifier),
            on_error=lambda error: sse("error", {"type": "error", **errors(error)}),
        )
    )


def _settings(request: ImageRequest, size: tuple[int, int]) -> dict[str, Any]:
    return {
        "size": f"{size[0]}x{size[1]}",
        "quality": reported_quality(request.quality),
        "background": request.background or "auto",
        "output_format": request.output_format,
    }


def _image_usage(usage: TokenUsage | None, index: int, n: int) -> dict[str, Any]:
    """One completed event's share of the request's usage: its own image, and the input once (the first)."""
    usage = usage or TokenUsage(0, 0, 0)
    first = index == 0
    share = TokenUsage(
        text_tokens=usage.text_tokens if first else 0,
        image_tokens=usage.image_tokens if first else 0,
        output_image_tokens=usage.output_image_tokens // n + (usage.output_image_tokens % n if first else 0),
    )
    return {
        "input_tokens": share.input_tokens,
        "input_tokens_details": {"image_tokens": share.image_tokens, "text_tokens": share.text_tokens},
        "output_tokens": share.output_image_tokens,
        "total_tokens": share.total_tokens,
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


def _completed(
    result: ImageResult, request: ImageRequest, kind: StreamKind, safety_identifier: str | None
) -> list[bytes]:
    events = []
    for index, image in enumerate(result.images):
        event: dict[str, Any] = {
            "type": f"{kind}.completed",
            "b64_json": base64.b64encode(image.data).decode(),
            "created_at": int(time.time()),
            **_settings(request, (image.width, image.height)),
            "background": "transparent" if result.transparent else "opaque",
            "usage": _image_usage(result.usage, index, len(result.images)),
        }
        if safety_identifier:
            event["safety_identifier"] = safety_identifier
        events.append(sse(f"{kind}.completed", event))
    return events

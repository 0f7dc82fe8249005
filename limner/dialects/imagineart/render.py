"""ImagineArt's answers: the PNG itself with what a client needs in headers, and every limner error in its
envelope with a status and code from the reference's table."""

from __future__ import annotations

from fastapi import Response

from limner.core.answer import Answer
from limner.core.errors import LimnerError, ModelNotFound
from limner.core.models import ImageResult
from limner.http.errors import error_response, lookup

# limner code -> (HTTP status, ImagineArt code); every status and code is one of the reference table's.
ERROR_MAP: dict[str, tuple[int, str]] = {
    "invalid_request": (400, "invalid_request"),
    "invalid_image": (400, "invalid_image"),
    "unsupported": (400, "invalid_request"),
    "payload_too_large": (413, "invalid_request"),  # HTTP's own status for it; the code is the table's
    "model_not_found": (502, "model_not_available"),  # the two model ids are fixed: missing = misconfigured
    "unknown_request": (404, "unknown_request"),
    "missing_bearer_token": (401, "missing_bearer_token"),
    "invalid_token": (401, "invalid_token"),
    "forbidden": (401, "invalid_token"),  # the token is valid but not for this: no 403 in the reference
    "idempotency_key_reused": (422, "invalid_request"),  # limner's Idempotency-Key: HTTP's statuses, its code
    "idempotency_key_in_use": (409, "invalid_request"),
    "insufficient_credits": (401, "invalid_token"),  # no 402 or 403 in the reference; a 429 is retried forever
    "rate_limited": (429, "rate_limited"),
    "queue_full": (429, "rate_limited"),
    "model_error": (502, "model_error"),
    "model_not_available": (502, "model_not_available"),
    "model_auth_error": (502, "model_auth_error"),
    "unavailable": (502, "model_not_available"),
    "no_tokens_configured": (503, "no_tokens_configured"),
    "timeout": (504, "timeout"),
    "internal_error": (500, "internal_error"),
}


def render_error(error: LimnerError, request_id: str) -> Response:
    """``{"error": {"code", "message", "request_id"}}``; ``Retry-After`` on 429."""
    status, code = lookup(ERROR_MAP, error)
    message = error.message
    if isinstance(error, ModelNotFound):
        message = f"Model '{error.model}' is not available on this server."
    return error_response({"error": {"code": code, "message": message, "request_id": request_id}}, status, error)


def render_result(result: ImageResult, answer: Answer) -> Response:
    """The PNG itself; what a client may want to know rides in headers."""
    image = result.images[0]
    headers = {
        "X-Model": result.model,
        "X-Width": str(image.width),
        "X-Height": str(image.height),
        "Cache-Control": "no-store",
    }
    if image.seed is not None:
        headers["X-Seed"] = str(image.seed)
    return Response(image.data, media_type=image.mime_type, headers=headers)

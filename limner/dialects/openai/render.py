"""OpenAI's answers: images as ``ImagesResponse``, models as model objects, and every limner error in
OpenAI's envelope with the status, ``type`` and ``code`` the ``openai`` SDK maps to its exception classes."""

from __future__ import annotations

import base64
from typing import Any

from fastapi import Request, Response
from fastapi.responses import JSONResponse

from limner.core.errors import LimnerError
from limner.core.models import ImageResult, TokenUsage
from limner.core.usage import reported_quality
from limner.dialects.openai.protocol import (
    DEFAULT_MODEL,
    REPORTED_BACKGROUNDS,
    REPORTED_QUALITIES,
    ResponseFormat,
    is_gpt_image,
)
from limner.http.access import Visible, everything
from limner.http.deps import AppState
from limner.http.errors import error_response, lookup
from limner.http.urls import absolute

# limner code -> (HTTP status, OpenAI error type, OpenAI error code)
ERROR_MAP: dict[str, tuple[int, str, str | None]] = {
    "invalid_request": (400, "invalid_request_error", "invalid_value"),
    "invalid_image": (400, "invalid_request_error", "invalid_image"),
    "unsupported": (400, "invalid_request_error", "unsupported_value"),
    "payload_too_large": (413, "invalid_request_error", "payload_too_large"),
    "model_not_found": (404, "invalid_request_error", "model_not_found"),
    "unknown_request": (404, "invalid_request_error", "not_found"),
    "missing_bearer_token": (401, "invalid_request_error", "missing_api_key"),
    "invalid_token": (401, "invalid_request_error", "invalid_api_key"),
    "forbidden": (403, "permission_error", "forbidden"),
    "idempotency_key_reused": (422, "invalid_request_error", "idempotency_key_reused"),
    "idempotency_key_in_use": (409, "invalid_request_error", "idempotency_key_in_use"),
    "insufficient_credits": (429, "insufficient_quota", "insufficient_quota"),
    "rate_limited": (429, "requests", "rate_limit_exceeded"),
    "queue_full": (429, "requests", "rate_limit_exceeded"),
    "model_error": (502, "server_error", "model_error"),
    "model_not_available": (502, "server_error", "model_not_available"),
    "model_auth_error": (502, "server_error", "model_auth_error"),
    "no_tokens_configured": (503, "server_error", "no_tokens_configured"),
    "unavailable": (503, "server_error", "service_unavailable"),
    "timeout": (504, "server_error", "timeout"),
    "internal_error": (500, "server_error", "internal_error"),
}


def error_body(error: LimnerError) -> dict[str, Any]:
    """``{"error": {"message", "type", "param", "code"}}``, as OpenAI's responses and streams carry it."""
    _, kind, code = lookup(ERROR_MAP, error)
    return {"error": {"message": error.message, "type": kind, "param": error.param, "code": code}}


def render_error(error: LimnerError, request_id: str) -> Response:
    return error_response(error_body(error), lookup(ERROR_MAP, error)[0], error)


def usage_body(usage: TokenUsage | None) -> dict[str, Any]:
    """OpenAI's ``usage`` object (all zeros when the service counted none)."""
    usage = usage or TokenUsage(0, 0, 0)
    return {
        "input_tokens": usage.input_tokens,
        "input_tokens_details": {"image_tokens": usage.image_tokens, "text_tokens": usage.text_tokens},
        "output_tokens": usage.output_image_tokens,
        "output_tokens_details": {"image_tokens": usage.output_image_tokens, "text_tokens": 0},
        "total_tokens": usage.total_tokens,
    }


def render_result(
    result: ImageResult,
    response_format: ResponseFormat,
    request: Request,
    state: AppState,
    *,
    model: str = DEFAULT_MODEL,
    safety_id: str | None = None,
) -> Response:
    """The ``ImagesResponse`` body; ``model`` is the name the client asked for, which decides its shape."""
    if response_format == "url" and result.storage_error:
        raise LimnerError(f"The image was generated but could not be stored ({result.storage_error}).")
    data: list[dict[str, Any]] = []
    for image in result.images:
        item: dict[str, Any] = (
            {"url": absolute(request, state.settings, image.url)}
            if response_format == "url"
            else {"b64_json": base64.b64encode(image.data).decode()}
        )
        if model == "dall-e-3" and result.prompt:  # the prompt the engine ran, after any style preset
            item["revised_prompt"] = result.prompt
        item["seed"] = image.seed
        data.append(item)
    body: dict[str, Any] = {
        "created": result.created,
        "data": data,
        "output_format": result.output_format,
        "size": f"{result.width}x{result.height}",
    }
    if is_gpt_image(model):
        body["quality"] = reported_quality(result.quality)
        body["background"] = "transparent" if result.transparent else "opaque"
        body["usage"] = usage_body(result.usage)
    else:  # what was asked, where OpenAI publishes the word: never DALL-E's hd, standard or auto
        if result.quality in REPORTED_QUALITIES:
            body["quality"] = result.quality
        if result.background in REPORTED_BACKGROUNDS:  # what was delivered: an engine without alpha is opaque
            body["background"] = "transparent" if result.transparent else "opaque"
    if safety_id:
        body["safety_identifier"] = safety_id
    return JSONResponse(body)


def model_object(model_id: str, state: AppState) -> dict[str, Any]:
    info = state.service.describe(model_id)
    item: dict[str, Any] = {"id": model_id, "object": "model", "created": state.started, "owned_by": info.owned_by}
    if info.precision is not None:  # limner extension: a local model's precision and quantised weights
        item |= {"precision": info.precision, "quantization": info.quantization}
    if info.loras:  # limner extension: the model's LoRA adapters
        item["loras"] = [
            {"name": lora.name, "weight": lora.weight, "description": lora.description} for lora in info.loras
        ]
    if info.controls:  # limner extension: the model's ControlNets and T2I-Adapters
        item["controls"] = [
            {"name": c.name, "kind": c.kind, "type": c.type, "scale": c.scale, "description": c.description}
            for c in info.controls
        ]
    if info.reference_scale is not None:  # limner extension: it takes reference_images (an IP-Adapter)
        item["reference_images"] = {"scale": info.reference_scale}
    return item


def models_payload(state: AppState, visible: Visible = everything) -> list[dict[str, Any]]:
    return [model_object(name, state) for name in state.service.model_names() if visible(name)]

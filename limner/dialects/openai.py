"""OpenAI Images: ``/v1/images/generations`` (JSON), ``/v1/images/edits`` and ``/v1/images/variations``
(multipart), ``/v1/models``. Shapes follow the official API so the ``openai`` SDK works unchanged,
error classes included.

limner extensions, fenced here and in the README: ``seed``, ``negative_prompt``, ``steps``,
``guidance_scale``, ``strength`` (edits), ``style_preset``, ``loras`` (``[{"name", "weight"}]``, a JSON
string in edit forms), ``scheduler``, ``seed`` on each returned image, and ``loras`` on model objects.

``stream: true`` on generations and edits answers OpenAI's server-sent events (``openai_stream``).

Every field of today's ``openai`` SDK is recognised; a field or value limner cannot deliver is refused with
400 ``unsupported_value`` and ``param`` naming it, never served as something else (``refuse_undeliverable``):
``output_format`` gif or svg, and with them ``frame_count``, ``frame_duration_ms``, ``svg``; ``markup`` on
edits. Fields that tune how a model works are accepted and applied where limner has an equivalent
(``complexity: high`` runs more denoising steps, ``quality`` and ``style`` reach upstream providers and
prices; ``moderation`` and ``input_fidelity`` have nothing to steer in local engines), and reported where
OpenAI reports them: ``quality``, ``background``, ``usage`` and ``safety_identifier`` on GPT image answers,
``revised_prompt`` (the prompt the engine ran, after any style preset) on every ``dall-e-3`` image. Other
models' answers repeat ``quality`` and ``background`` only where the request used a word OpenAI's answers
use (``low`` ... ``max``; ``transparent``, ``opaque``): never ``hd``, ``standard`` or ``auto``; and
``background`` says what was delivered (``opaque`` where the model made no transparency).

The JSON body of generations is validated strictly, as OpenAI does (no ``"2"`` for a number, no ``"true"``
for a boolean); the forms of edits and variations carry every field as text and are read as such.
"""

from __future__ import annotations

import base64
from typing import Any, Literal, cast

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from limner.core.errors import InvalidRequest, LimnerError, UnsupportedOperation
from limner.core.models import ImageRequest, ImageResult, OutputFormat, SizeSpec, TokenUsage
from limner.core.sizes import parse_size
from limner.core.usage import reported_quality
from limner.dialects.images import MAX_INPUT_IMAGES, uploads
from limner.dialects.loras import LoraList, lora_choices
from limner.dialects.openai_shapes import (
    REPORTED_BACKGROUNDS,
    REPORTED_QUALITIES,
    ImagesResponse,
    ModelList,
    ModelObject,
    OpenAIErrorResponse,
)
from limner.dialects.openai_stream import StreamKind, stream_images
from limner.http import openapi
from limner.http.context import current_request_id
from limner.http.deps import AppState, get_consumer, get_state
from limner.http.errors import error_response, lookup
from limner.http.routing import FormBody, dialect_route, read_form, read_json, validate
from limner.http.urls import absolute

DIALECT = "openai"
DEFAULT_MODEL = "dall-e-2"
ResponseFormat = Literal["url", "b64_json"]


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str | None = None
    n: int | None = Field(None, ge=1, le=10)
    size: str | None = None
    response_format: ResponseFormat | None = None
    output_format: Literal["png", "jpeg", "webp", "gif", "svg"] | None = None
    output_compression: int | None = Field(None, ge=0, le=100)
    background: Literal["transparent", "opaque", "auto"] | None = None
    quality: Literal["auto", "high", "medium", "low", "xhigh", "max", "hd", "standard"] | None = None
    complexity: Literal["low", "medium", "high"] | None = None
    frame_count: int | None = Field(None, ge=2, le=16)
    frame_duration_ms: int | None = Field(None, ge=0)
    svg: dict[str, Any] | None = None
    safety_identifier: str | None = Field(None, max_length=512)
    user: str | None = None
    stream: bool | None = None
    partial_images: int | None = Field(None, ge=0, le=3)
    # limner extensions
    seed: int | None = Field(None, ge=0, le=2**32 - 1)
    negative_prompt: str | None = Field(None, max_length=4000)
    steps: int | None = Field(None, ge=1, le=150)
    guidance_scale: float | None = Field(None, ge=0, le=30)
    style_preset: str | None = None
    loras: LoraList | None = None
    scheduler: str | None = Field(None, max_length=64)


class GenerationParams(_Params):
    """The JSON body: typed as strictly as OpenAI types it (``"n": "2"``, ``2.0`` or ``true``, ``"stream":
    "true"`` are 400s naming the field). Edits and variations are forms, whose fields arrive as text."""

    model_config = ConfigDict(extra="forbid", strict=True)

    prompt: str = Field(min_length=1, max_length=32000)
    style: Literal["vivid", "natural"] | None = None
    moderation: Literal["low", "auto"] | None = None


class EditParams(_Params):
    prompt: str = Field(min_length=1, max_length=32000)
    input_fidelity: Literal["high", "low"] | None = None
    strength: float | None = Field(None, ge=0, le=1)


class VariationParams(_Params):
    pass


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


GPT_IMAGE_PREFIXES = ("gpt-image", "chatgpt-image")
DELIVERED_FORMATS = ("png", "jpeg", "webp")


def is_gpt_image(model: str) -> bool:
    """OpenAI's GPT image family (``gpt-image-*``, ``chatgpt-image-latest``): base64 by default, and answers
    that report ``quality``, ``background`` and ``usage``."""
    return model.startswith(GPT_IMAGE_PREFIXES)


def refuse_undeliverable(params: _Params) -> OutputFormat:
    """The output format to deliver; refused, naming the field, what asks for output limner does not make
    (GIF or SVG files)."""
    fmt = params.output_format or "png"
    if fmt not in DELIVERED_FORMATS:
        raise UnsupportedOperation(
            f"output_format '{params.output_format}' is not available on this server; use png, jpeg or webp.",
            param="output_format",
        )
    for name, output in (("frame_count", "GIF"), ("frame_duration_ms", "GIF"), ("svg", "SVG")):
        if getattr(params, name) is not None:
            raise UnsupportedOperation(
                f"{name} applies to {output} output, which this server does not produce; omit it.", param=name
            )
    return cast(OutputFormat, fmt)


def safety_identifier(params: _Params) -> str | None:
    """The effective safety identifier: a non-empty ``safety_identifier``, else the deprecated ``user``."""
    return params.safety_identifier or params.user or None


def _common(params: _Params, consumer: str, prompt: str) -> ImageRequest:
    model = params.model or DEFAULT_MODEL
    output_format = refuse_undeliverable(params)
    size = parse_size(params.size) if params.size else None
    if params.background == "transparent" and params.output_format == "jpeg":
        raise InvalidRequest("A transparent background needs output_format 'png' or 'webp'.", param="background")
    if params.output_compression is not None and params.output_format not in ("jpeg", "webp"):
        raise InvalidRequest(
            "output_compression applies to output_format 'jpeg' or 'webp'.", param="output_compression"
        )
    return ImageRequest(
        prompt=prompt,
        model=model,
        dialect=DIALECT,
        n=params.n or 1,
        size=SizeSpec(*size) if size else SizeSpec(),
        negative_prompt=params.negative_prompt,
        seed=params.seed,
        steps=params.steps,
        guidance=params.guidance_scale,
        style=params.style_preset,
        output_format=output_format,
        output_compression=params.output_compression,
        background=params.background,
        quality=params.quality,
        effort="high" if params.complexity == "high" else "normal",
        consumer=consumer,
        partial_images=(params.partial_images or 0) if params.stream else 0,
        links=response_format_for(params) == "url" and not params.stream,
        report_usage=bool(params.stream) or is_gpt_image(model),
        loras=lora_choices(params.loras),
        scheduler=params.scheduler,
    )


def response_format_for(params: _Params) -> ResponseFormat:
    """OpenAI's default: URLs for DALL-E, base64 for the GPT image models."""
    if params.response_format:
        return params.response_format
    return "b64_json" if is_gpt_image(params.model or DEFAULT_MODEL) else "url"


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


async def create_image(request: Request) -> Response:
    """Create images from a prompt (``stream: true``: server-sent events, see ``openai_stream``)."""
    state = get_state(request)
    params = await read_json(request, GenerationParams)
    image_request = _common(params, get_consumer(request), params.prompt)
    image_request.rendering_style = params.style
    return await _answer(request, state, params, image_request, "image_generation")


async def _answer(
    request: Request, state: AppState, params: _Params, image_request: ImageRequest, kind: StreamKind
) -> Response:
    """Run the request; answer the images as JSON, or as server-sent events when ``stream`` is set."""
    safety_id = safety_identifier(params)
    if params.stream:
        return await stream_images(state.service, image_request, kind, error_body, safety_identifier=safety_id)
    result = await state.service.run(image_request, current_request_id())
    model = params.model or DEFAULT_MODEL
    return render_result(result, response_format_for(params), request, state, model=model, safety_id=safety_id)


async def edit_image(request: Request) -> Response:
    """Edit or extend one image, or compose several, from a prompt (multipart)."""
    state = get_state(request)
    form = await read_form(request, max_file_bytes=state.settings.max_upload_bytes)
    return await edit_from_form(request, state, form)


async def edit_from_form(request: Request, state: AppState, form: FormBody) -> Response:
    if "markup" in form.files or "markup" in form.fields:
        raise UnsupportedOperation(
            "markup is not supported on this server; mark the area to edit with mask.", param="markup"
        )
    fields = form.scalars()
    svg = {name: fields.pop(name) for name in [name for name in fields if name.startswith("svg[")]}
    if svg:  # multipart spells the svg object svg[model], svg[reasoning][effort]
        fields["svg"] = svg
    params = validate(EditParams, fields)
    images = uploads(form, "image", "image[]")
    if not images:
        raise InvalidRequest("Missing required parameter: 'image'.", param="image")
    if len(images) > MAX_INPUT_IMAGES:
        raise InvalidRequest(f"At most {MAX_INPUT_IMAGES} images can be edited at once.", param="image")
    masks = uploads(form, "mask", label="mask")
    image_request = _common(params, get_consumer(request), params.prompt)
    image_request.images = images
    image_request.mask = masks[0] if masks else None
    image_request.strength = params.strength
    return await _answer(request, state, params, image_request, "image_edit")


async def create_variation(request: Request) -> Response:
    """Create variations of one image (multipart)."""
    state = get_state(request)
    form = await read_form(request, max_file_bytes=state.settings.max_upload_bytes)
    params = validate(VariationParams, form.scalars())
    images = uploads(form, "image")
    if len(images) != 1:
        raise InvalidRequest("Variations take exactly one 'image' file.", param="image")
    image_request = _common(params, get_consumer(request), "")
    image_request.images = images
    image_request.variation = True
    result = await state.service.run(image_request, current_request_id())
    model = params.model or DEFAULT_MODEL
    return render_result(result, response_format_for(params), request, state, model=model)


def model_object(model_id: str, state: AppState) -> dict[str, Any]:
    info = state.service.describe(model_id)
    item: dict[str, Any] = {"id": model_id, "object": "model", "created": state.started, "owned_by": info.owned_by}
    if info.precision is not None:  # limner extension: a local model's precision and quantised weights
        item |= {"precision": info.precision, "quantization": info.quantization}
    if info.loras:  # limner extension: the model's LoRA adapters
        item["loras"] = [
            {"name": lora.name, "weight": lora.weight, "description": lora.description} for lora in info.loras
        ]
    return item


async def list_models(request: Request) -> Response:
    """Every model id and alias in the catalog."""
    state = get_state(request)
    return JSONResponse({"object": "list", "data": models_payload(state)})


def models_payload(state: AppState) -> list[dict[str, Any]]:
    return [model_object(name, state) for name in state.service.model_names()]


async def retrieve_model(request: Request, model_id: str) -> Response:
    """One model by id or alias."""
    state = get_state(request)
    return JSONResponse(model_object(model_id, state))


GENERATION_BODY = openapi.json_body(GenerationParams, name="OpenAIGenerationParams")
EDIT_BODY = openapi.form_body(
    EditParams,
    name="OpenAIEditForm",
    files=[
        openapi.FileField("image", "The image(s) to edit, composed in order.", max_items=MAX_INPUT_IMAGES),
        openapi.FileField(
            "image[]", "The same as image (the name SDKs use for several).", required=False, max_items=MAX_INPUT_IMAGES
        ),
        openapi.FileField("mask", "Transparent where the image should change (PNG).", required=False),
    ],
)
VARIATION_BODY = openapi.form_body(
    VariationParams, name="OpenAIVariationForm", files=[openapi.FileField("image", "The image to vary.")]
)
ERROR_RESPONSES = openapi.error_responses(OpenAIErrorResponse, openapi.statuses(ERROR_MAP))
IMAGES_OK = openapi.ok(
    "The images (stream true: server-sent events, see below).",
    ImagesResponse,
    content=openapi.event_stream(
        "stream true: <kind>.partial_image events (partial_images of them), then <kind>.completed per image, "
        "kind being image_generation or image_edit; an error after the start is an error event."
    ),
)


def build_router(*, images: bool = True, models: bool = True) -> APIRouter:
    router = APIRouter(route_class=dialect_route(render_error), tags=["OpenAI"])
    if images:
        router.add_api_route(
            "/v1/images/generations",
            create_image,
            methods=["POST"],
            openapi_extra=openapi.request_body(GENERATION_BODY),
            responses={**IMAGES_OK, **ERROR_RESPONSES},
        )
        router.add_api_route(
            "/v1/images/edits",
            edit_image,
            methods=["POST"],
            openapi_extra=openapi.request_body(EDIT_BODY),
            responses={**IMAGES_OK, **ERROR_RESPONSES},
        )
    router.add_api_route(
        "/v1/images/variations",
        create_variation,
        methods=["POST"],
        openapi_extra=openapi.request_body(VARIATION_BODY),
        responses={**openapi.ok("The variations.", ImagesResponse), **ERROR_RESPONSES},
    )
    if models:
        router.add_api_route(
            "/v1/models",
            list_models,
            methods=["GET"],
            responses={**openapi.ok("Every model name.", ModelList), **ERROR_RESPONSES},
        )
    router.add_api_route(
        "/v1/models/{model_id:path}",
        retrieve_model,
        methods=["GET"],
        responses={**openapi.ok("The model.", ModelObject), **ERROR_RESPONSES},
    )
    return router

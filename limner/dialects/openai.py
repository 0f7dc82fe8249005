"""OpenAI Images: ``/v1/images/generations`` (JSON), ``/v1/images/edits`` and ``/v1/images/variations``
(multipart), ``/v1/models``. Shapes follow the official API so the ``openai`` SDK works unchanged,
error classes included.

limner extensions, fenced here and in the README: ``seed``, ``negative_prompt``, ``steps``,
``guidance_scale``, ``strength`` (edits), ``style_preset``, and ``seed`` on each returned image.

``stream: true`` on generations and edits answers OpenAI's server-sent events (``openai_stream``).
"""

from __future__ import annotations

import base64
from typing import Any, Literal

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import SkipJsonSchema

from limner.core.errors import InvalidRequest, LimnerError
from limner.core.models import ImageRequest, ImageResult, SizeSpec
from limner.core.sizes import parse_size
from limner.dialects.images import MAX_INPUT_IMAGES, uploads
from limner.dialects.openai_stream import stream_images
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
    output_format: Literal["png", "jpeg", "webp"] | None = None
    output_compression: int | None = Field(None, ge=0, le=100)
    background: Literal["transparent", "opaque", "auto"] | None = None
    quality: Literal["auto", "high", "medium", "low", "hd", "standard"] | None = None
    user: str | None = None
    stream: bool | None = None
    partial_images: int | None = Field(None, ge=0, le=3)
    # limner extensions
    seed: int | None = Field(None, ge=0, le=2**32 - 1)
    negative_prompt: str | None = Field(None, max_length=4000)
    steps: int | None = Field(None, ge=1, le=150)
    guidance_scale: float | None = Field(None, ge=0, le=30)
    style_preset: str | None = None


class GenerationParams(_Params):
    prompt: str = Field(min_length=1, max_length=32000)
    style: Literal["vivid", "natural"] | None = None
    moderation: Literal["low", "auto"] | None = None


class EditParams(_Params):
    prompt: str = Field(min_length=1, max_length=32000)
    input_fidelity: Literal["high", "low"] | None = None
    strength: float | None = Field(None, ge=0, le=1)


class VariationParams(_Params):
    pass


class ImageObject(BaseModel):
    """One image of an answer: ``url`` or ``b64_json``, as ``response_format`` asked."""

    url: str | SkipJsonSchema[None] = Field(
        None, description="The image's signed URL (response_format url); it expires."
    )
    b64_json: str | SkipJsonSchema[None] = Field(
        None, description="The image, base64-encoded (response_format b64_json)."
    )
    revised_prompt: str | SkipJsonSchema[None] = Field(
        None, description="The prompt the model used, when it rewrote it."
    )
    seed: int | None = Field(None, description="limner extension: the seed that reproduces this image.")


class ImagesResponse(BaseModel):
    """The answer of generations, edits and variations (and AIGNE Hub's)."""

    created: int = Field(description="Unix seconds when the images were made.")
    data: list[ImageObject]
    output_format: Literal["png", "jpeg", "webp"]
    size: str = Field(description="WIDTHxHEIGHT of the images.")
    quality: str | SkipJsonSchema[None] = None
    background: str | SkipJsonSchema[None] = None


class OpenAIError(BaseModel):
    message: str
    type: str = Field(description="OpenAI's error class, e.g. invalid_request_error, insufficient_quota.")
    param: str | None = Field(description="The request field at fault, if one is.")
    code: str | None = Field(description="A stable, machine-readable cause.")


class OpenAIErrorResponse(BaseModel):
    """``{"error": {...}}``, which the ``openai`` SDK raises as the exception class for its status."""

    error: OpenAIError


class ModelObject(BaseModel):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"]
    data: list[ModelObject]


# limner code -> (HTTP status, OpenAI error type, OpenAI error code)
ERROR_MAP: dict[str, tuple[int, str, str | None]] = {
    "invalid_request": (400, "invalid_request_error", "invalid_value"),
    "invalid_image": (400, "invalid_request_error", "invalid_image"),
    "unsupported": (400, "invalid_request_error", "unsupported_value"),
    "model_not_found": (404, "invalid_request_error", "model_not_found"),
    "unknown_request": (404, "invalid_request_error", "not_found"),
    "missing_bearer_token": (401, "invalid_request_error", "missing_api_key"),
    "invalid_token": (401, "invalid_request_error", "invalid_api_key"),
    "forbidden": (403, "permission_error", "forbidden"),
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


def _common(params: _Params, consumer: str, prompt: str) -> ImageRequest:
    model = params.model or DEFAULT_MODEL
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
        output_format=params.output_format or "png",
        output_compression=params.output_compression,
        background=params.background,
        quality=params.quality,
        consumer=consumer,
        partial_images=(params.partial_images or 0) if params.stream else 0,
    )


def response_format_for(params: _Params) -> ResponseFormat:
    """OpenAI's default: URLs for DALL-E, base64 for the gpt-image models."""
    if params.response_format:
        return params.response_format
    return "b64_json" if (params.model or DEFAULT_MODEL).startswith("gpt-image") else "url"


def render_result(result: ImageResult, response_format: ResponseFormat, request: Request, state: AppState) -> Response:
    if response_format == "url" and result.storage_error:
        raise LimnerError(f"The image was generated but could not be stored ({result.storage_error}).")
    data: list[dict[str, Any]] = []
    for image in result.images:
        item: dict[str, Any] = (
            {"url": absolute(request, state.settings, image.url)}
            if response_format == "url"
            else {"b64_json": base64.b64encode(image.data).decode()}
        )
        if image.revised_prompt:
            item["revised_prompt"] = image.revised_prompt
        item["seed"] = image.seed
        data.append(item)
    body: dict[str, Any] = {
        "created": result.created,
        "data": data,
        "output_format": result.output_format,
        "size": f"{result.width}x{result.height}",
    }
    if result.quality:
        body["quality"] = result.quality
    if result.background:
        body["background"] = result.background
    return JSONResponse(body)


async def create_image(request: Request) -> Response:
    """Create images from a prompt (``stream: true``: server-sent events, see ``openai_stream``)."""
    state = get_state(request)
    params = await read_json(request, GenerationParams)
    image_request = _common(params, get_consumer(request), params.prompt)
    image_request.rendering_style = params.style
    if params.stream:
        return await stream_images(state.service, image_request, "image_generation", error_body)
    result = await state.service.run(image_request, current_request_id())
    return render_result(result, response_format_for(params), request, state)


async def edit_image(request: Request) -> Response:
    """Edit or extend one image, or compose several, from a prompt (multipart)."""
    state = get_state(request)
    form = await read_form(request, max_file_bytes=state.settings.max_upload_bytes)
    return await edit_from_form(request, state, form)


async def edit_from_form(request: Request, state: AppState, form: FormBody) -> Response:
    params = validate(EditParams, form.scalars())
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
    if params.stream:
        return await stream_images(state.service, image_request, "image_edit", error_body)
    result = await state.service.run(image_request, current_request_id())
    return render_result(result, response_format_for(params), request, state)


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
    return render_result(result, response_format_for(params), request, state)


def model_object(model_id: str, state: AppState) -> dict[str, Any]:
    info = state.service.describe(model_id)
    return {"id": model_id, "object": "model", "created": state.started, "owned_by": info.owned_by}


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

"""OpenAI Images' endpoints: generations (JSON, or server-sent events with ``stream: true``), edits and
variations (multipart), and the model list. The image endpoints translate (``limner.http.translation``):
each reads its body into an ``ImageRequest`` and an ``Answer``; the route runs it and ``RENDERER`` answers."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from limner.core.answer import Answer
from limner.core.errors import InvalidRequest, UnsupportedOperation
from limner.core.models import ImageRequest
from limner.dialects.images import MAX_INPUT_IMAGES, encoded, uploads
from limner.dialects.openai.protocol import (
    DEFAULT_MODEL,
    DIALECT,
    EditParams,
    GenerationParams,
    ImageParams,
    ImagesResponse,
    ModelList,
    ModelObject,
    OpenAIErrorResponse,
    UpscaleParams,
    VariationParams,
)
from limner.dialects.openai.render import ERROR_MAP, model_object, models_payload, render_result
from limner.dialects.openai.request import (
    expand_of,
    response_format_for,
    safety_identifier,
    to_request,
    upscale_request,
)
from limner.dialects.openai.stream import stream_answer, stream_events
from limner.http import openapi
from limner.http.access import check_visible, visible_models
from limner.http.deps import get_consumer, get_state
from limner.http.dialect import Envelope
from limner.http.routing import FormBody, dialect_route, read_form, read_json, validate
from limner.http.scheduling import read_scheduling
from limner.http.translation import Renderer, Translated
from limner.http.urls import public_base


async def create_image(request: Request) -> Translated:
    """Create images from a prompt (``stream: true``: server-sent events, see ``stream``)."""
    params = await read_json(request, GenerationParams)
    image_request = read_scheduling(request, to_request(params, get_consumer(request), params.prompt))
    image_request.rendering_style = params.style
    return translated(request, params, image_request, "generation")


async def edit_image(request: Request) -> Translated:
    """Edit or extend one image, or compose several, from a prompt (multipart)."""
    form = await read_form(request, max_file_bytes=get_state(request).settings.max_upload_bytes)
    return edit_from_form(request, form)


def edit_from_form(request: Request, form: FormBody) -> Translated:
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
    image_request = read_scheduling(request, to_request(params, get_consumer(request), params.prompt))
    image_request.images = images
    image_request.mask = masks[0] if masks else None
    image_request.strength = params.strength
    image_request.expand = expand_of(params.expand)
    return translated(request, params, image_request, "edit")


async def create_variation(request: Request) -> Translated:
    """Create variations of one image (multipart)."""
    form = await read_form(request, max_file_bytes=get_state(request).settings.max_upload_bytes)
    params = validate(VariationParams, form.scalars())
    images = uploads(form, "image")
    if len(images) != 1:
        raise InvalidRequest("Variations take exactly one 'image' file.", param="image")
    image_request = read_scheduling(request, to_request(params, get_consumer(request), ""))
    image_request.images = images
    image_request.variation = True
    return translated(request, params, image_request, "variation")


def translated(request: Request, params: ImageParams, image_request: ImageRequest, endpoint: str) -> Translated:
    """The request and how OpenAI answers it: JSON in ``response_format``, or server-sent events (``stream``)."""
    answer = Answer(
        DIALECT,
        endpoint,
        stream=bool(params.stream) and endpoint != "variation",
        response_format=response_format_for(params),
        model=params.model or DEFAULT_MODEL,
        base_url=public_base(request, get_state(request).settings),
        safety_identifier=safety_identifier(params) if endpoint != "variation" else None,
    )
    return Translated(image_request, answer, RENDERER)


RENDERER = Renderer(render_result, stream_answer, stream_events)
"""OpenAI's answers: ``ImagesResponse`` JSON, or its server-sent events."""


async def upscale_image(request: Request) -> Translated:
    """Upscale one image 2x or 4x (multipart with an ``image`` file, or JSON with ``image`` as base64 or a URL)."""
    state = get_state(request)
    if request.headers.get("content-type", "").startswith("multipart/"):
        form = await read_form(request, max_file_bytes=state.settings.max_upload_bytes)
        params = validate(UpscaleParams, form.scalars())
        if params.image is not None:
            raise InvalidRequest("In a multipart body, send image as a file.", param="image")
        images = uploads(form, "image")
    else:
        params = await read_json(request, UpscaleParams)
        images = encoded([params.image], param="image") if params.image else []
    if len(images) != 1:
        raise InvalidRequest("An upscale takes exactly one 'image'.", param="image")
    image_request = read_scheduling(request, upscale_request(params, get_consumer(request)))
    image_request.images = images
    answer = Answer(
        DIALECT,
        "upscale",
        response_format=params.response_format or "url",
        model=params.model or None,
        base_url=public_base(request, state.settings),
    )
    return Translated(image_request, answer, RENDERER)


async def list_models(request: Request) -> Response:
    """Every model id and alias in the catalog."""
    state = get_state(request)
    return JSONResponse({"object": "list", "data": models_payload(state, await visible_models(request))})


async def retrieve_model(request: Request, model_id: str) -> Response:
    """One model by id or alias."""
    state = get_state(request)
    await check_visible(request, model_id)
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
UPSCALE_BODY = openapi.form_body(
    UpscaleParams, name="OpenAIUpscaleForm", files=[openapi.FileField("image", "The image to upscale.")]
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


def build_router(envelope: Envelope, *, images: bool = True, models: bool = True) -> APIRouter:
    """The OpenAI routes, their errors in ``envelope`` (the dialect's); ``images`` and ``models`` off leave
    generations, edits and the model list to the shared router."""
    router = APIRouter(route_class=dialect_route(envelope), tags=["OpenAI"])
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
    router.add_api_route(
        "/v1/images/upscale",
        upscale_image,
        methods=["POST"],
        openapi_extra=openapi.request_body(UPSCALE_BODY, openapi.json_body(UpscaleParams, name="OpenAIUpscaleParams")),
        responses={**openapi.ok("The upscaled image.", ImagesResponse), **ERROR_RESPONSES},
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

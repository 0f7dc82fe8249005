"""OpenAI Images' endpoints: generations (JSON, or server-sent events with ``stream: true``), edits and
variations (multipart), and the model list; each reads its body, runs the service, and renders the answer."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from limner.core.errors import InvalidRequest, UnsupportedOperation
from limner.core.models import ImageRequest
from limner.dialects.images import MAX_INPUT_IMAGES, encoded, uploads
from limner.dialects.openai.protocol import (
    DEFAULT_MODEL,
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
from limner.dialects.openai.render import ERROR_MAP, error_body, model_object, models_payload, render_result
from limner.dialects.openai.request import (
    expand_of,
    response_format_for,
    safety_identifier,
    to_request,
    upscale_request,
)
from limner.dialects.openai.stream import StreamKind, stream_images
from limner.http import openapi
from limner.http.access import check_visible, visible_models
from limner.http.context import current_request_id
from limner.http.deps import AppState, get_consumer, get_state
from limner.http.dialect import Envelope
from limner.http.routing import FormBody, dialect_route, read_form, read_json, validate
from limner.http.scheduling import read_scheduling


async def create_image(request: Request) -> Response:
    """Create images from a prompt (``stream: true``: server-sent events, see ``stream``)."""
    state = get_state(request)
    params = await read_json(request, GenerationParams)
    image_request = read_scheduling(request, to_request(params, get_consumer(request), params.prompt))
    image_request.rendering_style = params.style
    return await _answer(request, state, params, image_request, "image_generation")


async def _answer(
    request: Request, state: AppState, params: ImageParams, image_request: ImageRequest, kind: StreamKind
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
    image_request = read_scheduling(request, to_request(params, get_consumer(request), params.prompt))
    image_request.images = images
    image_request.mask = masks[0] if masks else None
    image_request.strength = params.strength
    image_request.expand = expand_of(params.expand)
    return await _answer(request, state, params, image_request, "image_edit")


async def create_variation(request: Request) -> Response:
    """Create variations of one image (multipart)."""
    state = get_state(request)
    form = await read_form(request, max_file_bytes=state.settings.max_upload_bytes)
    params = validate(VariationParams, form.scalars())
    images = uploads(form, "image")
    if len(images) != 1:
        raise InvalidRequest("Variations take exactly one 'image' file.", param="image")
    image_request = read_scheduling(request, to_request(params, get_consumer(request), ""))
    image_request.images = images
    image_request.variation = True
    result = await state.service.run(image_request, current_request_id())
    model = params.model or DEFAULT_MODEL
    return render_result(result, response_format_for(params), request, state, model=model)


async def upscale_image(request: Request) -> Response:
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
    image_request = upscale_request(params, get_consumer(request))
    image_request.images = images
    result = await state.service.run(image_request, current_request_id())
    return render_result(result, params.response_format or "url", request, state, model=result.model)


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

"""ImagineArt's endpoints: generations and edits (multipart, answering PNG bytes), the model list and a
health probe. The image endpoints translate (``limner.http.translation``): each reads its form into an
``ImageRequest`` and an ``Answer``; the route runs it and ``RENDERER`` answers."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from limner.core.answer import Answer
from limner.core.errors import InvalidRequest
from limner.dialects.imagineart.listing import models_payload
from limner.dialects.imagineart.protocol import (
    DIALECT,
    IMAGE_TYPES,
    MAX_IMAGES,
    EditForm,
    GenerationForm,
    ImagineArtErrorResponse,
    ImagineArtModelList,
)
from limner.dialects.imagineart.render import ERROR_MAP, render_result
from limner.dialects.imagineart.request import edit_request, form_fields, generation_request, load_images
from limner.http import openapi
from limner.http.access import visible_models
from limner.http.deps import get_consumer, get_state, public
from limner.http.dialect import Envelope
from limner.http.routing import FormBody, dialect_route, read_form, validate
from limner.http.scheduling import read_scheduling
from limner.http.translation import Renderer, Translated


async def generate_image(request: Request) -> Translated:
    """Synthesize a new image from a text prompt; answers the PNG bytes."""
    form = await read_form(request, max_file_bytes=get_state(request).settings.max_upload_bytes)
    return generate_from_form(request, form)


def generate_from_form(request: Request, form: FormBody) -> Translated:
    if form.files:
        names = ", ".join(sorted(form.files))
        raise InvalidRequest(f"Generations take no files (got {names}); use /v1/images/edits.", param=names)
    params = validate(GenerationForm, form_fields(form))
    image_request = read_scheduling(request, generation_request(params, get_consumer(request)))
    return Translated(image_request, Answer(DIALECT, "generation"), RENDERER)


async def edit_image(request: Request) -> Translated:
    """Edit one to four reference images from an instruction; answers the PNG bytes."""
    form = await read_form(request, max_file_bytes=get_state(request).settings.max_upload_bytes)
    return edit_from_form(request, form)


def edit_from_form(request: Request, form: FormBody) -> Translated:
    fields = form_fields(form)
    fields.pop("images", None)  # text parts named images: load_images says what is wrong with them
    params = validate(EditForm, fields)
    images = load_images(form)
    image_request = read_scheduling(request, edit_request(params, images, get_consumer(request)))
    return Translated(image_request, Answer(DIALECT, "edit"), RENDERER)


RENDERER = Renderer(render_result)
"""ImagineArt's answer: the image itself, how it was made in the headers."""


async def list_models(request: Request) -> Response:
    """The two models and the parameters each accepts."""
    visible = await visible_models(request)
    return JSONResponse({"object": "list", "data": models_payload(get_state(request), visible)})


@public
async def health() -> Response:
    """Liveness probe, open to all."""
    return JSONResponse({"ok": True})


GENERATION_BODY = openapi.form_body(GenerationForm, name="ImagineArtGenerationForm")
GENERATION_BODIES = openapi.form_variants(GENERATION_BODY, openapi.URLENCODED)
"""Multipart, and urlencoded as the reference's httpx example sends it (``data=`` with no files)."""
EDIT_BODY = openapi.form_body(
    EditForm,
    name="ImagineArtEditForm",
    files=[
        openapi.FileField(
            "images", "1-4 reference image files, image 1 first.", max_items=MAX_IMAGES, content_types=IMAGE_TYPES
        )
    ],
)
IMAGE_OK = openapi.ok(
    "The PNG image, with no metadata; the headers say how it was made.",
    content=openapi.binary("image/png"),
    headers={
        "X-Seed": openapi.header("The seed used: send it back to reproduce the image.", "integer"),
        "X-Model": openapi.header("The catalog model that ran."),
        "X-Width": openapi.header("Width in pixels.", "integer"),
        "X-Height": openapi.header("Height in pixels.", "integer"),
        "X-Request-Id": openapi.header("This request's id."),
    },
)
ERROR_RESPONSES = openapi.error_responses(ImagineArtErrorResponse, openapi.statuses(ERROR_MAP))


def build_router(envelope: Envelope, *, images: bool = True, models: bool = True, probe: bool = False) -> APIRouter:
    """The ImagineArt routes, their errors in ``envelope`` (the dialect's); ``images`` and ``models`` off leave
    generations, edits and the model list to the shared router; ``probe`` adds ``GET /health`` (the app
    already answers it at the root)."""
    router = APIRouter(route_class=dialect_route(envelope), tags=["ImagineArt"])
    if images:
        for path, endpoint, bodies in (
            ("/v1/images/generations", generate_image, GENERATION_BODIES),
            ("/v1/images/edits", edit_image, [EDIT_BODY]),
        ):
            router.add_api_route(
                path,
                endpoint,
                methods=["POST"],
                response_class=Response,  # the 200 is PNG bytes, not JSON
                openapi_extra=openapi.request_body(*bodies),
                responses={**IMAGE_OK, **ERROR_RESPONSES},
            )
    if models:
        router.add_api_route(
            "/v1/models",
            list_models,
            methods=["GET"],
            responses={**openapi.ok("The two models and their parameters.", ImagineArtModelList), **ERROR_RESPONSES},
        )
    if probe:
        router.add_api_route("/health", health, methods=["GET"])
    return router

"""ImagineArt 2.0: ``POST /v1/images/generations`` and ``/v1/images/edits`` (multipart, answering PNG bytes),
``GET /v1/models`` (the two models and the parameters each accepts) and ``GET /health``.

Decisions, documented in the README:

- The public ids ``text-to-image`` and ``image-edit`` are catalog aliases; whatever engine the catalog
  routes them to does the work. A catalog without them answers 502 ``model_not_available``.
- ``seed`` 0, -1 or omitted draws a random seed; every answer says the seed used in ``X-Seed``, so
  sending it back reproduces the image. ``X-Model`` names the catalog model that ran, ``X-Width`` and
  ``X-Height`` the pixel size, ``X-Request-Id`` the request.
- ``reasoning=high`` asks the core for high effort: twice the model's default denoising steps.
- "Clean metadata": the PNG carries no text chunks at all (no prompt, no parameters), whatever the
  server's ``embed_metadata`` setting; the headers carry what a client needs.
- ``aspect_ratio=auto`` (edits) keeps the first reference image's ratio, however many images follow it.
- An image part's type is judged by its bytes, not its label: curl labels ``.webp`` and ``.heic`` files
  ``application/octet-stream``. The service decodes PNG, JPEG, WebP, HEIC and HEIF after admission; any
  other bytes are 400 ``invalid_image`` naming the image and the format found.
- Spent credits are 401 ``invalid_token`` ("this token has no credits left"): the reference has no 402 or
  403, and its 429 ``rate_limited`` is what clients retry, forever when nothing will change.
- ``GET /v1/models`` names the two models as the reference does ("ImagineArt 2.0", "ImagineArt 2.0 Edit")
  and says in ``served_by`` which catalog model does the work.
"""

from __future__ import annotations

import copy
import functools
from typing import Any, Literal

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from limner.core.errors import InvalidImage, InvalidRequest, LimnerError, ModelNotFound
from limner.core.imagineart import RESOLUTIONS, EditAspectRatio, GenerateAspectRatio, Resolution
from limner.core.models import Capabilities, EncodedImage, ImageInput, ImageRequest, ImageResult, SizeSpec
from limner.core.sizes import resolve_size
from limner.dialects.loras import LoraList, lora_choices
from limner.http import openapi
from limner.http.context import current_request_id
from limner.http.deps import AppState, get_consumer, get_state, public
from limner.http.errors import error_response, lookup
from limner.http.routing import FormBody, dialect_route, read_form, validate
from limner.http.transport import https_only

DIALECT = "imagineart"
GENERATE_MODEL = "text-to-image"
EDIT_MODEL = "image-edit"
MODEL_NAMES = {GENERATE_MODEL: "ImagineArt 2.0", EDIT_MODEL: "ImagineArt 2.0 Edit"}
"""The two models' names as the reference lists them (``served_by`` says which catalog model runs each)."""
MAX_IMAGES = 4
IMAGE_TYPES = ("image/png", "image/jpeg", "image/webp", "image/heic", "image/heif")
SEED_MAX = 2**32 - 1
RANDOM_SEEDS = (0, -1)
PROMPT_LIMIT = 4000
RESOLUTION_HELP = "1K (faster) or 2K (higher fidelity)."
EXTENSIONS = frozenset({"loras"})
"""Form fields limner adds to the reference's (documented in OpenAPI, not in the model listing)."""
LORAS_HELP = 'limner extension: LoRA adapters of the serving model, as a JSON list [{"name": ..., "weight": ...}].'
SEED_HELP = "Deterministic seed. 0, -1, or omitted = random."


class GenerationForm(BaseModel):
    """``/v1/images/generations`` fields, in the reference's order."""

    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(min_length=1, max_length=PROMPT_LIMIT, description="Text prompt describing the image.")
    aspect_ratio: GenerateAspectRatio = Field("1:1", description="Output aspect ratio.")
    resolution: Resolution = Field("2K", description=RESOLUTION_HELP)
    seed: int | None = Field(None, ge=-1, le=SEED_MAX, description=SEED_HELP)
    reasoning: Literal["low", "high"] = Field(
        "low", description="Visual reasoning level: low (faster) or high (richer compositions: more denoising steps)."
    )
    loras: LoraList | None = Field(None, description=LORAS_HELP)


class EditForm(BaseModel):
    """``/v1/images/edits`` fields, in the reference's order (``images`` are files, checked separately)."""

    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(min_length=1, max_length=PROMPT_LIMIT, description="Editing instruction.")
    aspect_ratio: EditAspectRatio = Field("auto", description="Output aspect ratio; auto matches the first image.")
    resolution: Resolution = Field("2K", description=RESOLUTION_HELP)
    seed: int | None = Field(None, ge=-1, le=SEED_MAX, description=SEED_HELP)
    loras: LoraList | None = Field(None, description=LORAS_HELP)


class ImagineArtError(BaseModel):
    code: str = Field(description="The machine-readable cause, safe to switch on.")
    message: str
    request_id: str


class ImagineArtErrorResponse(BaseModel):
    """``{"error": {"code", "message", "request_id"}}``: every ImagineArt error has this stable shape."""

    error: ImagineArtError


class ImagineArtModel(BaseModel):
    """A model as OpenAI lists it, plus ImagineArt's name, modality and parameters."""

    id: str
    object: Literal["model"]
    created: int
    owned_by: str
    name: str = Field(description="As the reference names it: ImagineArt 2.0, ImagineArt 2.0 Edit.")
    modality: Literal["text-to-image", "image-to-image"]
    parameters: dict[str, Any] = Field(description="A JSON schema of the endpoint's form fields, and output details.")
    served_by: str = Field(description="limner extension: the catalog model that does the work.")


class ImagineArtModelList(BaseModel):
    object: Literal["list"]
    data: list[ImagineArtModel]


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


@https_only  # the reference: "Tokens transmitted over plain HTTP are immediately revoked."
def render_error(error: LimnerError, request_id: str) -> Response:
    """``{"error": {"code", "message", "request_id"}}``; ``Retry-After`` on 429."""
    status, code = lookup(ERROR_MAP, error)
    message = error.message
    if isinstance(error, ModelNotFound):
        message = f"Model '{error.model}' is not available on this server."
    return error_response({"error": {"code": code, "message": message, "request_id": request_id}}, status, error)


def seed_for(seed: int | None) -> int | None:
    """0, -1 and omitted all mean "draw one"."""
    return None if seed is None or seed in RANDOM_SEEDS else seed


def _fields(form: FormBody) -> dict[str, Any]:
    fields = form.scalars()
    if fields.get("seed") == "":
        del fields["seed"]  # an empty form field is an omitted one
    return fields


def generation_request(params: GenerationForm, consumer: str) -> ImageRequest:
    return ImageRequest(
        prompt=params.prompt,
        model=GENERATE_MODEL,
        dialect=DIALECT,
        size=SizeSpec(aspect_ratio=params.aspect_ratio, resolution=params.resolution),
        seed=seed_for(params.seed),
        effort="high" if params.reasoning == "high" else "normal",
        output_format="png",
        embed_metadata=False,
        links=False,  # the answer is the PNG itself
        loras=lora_choices(params.loras),
        consumer=consumer,
    )


def edit_request(params: EditForm, images: list[ImageInput], consumer: str) -> ImageRequest:
    return ImageRequest(
        prompt=params.prompt,
        model=EDIT_MODEL,
        dialect=DIALECT,
        size=SizeSpec(aspect_ratio=params.aspect_ratio, resolution=params.resolution),
        seed=seed_for(params.seed),
        images=images,
        output_format="png",
        embed_metadata=False,
        links=False,  # the answer is the PNG itself
        loras=lora_choices(params.loras),
        consumer=consumer,
    )


def render_result(result: ImageResult) -> Response:
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


async def generate_image(request: Request) -> Response:
    """Synthesize a new image from a text prompt; answers the PNG bytes."""
    state = get_state(request)
    form = await read_form(request, max_file_bytes=state.settings.max_upload_bytes)
    return await generate_from_form(request, state, form)


async def generate_from_form(request: Request, state: AppState, form: FormBody) -> Response:
    if form.files:
        names = ", ".join(sorted(form.files))
        raise InvalidRequest(f"Generations take no files (got {names}); use /v1/images/edits.", param=names)
    params = validate(GenerationForm, _fields(form))
    result = await state.service.run(generation_request(params, get_consumer(request)), current_request_id())
    return render_result(result)


async def edit_image(request: Request) -> Response:
    """Edit one to four reference images from an instruction; answers the PNG bytes."""
    state = get_state(request)
    form = await read_form(request, max_file_bytes=state.settings.max_upload_bytes)
    return await edit_from_form(request, state, form)


async def edit_from_form(request: Request, state: AppState, form: FormBody) -> Response:
    fields = _fields(form)
    fields.pop("images", None)  # text parts named images: load_images says what is wrong with them
    params = validate(EditForm, fields)
    images = load_images(form)
    result = await state.service.run(edit_request(params, images, get_consumer(request)), current_request_id())
    return render_result(result)


def load_images(form: FormBody) -> list[ImageInput]:
    """1-4 ``images`` files, in order (image 1 first); the service decodes them and judges their type."""
    uploads = form.files.get("images", [])
    if not uploads:
        if "images" in form.fields:
            raise InvalidImage("'images' must be files (multipart file parts), not text fields.", param="images")
        raise InvalidRequest("Missing required parameter: 'images'.", param="images")
    if len(uploads) > MAX_IMAGES:
        raise InvalidRequest(f"At most {MAX_IMAGES} images can be given; got {len(uploads)}.", param="images")
    # No check of each part's label: curl calls .webp and .heic files application/octet-stream. The
    # service decodes the bytes (PNG, JPEG, WebP, HEIC, HEIF) and names the image whose bytes are not one.
    return [EncodedImage(upload.data, f"image {index}", "images") for index, upload in enumerate(uploads, start=1)]


async def list_models(request: Request) -> Response:
    """The two models and the parameters each accepts."""
    return JSONResponse({"object": "list", "data": models_payload(get_state(request))})


@public
async def health() -> Response:
    """Liveness probe, open to all."""
    return JSONResponse({"ok": True})


def models_payload(state: AppState) -> list[dict[str, Any]]:
    """The two models, as OpenAI model objects that also carry ImagineArt's name, modality and parameters."""
    items = []
    for model_id, modality, form in (
        (GENERATE_MODEL, "text-to-image", GenerationForm),
        (EDIT_MODEL, "image-to-image", EditForm),
    ):
        try:
            info = state.service.describe(model_id)
        except ModelNotFound:
            continue  # not configured: not listed
        items.append(
            {
                "id": model_id,
                "object": "model",
                "created": state.started,
                "owned_by": info.owned_by,
                "name": MODEL_NAMES[model_id],
                "modality": modality,
                "parameters": parameters_schema(form, state.service.capabilities(info.id), info.id),
                "served_by": info.id,
            }
        )
    return items


def flat_properties(schema: dict[str, Any]) -> dict[str, Any]:
    """A pydantic JSON schema's properties without titles, optional fields as their non-null type."""
    properties: dict[str, Any] = {}
    for name, prop in schema["properties"].items():
        prop = {key: value for key, value in prop.items() if key != "title"}
        variants = [variant for variant in prop.pop("anyOf", []) if variant.get("type") != "null"]
        if len(variants) == 1:
            prop = {**variants[0], **prop}
        elif variants:
            prop["anyOf"] = variants
        properties[name] = prop
    return properties


def _pixels(spec: SizeSpec, caps: Capabilities) -> str:
    width, height = resolve_size(spec, caps).output
    return f"{width}x{height}"


def model_schema(form: type[BaseModel]) -> dict[str, Any]:
    """``form``'s JSON schema, a copy the caller may change: pydantic builds it anew on every call,
    which made listing models cost as much as generating an image."""
    return copy.deepcopy(_model_schema(form))


@functools.cache
def _model_schema(form: type[BaseModel]) -> dict[str, Any]:
    return form.model_json_schema()


def parameters_schema(form: type[BaseModel], caps: Capabilities, model: str) -> dict[str, Any]:
    """A JSON-schema object for one endpoint: the form model's fields, enums, defaults and limits,
    the ``images`` files for edits, and the pixel sizes this catalog model produces per resolution.
    limner's own extensions (``loras``) stay out: clients walk this list as the reference defines it."""
    schema = model_schema(form)
    properties = {name: prop for name, prop in flat_properties(schema).items() if name not in EXTENSIONS}
    if form is EditForm:
        properties["images"] = {
            "type": "array",
            "items": {"type": "string", "format": "binary"},
            "mime_types": list(IMAGE_TYPES),
            "minItems": 1,
            "maxItems": MAX_IMAGES,
            "description": "Reference image files; image 1 first.",
        }
    ratios = [ratio for ratio in properties["aspect_ratio"]["enum"] if ratio != "auto"]
    properties["resolution"]["sizes"] = {
        resolution: {ratio: _pixels(SizeSpec(aspect_ratio=ratio, resolution=resolution), caps) for ratio in ratios}
        for resolution in RESOLUTIONS
    }
    return {
        "type": "object",
        "endpoint": "/v1/images/edits" if form is EditForm else "/v1/images/generations",
        "content_type": "multipart/form-data",
        "required": [*schema.get("required", []), *(["images"] if form is EditForm else [])],
        "properties": properties,
        "model": model,
        "supports_seed": caps.supports_seed,
        "output": {
            "mime_type": "image/png",
            "metadata": "none",
            "headers": ["X-Seed", "X-Model", "X-Width", "X-Height", "X-Request-Id"],
        },
    }


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


def build_router(*, images: bool = True, models: bool = True, probe: bool = False) -> APIRouter:
    """``probe`` adds ``GET /health`` (the app already answers it at the root)."""
    router = APIRouter(route_class=dialect_route(render_error), tags=["ImagineArt"])
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

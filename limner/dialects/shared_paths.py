"""The paths OpenAI and ImagineArt share when both are mounted at one prefix (the default: the root).

One route per shared path picks the dialect per request, then that dialect translates the request (the
route runs it, and the picked dialect's renderer answers):

    POST /v1/images/generations  application/json -> OpenAI; multipart/form-data or urlencoded -> ImagineArt
    POST /v1/images/edits        decided on the parsed form: an ``images`` part -> ImagineArt; ``image`` or
                                 ``image[]`` -> OpenAI; neither: ``aspect_ratio`` or ``resolution`` ->
                                 ImagineArt (its fields), else OpenAI (each then says what is missing)
    GET  /v1/models              OpenAI's list of every catalog name, each item also in ImagineArt's shape
                                 (``name``, ``modality``, ``parameters``, ``served_by``); the two ImagineArt
                                 ids first, named as its reference names them. A caller that says it is an
                                 ImagineArt client (``Limner-Dialect: imagineart``) gets ImagineArt's own
                                 list: the two models it can select, nothing that describes OpenAI's bodies.
                                 ImagineArt's own examples (curl, httpx, fetch) call it with their token and
                                 no such header: a caller that is not evidently OpenAI's is taken for
                                 ImagineArt's, so its HTTPS-only token rule applies (``models_envelope``)

A request says which dialect it is for with ``Limner-Dialect: openai`` or ``imagineart`` (limner's
header; the references' own examples send nothing that tells a raw ImagineArt call from a raw OpenAI one).

Errors go to the dialect the request is for: the one the route picked, once it has (a durable request's
checks run the route first, so its queue-full 429 comes in the picked dialect's envelope); before that
(authentication, an unreadable body, an unknown content type, a wrong method) the declared one, else
OpenAI's for a JSON body or an official OpenAI SDK (which sends ``X-Stainless-Lang``), so its codes
(``invalid_api_key``) are the same on every OpenAI path; otherwise ``render_either``: one envelope with
OpenAI's and ImagineArt's fields (ImagineArt's ``code``), so both read it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, RootModel

from limner.core.errors import InvalidRequest, LimnerError
from limner.core.models import Capabilities, Mode
from limner.dialects import imagineart, openai
from limner.http import openapi
from limner.http.access import visible_models
from limner.http.deps import AppState, get_state
from limner.http.dialect import Envelope, Errors, TokenPolicy
from limner.http.errors import error_response, lookup
from limner.http.guards import FORM_TYPES
from limner.http.routing import FormBody, dialect_route, read_form, refuse_exposed, rendered
from limner.http.translation import Translated

IMAGINEART_EDIT_FIELDS = frozenset({"aspect_ratio", "resolution"})
DIALECT_HEADER = "limner-dialect"
"""``Limner-Dialect: openai | imagineart``: which dialect's client is calling (other values: not said)."""
DIALECTS: dict[str, Envelope] = {openai.DIALECT: openai.OPENAI, imagineart.DIALECT: imagineart.IMAGINEART}
PICKED = "limner_shared_renderer"
"""Where a shared route notes, in the request's state, the envelope of the dialect it picked."""


class EitherError(BaseModel):
    message: str
    type: str = Field(description="OpenAI's error class.")
    param: str | None
    code: str = Field(description="ImagineArt's error code.")
    request_id: str


class EitherErrorResponse(BaseModel):
    """Errors raised before a dialect is chosen: OpenAI's fields and ImagineArt's, so both SDKs read it."""

    error: EitherError


class SharedErrorResponse(
    RootModel[openai.OpenAIErrorResponse | imagineart.ImagineArtErrorResponse | EitherErrorResponse]
):
    """OpenAI's envelope for a JSON request or an OpenAI edit, ImagineArt's for its forms, else both in one."""


class SharedModelList(BaseModel):
    """Every catalog model, each in OpenAI's and ImagineArt's shape; the two ImagineArt ids first."""

    object: Literal["list"]
    data: list[imagineart.ImagineArtModel]


def render_either(error: LimnerError, request_id: str) -> Response:
    """``{"error": {"message", "type", "param", "code", "request_id"}}``: OpenAI's fields and ImagineArt's."""
    status, code = lookup(imagineart.ERROR_MAP, error)
    kind = lookup(openai.ERROR_MAP, error)[1]
    body = {
        "error": {"message": error.message, "type": kind, "param": error.param, "code": code, "request_id": request_id}
    }
    return error_response(body, status, error)


EITHER = Errors(render_either)
"""The combined envelope, for a caller that is evidently neither dialect's."""
EITHER_HTTPS_ONLY = Errors(render_either, tokens="https-only")
"""The combined envelope for a caller that may be ImagineArt's: its token follows ImagineArt's HTTPS-only rule."""


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


def declared_dialect(request: Request) -> str | None:
    """The dialect the caller names in ``Limner-Dialect``, if it names one limner shares a path for."""
    value = request.headers.get(DIALECT_HEADER, "").strip().lower()
    return value if value in DIALECTS else None


def envelope_for(request: Request) -> Envelope:
    """The envelope for this request's errors: the dialect the route picked, else the declared one, else
    OpenAI's for a JSON body or an official OpenAI SDK (every one sends ``X-Stainless-Lang``), else the
    combined one."""
    chosen: Envelope | None = getattr(request.state, PICKED, None)
    if chosen is not None:
        return chosen
    declared = declared_dialect(request)
    if declared is not None:
        return DIALECTS[declared]
    if "json" in _media_type(request) or "x-stainless-lang" in request.headers:
        return openai.OPENAI
    return EITHER


def models_envelope(request: Request) -> Envelope:
    """``GET /v1/models``: OpenAI's envelope for an evident OpenAI caller; anyone else may be ImagineArt's."""
    envelope = envelope_for(request)
    return EITHER_HTTPS_ONLY if envelope is EITHER else envelope


def picked(request: Request, dialect: Envelope) -> Envelope:
    """Note that the route chose ``dialect``, for errors raised after it (durable's own)."""
    setattr(request.state, PICKED, dialect)
    return dialect


@dataclass(frozen=True)
class ChosenWhenRendered:
    """``envelope_for``'s envelope, chosen when an error is rendered rather than when the request arrived (an
    async request's queue-full 429 comes after the route picked its dialect). Its own token policy is
    "any": the route applies the picked dialect's when it picks one (``rendered``)."""

    request: Request
    tokens: TokenPolicy = "any"

    def render_error(self, error: LimnerError, request_id: str) -> Response:
        return envelope_for(self.request).render_error(error, request_id)


class SharedRoute(dialect_route(EITHER)):  # type: ignore[misc]
    """Authenticated like every dialect route; its errors go to ``envelope_for``'s envelope, chosen when
    each is rendered."""

    @staticmethod
    def envelope_for(request: Request) -> Envelope:
        return ChosenWhenRendered(request)


class SharedModelsRoute(SharedRoute):
    """The models list: an ImagineArt caller's token sent over plain HTTP is revoked before it runs."""

    envelope_for = staticmethod(models_envelope)


async def create_image(request: Request) -> Translated:
    """OpenAI (JSON) or ImagineArt (multipart) image generation, by content type."""
    media_type = _media_type(request)
    if media_type in FORM_TYPES:
        await refuse_exposed(picked(request, imagineart.IMAGINEART))
        return await imagineart.generate_image(request)
    if "json" in media_type:
        await refuse_exposed(picked(request, openai.OPENAI))
        return await openai.create_image(request)
    raise InvalidRequest(
        f"Unsupported content type '{media_type or 'none'}': send application/json (OpenAI) "
        "or multipart/form-data (ImagineArt)."
    )


def is_imagineart_edit(form: FormBody) -> bool:
    names = set(form.files) | set(form.fields)
    if "images" in names:
        return True
    if names & {"image", "image[]"}:
        return False
    return bool(names & IMAGINEART_EDIT_FIELDS)


async def edit_image(request: Request) -> Translated:
    """OpenAI or ImagineArt image edits, by the parts of the form."""
    form = await read_form(request, max_file_bytes=get_state(request).settings.max_upload_bytes)
    if is_imagineart_edit(form):
        await refuse_exposed(picked(request, imagineart.IMAGINEART))
        return imagineart.edit_from_form(request, form)
    await refuse_exposed(picked(request, openai.OPENAI))
    return openai.edit_from_form(request, form)


async def list_models(request: Request) -> Response:
    """Every catalog model, for OpenAI and ImagineArt clients alike, the ImagineArt models first; a declared
    ImagineArt client gets only those two."""

    async def build() -> Response:
        state = get_state(request)
        visible = await visible_models(request)
        if declared_dialect(request) == imagineart.DIALECT:
            return JSONResponse({"object": "list", "data": imagineart.models_payload(state, visible)})
        first = {item["id"]: item for item in imagineart.models_payload(state, visible)}
        data: list[dict[str, Any]] = list(first.values())
        shared = openai.models_payload(state, visible)
        data += [in_both_shapes(item, state) for item in shared if item["id"] not in first]
        return JSONResponse({"object": "list", "data": data})

    return await rendered(models_envelope(request), build())


def in_both_shapes(item: dict[str, Any], state: AppState) -> dict[str, Any]:
    """An OpenAI model item that also has ImagineArt's ``name``, ``modality`` and ``parameters`` (those of the
    OpenAI endpoint it serves), so a client of either can walk every item of the list."""
    info = state.service.describe(item["id"])
    try:
        caps = state.service.capabilities(item["id"])
    except Exception:  # a misconfigured entry fails when used, with its own error; the list still answers
        caps = Capabilities()
    generates = Mode.GENERATE in caps.modes
    return {
        **item,
        "name": info.display_name if item["id"] == info.id else item["id"],
        "modality": "text-to-image" if generates else "image-to-image",
        "parameters": openai_parameters(generates, info.id, caps),
        "served_by": info.id,
    }


def openai_parameters(generates: bool, model: str, caps: Capabilities) -> dict[str, Any]:
    """ImagineArt's ``parameters`` object for an OpenAI model: the JSON schema of the body it takes."""
    form = openai.GenerationParams if generates else openai.EditParams
    schema = imagineart.model_schema(form)
    parameters: dict[str, Any] = {
        "type": "object",
        "endpoint": "/v1/images/generations" if generates else "/v1/images/edits",
        "content_type": "application/json" if generates else "multipart/form-data",
        "required": schema.get("required", []),
        "properties": imagineart.flat_properties(schema),
        "model": model,
        "supports_seed": caps.supports_seed,
        "output": {"mime_types": ["image/png", "image/jpeg", "image/webp"], "response": "ImagesResponse JSON"},
    }
    if "$defs" in schema:
        parameters["$defs"] = schema["$defs"]
    return parameters


ERROR_RESPONSES = openapi.error_responses(
    SharedErrorResponse, openapi.statuses(openai.ERROR_MAP) + openapi.statuses(imagineart.ERROR_MAP)
)
IMAGES_OK = openapi.merge_responses(
    openai.IMAGES_OK,
    imagineart.IMAGE_OK,
    description="OpenAI: the images as JSON (stream true: server-sent events). "
    "ImagineArt: the PNG itself, its seed, model and size in the headers.",
)


DIALECT_PARAMETER: dict[str, Any] = {
    "name": "Limner-Dialect",
    "in": "header",
    "required": False,
    "schema": {"type": "string", "enum": list(DIALECTS)},
    "description": "Which dialect's client is calling: its envelope for every error; imagineart on /v1/models: "
    "only the models an ImagineArt client can select.",
}


def with_dialect_header(extra: dict[str, Any]) -> dict[str, Any]:
    return {**extra, "parameters": [*extra.get("parameters", []), DIALECT_PARAMETER]}


def build_router() -> APIRouter:
    router = APIRouter(route_class=SharedRoute, tags=["OpenAI", "ImagineArt"])
    router.add_api_route(
        "/v1/images/generations",
        create_image,
        methods=["POST"],
        summary="Create images: OpenAI (JSON body) or ImagineArt (multipart or urlencoded body)",
        openapi_extra=with_dialect_header(openapi.request_body(openai.GENERATION_BODY, *imagineart.GENERATION_BODIES)),
        responses={**IMAGES_OK, **ERROR_RESPONSES},
    )
    router.add_api_route(
        "/v1/images/edits",
        edit_image,
        methods=["POST"],
        summary="Edit images: OpenAI (image / image[] parts) or ImagineArt (images parts)",
        openapi_extra=with_dialect_header(openapi.request_body(openai.EDIT_BODY, imagineart.EDIT_BODY)),
        responses={**IMAGES_OK, **ERROR_RESPONSES},
    )
    router.add_api_route(
        "/v1/models",
        list_models,
        methods=["GET"],
        openapi_extra=with_dialect_header({}),
        responses={
            **openapi.ok(
                "Every model, in both dialects' shapes (Limner-Dialect: imagineart: ImagineArt's two).", SharedModelList
            ),
            **ERROR_RESPONSES,
        },
        route_class_override=SharedModelsRoute,
    )
    return router

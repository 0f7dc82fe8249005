"""OpenAPI for routes that read their own bodies: typed request bodies, success and error responses.

Dialect handlers parse bodies themselves (``routing.read_json`` / ``read_form``) so that errors come
out in the dialect's words; FastAPI therefore sees no body parameter and would document none. These
helpers turn the dialects' pydantic models into the pieces ``add_api_route`` takes instead:

- ``request_body(json_body(Model), form_body(Form, files=...))`` is an ``openapi_extra`` with a
  ``requestBody`` (several alternatives of one media type become ``anyOf``: the server takes a body that
  matches any, and a ``oneOf`` of file parts is one that schema fuzzers cannot generate). Its schemas are
  ``$ref``s to ``#/components/schemas/<name>``; the schemas themselves ride along under
  ``x-limner-schemas`` until ``install(app)`` moves them into the document's components.
- ``error_responses(Envelope, statuses(ERROR_MAP))`` documents a dialect's error envelope for every
  status it answers; ``ok(...)`` the 200 answer (a JSON model, bytes, server-sent events, headers).
  FastAPI registers the models named in ``responses`` itself. ``answered_outside(responses, ...)`` adds
  what a dialect route answers without running: 405 for a method its path does not take, 403 for a
  cross-site POST or DELETE.
"""

from __future__ import annotations

import http
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel, Field

JSON = "application/json"
MULTIPART = "multipart/form-data"
URLENCODED = "application/x-www-form-urlencoded"
EVENT_STREAM = "text/event-stream"
REF = "#/components/schemas/{model}"
SCHEMAS_KEY = "x-limner-schemas"
IMAGE_TYPES = ("image/png", "image/jpeg", "image/webp")
BINARY: dict[str, Any] = {"type": "string", "format": "binary"}


@dataclass(frozen=True)
class FileField:
    """A file part of a multipart body; ``max_items`` > 1 is an array (the part repeated)."""

    name: str
    description: str
    required: bool = True
    max_items: int = 1
    content_types: tuple[str, ...] = IMAGE_TYPES

    def schema(self) -> dict[str, Any]:
        if self.max_items == 1:
            return {**BINARY, "description": self.description}
        items = {"type": "array", "items": BINARY, "maxItems": self.max_items, "description": self.description}
        return {**items, "minItems": 1} if self.required else items


@dataclass(frozen=True)
class Body:
    """One accepted request body: its media type, the component it is, and the schemas to register."""

    media_type: str
    name: str
    schemas: dict[str, dict[str, Any]]
    encoding: dict[str, Any]

    @property
    def ref(self) -> dict[str, str]:
        return {"$ref": REF.format(model=self.name)}


def _model_schemas(model: type[BaseModel], name: str) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """The model's validation schema titled ``name``, and the schemas it refers to."""
    schema = model.model_json_schema(ref_template=REF, mode="validation")
    defs: dict[str, dict[str, Any]] = schema.pop("$defs", {})
    return {**schema, "title": name}, defs


def json_body(model: type[BaseModel], *, name: str | None = None) -> Body:
    """``model`` as an ``application/json`` body (``name``: its component name, default the class name)."""
    name = name or model.__name__
    schema, defs = _model_schemas(model, name)
    return Body(JSON, name, {**defs, name: schema}, {})


def _form_value(prop: dict[str, Any]) -> dict[str, Any]:
    """A form part is a string or absent, never null: drop ``null`` alternatives and null defaults."""
    variants = [variant for variant in prop.get("anyOf", []) if variant.get("type") != "null"]
    rest = {key: value for key, value in prop.items() if key != "anyOf"}
    if rest.get("default", ...) is None:
        del rest["default"]
    if not variants:
        return rest
    return {**variants[0], **rest} if len(variants) == 1 else {**rest, "anyOf": variants}


def form_body(
    model: type[BaseModel], *, files: Iterable[FileField] = (), name: str | None = None, media_type: str = MULTIPART
) -> Body:
    """``model``'s fields plus ``files`` (``format: binary``) as a ``multipart/form-data`` body."""
    name = name or model.__name__
    schema, defs = _model_schemas(model, name)
    properties = {field: _form_value(prop) for field, prop in schema.get("properties", {}).items()}
    required = list(schema.get("required", []))
    encoding: dict[str, Any] = {}
    for file in files:
        properties[file.name] = file.schema()
        if file.required:
            required.append(file.name)
        encoding[file.name] = {"contentType": ", ".join(file.content_types)}
    schema = {**schema, "properties": properties, "required": required}
    return Body(media_type, name, {**defs, name: schema}, encoding)


def form_variants(body: Body, *media_types: str) -> list[Body]:
    """``body`` also as each of ``media_types`` (a form without files travels urlencoded as well)."""
    return [body, *(Body(media_type, body.name, body.schemas, {}) for media_type in media_types)]


def request_body(*bodies: Body, description: str | None = None) -> dict[str, Any]:
    """An ``openapi_extra`` declaring ``bodies`` as the request body (alternatives of one media type: ``anyOf``)."""
    content: dict[str, dict[str, Any]] = {}
    schemas: dict[str, dict[str, Any]] = {}
    for body in bodies:
        entry = content.setdefault(body.media_type, {})
        if "schema" not in entry:
            entry["schema"] = body.ref
        else:
            entry["schema"] = {"anyOf": [*entry["schema"].get("anyOf", [entry["schema"]]), body.ref]}
        if body.encoding:
            entry.setdefault("encoding", {}).update(body.encoding)
        schemas.update(body.schemas)
    request: dict[str, Any] = {"required": True, "content": content}
    if description:
        request["description"] = description
    return {"requestBody": request, SCHEMAS_KEY: schemas}


def statuses(table: Mapping[str, int | tuple[Any, ...]]) -> list[int]:
    """The HTTP statuses an error table (limner code -> status, or a tuple starting with it) answers."""
    return sorted({value if isinstance(value, int) else int(value[0]) for value in table.values()})


RETRY_AFTER = {"description": "Seconds to wait before retrying.", "schema": {"type": "integer"}}


def error_responses(model: type[BaseModel], codes: Iterable[int]) -> dict[int | str, dict[str, Any]]:
    """``responses`` documenting ``model`` as the body of each status in ``codes`` (429 with ``Retry-After``)."""
    responses: dict[int | str, dict[str, Any]] = {}
    for code in sorted(set(codes)):
        response: dict[str, Any] = {"model": model, "description": http.HTTPStatus(code).phrase}
        if code == 429:
            response["headers"] = {"Retry-After": RETRY_AFTER}
        responses[code] = response
    return responses


ALLOW = {"description": "The methods this path takes.", "schema": {"type": "string"}}


def answered_outside(
    responses: Mapping[int | str, dict[str, Any]], *, unsafe: bool, refused: type[BaseModel]
) -> dict[int | str, dict[str, Any]]:
    """``responses`` plus what a dialect route answers without running: 405 with ``Allow`` for a method its
    path does not take, in the envelope of its 400 (``limner.dialects.unrouted``), and for an unsafe method
    (POST, DELETE, ...) 403 for a cross-site ``Origin``, in ``refused``: the envelope of the answers given
    before routing (``limner.http.guards``)."""
    merged = dict(responses)
    envelope = merged.get(400, {}).get("model")
    if envelope is None:
        return merged
    merged.setdefault(
        405,
        {
            "model": envelope,
            "description": "Method Not Allowed (Allow names those taken).",
            "headers": {"Allow": ALLOW},
        },
    )
    if unsafe:
        own = merged.get(403)
        if own is None:
            merged[403] = {"model": refused, "description": "Forbidden: a cross-site request."}
        else:
            merged[403] = {
                **own,
                "model": own["model"] | refused,
                "description": f"{own['description']}, or a cross-site request.",
            }
    return dict(sorted(merged.items(), key=lambda item: str(item[0])))


class CodedError(BaseModel):
    code: str = Field(description="The machine-readable cause.")
    message: str


class CodedErrorResponse(BaseModel):
    """``{"error": {"code", "message"}}``: the errors of limner's own routes (signed media, operator reads)."""

    error: CodedError


def header(description: str, kind: str = "string") -> dict[str, Any]:
    return {"description": description, "schema": {"type": kind}}


def binary(media_type: str = "image/png") -> dict[str, Any]:
    """Response ``content`` for raw bytes of ``media_type``."""
    return {media_type: {"schema": BINARY}}


def event_stream(description: str) -> dict[str, Any]:
    """Response ``content`` for server-sent events (their data is JSON, described in words)."""
    return {EVENT_STREAM: {"schema": {"type": "string", "description": description}}}


def ok(
    description: str,
    model: type[BaseModel] | None = None,
    *,
    content: Mapping[str, Any] | None = None,
    headers: Mapping[str, Any] | None = None,
) -> dict[int | str, dict[str, Any]]:
    """``responses`` for the 200 answer: ``model`` as JSON, and/or other ``content`` (bytes, events)."""
    response: dict[str, Any] = {"description": description}
    if model is not None:
        response["model"] = model
    if content:
        response["content"] = dict(content)
    if headers:
        response["headers"] = dict(headers)
    return {200: response}


def merge_responses(
    *parts: Mapping[int | str, dict[str, Any]], description: str | None = None
) -> dict[int | str, dict[str, Any]]:
    """Several routes' ``responses`` as one shared route's: contents and headers united per status, the
    first ``model`` kept (its JSON), descriptions joined unless ``description`` replaces them."""
    merged: dict[int | str, dict[str, Any]] = {}
    for part in parts:
        for status, response in part.items():
            into = merged.setdefault(status, {})
            for key, value in response.items():
                if key in ("content", "headers"):
                    into[key] = {**into.get(key, {}), **value}
                elif key == "description" and "description" in into:
                    into[key] = f"{into[key]} {value}"
                else:
                    into.setdefault(key, value)
    if description is not None:
        for response in merged.values():
            response["description"] = description
    return merged


def register_schemas(document: dict[str, Any]) -> dict[str, Any]:
    """Move the schemas operations carry under ``x-limner-schemas`` into ``components.schemas``."""
    components = document.setdefault("components", {}).setdefault("schemas", {})
    for path_item in document.get("paths", {}).values():
        for operation in path_item.values():
            if not isinstance(operation, dict):
                continue
            for name, schema in operation.pop(SCHEMAS_KEY, {}).items():
                if components.get(name, schema) != schema:
                    raise ValueError(f"two different OpenAPI schemas are named {name!r}")
                components[name] = schema
    document["components"]["schemas"] = dict(sorted(components.items()))
    return document


def install(app: FastAPI) -> None:
    """Make ``app.openapi()`` register the request body schemas its routes declare (see the module doc)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        return register_schemas(build())

    app.openapi = openapi  # type: ignore[method-assign]

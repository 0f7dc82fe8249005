"""What every dialect shares: a route class that renders errors in the dialect's own envelope,
and parsing of JSON and multipart bodies into pydantic models with errors that name the field."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError
from starlette.datastructures import UploadFile

from limner.core.errors import InvalidRequest, LimnerError
from limner.http.context import current_request_id
from limner.http.deps import AuthenticatedRoute

log = logging.getLogger(__name__)

ModelT = TypeVar("ModelT", bound=BaseModel)
ErrorRenderer = Callable[[LimnerError, str], Response]


def dialect_route(render: ErrorRenderer) -> type[APIRoute]:
    """An ``APIRoute`` class whose errors, expected or not, come out in ``render``'s envelope.

    Its routes authenticate the caller first (``AuthenticatedRoute``), so auth errors use that envelope too."""

    class DialectRoute(AuthenticatedRoute):
        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            handler = super().get_route_handler()

            async def handle(request: Request) -> Response:
                return await rendered(render, handler(request))

            return handle

    return DialectRoute


async def rendered(render: ErrorRenderer, call: Awaitable[Response]) -> Response:
    """Await ``call``; any error, expected or not, becomes a response in ``render``'s envelope.

    Routes that pick a dialect per request (see ``shared_paths``) use this directly.
    """
    try:
        return await call
    except LimnerError as error:
        return render(error, current_request_id())
    except RequestValidationError as exc:
        return render(validation_error(exc.errors()), current_request_id())
    except Exception:
        log.exception("unhandled error")
        return render(LimnerError("Internal server error."), current_request_id())


def validation_error(errors: Any) -> InvalidRequest:
    """The first pydantic/FastAPI error as an ``InvalidRequest`` naming the field."""
    first = next(iter(errors))
    loc = [str(part) for part in first.get("loc", ()) if part not in ("body", "query", "form")]
    field = ".".join(loc) or None
    kind = first.get("type", "")
    if kind == "missing":
        return InvalidRequest(f"Missing required parameter: '{field}'.", param=field)
    if kind == "extra_forbidden":
        return InvalidRequest(f"Unrecognized request argument supplied: '{field}'.", param=field)
    message = first.get("msg", "invalid value")
    value = first.get("input")
    shown = f" {json.dumps(value)[:80]}" if isinstance(value, str | int | float | bool) else ""
    return InvalidRequest(f"Invalid value for '{field}'{shown}: {message}.", param=field)


def validate(model: type[ModelT], data: Any) -> ModelT:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc.errors()) from None


async def read_json(request: Request, model: type[ModelT]) -> ModelT:
    content_type = request.headers.get("content-type", "")
    if "json" not in content_type:
        raise InvalidRequest(f"Unsupported content type '{content_type or 'none'}': send application/json.", param=None)
    raw = await request.body()
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise InvalidRequest("Request body is not valid JSON.") from None
    if not isinstance(data, dict):
        raise InvalidRequest("Request body must be a JSON object.")
    return validate(model, data)


@dataclass
class Upload:
    field: str
    filename: str
    content_type: str
    data: bytes


@dataclass
class FormBody:
    fields: dict[str, list[str]]
    files: dict[str, list[Upload]]

    def scalars(self, *, keep_lists: tuple[str, ...] = ()) -> dict[str, Any]:
        """Fields as a dict for pydantic: one value each, lists kept only where asked."""
        return {name: values if name in keep_lists else values[-1] for name, values in self.fields.items()}


async def read_form(request: Request, *, max_file_bytes: int, max_files: int = 16) -> FormBody:
    content_type = request.headers.get("content-type", "")
    if "multipart/form-data" not in content_type and "application/x-www-form-urlencoded" not in content_type:
        raise InvalidRequest(f"Unsupported content type '{content_type or 'none'}': send multipart/form-data.")
    try:
        form = await request.form(max_files=max_files, max_fields=64)
    except Exception as exc:
        raise InvalidRequest(f"Could not parse the multipart body: {exc}.") from None
    fields: dict[str, list[str]] = {}
    files: dict[str, list[Upload]] = {}
    try:
        for name, value in form.multi_items():
            if isinstance(value, UploadFile):
                data = await value.read(max_file_bytes + 1)
                if len(data) > max_file_bytes:
                    label = value.filename or name
                    raise InvalidRequest(
                        f"File '{label}' in '{name}' exceeds the {max_file_bytes}-byte limit.", param=name
                    )
                files.setdefault(name, []).append(
                    Upload(name, value.filename or name, value.content_type or "application/octet-stream", data)
                )
            else:
                fields.setdefault(name, []).append(value)
    finally:
        await form.close()
    return FormBody(fields, files)

"""What every dialect shares: a route class that renders errors in the dialect's own envelope (and keeps its
token policy, ``limner.http.dialect``), and parsing of JSON and multipart bodies into pydantic models with
errors that name the field."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Coroutine
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any, TypeVar

from fastapi import Request, Response
from fastapi.datastructures import Default, DefaultPlaceholder
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError
from starlette.datastructures import FormData, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect

from limner.core.errors import InvalidRequest, LimnerError
from limner.http import jsonbody, openapi
from limner.http.context import current_request_id
from limner.http.deps import AuthenticatedRoute
from limner.http.dialect import Envelope, ErrorRenderer, https_only
from limner.http.durable import ACCEPTED_RESPONSES, OPENAPI_PARAMETERS, durable
from limner.http.guards import FORM_TYPES, UNSAFE_METHODS, RefusedResponse
from limner.http.transport import exposed_var
from limner.service.accounting import CLIENT_CLOSED

log = logging.getLogger(__name__)

ModelT = TypeVar("ModelT", bound=BaseModel)


def dialect_route(envelope: Envelope, *, durable_posts: bool = True) -> type[APIRoute]:
    """An ``APIRoute`` class whose errors, expected or not, come out in ``envelope`` (a dialect, usually).

    Its routes authenticate the caller first (``AuthenticatedRoute``), so auth errors use that envelope too,
    and a token sent over plain HTTP to an HTTPS-only dialect is revoked. Its POST endpoints are
    translators (``limner.http.translation``): each returns the request it read, translated, and the route
    runs and renders it, taking ``Idempotency-Key`` and ``Prefer: respond-async`` (``limner.http.durable``),
    unless ``durable_posts`` is false (a POST that only reads what it is sent, and makes nothing worth keeping:
    a plain endpoint that answers a ``Response``).
    A subclass may pick the envelope per request by overriding ``envelope_for``."""

    class DialectRoute(AuthenticatedRoute):
        def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
            post = durable_posts and set(kwargs.get("methods") or ()) == {"POST"}
            if post:
                endpoint = durable(endpoint)  # a translator: run, queued or replayed (``limner.http.durable``)
                if isinstance(kwargs.get("response_model", Default(None)), DefaultPlaceholder):
                    kwargs["response_model"] = None  # it answers a Response, not the ``Translated`` it returns
                extra = dict(kwargs.get("openapi_extra") or {})
                extra["parameters"] = [*extra.get("parameters", []), *OPENAPI_PARAMETERS]
                kwargs["openapi_extra"] = extra
                kwargs["responses"] = {**ACCEPTED_RESPONSES, **(kwargs.get("responses") or {})}
            kwargs["responses"] = openapi.answered_outside(
                kwargs.get("responses") or {},
                unsafe=bool(set(kwargs.get("methods") or ()) & UNSAFE_METHODS),
                refused=RefusedResponse,
            )
            super().__init__(path, endpoint, **kwargs)

        @staticmethod
        def envelope_for(request: Request) -> Envelope:
            """This route's envelope, also for errors raised before it runs (a wrong method: see ``unrouted``)."""
            return envelope

        @classmethod
        def renderer_for(cls, request: Request) -> ErrorRenderer:
            """``envelope_for``'s render function."""
            return cls.envelope_for(request).render_error

        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            handler = super().get_route_handler()

            async def handle(request: Request) -> Response:
                return await rendered(self.envelope_for(request), handler(request))

            return handle

    return DialectRoute


async def rendered(envelope: Envelope, call: Awaitable[Response]) -> Response:
    """Await ``call``; any error, expected or not, becomes a response in ``envelope``.

    Routes that pick a dialect per request (see ``shared_paths``) use this directly; when they pick an
    HTTPS-only dialect for a token sent over plain HTTP, the token is revoked instead of the call made.
    """
    render = envelope.render_error
    exposed = exposed_var.get()
    if exposed is not None and https_only(envelope):
        if isinstance(call, Coroutine):
            call.close()
        return render(await exposed.revoke(), current_request_id())
    try:
        return await call
    except LimnerError as error:
        return render(error, current_request_id())
    except ClientDisconnect:
        return Response(status_code=CLIENT_CLOSED)  # gone before its body was read: nobody to answer
    except RequestValidationError as exc:
        return render(validation_error(exc.errors()), current_request_id())
    except Exception:
        log.exception("unhandled error")
        return render(LimnerError("Internal server error."), current_request_id())


async def refuse_exposed(envelope: Envelope) -> None:
    """For a route that picks its dialect per request: a token sent over plain HTTP to an HTTPS-only dialect
    is revoked, and the request refused with the error that says so, before its body is read."""
    exposed = exposed_var.get()
    if exposed is not None and https_only(envelope):
        raise await exposed.revoke()


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
    """The body as ``model``: JSON only (``application/json``, UTF-8), size-capped, nesting bounded."""
    jsonbody.check_content_type(request.headers.get("content-type", ""))
    data = jsonbody.parse(await request.body())
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


class _TextCheckingParser(MultiPartParser):
    """Starlette's multipart parser, except that a text part that is not valid text in its charset is an
    error: Starlette would read it as Latin-1 and hand the model mojibake (the JSON dialects refuse the
    same in ``jsonbody``)."""

    def on_part_end(self) -> None:
        part = self._current_part
        if part.file is None:
            try:
                bytes(part.data).decode(self._charset)
            except (UnicodeDecodeError, LookupError):
                raise MultiPartException(f"field '{part.field_name}' is not valid {self._charset} text.") from None
        super().on_part_end()


async def _parse_form(request: Request, *, max_files: int) -> FormData:
    if request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
        async with aclosing(request.stream()) as stream:
            return await _TextCheckingParser(request.headers, stream, max_files=max_files, max_fields=64).parse()
    return await request.form(max_files=max_files, max_fields=64)


async def read_form(request: Request, *, max_file_bytes: int, max_files: int = 16) -> FormBody:
    content_type = request.headers.get("content-type", "")
    if not any(form_type in content_type for form_type in FORM_TYPES):
        raise InvalidRequest(f"Unsupported content type '{content_type or 'none'}': send multipart/form-data.")
    try:
        form = await _parse_form(request, max_files=max_files)
    except (LimnerError, ClientDisconnect):
        raise  # over the body cap, or the client left
    except MultiPartException as exc:
        raise InvalidRequest(f"Could not parse the multipart body: {exc.message}") from None
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

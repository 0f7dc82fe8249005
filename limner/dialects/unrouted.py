"""Requests no dialect route handles, answered in the envelope of the dialect whose path they hit.

Starlette answers these itself (``{"detail": "Method Not Allowed"}``), which no dialect's client reads:

- a wrong method on a dialect's path (``GET /v1/images/generations``): 405 with ``Allow``, in that route's
  envelope (``renderer_for`` of its route class, so the shared paths pick per request as usual) and the
  code its table gives an unknown request (the references list no 405 of their own);
- an unknown path under ImagineArt's ``<prefix>/v1/``: 404 ``unknown_request`` in its envelope (in the
  combined one when OpenAI shares the prefix).

Anything else keeps FastAPI's own answer.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.exception_handlers import http_exception_handler
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from limner.core.errors import NotFound
from limner.dialects import imagineart, shared_paths
from limner.http.context import current_request_id
from limner.http.routing import ErrorRenderer


def install(app: FastAPI, mounts: dict[str, str]) -> None:
    """Register the handler for ``mounts`` (dialect -> prefix), as ``app.py`` mounted them."""
    shared = "openai" in mounts and mounts.get("imagineart") == mounts["openai"]
    imagineart_v1 = mounts["imagineart"] + "/v1/" if "imagineart" in mounts else None
    imagineart_render: ErrorRenderer = shared_paths.render_either if shared else imagineart.render_error

    async def unrouted(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        path = request.url.path
        if exc.status_code == 405:
            render = _route_renderer(request)
            if render is not None:
                allowed = (exc.headers or {}).get("Allow", "")
                error = NotFound(f"Method {request.method} is not allowed on {path}; use {allowed or 'another'}.")
                response = render(error, current_request_id())
                response.status_code = 405
                if allowed:
                    response.headers["Allow"] = allowed
                return response
        if exc.status_code == 404 and imagineart_v1 is not None and path.startswith(imagineart_v1):
            return imagineart_render(NotFound(f"No route for {request.method} {path}."), current_request_id())
        return await http_exception_handler(request, exc)

    app.add_exception_handler(HTTPException, unrouted)


def _route_renderer(request: Request) -> ErrorRenderer | None:
    """The envelope of the dialect route whose path matched (Starlette records it in the scope)."""
    choose = getattr(request.scope.get("route"), "renderer_for", None)
    render: ErrorRenderer | None = choose(request) if callable(choose) else None
    return render

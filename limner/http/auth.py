"""Authentication for every dialect route, rendered in that dialect's own error envelope.

``AuthenticatedRoute`` is the base of ``limner.http.routing.dialect_route``'s route class: it adds
the ``authenticate`` dependency to every route it builds, so a new dialect is protected without a
line of its own. FastAPI runs route dependencies inside the route handler, which the dialect route
wraps, so a ``MissingBearerToken`` raised here comes out as OpenAI's ``invalid_request_error``,
ImagineArt's ``missing_bearer_token`` envelope, and so on. Endpoints that must stay open (a
dialect's own health probe) are marked with ``@public``.

Auth runs before the handler reads the body: an unauthenticated client cannot make the server parse
uploads or fetch image URLs. The result is on ``request.state.principal`` (what ``get_consumer``
reads) and in ``principal_var`` (what the accounting gate reads to attribute usage to a token). A token
that an HTTPS-only dialect receives over plain HTTP is revoked here (``limner.http.transport``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from fastapi import Depends, Request, Security
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from limner.accounts.tokens import Principal, principal_var
from limner.core.errors import LimnerError
from limner.http.dialect import https_only
from limner.http.transport import note_transport

PUBLIC_ATTR = "__limner_public__"
bearer = HTTPBearer(auto_error=False, description="A limner API token: `limner tokens create --consumer NAME`")

F = TypeVar("F", bound=Callable[..., Any])


def public(endpoint: F) -> F:
    """Mark a dialect endpoint as open to everyone (no bearer token checked)."""
    setattr(endpoint, PUBLIC_ATTR, True)
    return endpoint


async def authenticate(
    request: Request, _credentials: HTTPAuthorizationCredentials | None = Security(bearer)
) -> Principal:
    """Resolve the caller from ``Authorization: Bearer ...``, or raise the auth error to render.

    (``_credentials`` only documents the scheme in OpenAPI; the header is parsed by ``Accounts``,
    which tells a missing header from a malformed one.)"""
    state = request.app.state.limner
    try:
        principal: Principal = await state.accounts.authenticate(
            request.headers.get("authorization"), open_allowed=state.settings.is_loopback_bind
        )
    except LimnerError as error:
        state.metrics.errors.labels(error.code).inc()
        raise
    request.state.principal = principal
    principal_var.set(principal)
    exposed = note_transport(request, state.settings, state.job_service, principal)
    envelope_for = getattr(request.scope.get("route"), "envelope_for", None)
    if exposed is not None and envelope_for is not None and https_only(envelope_for(request)):
        refused = await exposed.revoke()
        state.metrics.errors.labels(refused.code).inc()
        raise refused
    return principal


AUTHENTICATE = Depends(authenticate)


class AuthenticatedRoute(APIRoute):
    """An ``APIRoute`` that authenticates the caller first, unless its endpoint is ``@public``."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        if not getattr(endpoint, PUBLIC_ATTR, False):
            dependencies = list(kwargs.get("dependencies") or [])
            if not any(getattr(dep, "dependency", None) is authenticate for dep in dependencies):
                dependencies.insert(0, AUTHENTICATE)
            kwargs["dependencies"] = dependencies
        super().__init__(path, endpoint, **kwargs)


def current_principal(request: Request) -> Principal | None:
    principal: Principal | None = getattr(request.state, "principal", None)
    return principal

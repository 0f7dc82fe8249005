"""What a request must pass before any route sees it: an allowed Host, a same-site (or CORS-allowed)
Origin, and a body under the cap. Pure ASGI middlewares, installed by ``install``.

    HostGuard    Host not in ``Settings.host_patterns``               400 invalid_host
                 (a loopback bind answers only to loopback names: DNS rebinding cannot reach it;
                 ``/health`` answers any Host, for probes that address a container by IP)
    CORS         only when ``LIMNER_CORS_ORIGINS`` names origins (Starlette's ``CORSMiddleware``)
    OriginGuard  a POST/PUT/PATCH/DELETE whose ``Origin`` is neither this server's own nor a CORS
                 origin                                               403 forbidden_origin
                 (a web page cannot make the browser drive the API, even with a form or text/plain;
                 an origin is scheme, host and port, all three compared)
    BodyLimit    ``Content-Length`` or the bytes received pass the cap: ``PayloadTooLarge`` is raised
                 from ``receive()``, so the route that reads the body renders a 413 in its dialect's
                 envelope, before the body is buffered

The first two answer before routing, so they use one neutral envelope that every dialect's SDK reads
(``error.message``, ``error.code``, ``error.type``). Non-browser clients send no ``Origin`` and are
never refused by the origin check.
"""

from __future__ import annotations

import functools
import json
from urllib.parse import urlsplit

from fastapi import FastAPI, Request, Response
from pydantic import BaseModel, Field
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from limner.core.errors import LimnerError, PayloadTooLarge
from limner.http import proxies
from limner.http.asgi import HttpMiddleware
from limner.http.context import current_request_id
from limner.service.accounting import CLIENT_CLOSED
from limner.settings import Settings

HEALTH = "/health"
"""Answered whatever the Host: probes address a pod or container by IP, and it tells nobody anything."""
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")
"""The form bodies limner reads (``routing.read_form``); everything else that carries a body is JSON."""
MAX_REMEMBERED_HOSTS = 256
"""Distinct Host values whose verdict ``HostGuard`` keeps (a flood of junk ones only evicts the oldest)."""
EXPOSED_HEADERS = ["X-Request-Id", "Retry-After", "X-Seed", "X-Model", "X-Width", "X-Height"]


def split_host(value: str) -> tuple[str, int | None] | None:
    """``'Example.com:8000'`` -> ``('example.com', 8000)``; ``'[::1]'`` -> ``('::1', None)``; junk -> None."""
    value = value.strip().lower()
    if not value:
        return None
    try:
        parts = urlsplit("//" + value)
        host, port = parts.hostname, parts.port
    except ValueError:
        return None
    if not host or parts.path or parts.query or parts.fragment or parts.username is not None:
        return None
    return host, port


def matches(host: str, pattern: str) -> bool:
    """``*`` is any host; ``*.example.com`` its subdomains; anything else one exact name."""
    pattern = pattern.strip().lower().strip("[]")
    if pattern == "*":
        return True
    if pattern.startswith("*."):
        return host.endswith(pattern[1:]) and len(host) > len(pattern) - 1
    return host == pattern


def host_allowed(host: str, patterns: tuple[str, ...]) -> bool:
    return any(matches(host, pattern) for pattern in patterns)


def host_named(host: str, patterns: tuple[str, ...]) -> bool:
    """Allowed by a pattern that names it (not only by ``*``): the hosts absolute URLs may be built from."""
    return any(pattern.strip() != "*" and matches(host, pattern) for pattern in patterns)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers") or []:
        if key.lower() == name:
            decoded: str = value.decode("latin-1")
            return decoded
    return None


class RefusedError(BaseModel):
    message: str
    type: str = Field(description="invalid_request_error, as OpenAI's clients read it.")
    param: None
    code: str = Field(description="invalid_host or forbidden_origin.")
    request_id: str


class RefusedResponse(BaseModel):
    """The neutral envelope of a request refused before routing, which every dialect's SDK reads."""

    error: RefusedError


def error_body(status: int, code: str, message: str) -> bytes:
    kind = "invalid_request_error" if status < 500 else "server_error"
    error = {"message": message, "type": kind, "param": None, "code": code, "request_id": current_request_id()}
    return json.dumps({"error": error}).encode()


async def reject(send: Send, status: int, code: str, message: str) -> None:
    """Answer with the neutral JSON envelope, without calling the app."""
    body = error_body(status, code, message)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class HostGuard:
    """Refuse a request whose ``Host`` is not one this server answers to."""

    def __init__(self, app: ASGIApp, patterns: tuple[str, ...]) -> None:
        self.app = app
        self.patterns = patterns
        self.any_host = "*" in (pattern.strip() for pattern in patterns)
        # Clients send the same few Host values, and judging one costs a URL split: verdicts are remembered.
        self.allowed = functools.lru_cache(maxsize=MAX_REMEMBERED_HOSTS)(self._judge)

    def _judge(self, raw: str) -> bool:
        parsed = split_host(raw)
        return parsed is not None and host_allowed(parsed[0], self.patterns)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.any_host or scope["path"] == HEALTH:
            await self.app(scope, receive, send)
            return
        raw = _header(scope, b"host") or ""
        if not self.allowed(raw):
            shown = raw[:100] or "none"
            await reject(
                send,
                400,
                "invalid_host",
                f"Host '{shown}' is not served here: add it to LIMNER_ALLOWED_HOSTS to allow it.",
            )
            return
        await self.app(scope, receive, send)


def _origin(value: str) -> tuple[str, str, int] | None:
    """``'https://a.example'`` -> ``('https', 'a.example', 443)``; ``'null'`` or junk -> None."""
    try:
        parts = urlsplit(value.strip().lower())
        host, port = parts.hostname, parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not host:
        return None
    return parts.scheme, host, port or proxies.DEFAULT_PORTS[parts.scheme]


def own_origin(scope: Scope, trusted_proxies: list[str]) -> tuple[str, str, int] | None:
    """The origin this request was sent to: the scheme the client used (a trusted proxy's
    ``X-Forwarded-Proto`` believed), the ``Host`` header's name, and its port or the scheme's default."""
    host = split_host(_header(scope, b"host") or "")
    if host is None:
        return None
    scheme = proxies.scheme(scope, trusted_proxies)
    return scheme, host[0], host[1] or proxies.DEFAULT_PORTS.get(scheme, 80)


class OriginGuard:
    """Refuse a state-changing request sent by a web page of another site (one not in ``cors_origins``).

    Same site means the ``Origin`` is the one the request was sent to (``own_origin``) or ``public_url``'s:
    scheme, host and port all equal. Behind a TLS proxy the browser's origin is ``https``: the proxy must be
    trusted and send ``X-Forwarded-Proto``, or ``public_url`` must name the public address."""

    def __init__(
        self, app: ASGIApp, cors_origins: list[str], public_url: str | None, trusted_proxies: list[str]
    ) -> None:
        self.app = app
        self.any_origin = "*" in cors_origins
        self.trusted_proxies = trusted_proxies
        self.allowed = {origin for origin in (_origin(o) for o in cors_origins) if origin is not None}
        public = _origin(public_url) if public_url else None
        if public is not None:
            self.allowed.add(public)

    def permits(self, origin: str, scope: Scope) -> bool:
        parsed = _origin(origin)
        if parsed is None:
            return False  # "null": sandboxed frames, file:// pages, some redirects
        if self.any_origin or parsed in self.allowed:
            return True
        return parsed == own_origin(scope, self.trusted_proxies)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in UNSAFE_METHODS:
            await self.app(scope, receive, send)
            return
        origin = _header(scope, b"origin")
        if origin is not None and not self.permits(origin, scope):
            await reject(
                send,
                403,
                "forbidden_origin",
                f"Requests from the web origin '{origin[:100]}' are not allowed: add it to LIMNER_CORS_ORIGINS "
                "to let its pages call this server.",
            )
            return
        await self.app(scope, receive, send)


class BodyLimit(HttpMiddleware):
    """Cap request bodies: ``json_limit`` for JSON and anything else, ``form_limit`` for forms.

    The cap is enforced inside ``receive()``: a ``Content-Length`` over it fails the first read, and a
    chunked body fails the read that passes it, so at most one chunk beyond the cap is ever held."""

    def __init__(self, app: ASGIApp, json_limit: int, form_limit: int) -> None:
        super().__init__(app)
        self.json_limit = json_limit
        self.form_limit = form_limit

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        content_type = (_header(scope, b"content-type") or "").split(";", 1)[0].strip().lower()
        form = content_type in FORM_TYPES
        limit = self.form_limit if form else self.json_limit
        kind = "form" if form else "JSON"
        declared = _header(scope, b"content-length")
        received = 0

        def too_large() -> PayloadTooLarge:
            return PayloadTooLarge(f"Request body too large: {kind} bodies are limited to {limit} bytes.")

        async def limited_receive() -> Message:
            nonlocal received
            if declared is not None and declared.strip().isdigit() and int(declared) > limit:
                raise too_large()
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise too_large()
            return message

        await self.app(scope, limited_receive, send)


async def client_closed(_request: Request, _exc: Exception) -> Response:
    """The client left before its body was read: nobody gets this answer; logs and metrics say 499."""
    return Response(status_code=CLIENT_CLOSED)


async def limner_error(_request: Request, exc: Exception) -> Response:
    """A limner error that escaped a route with no envelope of its own (a guard raised it), as JSON."""
    assert isinstance(exc, LimnerError)
    return Response(error_body(exc.status, exc.code, exc.message), exc.status, media_type="application/json")


def install(app: FastAPI, settings: Settings) -> None:
    """Add the guards around the app (call after the inner middlewares; the host check ends up outermost)."""
    app.add_exception_handler(ClientDisconnect, client_closed)
    app.add_exception_handler(LimnerError, limner_error)
    app.add_middleware(BodyLimit, json_limit=settings.json_body_limit, form_limit=settings.form_body_limit)
    app.add_middleware(
        OriginGuard,
        cors_origins=settings.cors_origins,
        public_url=settings.public_url,
        trusted_proxies=settings.trusted_proxies,
    )
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "PATCH", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "X-Request-Id", "Idempotency-Key"],
            expose_headers=EXPOSED_HEADERS,
            max_age=600,
        )
    app.add_middleware(HostGuard, patterns=settings.host_patterns)

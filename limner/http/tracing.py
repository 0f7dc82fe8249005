"""The server span of each HTTP request: the root (or the caller's child, from a W3C ``traceparent``) of the
request's trace. Installed only while tracing is on (``limner.core.tracing``), so it costs nothing otherwise."""

from __future__ import annotations

from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from starlette.routing import Match
from starlette.types import Receive, Scope, Send

from limner.core.tracing import TRACER
from limner.http.asgi import HttpMiddleware, ResponseWatch


class TracingMiddleware(HttpMiddleware):
    """One ``SERVER`` span per HTTP request: method, path (never the query string), route, status, request id."""

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        carrier = {key.decode("latin-1"): value.decode("latin-1") for key, value in scope.get("headers") or []}
        parent = propagate.extract(carrier)
        method = scope["method"]
        attributes = {"http.request.method": method, "url.path": scope["path"], "url.scheme": scope.get("scheme", "")}
        tracer = trace.get_tracer(TRACER)
        with tracer.start_as_current_span(method, context=parent, kind=SpanKind.SERVER, attributes=attributes) as span:
            watch = ResponseWatch(send)
            try:
                await self.app(scope, receive, watch)
            finally:
                route = _route(scope)
                if route:
                    span.update_name(f"{method} {route}")
                    span.set_attribute("http.route", route)
                request_id = scope.get("state", {}).get("request_id")
                if request_id:
                    span.set_attribute("limner.request_id", request_id)
                if watch.status:
                    span.set_attribute("http.response.status_code", watch.status)
                    if watch.status >= 500:
                        span.set_status(Status(StatusCode.ERROR))


def _route(scope: Scope) -> str | None:
    """The path template of the route that took the request (``/v1/jobs/{request_id}``); None if none did.

    Routing happens on a copy of the scope, so the route is matched again here (only while tracing is on)."""
    route = scope.get("route")
    if route is None:
        for candidate in getattr(scope.get("app"), "routes", ()):
            if candidate.matches(scope)[0] is Match.FULL:
                route = candidate
                break
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else None

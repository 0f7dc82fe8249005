"""``/metrics`` and the middleware that counts every HTTP request into the app's ``Metrics`` registry
(``limner.service.metrics``), labelled by the dialect that served it."""

from __future__ import annotations

import hmac
import time

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.types import ASGIApp, Receive, Scope, Send

from limner.http.asgi import HttpMiddleware, ResponseWatch
from limner.service.metrics import Metrics


def dialect_label(scope: Scope) -> str:
    """The dialect whose module served a request (``shared_paths`` when it picked one per request); a dialect
    package's modules (``limner.dialects.openai.routes``) count as the dialect."""
    module = getattr(scope.get("endpoint"), "__module__", "") or ""
    if module.startswith("limner.dialects."):
        return module.removeprefix("limner.dialects.").split(".", 1)[0]
    return "-"


class MetricsMiddleware(HttpMiddleware):
    """Counts and times every HTTP request."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        super().__init__(app)
        self.metrics = metrics

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        watch = ResponseWatch(send)
        failed = False
        try:
            await self.app(scope, receive, watch)
        except BaseException:
            failed = True
            raise
        finally:
            dialect = dialect_label(scope)
            # No response at all: the client went away and its request was cancelled (nginx's 499).
            status = watch.status or (500 if failed else 499)
            self.metrics.http_requests.labels(dialect, scope.get("method", ""), str(status)).inc()
            self.metrics.http_latency.labels(dialect).observe(time.perf_counter() - started)


router = APIRouter(tags=["Ops"])


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    """Prometheus text format; open unless ``LIMNER_METRICS_TOKEN`` is set."""
    refused = refuse_without_metrics_token(request)
    if refused is not None:
        return refused
    return Response(request.app.state.limner.metrics.render(), media_type=CONTENT_TYPE_LATEST)


def refuse_without_metrics_token(request: Request) -> Response | None:
    """A 401 when ``LIMNER_METRICS_TOKEN`` is set and the request does not carry it; else None.

    Shared by the operator's read-only endpoints (``/metrics``, ``/limner/models``)."""
    expected = request.app.state.limner.settings.secret("metrics_token")
    if expected is not None:
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected.encode()):
            return JSONResponse(
                {"error": {"code": "invalid_token", "message": "Send 'Authorization: Bearer <metrics token>'."}},
                status_code=401,
            )
    return None

"""Prometheus metrics at ``/metrics``: HTTP requests and latency by dialect and status, generations,
images, errors by code, and each model's queue depth.

Every app has its own ``CollectorRegistry`` (never the process-global one), so tests and embedders
can build as many apps as they like. No label carries a consumer name or anything a client chose
freely (model names come from the catalog), so the number of series stays bounded.

    limner_http_requests_total{dialect,method,status}
    limner_http_request_duration_seconds{dialect}
    limner_generations_total{dialect,model,outcome}    outcome: ok or the error code
    limner_generation_duration_seconds{dialect,model}
    limner_images_total{dialect,model}
    limner_errors_total{code}                          auth, limits, credits and generation errors
    limner_queue_depth{model} / limner_jobs_running{model}
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

if TYPE_CHECKING:
    from limner.core.service import ImageService

LATENCY_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class QueueCollector(Collector):
    """Reads each model's slots when scraped, so the gauges are never stale."""

    def __init__(self, service: ImageService) -> None:
        self.service = service

    def collect(self) -> Iterable[Metric]:
        waiting = GaugeMetricFamily("limner_queue_depth", "Requests waiting for a model slot", labels=["model"])
        running = GaugeMetricFamily("limner_jobs_running", "Jobs running on a model", labels=["model"])
        for model, slots in sorted(self.service.queues().items()):
            waiting.add_metric([model], slots.waiting)
            running.add_metric([model], slots.running)
        return [waiting, running]

    def describe(self) -> Iterable[Metric]:
        return [
            GaugeMetricFamily("limner_queue_depth", "Requests waiting for a model slot", labels=["model"]),
            GaugeMetricFamily("limner_jobs_running", "Jobs running on a model", labels=["model"]),
        ]


class Metrics:
    def __init__(self, service: ImageService | None = None) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.http_requests = Counter(
            "limner_http_requests", "HTTP requests", ["dialect", "method", "status"], registry=r
        )
        self.http_latency = Histogram(
            "limner_http_request_duration_seconds",
            "HTTP request latency",
            ["dialect"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.generations = Counter(
            "limner_generations",
            "Requests that reached the image service",
            ["dialect", "model", "outcome"],
            registry=r,
        )
        self.generation_latency = Histogram(
            "limner_generation_duration_seconds",
            "Time in the image service",
            ["dialect", "model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.images = Counter("limner_images", "Images delivered", ["dialect", "model"], registry=r)
        self.errors = Counter("limner_errors", "Errors by limner error code", ["code"], registry=r)
        if service is not None:
            r.register(QueueCollector(service))

    def observe_generation(self, dialect: str, model: str, outcome: str, seconds: float, images: int) -> None:
        self.generations.labels(dialect, model, outcome).inc()
        self.generation_latency.labels(dialect, model).observe(seconds)
        if images:
            self.images.labels(dialect, model).inc(images)
        if outcome != "ok":
            self.errors.labels(outcome).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


def dialect_label(scope: Scope) -> str:
    """The dialect module that served a request (``shared_paths`` when it picked one per request)."""
    module = getattr(scope.get("endpoint"), "__module__", "") or ""
    if module.startswith("limner.dialects."):
        return module.removeprefix("limner.dialects.")
    return "-"


class MetricsMiddleware:
    """Counts and times every HTTP request (a pure ASGI middleware: streaming bodies pass untouched)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 0

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        except BaseException:
            status = status or 500
            raise
        finally:
            dialect = dialect_label(scope)
            # No response at all: the client went away and its request was cancelled (nginx's 499).
            self.metrics.http_requests.labels(dialect, scope.get("method", ""), str(status or 499)).inc()
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

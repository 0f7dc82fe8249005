"""The Prometheus registry behind ``/metrics`` (served by ``limner.http.metrics``): HTTP requests and
latency by dialect and status, generations, images, errors by code, and each model's queue depth.

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
    limner_stage_seconds{model,stage}                  where a delivered request's time went (``STAGES``)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector


class QueueCounts(Protocol):
    """What the queue gauges read of one model's slots (``limner.engines.slots.ModelSlots``)."""

    @property
    def waiting(self) -> int: ...
    @property
    def running(self) -> int: ...


Queues = Callable[[], Mapping[str, QueueCounts]]
"""Each model's slots by model id, read at every scrape (``ImageService.queues``)."""

LATENCY_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
STAGE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
"""Finer at the low end than ``LATENCY_BUCKETS``: encoding or storing one image takes milliseconds."""

STAGES = ("prepare", "inputs", "queue", "engine", "denoise", "decode", "upscale", "encode", "sign", "store")
"""The stages of ``ImageService`` in order, timed once per delivered request (wall-clock seconds; they
do not overlap, so together they are the service's time but for usage counting):

- ``prepare``: the plan, admission (rate limits) and the credit hold: everything before the queue but inputs
- ``inputs``: input images read, fetched and decoded (shrunk to what the request uses); next to nothing without
- ``queue``: waiting for the model's slot
- ``engine``: the engine call outside denoise and decode (the hand-over to the engine's thread, a batching
  window, the pipeline's set-up); all of the call for engines that report no split (upstream providers)
- ``denoise`` / ``decode``: the engine's own split (``EngineTimings``); absent for engines that cannot tell
- ``upscale``: scaling to the output size, style post-processing, watermark
- ``encode``: PNG, JPEG or WebP bytes (for several images at once, the wall time of scaling and encoding
  them side by side is shared between ``upscale`` and ``encode`` in proportion to each one's work)
- ``sign``: Content Credentials (a C2PA manifest signed into each image); nothing with ``LIMNER_C2PA=off``
- ``store``: writing to the media store (next to nothing when every image goes back inline)

Rendering and sending the response happen in the dialect and HTTP layers, after the service: that is
``limner_http_request_duration_seconds`` less ``limner_generation_duration_seconds``."""

StageObserver = Callable[[str, Mapping[str, float]], None]
"""Told a delivered request's model id and seconds per stage (``Metrics.observe_stages``)."""


class QueueCollector(Collector):
    """Reads each model's slots when scraped, so the gauges are never stale."""

    def __init__(self, queues: Queues) -> None:
        self.queues = queues

    def collect(self) -> Iterable[Metric]:
        waiting = GaugeMetricFamily("limner_queue_depth", "Requests waiting for a model slot", labels=["model"])
        running = GaugeMetricFamily("limner_jobs_running", "Jobs running on a model", labels=["model"])
        for model, slots in sorted(self.queues().items()):
            waiting.add_metric([model], slots.waiting)
            running.add_metric([model], slots.running)
        return [waiting, running]

    def describe(self) -> Iterable[Metric]:
        return [
            GaugeMetricFamily("limner_queue_depth", "Requests waiting for a model slot", labels=["model"]),
            GaugeMetricFamily("limner_jobs_running", "Jobs running on a model", labels=["model"]),
        ]


class Metrics:
    def __init__(self) -> None:
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
        self.stages = Histogram(
            "limner_stage_seconds",
            "Seconds a delivered request spent in each stage of the image service",
            ["model", "stage"],
            buckets=STAGE_BUCKETS,
            registry=r,
        )

        self.result_cache = Counter(
            "limner_result_cache_lookups",
            "Result cache lookups of seeded requests, by outcome (hit or miss)",
            ["model", "outcome"],
            registry=r,
        )

    def observe_cache(self, model: str, hit: bool) -> None:
        self.result_cache.labels(model, "hit" if hit else "miss").inc()

    def watch_queues(self, queues: Queues) -> None:
        """Report each model's queue depth and running jobs, read from ``queues`` at every scrape."""
        self.registry.register(QueueCollector(queues))

    def observe_generation(self, dialect: str, model: str, outcome: str, seconds: float, images: int) -> None:
        self.generations.labels(dialect, model, outcome).inc()
        self.generation_latency.labels(dialect, model).observe(seconds)
        if images:
            self.images.labels(dialect, model).inc(images)
        if outcome != "ok":
            self.errors.labels(outcome).inc()

    def observe_stages(self, model: str, seconds: Mapping[str, float]) -> None:
        """One delivered request's time per stage; ``model`` is a catalog id, ``seconds`` keys are ``STAGES``."""
        for stage, value in seconds.items():
            self.stages.labels(model, stage).observe(value)

    def render(self) -> bytes:
        return generate_latest(self.registry)

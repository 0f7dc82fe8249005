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

    def render(self) -> bytes:
        return generate_latest(self.registry)

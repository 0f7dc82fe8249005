"""Where a request's time goes, by the server's own clocks: ``/metrics`` read before and after a measurement.

The service times its stages (``limner_stage_seconds{model,stage}``, see ``limner.service.metrics.STAGES``);
what is left of the client's time is split with the two other histograms the server keeps:

- ``service, other``: ``limner_generation_duration_seconds`` less the stages (the accounting ticket, job
  bookkeeping, usage counting where the answer reports it)
- ``send``: ``limner_http_request_duration_seconds`` less the service: routing, parsing the body, the
  dialect's rendering (base64, JSON) and writing the response
- ``client and loopback``: the client's own time less the server's (the connection, reading the answer)

Every figure is a mean per request (histograms keep sums and counts, not medians). ``added_ms`` is what the
server adds to the model by its own clocks: the client's mean less the engine call (engine, denoise, decode);
unlike a difference of two medians it does not carry the model's run-to-run spread.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from limner.service.metrics import STAGES

Totals = dict[tuple[str, str], tuple[float, float]]
"""(metric, stage or "") -> (sum of seconds, count)."""

OTHER = ("service, other", "send", "client and loopback")


def totals(metrics_text: str, model: str) -> Totals:
    """The sums and counts of the stage, generation and HTTP histograms (HTTP: image endpoints only)."""
    found: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0.0, 0.0])
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            kind = 0 if sample.name.endswith("_sum") else 1 if sample.name.endswith("_count") else None
            if kind is None:
                continue
            labels = sample.labels
            if family.name == "limner_stage_seconds" and labels.get("model") == model:
                found[("stage", labels["stage"])][kind] += sample.value
            elif family.name == "limner_generation_duration_seconds" and labels.get("model") == model:
                found[("service", "")][kind] += sample.value
            elif family.name == "limner_http_request_duration_seconds" and labels.get("dialect") not in (None, "-"):
                found[("http", "")][kind] += sample.value  # "-": /metrics, /health and other non-dialect paths
    return {key: (value[0], value[1]) for key, value in found.items()}


def split(before: Totals, after: Totals, client_seconds: list[float]) -> dict[str, Any]:
    """Mean milliseconds per request for each stage and the rest, between two readings of ``totals``."""

    def mean(key: tuple[str, str]) -> float | None:
        total, count = after.get(key, (0.0, 0.0))
        was_total, was_count = before.get(key, (0.0, 0.0))
        requests = count - was_count
        return (total - was_total) / requests if requests else None

    stages = {stage: mean(("stage", stage)) for stage in STAGES}
    service, http = mean(("service", "")), mean(("http", ""))
    client = sum(client_seconds) / len(client_seconds) if client_seconds else None
    timed = sum(value for value in stages.values() if value is not None)
    rest = {
        "service, other": service - timed if service is not None else None,
        "send": http - service if http is not None and service is not None else None,
        "client and loopback": client - http if client is not None and http is not None else None,
    }
    as_ms = {name: None if value is None else round(value * 1000, 2) for name, value in (stages | rest).items()}
    model = [value for stage in ("engine", "denoise", "decode") if (value := stages[stage]) is not None]
    added = client - sum(model) if client is not None and len(model) == 3 else None
    return {
        "requests": len(client_seconds),
        "ms": as_ms,
        "client_mean_ms": None if client is None else round(client * 1000, 2),
        "added_ms": None if added is None else round(added * 1000, 2),
    }

"""The job object (``docs/jobs.md``): a durable job's row, merged with what this replica knows live about
it (queue position in the model's line, step, ETA) when it runs here.

It lives below HTTP because a job's webhook event carries the same object as ``GET /v1/jobs/{id}``, and
the event is queued by whatever ends the job (the runner, a cancel from the API or from the terminal)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from limner.service.job_shapes import JobView
from limner.service.jobs import Job

RESULT_PATH = "/v1/jobs/{id}/result"


def _seconds(value: datetime | None) -> float | None:
    return None if value is None else round(value.timestamp(), 3)


def job_body(
    view: JobView,
    *,
    live: Job | None = None,
    with_result: bool = True,
    deliveries: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The job object: the row's state; this replica's live progress while it runs here."""
    response = view.response
    result: Any = None
    if with_result and response is not None and "json" in response.content_type:
        try:
            result = json.loads(response.body)
        except ValueError:
            result = None
    step, total, position, eta = view.step, view.total_steps, view.queue_position, None
    if live is not None and view.status == "running":
        step, total = max(step, live.step), live.total_steps or total
        position = live.queue_position
        remaining = live.eta_seconds()
        eta = None if remaining is None else round(remaining, 2)
    elif view.status == "done":
        eta = 0.0
    body: dict[str, Any] = {
        "id": view.id,
        "object": "job",
        "status": view.status,
        "model": (live.model if live is not None else None) or view.model,
        "queue_position": position,
        "step": step,
        "total_steps": total,
        "eta_seconds": eta,
        "created_at": _seconds(view.created_at),
        "started_at": _seconds(view.started_at),
        "finished_at": _seconds(view.finished_at),
        "attempts": view.attempts,
        "error": view.error_code if view.status in ("failed", "cancelled") else None,
        "error_message": view.error_message,
        "result_status": response.status if response is not None else None,
        "result_content_type": response.content_type or None if response is not None else None,
        "result_url": RESULT_PATH.format(id=view.id) if response is not None else None,
        "result": result,
        "webhook": None,
    }
    if view.webhook_url is not None:
        body["webhook"] = {"url": view.webhook_url, "deliveries": deliveries or []}
    return body

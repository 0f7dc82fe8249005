"""The job object of ``/v1/jobs`` (``docs/jobs.md``): a durable job's row, merged with what this replica
knows live about it (queue position in the model's line, step, ETA) when it runs here."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from limner.service.job_store import JobView
from limner.service.jobs import Job

RESULT_PATH = "/v1/jobs/{id}/result"


class WebhookAttemptBody(BaseModel):
    at: float
    status_code: int | None
    error: str | None
    seconds: float


class WebhookDeliveryBody(BaseModel):
    event_id: str
    type: str
    state: str = Field(description="pending, delivered or failed (gave up)")
    attempts: list[WebhookAttemptBody]


class WebhookBody(BaseModel):
    url: str
    deliveries: list[WebhookDeliveryBody]


class JobBody(BaseModel):
    """An async job (``Prefer: respond-async``) as ``GET /v1/jobs/{id}`` shows it."""

    id: str
    object: str = "job"
    status: str = Field(description="queued, running, done, failed or cancelled")
    model: str | None
    queue_position: int | None = Field(description="1-based place in line while queued, else null")
    step: int
    total_steps: int | None
    eta_seconds: float | None
    created_at: float = Field(description="Unix seconds")
    started_at: float | None
    finished_at: float | None
    attempts: int = Field(description="Runs started; more than one when a server running it stopped")
    error: str | None = Field(description="failed or cancelled: limner's error code")
    error_message: str | None
    result_status: int | None = Field(description="The HTTP status the synchronous request would have had")
    result_content_type: str | None
    result_url: str | None = Field(description="The response itself (for ImagineArt: the PNG)")
    result: Any = Field(None, description="The dialect's JSON response, as the synchronous request returns it")
    webhook: WebhookBody | None


class JobList(BaseModel):
    object: str = "list"
    data: list[JobBody]
    has_more: bool
    last_id: str | None


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

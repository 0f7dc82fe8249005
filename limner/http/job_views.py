"""The job object of ``/v1/jobs`` (``docs/jobs.md``) as the OpenAPI schema shows it; the object itself is
built by ``limner.service.job_object.job_body``."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


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

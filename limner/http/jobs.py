"""``GET /v1/jobs/{request_id}``: where a request stands, for clients that poll (and the web page).

The id is the request id: the ``X-Request-Id`` of the response, or one the client chose by sending
``X-Request-Id`` itself (8-64 of ``A-Z a-z 0-9 . _ -``), which lets it poll while the request runs::

    {"id": "req_...", "model": "limner-emoji-32", "status": "running",
     "queue_position": null, "step": 7, "total_steps": 20, "eta_seconds": 2.6,
     "created_at": 1767000000.123, "started_at": 1767000000.2, "finished_at": null}

``status`` is queued, running, done, failed (with ``error``: the error code) or cancelled (the client
went away). ``queue_position`` is the 1-based place in the model's line while queued, else null;
``step`` / ``total_steps`` count denoising steps as the engine reports them (hosted models report
none: 0 until done); ``eta_seconds`` is a rough estimate from the model's recent pace, null when
unknown. Times are Unix seconds. ``GET /v1/jobs/{id}/preview`` answers the newest partial image of
a running request that asked for some (OpenAI ``partial_images``); 404 before the first and after the end.

Finished jobs stay readable for ten minutes (at most the last thousand). Only the consumer who made a
job can read it; anyone else gets the same 404 as for an id that never existed. Errors use the
envelope the app hands to ``build_router`` (OpenAI's, which most clients of this endpoint already read).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from pydantic.json_schema import SkipJsonSchema

from limner.core.errors import NotFound
from limner.http import openapi
from limner.http.deps import get_consumer, get_state
from limner.http.routing import ErrorRenderer, dialect_route
from limner.service.jobs import Job, JobState


class JobStatus(BaseModel):
    """The body of ``GET /v1/jobs/{id}`` (see the module doc)."""

    id: str
    model: str
    status: JobState
    queue_position: int | None = Field(description="1-based place in the model's line while queued, else null.")
    step: int
    total_steps: int | None
    eta_seconds: float | None = Field(description="A rough estimate from the model's recent pace; null if unknown.")
    created_at: float = Field(description="Unix seconds.")
    started_at: float | None
    finished_at: float | None
    error: str | SkipJsonSchema[None] = Field(None, description="failed only: the error code.")


def job_status(job: Job) -> dict[str, Any]:
    """The job as ``GET /v1/jobs/{id}`` shows it (the AI.ML stream's progress events carry the same)."""
    eta = job.eta_seconds()
    body: dict[str, Any] = {
        "id": job.id,
        "model": job.model,
        "status": job.state,
        "queue_position": job.queue_position,
        "step": job.step,
        "total_steps": job.total_steps,
        "eta_seconds": None if eta is None else round(eta, 2),
        "created_at": _seconds(job.created_at),
        "started_at": _seconds(job.started_at),
        "finished_at": _seconds(job.finished_at),
    }
    if job.error is not None:
        body["error"] = job.error
    return body


def _seconds(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _own_job(request: Request, request_id: str) -> Job:
    job = get_state(request).jobs.get(get_consumer(request), request_id)
    if job is None:
        raise NotFound(f"No job with id '{request_id}'.", param="request_id")
    return job


async def get_job(request: Request, request_id: str) -> Response:
    """Status, queue position, step and ETA of one of your requests."""
    return JSONResponse(job_status(_own_job(request, request_id)))


async def get_job_preview(request: Request, request_id: str) -> Response:
    """The newest partial image of one of your running requests (the first image's, when it makes several)."""
    job = _own_job(request, request_id)
    preview = job.preview
    if preview is None:
        raise NotFound(f"Job '{request_id}' has no partial image now.", param="request_id")
    return Response(preview.images[0], media_type=preview.mime_type, headers={"Cache-Control": "no-store"})


def build_router(
    render_error: ErrorRenderer, error_responses: dict[int | str, dict[str, Any]] | None = None
) -> APIRouter:
    """The jobs routes, their errors in ``render_error``'s envelope (the app passes OpenAI's), documented
    by ``error_responses``."""
    router = APIRouter(route_class=dialect_route(render_error), tags=["Jobs"])
    errors = error_responses or {}
    router.add_api_route(
        "/v1/jobs/{request_id}",
        get_job,
        methods=["GET"],
        responses={**openapi.ok("Where the request stands.", JobStatus), **errors},
    )
    router.add_api_route(
        "/v1/jobs/{request_id}/preview",
        get_job_preview,
        methods=["GET"],
        response_class=Response,  # the 200 is image bytes
        responses={
            **openapi.ok(
                "The newest partial image, in the request's output format.", content=openapi.binary("image/*")
            ),
            **errors,
        },
    )
    return router

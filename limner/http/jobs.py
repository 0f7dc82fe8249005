"""``/v1/jobs``: async jobs (``Prefer: respond-async``, see ``docs/jobs.md``: status, result, events,
cancel, list), and where any synchronous request stands, for clients that poll (and the web page).

An async job's id is ``job_...`` and its state lives in the database: every replica answers for it.
A synchronous request's id is its request id: the ``X-Request-Id`` of the response, or one the client chose by sending
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

import asyncio
import base64
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, RootModel
from pydantic.json_schema import SkipJsonSchema

from limner.core.errors import InvalidRequest, NotFound
from limner.http import openapi
from limner.http.deps import get_consumer, get_state
from limner.http.dialect import ErrorRenderer, Errors
from limner.http.durable import replay
from limner.http.job_views import JobBody, JobList
from limner.http.routing import dialect_route
from limner.http.streaming import HEARTBEAT_SECONDS, SSE_COMMENT, event_stream, sse
from limner.service.job_object import job_body
from limner.service.job_shapes import FINISHED, JobView
from limner.service.jobs import Job, JobState

STATUSES = frozenset({"queued", "running", *FINISHED})
CANCEL_WAIT_SECONDS = 10.0
EVENTS_POLL_SECONDS = 0.25


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


class JobAnswer(RootModel[JobBody | JobStatus]):
    """``GET /v1/jobs/{id}``: an async job (``JobBody``), or a synchronous request's progress (``JobStatus``)."""


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


async def _durable_job(request: Request, job_id: str) -> JobView | None:
    """The caller's async job ``job_id`` from the database (None: not one; maybe a synchronous request id)."""
    view = await get_state(request).job_service.get(get_consumer(request), job_id)
    return view if view is not None and view.asynchronous else None


async def _body(request: Request, view: JobView, *, with_result: bool = True) -> dict[str, Any]:
    state = get_state(request)
    url, deliveries = None, None
    if view.webhook_url is not None or view.finished:
        url, deliveries = await state.job_service.deliveries(view.id)
    body = job_body(view, live=state.jobs.get(view.consumer, view.id), with_result=with_result, deliveries=deliveries)
    if body["webhook"] is None and url is not None:  # the consumer's default URL: named by its deliveries
        body["webhook"] = {"url": url, "deliveries": deliveries}
    return body


async def get_job(request: Request, request_id: str) -> Response:
    """An async job (``Prefer: respond-async``), or where a synchronous request stands (by its request id)."""
    view = await _durable_job(request, request_id)
    if view is not None:
        return JSONResponse(await _body(request, view))
    return JSONResponse(job_status(_own_job(request, request_id)))


async def get_job_result(request: Request, request_id: str) -> Response:
    """The finished job's response itself: its status, content type, headers and body."""
    view = await _durable_job(request, request_id)
    if view is None:
        raise NotFound(f"No job with id '{request_id}'.", param="request_id")
    if view.response is None:
        raise NotFound(f"Job '{request_id}' has no result (status: {view.status}).", param="request_id")
    return replay(view.response, replayed=False)


async def cancel_job(request: Request, request_id: str) -> Response:
    """Cancel an async job: queued ones at once, running ones on whichever replica runs them (refunded)."""
    state = get_state(request)
    if await _durable_job(request, request_id) is None:
        raise NotFound(f"No job with id '{request_id}'.", param="request_id")
    view = await state.job_service.cancel(get_consumer(request), request_id)
    if view is None:
        raise NotFound(f"No job with id '{request_id}'.", param="request_id")
    if view.status == "running":
        if state.runner is not None:
            state.runner.cancel_here(request_id)
        deadline = time.monotonic() + CANCEL_WAIT_SECONDS
        while not view.finished and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            view = await state.job_service.find(request_id) or view
    return JSONResponse(await _body(request, view))


async def list_jobs(
    request: Request,
    status: str | None = Query(None, description="Comma-separated statuses: queued, running, done, failed, cancelled"),
    limit: int = Query(20, ge=1, le=100),
    after: str | None = Query(None, description="The last id of the previous page"),
) -> Response:
    """Your async jobs, newest first."""
    statuses = [part.strip() for part in (status or "").split(",") if part.strip()]
    unknown = [part for part in statuses if part not in STATUSES]
    if unknown:
        raise InvalidRequest(f"Unknown job status '{unknown[0]}': use {', '.join(sorted(STATUSES))}.", param="status")
    state = get_state(request)
    views, more = await state.job_service.listing(get_consumer(request), statuses=statuses, limit=limit, after=after)
    data = [job_body(view, live=state.jobs.get(view.consumer, view.id), with_result=False) for view in views]
    return JSONResponse({"object": "list", "data": data, "has_more": more, "last_id": data[-1]["id"] if data else None})


async def job_events(request: Request, request_id: str) -> Response:
    """The job's changes as server-sent events until it ends (see ``docs/jobs.md``)."""
    view = await _durable_job(request, request_id)
    if view is None:
        raise NotFound(f"No job with id '{request_id}'.", param="request_id")
    return event_stream(_events(request, view))


async def _events(request: Request, view: JobView) -> AsyncIterator[bytes]:
    state = get_state(request)
    last: tuple[Any, ...] | None = None
    previews = 0
    quiet = 0.0
    while True:
        live = state.jobs.get(view.consumer, view.id)
        body = job_body(view, live=live, with_result=False)
        now = (body["status"], body["queue_position"], body["step"], body["total_steps"], body["model"])
        if now != last:
            last, quiet = now, 0.0
            yield sse("job", body)
        preview = live.preview if live is not None and view.status == "running" else None
        if preview is not None and preview.index >= previews:
            previews = preview.index + 1
            data = base64.b64encode(preview.images[0]).decode()
            yield sse(
                "preview",
                {"index": preview.index, "step": preview.step, "mime_type": preview.mime_type, "b64_json": data},
            )
        if view.finished:
            yield sse("done", await _body(request, view))
            return
        await asyncio.sleep(EVENTS_POLL_SECONDS)
        quiet += EVENTS_POLL_SECONDS
        if quiet >= HEARTBEAT_SECONDS:
            quiet = 0.0
            yield SSE_COMMENT
        view = await state.job_service.find(view.id) or view


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
    router = APIRouter(route_class=dialect_route(Errors(render_error)), tags=["Jobs"])
    errors = error_responses or {}
    router.add_api_route(
        "/v1/jobs/{request_id}",
        get_job,
        methods=["GET"],
        responses={
            **openapi.ok("An async job, or where a synchronous request stands.", JobAnswer),
            **errors,
        },
    )
    router.add_api_route(
        "/v1/jobs",
        list_jobs,
        methods=["GET"],
        responses={**openapi.ok("Your async jobs, newest first.", JobList), **errors},
    )
    router.add_api_route(
        "/v1/jobs/{request_id}",
        cancel_job,
        methods=["DELETE"],
        responses={**openapi.ok("The job, cancelled (or as it ended).", JobBody), **errors},
    )
    router.add_api_route(
        "/v1/jobs/{request_id}/result",
        get_job_result,
        methods=["GET"],
        response_class=Response,
        responses={
            **openapi.ok("The finished job's response, exactly as the synchronous request would have had it."),
            **errors,
        },
    )
    router.add_api_route(
        "/v1/jobs/{request_id}/events",
        job_events,
        methods=["GET"],
        response_class=Response,
        responses={
            **openapi.ok(
                "job events on every change, preview events with partial images, then done with the whole job.",
                content=openapi.event_stream("event: job | preview | done; data: JSON (see docs/jobs.md)"),
            ),
            **errors,
        },
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

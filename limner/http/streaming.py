"""Server-sent events over a running job: what the OpenAI and AI.ML streams share.

``start_job`` runs ``ImageService.run`` in a task and returns once the job is accepted, that is,
past validation, rate limits, credits and the queue-full check, standing in its model's line or
running. Until then every error is raised to the handler, so it becomes the dialect's ordinary JSON
error response; after it the handler answers ``200 text/event-stream`` and errors can only travel
as an event. Iterating the ``RunningJob`` yields the job's events as they happen, ``None`` when
nothing happened for ``heartbeat`` seconds (write an SSE comment, so proxies keep the connection),
and finally the ``ImageResult``; a failed job raises its ``LimnerError`` there instead.

A client that goes away cancels the handler (``CancelOnDisconnectMiddleware``) or the response's
body iterator (Starlette); either way the job's task is cancelled with it, which refunds credits and
frees the model's slot at the engine's next step.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

from fastapi.responses import Response, StreamingResponse

from limner.core.errors import LimnerError
from limner.core.models import ImageRequest, ImageResult
from limner.service.image_service import ImageService
from limner.service.jobs import JobEvent

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 15.0
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
"""No caching, and no buffering by nginx-style proxies: each event should reach the client at once."""


def sse(event: str, data: Any) -> bytes:
    """One server-sent event: ``event: <name>`` and its JSON on one ``data:`` line."""
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


SSE_COMMENT = b": keep-alive\n\n"


def event_stream(body: AsyncIterator[bytes]) -> StreamingResponse:
    """``200 text/event-stream`` with ``body`` as it comes, unbuffered."""
    return StreamingResponse(body, media_type="text/event-stream", headers=SSE_HEADERS)


def finished_stream(events: bytes) -> Response:
    """``200 text/event-stream`` of a stream that already ended (kept whole as an async job's result)."""
    return Response(events, media_type="text/event-stream", headers=SSE_HEADERS)


class RunningJob:
    """One request's job, observed from the task that runs it (see the module docstring)."""

    def __init__(self, service: ImageService, request: ImageRequest, request_id: str, heartbeat: float) -> None:
        self.heartbeat = heartbeat
        self._events: deque[JobEvent] = deque()
        self._wake = asyncio.Event()
        self.accepted = False
        self.task = asyncio.ensure_future(service.run(request, request_id, listener=self._hear))

    def _hear(self, event: JobEvent) -> None:
        self.accepted = self.accepted or event.kind in ("queued", "running")
        self._events.append(event)
        self._wake.set()

    async def wait_accepted(self) -> None:
        """Return once the job is in line or running; raise its error if it failed before that."""
        while not self.accepted and not self.task.done():
            await self._next_change(None)
        if not self.accepted:
            self.task.result()  # failed early: its LimnerError goes to the dialect's JSON envelope

    async def _next_change(self, timeout: float | None) -> bool:
        """Wait for an event or the task's end; False after ``timeout`` seconds of neither."""
        self._wake.clear()
        waiter = asyncio.ensure_future(self._wake.wait())
        try:
            done, _ = await asyncio.wait({waiter, self.task}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
        return bool(done)

    async def __aiter__(self) -> AsyncIterator[JobEvent | ImageResult | None]:
        while True:
            while self._events:
                yield self._events.popleft()
            if self.task.done():
                break
            if not await self._next_change(self.heartbeat):
                yield None
        yield self._outcome()

    def _outcome(self) -> ImageResult:
        try:
            return self.task.result()
        except LimnerError:
            raise
        except Exception as exc:
            log.error("streamed request failed", exc_info=exc)
            raise LimnerError("Internal server error.") from exc

    async def cancel(self) -> None:
        """Stop the job (a client that went away) and wait until it has settled."""
        if not self.task.done():
            self.task.cancel()
        with contextlib.suppress(BaseException):
            await self.task


async def start_job(
    service: ImageService, request: ImageRequest, request_id: str, *, heartbeat: float = HEARTBEAT_SECONDS
) -> RunningJob:
    """Run ``request`` and return once it is accepted (errors before that are raised here)."""
    running = RunningJob(service, request, request_id, heartbeat)
    try:
        await running.wait_accepted()
    except BaseException:
        await running.cancel()
        raise
    return running


OnEvent = Callable[[JobEvent], Iterable[bytes]]
OnResult = Callable[[ImageResult], Iterable[bytes]]
OnError = Callable[[LimnerError], bytes]


async def job_events(
    running: RunningJob, on_event: OnEvent, on_result: OnResult, on_error: OnError
) -> AsyncIterator[bytes]:
    """A running job as SSE bytes, in a dialect's words: each job event and the result through the
    dialect's renderers, a comment for every idle heartbeat, an error as the dialect's error event.
    However the stream ends (done, failed, or the client gone), the job is stopped and settled."""
    try:
        async for item in running:
            if item is None:
                yield SSE_COMMENT
            elif isinstance(item, ImageResult):
                for event in on_result(item):
                    yield event
            else:
                for event in on_event(item):
                    yield event
    except LimnerError as error:
        yield on_error(error)
    finally:
        await running.cancel()

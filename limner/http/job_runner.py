"""Each replica's job runner: claims queued async jobs and runs them through the app itself.

A job is replayed as the request it was (method, path, headers without credentials, body) through the
whole ASGI app, so it takes exactly the synchronous path: guards, the dialect's parsing, accounting,
the engine, the dialect's response. The runner's ``send`` keeps that response as the job's result
before the request counts as delivered, so the charge (committed after the last body message by
``limner.http.delivery``) always follows a stored result. Its ``receive`` answers ``http.disconnect``
when the job is cancelled, which cancels the run like a client that left (its hold is refunded).

Every ``job_poll_seconds`` the runner records the progress of its jobs (step, model) in their rows,
picks up cancellations asked on any replica, claims more jobs up to ``job_workers``, and recovers
jobs of dead instances (``job_recovery.recover``); finished jobs past their expiry are purged. On a clean
stop, its running jobs are cancelled and queued again for the next start or another replica.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from dataclasses import dataclass, field
from typing import Any

from starlette.types import ASGIApp, Message

from limner.accounts.tokens import Principal
from limner.core.errors import LimnerError
from limner.http.deps import AppState
from limner.http.durable import RUNNER_SCOPE_KEY, SCHEME_HEADER, kept_headers
from limner.http.failures import failures_var
from limner.service.accounting import delivery_var
from limner.service.job_shapes import JobStatus, JobView, Progress, StoredRequest, StoredResponse

log = logging.getLogger(__name__)

SWEEP_EVERY = 10
"""Polls between recoveries of dead instances' holds and jobs, and purges of expired jobs."""


class _TakenOver(Exception):
    """The job is not this run's any more (its server was taken for dead, and the job queued again or
    ended): its response must not count as delivered, or the job would be charged twice."""


@dataclass
class _Run:
    view: JobView
    task: asyncio.Task[None] | None = None
    cancel: asyncio.Event = field(default_factory=asyncio.Event)
    stopping: bool = False
    """Cancelled because this process stops: queue it again rather than end it."""


class JobRunner:
    def __init__(self, app: ASGIApp, state: AppState) -> None:
        self.app = app
        self.state = state
        settings = state.settings
        self.jobs = state.job_service
        self.capacity = settings.job_workers
        self.poll_seconds = settings.job_poll_seconds
        self.runs: dict[str, _Run] = {}
        self._wake = asyncio.Event()
        self._polls = 0
        self._closing = False
        self._polling = asyncio.Lock()
        """Held by a poll: ``aclose`` waits for one in progress, so no job is claimed after it gave its runs back."""

    def wake(self) -> None:
        """A job was queued here: look for work now rather than at the next poll."""
        self._wake.set()

    def cancel_here(self, job_id: str) -> bool:
        """Stop a job this replica runs (its owner asked); False if it does not run here."""
        run = self.runs.get(job_id)
        if run is None:
            return False
        run.cancel.set()
        return True

    async def run_forever(self) -> None:
        try:
            await self._recover()
        except Exception:  # the next sweep tries again; the runner must not die with it
            log.exception("job runner: recovering the jobs of stopped servers failed; trying again later")
        while True:
            try:
                await self.poll()
            except Exception:
                log.exception("job runner: a poll failed; trying again")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll_seconds)
            self._wake.clear()

    async def poll(self) -> None:
        """Report progress and pick up cancellations, claim what fits, and now and then recover and purge."""
        async with self._polling:
            if not self._closing:
                await self._poll()

    async def _poll(self) -> None:
        if self.jobs.instance_id is None:
            return
        progress = {job_id: self._progress(run) for job_id, run in self.runs.items()}
        for job_id in await self.jobs.report(progress):
            self.cancel_here(job_id)
        free = self.capacity - len(self.runs)
        for view in await self.jobs.claim(free):
            run = _Run(view)
            self.runs[view.id] = run
            run.task = asyncio.create_task(self._execute(run), name=f"limner-job-{view.id}")
        self._polls += 1
        if self._polls % SWEEP_EVERY == 0:
            await self._recover()
            await self.jobs.purge_expired()

    def _progress(self, run: _Run) -> Progress:
        live = self.state.jobs.get(run.view.consumer, run.view.id)
        if live is None:
            return Progress(None, 0, None)
        return Progress(live.model, live.step, live.total_steps)

    async def _recover(self) -> None:
        """Queue again the jobs of dead instances, after refunding their holds: the rerun holds credits
        afresh, and must not find the consumer's balance still tied up by the run that died (a consumer
        with one image's worth left would get a 402 instead of the image it paid for)."""
        recovered = await self.jobs.recover()
        if recovered.requeued or recovered.failed:
            log.warning(
                "jobs of stopped servers: %d queued again, %d failed (refunded)",
                len(recovered.requeued),
                len(recovered.failed),
            )
            self.wake()

    async def _execute(self, run: _Run) -> None:
        """Replay the job's request through the app; keep its response; end the job (see the module doc)."""
        view = run.view
        outcome: dict[str, Any] = {"stored": False}
        try:
            request = await self.jobs.request_of(view.id)
            if request is None:
                await self._end(view, "failed", None, "internal_error", "The job's request was not kept.")
                return
            try:
                await self._replay(run, request, outcome)
            except _TakenOver:
                log.warning("job %s was taken over by another run (this server was taken for dead)", view.id)
                return
            if not outcome["stored"]:
                if run.stopping:
                    return
                cancelled = run.cancel.is_set()
                await self._end(
                    view,
                    "cancelled" if cancelled else "failed",
                    None,
                    "cancelled" if cancelled else "internal_error",
                    None if cancelled else "The job ended without a response.",  # cancelled: its canceller's reason
                )
        except Exception:
            log.exception("job %s failed in the runner", view.id)
            with contextlib.suppress(Exception):
                await self._end(view, "failed", None, "internal_error", "Internal error while running the job.")
        finally:
            if self.runs.get(view.id) is run:  # not a later run of the same job, claimed after a takeover
                del self.runs[view.id]
            self.wake()

    async def _replay(self, run: _Run, request: StoredRequest, outcome: dict[str, Any]) -> None:
        view = run.view
        headers = [(name, value) for name, value in request.headers if name != SCHEME_HEADER]
        scheme = next((value for name, value in request.headers if name == SCHEME_HEADER), "http")
        headers.append(("x-request-id", view.id))
        scope: dict[str, Any] = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": request.method,
            "scheme": scheme,
            "path": request.path,
            "raw_path": request.path.encode(),
            "root_path": "",
            "query_string": request.query.encode("latin-1"),
            "headers": [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers],
            "client": None,
            "server": None,
            "state": {},
            RUNNER_SCOPE_KEY: Principal(view.consumer, token_id=view.token_id),
        }
        sent_body = False

        async def receive() -> Message:
            nonlocal sent_body
            if not sent_body:
                sent_body = True
                return {"type": "http.request", "body": request.body, "more_body": False}
            await run.cancel.wait()
            return {"type": "http.disconnect"}

        status = 500
        response_headers: list[tuple[str, str]] = []
        chunks: list[bytes] = []
        failures: list[LimnerError] = []

        async def send(message: Message) -> None:
            nonlocal status, response_headers
            if message["type"] == "http.response.start":
                status = message["status"]
                response_headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in message.get("headers", [])]
            elif message["type"] == "http.response.body":
                chunks.append(bytes(message.get("body", b"")))
                if not message.get("more_body", False):
                    response = StoredResponse(
                        status,
                        kept_headers(response_headers),
                        b"".join(chunks),
                    )
                    code, message_text = self._failure(view, status, response, failures)
                    # stored before this send returns: the charge is committed only after it
                    outcome["stored"] = await asyncio.shield(
                        self._end(view, "done" if status < 400 else "failed", response, code, message_text)
                    )
                    if not outcome["stored"]:
                        raise _TakenOver(view.id)  # so the response is not delivered, and its hold refunded

        token = failures_var.set(failures)
        try:
            await self.app(scope, receive, send)
        except asyncio.CancelledError:
            if not run.stopping:
                raise
        finally:
            failures_var.reset(token)

    def _failure(
        self, view: JobView, status: int, response: StoredResponse, failures: list[LimnerError]
    ) -> tuple[str | None, str | None]:
        """Why a job failed: the error the route rendered, else the live job's code, else the status."""
        if status < 400:
            return None, None
        if failures:
            return failures[-1].code, failures[-1].message
        live = self.state.jobs.get(view.consumer, view.id)
        code = live.error if live is not None and live.error else f"http_{status}"
        return code, _message_in(response) or f"The request failed with HTTP {status}."

    async def _end(
        self,
        view: JobView,
        status: JobStatus,
        response: StoredResponse | None,
        code: str | None,
        message: str | None,
    ) -> bool:
        live = self.state.jobs.get(view.consumer, view.id)
        delivery = delivery_var.get()  # the replayed request's, when called from its ``send``
        return await self.jobs.end(
            view,
            status,
            response,
            error_code=code,
            error_message=message,
            model=live.model if live is not None else None,
            charge=delivery.settle_within if delivery is not None else None,  # with the result, at once
        )

    async def aclose(self) -> None:
        """Stop: cancel this replica's runs and queue their jobs again (not their fault, not an attempt)."""
        self._closing = True  # claim nothing more: a job claimed now would be left running when the loop ends
        async with self._polling:
            runs = list(self.runs.values())
        for run in runs:
            run.stopping = True
            run.cancel.set()
        tasks = [run.task for run in runs if run.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=10)
        await self.jobs.requeue([run.view.id for run in runs])


def _message_in(response: StoredResponse) -> str | None:
    """The message of a dialect's JSON error body, wherever that dialect puts it."""
    if "json" not in response.content_type:
        return None
    try:
        body = json.loads(response.body)
    except ValueError:
        return None
    if not isinstance(body, dict):
        return None
    error = body.get("error")
    for candidate in (error.get("message") if isinstance(error, dict) else error, body.get("message")):
        if isinstance(candidate, str) and candidate:
            return candidate[:1000]
    return None

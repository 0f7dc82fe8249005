"""Each replica's job runner: claims queued async jobs and runs them through the image service.

A job is its stored ``ImageRequest`` and its dialect's ``Answer`` (``limner.service.job_requests``): the
runner runs the request with ``ImageService.run`` (the job id is its request id, so its progress is the
live job of that id), and the dialect's renderer, which the app registers (``JobAnswers``), turns the
result or the error into the answer the synchronous request would have had. The answer is kept as the
job's result and the request charged in one transaction (``JobService.end``): a result is never kept
uncharged, nor charged without being kept. A cancelled job's run is cancelled like a request whose
client left (its hold is refunded).

Every ``job_poll_seconds`` the runner records the progress of its jobs (step, model) in their rows,
picks up cancellations asked on any replica, claims more jobs up to ``job_workers``, and recovers
jobs of dead instances (``job_recovery.recover``); finished jobs past their expiry are purged. On a clean
stop, its running jobs are cancelled and queued again for the next start or another replica.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
from dataclasses import dataclass, field
from typing import Protocol

from limner.accounts.tokens import Principal, principal_var
from limner.core.answer import Answer
from limner.core.errors import LimnerError
from limner.core.models import ImageRequest, ImageResult
from limner.service import job_requests
from limner.service.accounting import Delivery, delivery_var
from limner.service.image_service import ImageService
from limner.service.job_service import JobService
from limner.service.job_shapes import JobStatus, JobView, Progress, StoredResponse

log = logging.getLogger(__name__)

SWEEP_EVERY = 10
"""Polls between recoveries of dead instances' holds and jobs, and purges of expired jobs."""


class JobAnswers(Protocol):
    """How the dialects answer a job: registered by the app, so the service never imports a dialect."""

    def render(self, request: ImageRequest, result: ImageResult, answer: Answer) -> StoredResponse:
        """The result as the dialect answers it (a ``LimnerError`` where it cannot: the error is answered)."""
        ...

    def render_error(self, error: LimnerError, answer: Answer, request_id: str) -> StoredResponse:
        """The error in the dialect's envelope."""
        ...


@dataclass
class _Run:
    view: JobView
    task: asyncio.Task[None] | None = None
    cancel: asyncio.Event = field(default_factory=asyncio.Event)
    stopping: bool = False
    """Cancelled because this process stops: queue it again rather than end it."""


@dataclass(frozen=True)
class _Outcome:
    status: JobStatus
    response: StoredResponse | None
    error: LimnerError | None = None


class JobRunner:
    def __init__(
        self,
        jobs: JobService,
        service: ImageService,
        answers: JobAnswers,
        *,
        workers: int,
        poll_seconds: float,
    ) -> None:
        self.jobs = jobs
        self.service = service
        self.answers = answers
        self.capacity = workers
        self.poll_seconds = poll_seconds
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
        for view in await self.jobs.claim(self.capacity - len(self.runs)):
            run = _Run(view)
            self.runs[view.id] = run
            run.task = asyncio.create_task(self._execute(run), name=f"limner-job-{view.id}")
        self._polls += 1
        if self._polls % SWEEP_EVERY == 0:
            await self._recover()
            await self.jobs.purge_expired()

    def _progress(self, run: _Run) -> Progress:
        live = self.service.jobs.get(run.view.consumer, run.view.id)
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
        """Run the job's request, keep its answer and end the job (see the module doc)."""
        view = run.view
        try:
            stored = await self.jobs.request_of(view.id)
            try:
                if stored is None:
                    raise ValueError("no request kept")
                request, answer = job_requests.load(stored.request), job_requests.load_answer(stored.answer)
            except (ValueError, KeyError, TypeError) as exc:
                log.error("job %s cannot be run: its stored request is unreadable (%s)", view.id, exc)
                await self._end(view, _Outcome("failed", None, LimnerError("The job's request was not kept.")), None)
                return
            await self._run(run, request, answer)
        except Exception:
            log.exception("job %s failed in the runner", view.id)
            with contextlib.suppress(Exception):
                failure = LimnerError("Internal error while running the job.")
                await self._end(view, _Outcome("failed", None, failure), None)
        finally:
            if self.runs.get(view.id) is run:  # not a later run of the same job, claimed after a takeover
                del self.runs[view.id]
            self.wake()

    async def _run(self, run: _Run, request: ImageRequest, answer: Answer) -> None:
        """The request through the service, with its own ``Delivery``: charged with the kept answer, else refunded."""
        view = run.view
        delivery = Delivery()
        context = contextvars.copy_context()  # the run's own: the job's caller (its token's usage), its delivery
        context.run(principal_var.set, Principal(view.consumer, token_id=view.token_id))
        context.run(delivery_var.set, delivery)
        working = asyncio.get_running_loop().create_task(self.service.run(request, view.id), context=context)
        delivered = False
        try:
            outcome = await self._outcome(run, working, request, answer)
            if outcome is None:  # cancelled: by its owner (ended here), or because this process stops (requeued)
                if not run.stopping:
                    await self._end(view, _Outcome("cancelled", None), None)
                return
            success = outcome.response is not None and outcome.response.status < 400
            stored = await asyncio.shield(self._end(view, outcome, delivery if success else None))
            if not stored:
                log.warning("job %s was taken over by another run (this server was taken for dead)", view.id)
            delivered = stored and success
        finally:
            await asyncio.shield(delivery.settle(delivered))

    async def _outcome(
        self, run: _Run, working: asyncio.Future[ImageResult], request: ImageRequest, answer: Answer
    ) -> _Outcome | None:
        """How the run ended: its answer, or the error's; None when it was cancelled first."""
        cancelled: asyncio.Future[object] = asyncio.ensure_future(run.cancel.wait())
        pending: set[asyncio.Future[object]] = {working, cancelled}  # type: ignore[arg-type]
        try:
            await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            working.cancel()  # this runner is cancelled itself: the run goes with it
            raise
        finally:
            cancelled.cancel()
        if not working.done():
            working.cancel()
            with contextlib.suppress(BaseException):
                await working
            return None
        try:
            result = working.result()
            response = self.answers.render(request, result, answer)
        except asyncio.CancelledError:
            return None
        except LimnerError as error:
            return self._failed(error, answer, run.view.id)
        except Exception:
            log.exception("job %s failed", run.view.id)
            return self._failed(LimnerError("Internal server error."), answer, run.view.id)
        return _Outcome("done" if response.status < 400 else "failed", response)

    def _failed(self, error: LimnerError, answer: Answer, job_id: str) -> _Outcome:
        return _Outcome("failed", self.answers.render_error(error, answer, job_id), error)

    async def _end(self, view: JobView, outcome: _Outcome, delivery: Delivery | None) -> bool:
        live = self.service.jobs.get(view.consumer, view.id)
        error = outcome.error
        return await self.jobs.end(
            view,
            outcome.status,
            outcome.response,
            error_code=error.code if error is not None else ("cancelled" if outcome.status == "cancelled" else None),
            error_message=error.message if error is not None else None,  # cancelled: its canceller's reason
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

"""Jobs: what each request is doing right now, for progress streams and ``GET /v1/jobs/{id}``.

``ImageService`` opens a ``Job`` per request (its id is the request id) and moves it along::

    queued (position in the model's line) -> running (step k of n, previews) -> done | failed | cancelled

Listeners (a streaming response) hear every change as a ``JobEvent``, on the event loop. Engines
report from worker threads, so ``Reporter`` hops each report onto the loop with
``call_soon_threadsafe`` before it touches a job.

The ``JobRegistry`` keeps running jobs and, for a while, finished ones: bounded by age (``ttl``) and
count (``keep``), so polling after the end works and memory does not grow. Jobs are keyed by
consumer and id: a client that picks its own ``X-Request-Id`` can neither see nor shadow another
consumer's job of the same id. It also remembers each model's recent seconds per step, for ETAs.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from PIL import Image

from limner.core.errors import LimnerError

JobState = Literal["queued", "running", "done", "failed", "cancelled"]
EventKind = Literal["queued", "running", "progress", "preview", "finished"]
FINISHED: frozenset[str] = frozenset({"done", "failed", "cancelled"})
DEFAULT_TTL = 600.0
DEFAULT_KEEP = 1000


@dataclass(frozen=True)
class Preview:
    """One round of partial images (one per requested image), encoded in the request's output format."""

    index: int
    """0-based round: OpenAI's ``partial_image_index``."""
    step: int
    images: tuple[bytes, ...]
    mime_type: str
    size: tuple[int, int]


@dataclass(frozen=True)
class JobEvent:
    """A change to ``job``; read the job for its state now (it may have moved on since)."""

    kind: EventKind
    job: Job
    preview: Preview | None = None


Listener = Callable[[JobEvent], None]
Renderer = Callable[[Image.Image], tuple[bytes, str, tuple[int, int]]]
"""A preview as delivered: (encoded bytes, MIME type, final size)."""


@dataclass(eq=False)
class Job:
    """One request's progress. Changed only on the event loop, and only forwards (a late report from a
    batch or after the end is ignored), so a listener never sees a job go back."""

    id: str
    consumer: str
    model: str
    created_at: float = field(default_factory=time.time)
    state: JobState = "queued"
    queue_position: int | None = None
    """1-based place in the model's line while waiting for a slot; None otherwise."""
    step: int = 0
    total_steps: int | None = None
    started_at: float | None = None
    finished_at: float | None = None
    error: str | None = None
    """The error code of a failed job (``timeout``, ``model_error``, ...)."""
    step_seconds: float | None = None
    """Expected seconds per step, from the model's recent jobs; replaced by this job's own pace once it steps."""
    concurrency: int = 1
    preview: Preview | None = None
    """The newest partial images while running; dropped at the end (the final images exist then), so
    the finished jobs the registry keeps hold no pixels."""
    preview_count: int = 0
    listeners: list[Listener] = field(default_factory=list, repr=False)
    _last_step_at: float | None = field(default=None, repr=False)

    @property
    def finished(self) -> bool:
        return self.state in FINISHED

    def queued(self, position: int) -> None:
        if self.state == "queued" and position != self.queue_position:
            self.queue_position = position
            self._emit(JobEvent("queued", self))

    def running(self) -> None:
        if self.state == "queued":
            self.state, self.queue_position, self.started_at = "running", None, time.time()
            self._emit(JobEvent("running", self))

    def progress(self, step: int, total: int) -> None:
        if self.state != "running" or step < self.step:
            return
        self.step, self.total_steps = step, total
        now = time.time()
        if step > 0 and self.started_at is not None:
            self.step_seconds = (now - self.started_at) / step
        self._last_step_at = now
        self._emit(JobEvent("progress", self))

    def add_preview(self, step: int, images: list[bytes], mime_type: str, size: tuple[int, int]) -> None:
        if self.finished:
            return
        self.preview = Preview(self.preview_count, step, tuple(images), mime_type, size)
        self.preview_count += 1
        self._emit(JobEvent("preview", self, self.preview))

    def finish(self, state: JobState, error: str | None = None) -> None:
        if self.finished:
            return
        self.state, self.error, self.queue_position, self.finished_at = state, error, None, time.time()
        self.preview = None
        if state == "done" and self.total_steps:
            self.step = self.total_steps
        self._emit(JobEvent("finished", self))
        self.listeners.clear()

    def eta_seconds(self, now: float | None = None) -> float | None:
        """Seconds until done, roughly: remaining steps at the observed (or the model's recent) pace;
        a queued job adds the jobs ahead of it, shared among the model's slots. None when unknown."""
        if self.state == "done":
            return 0.0
        if self.finished or self.step_seconds is None or not self.total_steps:
            return None
        now = time.time() if now is None else now
        if self.state == "running":
            remaining = max(0, self.total_steps - self.step) * self.step_seconds
            if self._last_step_at is not None:
                remaining -= now - self._last_step_at
            return max(0.0, remaining)
        duration = self.total_steps * self.step_seconds
        return duration * (1 + (self.queue_position or 0) / max(1, self.concurrency))

    def _emit(self, event: JobEvent) -> None:
        for listener in list(self.listeners):
            listener(event)


class JobRegistry:
    """Jobs by (consumer, id): every active one, and finished ones for ``ttl`` seconds, at most ``keep``."""

    def __init__(self, ttl: float = DEFAULT_TTL, keep: int = DEFAULT_KEEP) -> None:
        self.ttl = ttl
        self.keep = keep
        self._jobs: dict[tuple[str, str], Job] = {}
        self._finished: deque[Job] = deque()
        self._step_seconds: dict[str, float] = {}

    def __len__(self) -> int:
        return len(self._jobs)

    def open(self, request_id: str, consumer: str, model: str, listener: Listener | None = None) -> Job:
        """A new job; it replaces a finished (or still running) one of the same consumer and id."""
        self._prune(time.time())
        job = Job(request_id, consumer, model)
        if listener is not None:
            job.listeners.append(listener)
        self._jobs[(consumer, request_id)] = job
        return job

    def get(self, consumer: str, request_id: str) -> Job | None:
        self._prune(time.time())
        return self._jobs.get((consumer, request_id))

    def step_seconds(self, model: str) -> float | None:
        """The model's recent seconds per step (a moving average over finished jobs)."""
        return self._step_seconds.get(model)

    def expect(self, job: Job, *, concurrency: int = 1) -> None:
        """Before it queues: the job expects its model's recent pace (until it shows its own) and
        knows how many of the model's jobs run at once, for its ETA while it waits."""
        job.step_seconds = self._step_seconds.get(job.model)
        job.concurrency = concurrency

    def finish(self, job: Job, error: BaseException | None = None) -> None:
        """Done without ``error``; cancelled for a departed client; failed (with the error's code) otherwise."""
        if job.finished:
            return
        if error is None:
            job.finish("done")
        elif isinstance(error, asyncio.CancelledError):
            job.finish("cancelled")
        else:
            job.finish("failed", error.code if isinstance(error, LimnerError) else LimnerError.code)
        if job.state == "done" and job.started_at is not None and job.total_steps:
            pace = (job.finished_at or time.time()) - job.started_at
            pace /= job.total_steps
            previous = self._step_seconds.get(job.model)
            self._step_seconds[job.model] = pace if previous is None else 0.7 * previous + 0.3 * pace
        self._finished.append(job)
        self._prune(time.time())

    def _prune(self, now: float) -> None:
        while self._finished and (
            len(self._finished) > self.keep or (self._finished[0].finished_at or now) + self.ttl <= now
        ):
            job = self._finished.popleft()
            key = (job.consumer, job.id)
            if self._jobs.get(key) is job:  # not replaced by a newer job of the same id
                del self._jobs[key]


class Reporter:
    """An engine's progress and preview callbacks for one job, callable from any thread.

    Previews are rendered (scaled, encoded) where the engine calls, usually its worker thread, and
    only the bytes cross to the loop. At most ``partials`` rounds are kept, spaced ``every`` steps
    apart at least (a batch may offer them more often than this job asked)."""

    def __init__(
        self,
        job: Job,
        loop: asyncio.AbstractEventLoop,
        *,
        partials: int = 0,
        every: int = 0,
        render: Renderer | None = None,
    ) -> None:
        self.job = job
        self.loop = loop
        self.partials = partials
        self.every = every
        self.render = render
        self._sent = 0

    def progress(self, step: int, total: int) -> None:
        self._call(self.job.progress, step, total)

    def preview(self, step: int, images: list[Image.Image]) -> None:
        if self.render is None or not images or self._sent >= self.partials:
            return
        if step < (self._sent + 1) * max(1, self.every):
            return
        self._sent += 1
        rendered = [self.render(image) for image in images]
        data = [item[0] for item in rendered]
        self._call(self.job.add_preview, step, data, rendered[0][1], rendered[0][2])

    def _call(self, fn: Callable[..., None], *args: object) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody is listening any more
            self.loop.call_soon_threadsafe(fn, *args)

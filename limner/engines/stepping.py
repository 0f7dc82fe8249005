"""Step-level continuous batching: requests join and leave a running batch between denoising steps.

Request-level batching (``limner.engines.batching``) runs a batch's every step before anything else starts,
so a request arriving at step 2 of a 20-step batch waits for all 20. Here each request is a ``Trajectory``
(its own scheduler instance, timesteps, noise and conditioning) and the engine advances every running
trajectory by one step per model call: a compatible newcomer joins at the next step boundary, a finished
one is decoded and answered at once, a cancelled one leaves at the next step.

A model family plugs in with a ``StepFunction``: how to start a trajectory (prompt encoding, noise), one
call of its denoiser over the rows of several trajectories, and how to decode. The loop here does the rest
(scaling the input and stepping each trajectory with its own scheduler, guidance per trajectory, joining,
leaving, progress and previews), so the built-in model and the UNet families share it.

Pixels: a trajectory's noise and scheduler path do not depend on its company. Its denoiser rows do only
through the matrix kernels, which round the last float bit differently for different batch sizes (on CPU
and GPU alike); with ``invariant`` each trajectory gets its own denoiser call within the step, and the
pixels are bit for bit those it makes alone, at the cost of the batched call's speed.

Requests a step function declines (image-to-image, inpainting, pipelines without one) go to ``fallback``,
today's request-level path. One group of compatible requests runs at a time: once a request of another
kind waits, the running group admits nobody new and drains, so nobody waits forever.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from PIL import Image

from limner.core.errors import LimnerError, ModelError
from limner.core.models import Capabilities, EngineRequest, EngineTimings, GeneratedImage
from limner.engines.base import Engine

log = logging.getLogger(__name__)

Tensor = Any  # torch.Tensor; torch is imported by the step functions, never here


@dataclass
class Trajectory:
    """One request's own denoising run. ``cond`` holds its denoiser conditioning, one row per model-input
    row (unconditional rows first when ``guided``); ``step_kwargs`` go to its scheduler's ``step``."""

    request: EngineRequest
    scheduler: Any
    timesteps: Tensor
    latents: Tensor
    cond: dict[str, Tensor]
    guidance: float
    guided: bool
    step_kwargs: dict[str, Any] = field(default_factory=dict)
    index: int = 0
    started: float = field(default_factory=time.perf_counter)
    last_input: Tensor = None
    last_prediction: Tensor = None

    @property
    def total(self) -> int:
        return len(self.timesteps)

    @property
    def done(self) -> bool:
        return self.index >= self.total

    @property
    def rows(self) -> int:
        """Denoiser rows per step: two per image under classifier-free guidance."""
        return self.request.n * (2 if self.guided else 1)


class StepFunction(Protocol):
    """A family's part of step-level batching. All methods but ``key`` run in the engine's worker thread."""

    def key(self, request: EngineRequest) -> Hashable | None:
        """What must match for two requests to share a denoiser call (size, adapters, guidance on or off);
        None for a request this family runs whole (it goes to the request-level path)."""

    def begin(self, request: EngineRequest) -> Trajectory:
        """The request's trajectory: prompts encoded, its own scheduler set to its steps, its seeds' noise."""

    def prepare(self, request: EngineRequest) -> None:
        """Set the shared weights up for this group (adapters) before a denoiser call."""

    def model(self, sample: Tensor, timesteps: Tensor, cond: dict[str, Tensor]) -> Tensor:
        """One denoiser call over stacked rows (``timesteps`` one per row)."""

    def decode(self, trajectories: Sequence[Trajectory]) -> list[list[Image.Image]]:
        """The finished trajectories' images, decoded in one call (one trajectory's when ``invariant``)."""

    def preview(self, trajectory: Trajectory) -> list[Image.Image] | None:
        """Cheap images of where the trajectory stands after its last step; None if the family has none."""


@dataclass
class _Member:
    request: EngineRequest
    key: Hashable
    future: asyncio.Future[list[GeneratedImage]]
    trajectory: Trajectory | None = None
    cancelled: bool = False


Runner = Callable[..., Any]


class SteppingEngine(Engine):
    """Wraps a local engine that offers a step function (``inner.step_function()``); requests it declines go to
    ``fallback`` (the same engine, or its request-level batcher). ``max_images``: images in one running batch."""

    def __init__(self, inner: Any, fallback: Engine, *, max_images: int = 8, invariant: bool = False) -> None:
        self.inner = inner
        self.fallback = fallback
        self.max_images = max(1, max_images)
        self.invariant = invariant
        self._waiting: list[_Member] = []
        self._running: list[_Member] = []
        self._driver: asyncio.Task[None] | None = None
        self.steps_run = 0
        """Denoiser calls so far (one per step of a running batch, or per trajectory when ``invariant``)."""
        self.joined_running = 0
        """Requests that joined a batch already running (the measure of step-level joining)."""

    @property
    def capabilities(self) -> Capabilities:  # type: ignore[override]
        caps: Capabilities = self.fallback.capabilities
        return caps

    @property
    def loaded(self) -> bool:
        return bool(self.fallback.loaded)

    @property
    def resident_bytes(self) -> int:
        return int(self.fallback.resident_bytes)

    @property
    def running(self) -> int:
        """Requests in the running batch now."""
        return len(self._running)

    async def load(self) -> None:
        await self.fallback.load()

    async def aclose(self) -> None:
        if self._driver is not None:
            self._driver.cancel()
        await self.fallback.aclose()

    async def generate(self, request: EngineRequest) -> list[GeneratedImage]:
        steps = await self._step_function()
        key = steps.key(request) if steps is not None else None
        if steps is None or key is None or request.n > self.max_images:
            return await self.fallback.generate(request)
        self.inner.check(request)  # fail fast, in the caller's task: nothing joins a batch to fail there
        member = _Member(request, key, asyncio.get_running_loop().create_future())
        self._waiting.append(member)
        if self._driver is None or self._driver.done():
            self._driver = asyncio.get_running_loop().create_task(self._drive(steps))
        try:
            return await asyncio.shield(member.future)
        except asyncio.CancelledError:
            member.cancelled = True  # leaves at the next step boundary (or before it starts)
            raise

    async def _step_function(self) -> StepFunction | None:
        if not self.inner.loaded:
            await self.inner.load()
        steps: StepFunction | None = self.inner.step_function()
        return steps

    # --- the loop: one denoiser step of the running batch per turn, membership changed between turns ---

    async def _drive(self, steps: StepFunction) -> None:
        try:
            while self._waiting or self._running:
                await self._admit(steps)
                self._leave_cancelled()
                if not self._running:
                    continue
                group = [member for member in self._running if member.trajectory is not None]
                try:
                    finished = await self.inner.in_worker(self._step, steps, group)
                except Exception as exc:  # the whole group shared the failing call
                    self._fail(group, exc)
                    continue
                for member, images in finished:
                    self._running.remove(member)
                    if not member.future.done():
                        member.future.set_result(images)
        except asyncio.CancelledError:
            for member in self._waiting + self._running:
                member.future.cancel()
            raise

    async def _admit(self, steps: StepFunction) -> None:
        """Move waiting requests into the running batch: compatible ones, in line order, while images fit,
        and none that arrived after a request of another kind (the batch drains for that one)."""
        key = self._running[0].key if self._running else None
        images = sum(member.request.n for member in self._running)
        joining: list[_Member] = []
        for member in list(self._waiting):
            if member.cancelled:
                self._waiting.remove(member)
                member.future.cancel()
                continue
            if key is None:
                key = member.key
            if member.key != key or images + member.request.n > self.max_images:
                break
            self._waiting.remove(member)
            joining.append(member)
            images += member.request.n
        if not joining:
            return
        if self._running:
            self.joined_running += len(joining)
        self._running.extend(joining)
        begun = await asyncio.gather(
            *(self.inner.in_worker(steps.begin, member.request) for member in joining), return_exceptions=True
        )
        for member, result in zip(joining, begun, strict=True):
            if isinstance(result, BaseException):
                self._running.remove(member)
                _set_error(member, result)
            else:
                member.trajectory = result

    def _leave_cancelled(self) -> None:
        for member in [member for member in self._running if member.cancelled]:
            self._running.remove(member)
            member.future.cancel()

    def _fail(self, group: list[_Member], exc: Exception) -> None:
        for member in group:
            if member in self._running:
                self._running.remove(member)
            _set_error(member, exc)

    # --- worker thread ---

    def _step(self, steps: StepFunction, group: list[_Member]) -> list[tuple[_Member, list[GeneratedImage]]]:
        """One denoising step of every trajectory in ``group``; the ones that finished, decoded."""
        import torch

        trajectories = [member.trajectory for member in group if member.trajectory is not None]
        finished: list[tuple[_Member, list[GeneratedImage]]] = []
        with torch.inference_mode():
            steps.prepare(trajectories[0].request)
            for part in self._parts(trajectories):
                self._denoise(steps, part)
            done: list[Trajectory] = []
            for trajectory in trajectories:
                _report(steps, trajectory)
                if trajectory.done:
                    done.append(trajectory)
            member_of = {id(member.trajectory): member for member in group}
            for part in self._parts(done):
                answers = _decoded(steps, part)
                finished += [(member_of[id(t)], images) for t, images in zip(part, answers, strict=True)]
        return finished

    def _parts(self, trajectories: list[Trajectory]) -> list[list[Trajectory]]:
        """One model call for all, or (``invariant``) one per trajectory; none for none."""
        if not trajectories:
            return []
        return [[one] for one in trajectories] if self.invariant else [trajectories]

    def _denoise(self, steps: StepFunction, trajectories: Sequence[Trajectory]) -> None:
        import torch

        inputs, times = [], []
        for trajectory in trajectories:
            t = trajectory.timesteps[trajectory.index]
            scaled = trajectory.scheduler.scale_model_input(trajectory.latents, t)
            trajectory.last_input = scaled
            inputs.append(torch.cat([scaled, scaled]) if trajectory.guided else scaled)
            times.append(t.float().reshape(1).repeat(trajectory.rows))
        cond = {name: torch.cat([t.cond[name] for t in trajectories]) for name in trajectories[0].cond}
        prediction = steps.model(torch.cat(inputs), torch.cat(times).to(inputs[0].device), cond)
        self.steps_run += 1
        start = 0
        for trajectory in trajectories:
            pred = prediction[start : start + trajectory.rows]
            start += trajectory.rows
            if trajectory.guided:
                uncond, text = pred.chunk(2)
                pred = uncond + trajectory.guidance * (text - uncond)
            trajectory.last_prediction = pred
            t = trajectory.timesteps[trajectory.index]
            step = trajectory.scheduler.step(pred, t, trajectory.latents, **trajectory.step_kwargs)
            trajectory.latents = step.prev_sample
            trajectory.index += 1


def _report(steps: StepFunction, trajectory: Trajectory) -> None:
    """Progress after each step, previews every ``preview_every`` steps but the last (worker thread)."""
    request = trajectory.request
    if request.progress is not None:
        request.progress(trajectory.index, trajectory.total)
    every = request.preview_every
    if request.preview is None or every <= 0 or trajectory.index % every or trajectory.done:
        return
    try:
        images = steps.preview(trajectory)
    except Exception:
        log.debug("preview failed", exc_info=True)
        return
    if images is not None:
        request.preview(trajectory.index, images)


def _decoded(steps: StepFunction, trajectories: list[Trajectory]) -> list[list[GeneratedImage]]:
    denoised = time.perf_counter()
    decoded = steps.decode(trajectories)
    seconds = time.perf_counter() - denoised
    answers = []
    for trajectory, images in zip(trajectories, decoded, strict=True):
        timings = EngineTimings(denoise=denoised - trajectory.started, decode=seconds)
        seeds = trajectory.request.seeds
        answers.append(
            [GeneratedImage(image, seed, timings=timings) for image, seed in zip(images, seeds, strict=True)]
        )
    return answers


def _set_error(member: _Member, exc: BaseException) -> None:
    if member.future.done():
        return
    if not isinstance(exc, LimnerError):
        log.error("step-level batch failed", exc_info=exc)
        exc = ModelError(f"The model failed: {type(exc).__name__}: {exc}")
    member.future.set_exception(exc)

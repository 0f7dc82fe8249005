"""The generate stage: the engine request built from the plan, the model's slot, its residency, the call.

A request waits in its model's line (``ModelSlots``: bounded, so a full line is a 429 at once), keeps its
model loaded while it runs (``Residency``) and gets the whole engine call within the request's deadline."""

from __future__ import annotations

import asyncio
import logging
import time

from PIL import Image

from limner.core.errors import LimnerError, ModelError, Timeout
from limner.core.models import EngineControl, EngineReference, EngineRequest, EngineTimings, GeneratedImage, Mode
from limner.core.sizes import SizePlan
from limner.engines.catalog import Catalog, ModelEntry
from limner.engines.residency import Residency
from limner.engines.slots import ModelSlots
from limner.service.gate import Admission
from limner.service.jobs import Job, JobRegistry, Renderer, Reporter
from limner.service.stages.inputs import Inputs
from limner.service.stages.plan import Plan

log = logging.getLogger(__name__)

PREVIEW_SPACING_STEPS = 20
"""Steps assumed when spacing previews for a model whose step count is unknown until it runs."""


class GenerateStage:
    """Runs engine requests on their models, one line (``ModelSlots``) per model."""

    def __init__(self, catalog: Catalog, jobs: JobRegistry, residency: Residency, timeout: float) -> None:
        self.catalog = catalog
        self.jobs = jobs
        self.residency = residency
        self.timeout = timeout
        self._slots: dict[str, ModelSlots] = {}

    def slots(self, entry: ModelEntry) -> ModelSlots:
        slots = self._slots.get(entry.id)
        if slots is None:
            slots = self._slots[entry.id] = ModelSlots(entry.id, entry.admitted, entry.max_queue)
        return slots

    def queues(self) -> dict[str, ModelSlots]:
        """The slots of every model used so far (queue depth for metrics)."""
        return dict(self._slots)

    def engine_request(
        self,
        plan: Plan,
        sizes: SizePlan,
        seeds: list[int],
        sources: tuple[Mode, list[Image.Image], Image.Image | None],
        job: Job,
        render: Renderer,
        inputs: Inputs,
    ) -> EngineRequest:
        """What the engine is asked: sizes resolved, seeds drawn, style applied, progress reported to ``job``."""
        request = plan.request
        mode, images, mask = sources
        job.total_steps = plan.expected_steps
        every = max(1, (job.total_steps or PREVIEW_SPACING_STEPS) // (request.partial_images + 1))
        loop = asyncio.get_running_loop()
        reporter = Reporter(job, loop, partials=request.partial_images, every=every, render=render)
        previews = request.partial_images > 0
        return EngineRequest(
            mode=mode,
            prompt=plan.prompt,
            negative_prompt=plan.negative_prompt,
            width=sizes.generate[0],
            height=sizes.generate[1],
            seeds=seeds,
            steps=plan.steps,
            guidance=request.guidance,
            strength=request.strength,
            images=images,
            mask=mask,
            upstream_model=request.model,
            quality=request.quality,
            background=request.background,
            rendering_style=request.rendering_style,
            effort=request.effort,
            progress=reporter.progress,
            preview=reporter.preview if previews else None,
            preview_every=every if previews else 0,
            loras=plan.loras,
            scheduler=request.scheduler,
            exact=request.exact,
            controls=_controls(plan, inputs),
            references=_references(plan, inputs),
            scale=request.upscale.scale if mode is Mode.UPSCALE and request.upscale else 1,
        )

    @staticmethod
    def bare_request(
        mode: Mode,
        sizes: SizePlan,
        images: list[Image.Image],
        *,
        scale: int = 1,
        plan: Plan | None = None,
        seed: int | None = None,
    ) -> EngineRequest:
        """An engine request the service makes of its own accord (an upscale, a refining pass): one image, at
        ``sizes.generate``, with ``plan``'s prompt and settings where given; no progress, no previews."""
        width, height = sizes.generate
        if plan is None:
            return EngineRequest(
                mode=mode, prompt="", width=width, height=height, seeds=[0], images=images, scale=scale
            )
        request = plan.request
        return EngineRequest(
            mode=mode,
            prompt=plan.prompt,
            negative_prompt=plan.negative_prompt,
            width=width,
            height=height,
            seeds=[seed if seed is not None else 0],
            steps=plan.steps,
            guidance=request.guidance,
            images=images,
            upstream_model=request.model,
            quality=request.quality,
            effort=request.effort,
            loras=plan.loras,
            scheduler=request.scheduler,
            exact=request.exact,
        )

    async def run(
        self,
        entry: ModelEntry,
        engine_request: EngineRequest,
        job: Job,
        stages: dict[str, float],
        admission: Admission | None = None,
        arrived: float | None = None,
    ) -> list[GeneratedImage]:
        """The images, once the model's slot is free; ``stages`` gets ``queue`` and the engine's split.

        ``admission`` orders the wait (priority) and bounds it (start deadline, counted from ``arrived``, a
        time on the event loop's clock)."""
        slots = self.slots(entry)
        self.jobs.expect(job, concurrency=slots.concurrency)
        queued = time.perf_counter()
        admission = admission or Admission()
        start_by = None
        if admission.start_deadline is not None:
            start_by = (arrived or asyncio.get_running_loop().time()) + admission.start_deadline
        async with slots.acquire(on_position=job.queued, priority=admission.priority, start_by=start_by):
            job.running()
            async with self.residency.using(entry):
                calling = time.perf_counter()
                stages["queue"] = calling - queued
                generated = await self._call(engine_request, entry)
                timings = generated[0].timings if generated else None
                stages |= _engine_stages(time.perf_counter() - calling, timings)
        return generated

    async def _call(self, engine_request: EngineRequest, entry: ModelEntry) -> list[GeneratedImage]:
        engine = self.catalog.engine(entry)
        try:
            async with asyncio.timeout(self.timeout):  # no extra task per request, as wait_for makes
                generated = await engine.generate(engine_request)
        except TimeoutError as exc:
            raise Timeout(f"Model '{entry.id}' did not finish within {self.timeout:g} s.") from exc
        except LimnerError:
            raise
        except Exception as exc:
            log.exception("engine %s failed", entry.id)
            raise ModelError(f"Model '{entry.id}' failed to generate: {type(exc).__name__}.") from exc
        if len(generated) != engine_request.n:
            raise ModelError(f"Model '{entry.id}' returned {len(generated)} images instead of {engine_request.n}.")
        return generated


def _controls(plan: Plan, inputs: Inputs) -> tuple[EngineControl, ...]:
    """The plan's controls with their decoded images (the plan filled in every default)."""
    return tuple(
        EngineControl(
            name=control.name,
            image=source.image,
            scale=control.scale if control.scale is not None else 1.0,
            start=control.start or 0.0,
            end=control.end if control.end is not None else 1.0,
            preprocess=control.preprocess or "none",
        )
        for control, source in zip(plan.controls, inputs.controls, strict=True)
    )


def _references(plan: Plan, inputs: Inputs) -> tuple[EngineReference, ...]:
    return tuple(
        EngineReference(source.image, reference.scale if reference.scale is not None else 1.0)
        for reference, source in zip(plan.references, inputs.references, strict=True)
    )


def _engine_stages(seconds: float, timings: EngineTimings | None) -> dict[str, float]:
    """The engine call's time: the engine's own denoise/decode split where it gave one, the rest as ``engine``."""
    if timings is None:
        return {"engine": seconds}
    rest = max(0.0, seconds - timings.denoise - timings.decode)
    return {"engine": rest, "denoise": timings.denoise, "decode": timings.decode}

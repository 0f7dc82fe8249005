"""``ImageService`` runs one canonical request end to end, as stages that read top to bottom:

    plan → admit (rate limits) → decode inputs → [outpaint canvas] → hold credits → generate → [upscale]
    → finish (and sign) → store → deliver

The order is the point: cheap checks first (model, counts, modes), then admission, and only then the
expensive work a refused request must never cost (fetching and decoding input images), then the credit
hold once the output size is known, then the engine. Each stage is a module of ``limner.service.stages``;
admission and delivery are the gate's (``limner.service.gate``)."""

from __future__ import annotations

import asyncio
import secrets
import time
from contextvars import ContextVar
from dataclasses import dataclass, replace
from typing import NoReturn

from limner.core.models import Capabilities, ControlInfo, ImageRequest, ImageResult, LoraInfo, Mode, ModelInfo
from limner.core.sizes import SizePlan
from limner.core.tracing import annotate, span
from limner.core.usage import count_usage
from limner.engines.catalog import Catalog, ModelEntry
from limner.engines.residency import Residency
from limner.engines.slots import ModelSlots
from limner.media.encode import keeps_alpha
from limner.media.inputs import ImageLoader
from limner.media.provenance import ContentCredentials
from limner.media.watermark import InvisibleWatermark
from limner.service.gate import Gate, OpenGate, Ticket
from limner.service.jobs import Job, JobRegistry, Listener
from limner.service.media_access import MediaAccess
from limner.service.metrics import StageObserver
from limner.service.stages.cache import ResultCache
from limner.service.stages.finish import FinishStage
from limner.service.stages.generate import GenerateStage
from limner.service.stages.inputs import InputMemory, InputStage, engine_sources
from limner.service.stages.outpaint import make_canvas, restore
from limner.service.stages.plan import Plan, plan_request
from limner.service.stages.store import StoreStage
from limner.service.stages.upscale import UpscaleStage, check_final, check_source, upscaled_sizes

SEED_LIMIT = 2**32
DEFAULT_INPUT_MEMORY = 1024 * 2**20
"""Decoded input images all requests in flight may hold together (``InputMemory``)."""


checking_only: ContextVar[bool] = ContextVar("limner_checking_only", default=False)
"""Set while an async submission is checked before it is accepted: ``run`` stops with ``Checked`` once
the request passed every check that needs no admission, decoding or engine (model, counts, modes, LoRAs)."""


class Checked(Exception):
    """``run`` under ``checking_only``: the request is acceptable as far as can be told without running it,
    as ``plan`` (its model: whose rate limits a duplicate waiting for it counts against)."""

    def __init__(self, plan: Plan) -> None:
        super().__init__(plan.entry.id)
        self.plan = plan


@dataclass(frozen=True)
class ServiceOptions:
    embed_metadata: bool = True
    request_timeout: float = 300.0
    input_memory: int = DEFAULT_INPUT_MEMORY
    credentials: ContentCredentials | None = None
    """Signs every image with a C2PA manifest; None: Content Credentials off."""
    credentials_include_prompt: bool = False
    watermark: InvisibleWatermark | None = None
    """Hides a payload in every finished image's pixels; None: no invisible watermark."""


class ImageService:
    def __init__(
        self,
        catalog: Catalog,
        media: MediaAccess,
        loader: ImageLoader,
        options: ServiceOptions,
        gate: Gate | None = None,
        jobs: JobRegistry | None = None,
        residency: Residency | None = None,
        stages: StageObserver | None = None,
        cache: ResultCache | None = None,
    ) -> None:
        self.catalog = catalog
        self.media = media
        self.loader = loader
        self.options = options
        self.gate: Gate = gate or OpenGate()
        """Accounting (limits, credits, usage); ``limner.service.accounting`` in the server."""
        self.jobs = jobs or JobRegistry()
        """Every request's progress, for streaming responses and the job status endpoint."""
        self.residency = residency or Residency(catalog)
        """Which local models stay loaded; without settings it only keeps count (nothing is unloaded)."""
        self.stages = stages
        """Told where each finished request's time went (``limner.service.metrics.STAGES``); None: not timed."""
        self.inputs = InputStage(media, loader, InputMemory(options.input_memory))
        self.generator = GenerateStage(catalog, self.jobs, self.residency, options.request_timeout)
        self.upscaler = UpscaleStage(catalog, self.generator)
        self.finisher = FinishStage(
            options.embed_metadata,
            options.credentials,
            include_prompt=options.credentials_include_prompt,
            watermark=options.watermark,
        )
        self.storer = StoreStage(media)
        self.cache = cache if cache is not None else ResultCache(0)
        """Finished images of seeded requests (``limner.service.stages.cache``); off unless given a size."""

    def model_names(self) -> list[str]:
        """Every model id and alias the catalog answers to."""
        return self.catalog.names()

    def describe(self, name: str) -> ModelInfo:
        """One model by id or alias (``ModelNotFound`` otherwise), without building its engine."""
        entry = self.catalog.resolve(name)
        loras = tuple(LoraInfo(lora.name, lora.weight, lora.description) for lora in entry.loras)
        controls = tuple(ControlInfo(c.name, c.kind, c.type, c.scale, c.description) for c in entry.controls)
        reference_scale = entry.ip_adapter.scale if entry.ip_adapter else None
        return ModelInfo(
            entry.id,
            entry.owned_by,
            entry.display_name,
            loras,
            controls=controls,
            reference_scale=reference_scale,
            **entry.precision_fields(),
        )

    def capabilities(self, name: str) -> Capabilities:
        """What a model's engine accepts (builds the engine if it was not built yet; loads no weights)."""
        return self.catalog.capabilities(self.catalog.resolve(name))

    def slots(self, entry: ModelEntry) -> ModelSlots:
        return self.generator.slots(entry)

    def queues(self) -> dict[str, ModelSlots]:
        """The slots of every model used so far (queue depth for metrics)."""
        return self.generator.queues()

    async def run(self, request: ImageRequest, request_id: str, listener: Listener | None = None) -> ImageResult:
        """One request through the gate: admitted (rate limits, credits) before the engine runs, then
        settled and recorded however it ends, cancellation by a departed client included.

        Its job (``self.jobs``, id ``request_id``) tells ``listener`` every change, on the event loop.
        Under ``checking_only`` it only checks the request and raises ``Checked`` (or the error found)."""
        if checking_only.get():
            self.check(request)
        job = self.jobs.open(request_id, request.consumer, request.model, listener)
        try:
            attributes: dict[str, str | int] = {
                "limner.model": request.model,
                "limner.request_id": request_id,
                "limner.n": request.n,
            }
            with span("limner.image", attributes):
                async with self.gate.open(request, request_id) as ticket:
                    result = await self._run(request, request_id, ticket, job)
                    ticket.deliver(result)
        except BaseException as exc:
            self.jobs.finish(job, exc)
            raise
        self.jobs.finish(job)
        return result

    def check(self, request: ImageRequest) -> NoReturn:
        """What can be refused without running anything: the model, counts, modes, size and adapters."""
        raise Checked(plan_request(self.catalog, request))

    async def _run(self, request: ImageRequest, request_id: str, ticket: Ticket, job: Job) -> ImageResult:
        started = time.perf_counter()
        arrived = asyncio.get_running_loop().time()
        with span("limner.plan") as planning:
            plan = plan_request(self.catalog, request)
            job.model = plan.entry.id
            annotate(planning, {"limner.model": plan.entry.id})
            admission = await ticket.admit(plan.entry, n=request.n, loras=tuple(lora.name for lora in plan.loras))
        decoding = time.perf_counter()
        upscaling = request.mode is Mode.UPSCALE
        async with self.inputs.decoded(plan) as inputs:
            decoded = time.perf_counter()
            for source in inputs.images:
                check_source(plan, source)
            mode, images = engine_sources(plan, inputs)
            mask = inputs.mask.image if inputs.mask else None
            canvas = make_canvas(request.expand, images[0], plan.caps) if request.expand else None
            if canvas is not None:  # outpainting: the model inpaints the grown canvas
                images, mask = [canvas.image], canvas.mask
                sizes = SizePlan(canvas.size, plan.sizes(canvas.image).generate)
            else:
                sizes = plan.sizes(inputs.first)  # "auto" follows the first image, not a layout of several
            upscale = request.upscale if plan.upscaler is not None and not upscaling else None
            if upscale is not None and plan.upscaler is not None:
                check_final(plan, sizes, self.catalog.capabilities(plan.upscaler))
            delivered = upscaled_sizes(sizes, upscale.scale) if upscale else sizes
            cache_key = self.cache.key(plan, sizes, [source.image for source in inputs.images], mask)
            cached = self.cache.get(cache_key, plan.entry.id) if cache_key is not None else None
            await ticket.reserve(width=delivered.output[0], height=delivered.output[1], cached=cached is not None)
            base_seed = request.seed if request.seed is not None else secrets.randbits(31)
            seeds = [(base_seed + index) % SEED_LIMIT for index in range(request.n)]
            render = lambda image: self.finisher.preview(image, plan, sizes)  # noqa: E731
            engine_request = self.generator.engine_request(
                plan, sizes, seeds, (mode, images, mask), job, render, inputs
            )
            if canvas is not None and request.strength is None:
                engine_request = replace(engine_request, strength=1.0)  # the new area is painted from noise
            inputs_seconds = decoded - decoding
            stages = {"prepare": time.perf_counter() - started - inputs_seconds, "inputs": inputs_seconds}
            input_sizes = [source.size for source in inputs.images]
            if cached is not None:
                encoded = cached
                job.total_steps = None
                sizes = delivered
            else:
                with span("limner.generate", {"limner.model": plan.entry.id}) as generating:
                    generated = await self.generator.run(plan.entry, engine_request, job, stages, admission, arrived)
                    annotate(generating, _seconds(stages, "queue", "engine", "denoise", "decode"))
                if canvas is not None:
                    generated = restore(generated, canvas)
                if plan.upscaler is not None and not upscaling:
                    with span("limner.upscale", {"limner.upscaler": plan.upscaler.id}):
                        generated, sizes = await self.upscaler.run(generated, plan, sizes, job, stages)
                with span("limner.finish") as finishing:
                    encoded = await self.finisher.run(generated, plan, sizes, stages, inputs.ingredients())
                    annotate(finishing, _seconds(stages, "upscale", "encode", "sign"))
                if cache_key is not None:
                    self.cache.put(cache_key, encoded)
        usage = None
        if request.report_usage:
            usage = await asyncio.to_thread(
                count_usage, plan.prompt, input_sizes, sizes.output, request.n, request.quality
            )
        storing = time.perf_counter()
        with span("limner.store"):
            stored, storage_error = await self.storer.run(encoded, request)
        stages["store"] = time.perf_counter() - storing
        if self.stages is not None:
            self.stages(plan.entry.id, stages)
        return ImageResult(
            model=plan.entry.id,
            images=stored,
            request_id=request_id,
            seconds=time.perf_counter() - started,
            output_format=request.output_format,
            width=sizes.output[0],
            height=sizes.output[1],
            quality=request.quality,
            background=request.background,
            storage_error=storage_error,
            prompt=plan.prompt,
            transparent=any(keeps_alpha(one.item.image, request.output_format, request.background) for one in encoded),
            usage=usage,
        )


def _seconds(stages: dict[str, float], *names: str) -> dict[str, float]:
    """Span attributes for the named stages that ran (``limner.queue_seconds``...)."""
    return {f"limner.{name}_seconds": stages[name] for name in names if name in stages}

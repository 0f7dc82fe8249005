"""``ImageService`` runs one canonical request end to end: catalog, admission, input decoding, sizes,
engine, post-processing, storage.

The order is the point: cheap checks first (model, counts, modes), then admission (rate limits), and
only then the expensive work a refused request must never cost (decoding or fetching input images),
then the credit hold once the output size is known, then the engine."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from contextvars import ContextVar
from dataclasses import dataclass
from typing import NoReturn

from PIL import Image

from limner.core.errors import InvalidRequest, LimnerError, ModelError, Timeout, UnsupportedOperation
from limner.core.imaging import add_watermark, compose_layout
from limner.core.models import (
    Capabilities,
    EngineRequest,
    EngineTimings,
    GeneratedImage,
    ImageInput,
    ImageRequest,
    ImageResult,
    LoraInfo,
    MediaRef,
    Mode,
    ModelInfo,
    SourceImage,
    StoredImage,
)
from limner.core.sizes import SizePlan, fit_to_size, resolve_size
from limner.core.styles import StylePreset, get_style
from limner.core.usage import count_usage
from limner.engines.adapters import resolve_loras
from limner.engines.catalog import Catalog, ModelEntry
from limner.engines.residency import Residency
from limner.engines.slots import ModelSlots
from limner.engines.upstream.payloads import INLINE_BYTES
from limner.media.encode import MIME_BY_FORMAT, encode_image, keeps_alpha, reuse_png, source_of
from limner.media.inputs import ImageLoader
from limner.media.store import content_key
from limner.service.gate import Gate, OpenGate, Ticket
from limner.service.jobs import Job, JobRegistry, Listener, Reporter
from limner.service.media_access import MediaAccess
from limner.service.metrics import StageObserver

log = logging.getLogger(__name__)

SEED_LIMIT = 2**32
PREVIEW_SPACING_STEPS = 20
"""Steps assumed when spacing previews for a model whose step count is unknown until it runs."""
HIGH_EFFORT_STEPS_FACTOR = 2
"""``effort="high"`` runs this many times the model's default denoising steps."""


checking_only: ContextVar[bool] = ContextVar("limner_checking_only", default=False)
"""Set while an async submission is checked before it is accepted: ``run`` stops with ``Checked`` once
the request passed every check that needs no admission, decoding or engine (model, counts, modes, LoRAs)."""


class Checked(Exception):
    """``run`` under ``checking_only``: the request is acceptable as far as can be told without running it."""


@dataclass(frozen=True)
class ServiceOptions:
    embed_metadata: bool = True
    request_timeout: float = 300.0


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
    ) -> None:
        self.catalog = catalog
        self.media = media
        self.loader = loader
        self.options = options
        self.gate: Gate = gate or OpenGate()
        """Accounting (limits, credits, usage); ``limner.service.accounting`` in the server."""
        self._slots: dict[str, ModelSlots] = {}
        self.jobs = jobs or JobRegistry()
        """Every request's progress, for streaming responses and the job status endpoint."""
        self.residency = residency or Residency(catalog)
        """Which local models stay loaded; without settings it only keeps count (nothing is unloaded)."""
        self.stages = stages
        """Told where each finished request's time went (``limner.service.metrics.STAGES``); None: not timed."""

    def model_names(self) -> list[str]:
        """Every model id and alias the catalog answers to."""
        return self.catalog.names()

    def describe(self, name: str) -> ModelInfo:
        """One model by id or alias (``ModelNotFound`` otherwise), without building its engine."""
        entry = self.catalog.resolve(name)
        loras = tuple(LoraInfo(lora.name, lora.weight, lora.description) for lora in entry.loras)
        return ModelInfo(entry.id, entry.owned_by, entry.display_name, loras)

    def capabilities(self, name: str) -> Capabilities:
        """What a model's engine accepts (builds the engine if it was not built yet; loads no weights)."""
        return self.catalog.capabilities(self.catalog.resolve(name))

    def slots(self, entry: ModelEntry) -> ModelSlots:
        slots = self._slots.get(entry.id)
        if slots is None:
            slots = self._slots[entry.id] = ModelSlots(entry.id, entry.admitted, entry.max_queue)
        return slots

    def queues(self) -> dict[str, ModelSlots]:
        """The slots of every model used so far (queue depth for metrics)."""
        return dict(self._slots)

    async def run(self, request: ImageRequest, request_id: str, listener: Listener | None = None) -> ImageResult:
        """One request through the gate: admitted (rate limits, credits) before the engine runs, then
        settled and recorded however it ends, cancellation by a departed client included.

        Its job (``self.jobs``, id ``request_id``) tells ``listener`` every change, on the event loop.
        Under ``checking_only`` it only checks the request and raises ``Checked`` (or the error found)."""
        if checking_only.get():
            self.check(request)
        job = self.jobs.open(request_id, request.consumer, request.model, listener)
        try:
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
        entry = self.catalog.resolve(request.model)
        caps = self.catalog.capabilities(entry)
        self._check(request, caps)
        get_style(request.style)
        resolve_loras(entry, request.loras, self.catalog)
        if not request.images:
            resolve_size(request.size, caps)
        raise Checked

    async def _run(self, request: ImageRequest, request_id: str, ticket: Ticket, job: Job) -> ImageResult:
        started = time.perf_counter()
        entry = self.catalog.resolve(request.model)
        job.model = entry.id
        caps = self.catalog.capabilities(entry)
        style = get_style(request.style)
        self._check(request, caps)
        loras = resolve_loras(entry, request.loras, self.catalog)
        await ticket.admit(entry, n=request.n)
        images = [await self._decode(item, request.consumer) for item in request.images]
        mask = await self._decode(request.mask, request.consumer) if request.mask is not None else None
        mode, sources = self._plan_inputs(request, images, entry, caps)
        # "auto" sizes follow the first image as sent, not a side-by-side layout of several
        plan = resolve_size(request.size, caps, first_image=images[0].image if images else None)
        prompt, negative = style.apply(request.prompt, request.negative_prompt)
        await ticket.reserve(width=plan.output[0], height=plan.output[1])
        base_seed = request.seed if request.seed is not None else secrets.randbits(31)
        seeds = [(base_seed + index) % SEED_LIMIT for index in range(request.n)]
        steps = self._steps(request, entry, caps)
        job.total_steps = steps or entry.default_steps or caps.default_steps
        every = max(1, (job.total_steps or PREVIEW_SPACING_STEPS) // (request.partial_images + 1))
        reporter = Reporter(
            job,
            asyncio.get_running_loop(),
            partials=request.partial_images,
            every=every,
            render=lambda image: self._preview(image, plan, style, entry, request),
        )
        engine_request = EngineRequest(
            mode=mode,
            prompt=prompt,
            negative_prompt=negative,
            width=plan.generate[0],
            height=plan.generate[1],
            seeds=seeds,
            steps=steps,
            guidance=request.guidance,
            strength=request.strength,
            images=sources,
            mask=mask.image if mask else None,
            upstream_model=request.model,
            quality=request.quality,
            background=request.background,
            rendering_style=request.rendering_style,
            effort=request.effort,
            progress=reporter.progress,
            preview=reporter.preview if request.partial_images > 0 else None,
            preview_every=every if request.partial_images > 0 else 0,
            loras=loras,
            scheduler=request.scheduler,
        )
        slots = self.slots(entry)
        self.jobs.expect(job, concurrency=slots.concurrency)
        queued = time.perf_counter()
        stages = {"prepare": queued - started}
        async with slots.acquire(on_position=job.queued):
            job.running()
            async with self.residency.using(entry):
                calling = time.perf_counter()
                stages["queue"] = calling - queued
                generated = await self._generate(engine_request, entry)
                stages |= _engine_stages(time.perf_counter() - calling, generated[0].timings if generated else None)
        # Scaling and encoding a large PNG takes tens of milliseconds an image: in threads, never on the event loop.
        try:
            encoded = await self._finish_all(generated, plan, style, entry, request, prompt, stages)
        except OSError as exc:  # a provider's PNG is decompressed only here, if at all (``open_plain_png``)
            raise ModelError(f"Model '{entry.id}' returned an image that could not be decoded.") from exc
        usage = None
        if request.report_usage:
            inputs = [source.image.size for source in images]
            usage = await asyncio.to_thread(count_usage, prompt, inputs, plan.output, request.n, request.quality)
        storing = time.perf_counter()
        stored, storage_error = await self._store(encoded, request)
        stages["store"] = time.perf_counter() - storing
        if self.stages is not None:
            self.stages(entry.id, stages)
        return ImageResult(
            model=entry.id,
            images=stored,
            request_id=request_id,
            seconds=time.perf_counter() - started,
            output_format=request.output_format,
            width=plan.output[0],
            height=plan.output[1],
            quality=request.quality,
            background=request.background,
            storage_error=storage_error,
            prompt=prompt,
            transparent=any(keeps_alpha(item.image, request.output_format, request.background) for item, *_ in encoded),
            usage=usage,
        )

    @staticmethod
    def _check(request: ImageRequest, caps: Capabilities) -> None:
        """What can be refused from the request alone, before admission and before any image is decoded."""
        if request.n > caps.max_images:
            raise InvalidRequest(
                f"Model '{request.model}' generates at most {caps.max_images} images per request; got n={request.n}.",
                param="n",
            )
        editing = request.mode is not Mode.GENERATE
        if editing and Mode.EDIT not in caps.modes and request.mode not in caps.modes:
            raise UnsupportedOperation(f"Model '{request.model}' does not support image editing.", param="image")
        if request.mask is not None and not caps.supports_mask:
            raise UnsupportedOperation(f"Model '{request.model}' does not support masks.", param="mask")

    async def _decode(self, item: ImageInput, consumer: str) -> SourceImage:
        """An input image as pixels: limner's own media read from the store (owner only), anything else
        decoded or fetched by the loader."""
        if isinstance(item, SourceImage):
            return item
        source: bytes | str | MediaRef = item.source
        if isinstance(source, MediaRef):
            source = await self.media.read(consumer, source)
        return await self.loader.load(source, item.label, param=item.param)

    def _plan_inputs(
        self, request: ImageRequest, images: list[SourceImage], entry: ModelEntry, caps: Capabilities
    ) -> tuple[Mode, list[Image.Image]]:
        """Which mode the engine runs in and with which source images (composed if it takes only one)."""
        mode = request.mode
        sources = [source.image for source in images]
        if mode is Mode.VARIATION and Mode.VARIATION not in caps.modes:
            mode = Mode.EDIT
        if mode is Mode.COMPOSE and (Mode.COMPOSE not in caps.modes or len(sources) > caps.max_input_images):
            if entry.compose != "layout" or Mode.EDIT not in caps.modes:
                raise UnsupportedOperation(
                    f"Model '{request.model}' takes at most {caps.max_input_images} input image(s); "
                    f"got {len(sources)}.",
                    param="image",
                )
            sources, mode = [compose_layout(sources)], Mode.EDIT
        if mode is not Mode.GENERATE and mode not in caps.modes:
            raise UnsupportedOperation(f"Model '{request.model}' does not support image editing.", param="image")
        return mode, sources

    @staticmethod
    def _steps(request: ImageRequest, entry: ModelEntry, caps: Capabilities) -> int | None:
        """Explicit steps win; high effort multiplies the model's default (none known: the engine's own)."""
        if request.steps is not None or request.effort != "high":
            return request.steps
        default = entry.default_steps or caps.default_steps
        return default * HIGH_EFFORT_STEPS_FACTOR if default else None

    async def _generate(self, engine_request: EngineRequest, entry: ModelEntry) -> list[GeneratedImage]:
        engine = self.catalog.engine(entry)
        try:
            async with asyncio.timeout(self.options.request_timeout):  # no extra task per request, as wait_for makes
                generated = await engine.generate(engine_request)
        except TimeoutError as exc:
            raise Timeout(f"Model '{entry.id}' did not finish within {self.options.request_timeout:g} s.") from exc
        except LimnerError:
            raise
        except Exception as exc:
            log.exception("engine %s failed", entry.id)
            raise ModelError(f"Model '{entry.id}' failed to generate: {type(exc).__name__}.") from exc
        if len(generated) != engine_request.n:
            raise ModelError(f"Model '{entry.id}' returned {len(generated)} images instead of {engine_request.n}.")
        return generated

    def _finish(
        self, item: GeneratedImage, plan: SizePlan, style: StylePreset, entry: ModelEntry, request: ImageRequest
    ) -> GeneratedImage:
        styled = _styled(style, entry)
        if item.source_url and entry.pass_through_urls and not (request.keep_media or styled or request.watermark):
            return item  # the provider's own image, at its own URL
        image = fit_to_size(item.image, *plan.output)
        if styled and style.postprocess is not None:
            image = style.postprocess(image)
        if request.watermark:
            image = add_watermark(image)
        return GeneratedImage(image=image, seed=item.seed, text=item.text)

    def _preview(
        self, image: Image.Image, plan: SizePlan, style: StylePreset, entry: ModelEntry, request: ImageRequest
    ) -> tuple[bytes, str, tuple[int, int]]:
        """A partial image as the final one will be delivered (size, style, watermark), without metadata."""
        finished = self._finish(GeneratedImage(image=image), plan, style, entry, request).image
        data, mime = encode_image(
            finished, request.output_format, compression=request.output_compression, background=request.background
        )
        return data, mime, finished.size

    async def _finish_all(
        self,
        items: list[GeneratedImage],
        plan: SizePlan,
        style: StylePreset,
        entry: ModelEntry,
        request: ImageRequest,
        prompt: str,
        stages: dict[str, float] | None = None,
    ) -> list[tuple[GeneratedImage, bytes, str]]:
        """Scale, style, watermark and encode every image, each in a worker thread and all side by side:
        Pillow lets go of the GIL while it resizes and compresses, so several images take about as long as
        one per core. ``stages`` gets the wall time, shared between ``upscale`` and ``encode`` in
        proportion to the time the images spent in each."""
        started = time.perf_counter()
        if all(self._as_sent(item, plan, style, entry, request) for item in items):
            # Splicing text chunks into a small PNG costs less than the hop to a thread and back.
            done = [self._finish_one(item, plan, style, entry, request, prompt) for item in items]
        else:
            done = await asyncio.gather(
                *(asyncio.to_thread(self._finish_one, item, plan, style, entry, request, prompt) for item in items)
            )
        if stages is not None:
            wall = time.perf_counter() - started
            scaling, encoding = sum(one[1] for one in done), sum(one[2] for one in done)
            share = scaling / (scaling + encoding) if scaling + encoding > 0 else 0.0
            stages["upscale"], stages["encode"] = wall * share, wall * (1 - share)
        return [one[0] for one in done]

    @staticmethod
    def _as_sent(
        item: GeneratedImage, plan: SizePlan, style: StylePreset, entry: ModelEntry, request: ImageRequest
    ) -> bool:
        """Whether ``item`` goes out as the small PNG it came as (``reuse_png``): nothing to scale, style,
        watermark, flatten or encode, so nothing to decode or compress."""
        source = source_of(item.image)
        return (
            source is not None
            and len(source) <= INLINE_BYTES
            and request.output_format == "png"
            and item.image.size == plan.output
            and not request.watermark
            and not _styled(style, entry)
            and (item.image.mode == "RGB" or keeps_alpha(item.image, "png", request.background))
        )

    def _finish_one(
        self,
        generated: GeneratedImage,
        plan: SizePlan,
        style: StylePreset,
        entry: ModelEntry,
        request: ImageRequest,
        prompt: str,
    ) -> tuple[tuple[GeneratedImage, bytes, str], float, float]:
        """One image finished and encoded (CPU work, in a worker thread), with the seconds each part took.

        An image that needs none of it and came as a plain PNG (a provider's answer, usually) keeps the
        provider's bytes, with the metadata added as text chunks: the same pixels, not compressed again."""
        started = time.perf_counter()
        item = self._finish(generated, plan, style, entry, request)
        scaled = time.perf_counter()
        embed = self.options.embed_metadata and request.embed_metadata
        metadata = self._metadata(request, entry, plan, prompt, item.seed) if embed else None
        source = source_of(item.image) if item.image is generated.image and request.output_format == "png" else None
        reused = reuse_png(item.image, source, background=request.background, metadata=metadata) if source else None
        if reused is not None:
            data, mime = reused, MIME_BY_FORMAT["png"]
        else:
            data, mime = encode_image(
                item.image,
                request.output_format,
                compression=request.output_compression,
                metadata=metadata,
                background=request.background,
            )
        return (item, data, mime), scaled - started, time.perf_counter() - scaled

    async def _store(
        self, encoded: list[tuple[GeneratedImage, bytes, str]], request: ImageRequest
    ) -> tuple[list[StoredImage], str | None]:
        """Store every encoded image; a store failure stores none (nothing half-written)."""
        keys: list[str] = []
        created: list[str] = []
        storage_error = None
        try:
            for item, data, mime in encoded:
                linked = request.links and not item.source_url
                key = await self._put(data, mime, request.consumer, created) if linked else ""
                keys.append(key)
        except Exception as exc:
            log.exception("storing images failed")
            storage_error = f"{type(exc).__name__}: could not store the image"
            for key in created:
                try:
                    await self.media.store.delete(key)
                except Exception:
                    log.exception("cleaning up %s failed", key)
            keys = []
        stored = []
        for index, (item, data, mime) in enumerate(encoded):
            key = keys[index] if keys else ""
            url = item.source_url or (self.media.link(key, permanent=request.permanent_links) if key else "")
            stored.append(
                StoredImage(
                    key=key,
                    url=url,
                    data=data,
                    mime_type=mime,
                    width=item.image.width,
                    height=item.image.height,
                    seed=item.seed,
                    text=item.text,
                )
            )
        return stored, storage_error

    async def _put(self, data: bytes, mime: str, owner: str, created: list[str]) -> str:
        key = content_key(data, mime)
        existed = await self.media.store.exists(key)
        key = await self.media.store.put(data, mime_type=mime, owner=owner)
        if not existed:
            created.append(key)
        return key

    @staticmethod
    def _metadata(
        request: ImageRequest, entry: ModelEntry, plan: SizePlan, prompt: str, seed: int | None
    ) -> dict[str, str]:
        metadata = {
            "Software": "limner",
            "prompt": prompt,
            "model": entry.id,
            "size": f"{plan.output[0]}x{plan.output[1]}",
        }
        if seed is not None:
            metadata["seed"] = str(seed)
        steps = request.steps or entry.default_steps
        if steps:
            metadata["steps"] = str(steps)
        if request.negative_prompt:
            metadata["negative_prompt"] = request.negative_prompt
        return metadata


def _styled(style: StylePreset, entry: ModelEntry) -> bool:
    """Whether the style preset changes this model's pixels after generation (not only its prompt)."""
    return entry.style_postprocess and style.postprocess is not None


def _engine_stages(seconds: float, timings: EngineTimings | None) -> dict[str, float]:
    """The engine call's time: the engine's own denoise/decode split where it gave one, the rest as ``engine``."""
    if timings is None:
        return {"engine": seconds}
    rest = max(0.0, seconds - timings.denoise - timings.decode)
    return {"engine": rest, "denoise": timings.denoise, "decode": timings.decode}

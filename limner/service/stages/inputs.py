"""The input stage: a request's images read, decoded, shrunk and held within a memory budget.

Source images, the mask, control images and reference images are all inputs alike: the same decoder,
the same pixel bound, the same budget.

A request's memory is bounded by what it will use, not by what was uploaded: each image is decoded
(at most a few at once, ``ImageLoader``) and shrunk at once to the pixels its generation can use
(``Plan.input_pixels``), before any padding or composition. Every decoded image a request holds, from
decoding until its engine call ends, counts against one budget for the server; a request that would
go past it is refused with a ``queue_full`` 429 and ``Retry-After`` instead of taking the memory."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from PIL import Image

from limner.core.errors import QueueFull, UnsupportedOperation
from limner.core.imaging import compose_layout
from limner.core.models import ImageInput, MediaRef, Mode, SourceImage
from limner.core.tracing import span
from limner.media.inputs import ImageLoader
from limner.media.provenance import SIGNED_FORMATS, Ingredient
from limner.service.media_access import MediaAccess
from limner.service.stages.plan import Plan

BYTES_PER_PIXEL = 4
"""The most a decoded input takes per pixel (RGBA)."""
SENT_BYTES_FACTOR = 2
"""Room, in pixels' worth, for the bytes as sent, which an input keeps for its result's Content Credentials."""
MiB = 2**20


@dataclass(frozen=True)
class Inputs:
    """A request's decoded images (each at most ``Plan.input_pixels``), mask, control and reference images."""

    images: list[SourceImage]
    mask: SourceImage | None
    controls: list[SourceImage] = field(default_factory=list)
    """One per ``Plan.controls``, in order."""
    references: list[SourceImage] = field(default_factory=list)
    """One per ``Plan.references``, in order."""

    @property
    def first(self) -> Image.Image | None:
        return self.images[0].image if self.images else None

    def ingredients(self) -> list[Ingredient]:
        """The images a result is made from, as its Content Credentials list them (the mask is not one)."""
        return [
            Ingredient(source.data, source.mime_type, source.label)
            for source in self.images
            if source.data is not None and source.mime_type in SIGNED_FORMATS
        ]


class InputMemory:
    """Bytes of decoded input pixels held by requests in flight, against one limit for the server."""

    def __init__(self, limit: int, retry_after: float = 1.0) -> None:
        self.limit = limit
        self.held = 0
        self.retry_after = retry_after

    def take(self, size: int) -> None:
        if self.held + size > self.limit:
            raise QueueFull(
                f"The server is holding {math.ceil(self.held / MiB)} MiB of input images, near its "
                f"{self.limit // MiB} MiB limit. Retry later.",
                retry_after=self.retry_after,
            )
        self.held += size

    def give(self, size: int) -> None:
        self.held -= size


class InputStage:
    """Reads and decodes a request's images: limner's own media from the store (owner only), anything else
    through the loader (data, base64, URLs)."""

    def __init__(self, media: MediaAccess, loader: ImageLoader, memory: InputMemory) -> None:
        self.media = media
        self.loader = loader
        self.memory = memory

    @asynccontextmanager
    async def decoded(self, plan: Plan) -> AsyncIterator[Inputs]:
        """The request's inputs, held (and counted) for the block."""
        request = plan.request
        held = 0
        counted = len(request.images) + (request.mask is not None) + len(plan.controls) + len(plan.references)
        try:
            decoded: list[list[SourceImage]] = []
            mask = None
            with span("limner.inputs", {"limner.input_images": counted}):
                for items in (
                    request.images,
                    [control.image for control in plan.controls],
                    [reference.image for reference in plan.references],
                ):
                    decoded.append([])
                    for item in items:
                        source, size = await self._decode(item, plan, request.consumer)
                        held += size
                        decoded[-1].append(source)
                if request.mask is not None:
                    mask, size = await self._decode(request.mask, plan, request.consumer)
                    held += size
            images, controls, references = decoded
            yield Inputs(images, mask, controls, references)
        finally:
            self.memory.give(held)

    async def _decode(self, item: ImageInput, plan: Plan, consumer: str) -> tuple[SourceImage, int]:
        """One input and the bytes it holds: the most it could take is counted while it decodes, then what it took."""
        if isinstance(item, SourceImage):
            return item, 0
        bound = plan.input_pixels * BYTES_PER_PIXEL * SENT_BYTES_FACTOR
        self.memory.take(bound)
        try:
            source: bytes | str | MediaRef = item.source
            if isinstance(source, MediaRef):
                source = await self.media.read(consumer, source)
            decoded = await self.loader.load(source, item.label, param=item.param, keep_pixels=plan.input_pixels)
        except BaseException:
            self.memory.give(bound)
            raise
        size = decoded.image.width * decoded.image.height * len(decoded.image.getbands()) + len(decoded.data or b"")
        self.memory.give(bound - size)
        return decoded, size


def engine_sources(plan: Plan, inputs: Inputs) -> tuple[Mode, list[Image.Image]]:
    """Which mode the engine runs in and with which source images (composed if it takes only one)."""
    request, caps = plan.request, plan.caps
    mode = request.mode
    sources = [source.image for source in inputs.images]
    if mode is Mode.VARIATION and Mode.VARIATION not in caps.modes:
        mode = Mode.EDIT
    if mode is Mode.COMPOSE and (Mode.COMPOSE not in caps.modes or len(sources) > caps.max_input_images):
        if plan.entry.compose != "layout" or Mode.EDIT not in caps.modes:
            raise UnsupportedOperation(
                f"Model '{request.model}' takes at most {caps.max_input_images} input image(s); got {len(sources)}.",
                param="image",
            )
        sources, mode = [compose_layout(sources)], Mode.EDIT
    if mode is not Mode.GENERATE and mode not in caps.modes:
        raise UnsupportedOperation(f"Model '{request.model}' does not support image editing.", param="image")
    return mode, sources

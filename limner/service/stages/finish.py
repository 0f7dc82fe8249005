"""The finish stage: every image at the output size, styled, watermarked, with metadata, encoded.

Scaling and encoding a large PNG takes tens of milliseconds an image, so each image is finished in a
worker thread, all side by side (Pillow lets go of the GIL while it resizes and compresses). A provider's
small plain PNG that needs none of it keeps its bytes, with the metadata spliced in (``reuse_png``)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from PIL import Image

from limner.core.errors import ModelError
from limner.core.imaging import add_watermark
from limner.core.models import GeneratedImage
from limner.core.sizes import SizePlan, fit_to_size
from limner.engines.upstream.payloads import INLINE_BYTES
from limner.media.encode import MIME_BY_FORMAT, encode_image, keeps_alpha, reuse_png, source_of
from limner.service.stages.plan import Plan


@dataclass(frozen=True)
class Encoded:
    """One finished image and its encoded bytes."""

    item: GeneratedImage
    data: bytes
    mime_type: str


class FinishStage:
    def __init__(self, embed_metadata: bool = True) -> None:
        self.embed_metadata = embed_metadata

    async def run(
        self, items: list[GeneratedImage], plan: Plan, sizes: SizePlan, stages: dict[str, float]
    ) -> list[Encoded]:
        """Every image finished and encoded; ``stages`` gets the wall time, shared between ``upscale`` and
        ``encode`` in proportion to the time the images spent in each."""
        started = time.perf_counter()
        try:
            if all(self._as_sent(item, plan, sizes) for item in items):
                # Splicing text chunks into a small PNG costs less than the hop to a thread and back.
                done = [self._finish_one(item, plan, sizes) for item in items]
            else:
                done = await asyncio.gather(*(asyncio.to_thread(self._finish_one, item, plan, sizes) for item in items))
        except OSError as exc:  # a provider's PNG is decompressed only here, if at all (``open_plain_png``)
            model = plan.entry.id
            raise ModelError(f"Model '{model}' returned an image that could not be decoded.") from exc
        wall = time.perf_counter() - started
        scaling, encoding = sum(one[1] for one in done), sum(one[2] for one in done)
        share = scaling / (scaling + encoding) if scaling + encoding > 0 else 0.0
        stages["upscale"], stages["encode"] = wall * share, wall * (1 - share)
        return [one[0] for one in done]

    def preview(self, image: Image.Image, plan: Plan, sizes: SizePlan) -> tuple[bytes, str, tuple[int, int]]:
        """A partial image as the final one will be delivered (size, style, watermark), without metadata."""
        request = plan.request
        finished = finish(GeneratedImage(image=image), plan, sizes).image
        data, mime = encode_image(
            finished, request.output_format, compression=request.output_compression, background=request.background
        )
        return data, mime, finished.size

    @staticmethod
    def _as_sent(item: GeneratedImage, plan: Plan, sizes: SizePlan) -> bool:
        """Whether ``item`` goes out as the small PNG it came as (``reuse_png``): nothing to scale, style,
        watermark, flatten or encode, so nothing to decode or compress."""
        request = plan.request
        source = source_of(item.image)
        return (
            source is not None
            and len(source) <= INLINE_BYTES
            and request.output_format == "png"
            and item.image.size == sizes.output
            and not request.watermark
            and not plan.styled
            and (item.image.mode == "RGB" or keeps_alpha(item.image, "png", request.background))
        )

    def _finish_one(self, generated: GeneratedImage, plan: Plan, sizes: SizePlan) -> tuple[Encoded, float, float]:
        """One image finished and encoded (CPU work, in a worker thread), with the seconds each part took."""
        request = plan.request
        started = time.perf_counter()
        item = finish(generated, plan, sizes)
        scaled = time.perf_counter()
        metadata = image_metadata(plan, sizes, item.seed) if self.embed_metadata and request.embed_metadata else None
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
        return Encoded(item, data, mime), scaled - started, time.perf_counter() - scaled


def finish(item: GeneratedImage, plan: Plan, sizes: SizePlan) -> GeneratedImage:
    """``item`` at the output size, styled and watermarked; a provider's image at its own URL as it is."""
    request = plan.request
    changed = request.keep_media or plan.styled or request.watermark
    if item.source_url and plan.entry.pass_through_urls and not changed:
        return item
    image = fit_to_size(item.image, *sizes.output)
    if plan.styled and plan.style.postprocess is not None:
        image = plan.style.postprocess(image)
    if request.watermark:
        image = add_watermark(image)
    return GeneratedImage(image=image, seed=item.seed, text=item.text)


def image_metadata(plan: Plan, sizes: SizePlan, seed: int | None) -> dict[str, str]:
    """What the image file says of how it was made: the steps it ran, not only the ones asked for."""
    request = plan.request
    metadata = {
        "Software": "limner",
        "prompt": plan.prompt,
        "model": plan.entry.id,
        "size": f"{sizes.output[0]}x{sizes.output[1]}",
    }
    if seed is not None:
        metadata["seed"] = str(seed)
    if plan.expected_steps:
        metadata["steps"] = str(plan.expected_steps)
    if request.negative_prompt:
        metadata["negative_prompt"] = request.negative_prompt
    return metadata

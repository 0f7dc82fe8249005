"""The finish stage: every image at the output size, styled, watermarked, with metadata, encoded, signed.

Scaling and encoding a large PNG takes tens of milliseconds an image, so each image is finished in a
worker thread, all side by side (Pillow lets go of the GIL while it resizes and compresses). A provider's
small plain PNG that needs none of it keeps its bytes, with the metadata spliced in (``reuse_png``).

Then each image gets its Content Credentials (``limner.media.provenance``): a signed manifest saying it was
made by the model, from which inputs. A provider's image that arrived with credentials of its own and needs
no change goes out byte for byte; changed, it is the parent ingredient of limner's manifest.

With an invisible watermark configured (``limner.media.watermark``), every final image gets it after styling
and before encoding (its time counts as ``upscale``), so the manifest signs the marked pixels; JPEGs then keep
full-resolution colour, where the mark lives."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

from PIL import Image

from limner.core.errors import ModelError, ServiceUnavailable
from limner.core.imaging import add_watermark, has_alpha
from limner.core.models import GeneratedImage
from limner.core.sizes import SizePlan, fit_to_size
from limner.core.styles import postprocessed
from limner.engines.upstream.payloads import INLINE_BYTES
from limner.media.encode import MIME_BY_FORMAT, encode_image, keeps_alpha, reuse_png, source_of
from limner.media.ingredients import bare_ingredient, checked_ingredient
from limner.media.provenance import ContentCredentials, Ingredient, Made, ProvenanceError, signed_format
from limner.media.watermark import InvisibleWatermark
from limner.service.stages.plan import Plan

log = logging.getLogger(__name__)

UNSIGNED = "Content Credentials could not be signed, so the image was not delivered; retry later."


@dataclass(frozen=True)
class Encoded:
    """One finished image and its encoded bytes."""

    item: GeneratedImage
    data: bytes
    mime_type: str


class FinishStage:
    def __init__(
        self,
        embed_metadata: bool = True,
        credentials: ContentCredentials | None = None,
        include_prompt: bool = False,
        watermark: InvisibleWatermark | None = None,
    ) -> None:
        self.embed_metadata = embed_metadata
        self.credentials = credentials
        """Signs every image (``limner.media.provenance``); None: Content Credentials are off."""
        self.include_prompt = include_prompt
        self.watermark = watermark
        """Hides its payload in every final image's pixels; None: no invisible watermark."""

    async def run(
        self,
        items: list[GeneratedImage],
        plan: Plan,
        sizes: SizePlan,
        stages: dict[str, float],
        ingredients: Sequence[Ingredient] = (),
    ) -> list[Encoded]:
        """Every image finished, encoded and signed; ``stages`` gets the wall time, shared between ``upscale``,
        ``encode`` and ``sign`` in proportion to the time the images spent in each."""
        started = time.perf_counter()
        checking = 0.0
        if self.credentials is not None and ingredients:
            ingredients = await asyncio.to_thread(_checked, ingredients)
            checking = time.perf_counter() - started
        finish_one = functools.partial(self._finish_one, plan=plan, sizes=sizes, ingredients=ingredients)
        try:
            if (
                self.credentials is None
                and self.watermark is None
                and all(self._as_sent(item, plan, sizes) for item in items)
            ):
                # Splicing text chunks into a small PNG costs less than the hop to a thread and back.
                done = [finish_one(item) for item in items]
            else:
                done = await asyncio.gather(*(asyncio.to_thread(finish_one, item) for item in items))
        except OSError as exc:  # a provider's PNG is decompressed only here, if at all (``open_plain_png``)
            model = plan.entry.id
            raise ModelError(f"Model '{model}' returned an image that could not be decoded.") from exc
        wall = time.perf_counter() - started - checking
        parts = [sum(one[1] for one in done), sum(one[2] for one in done), sum(one[3] for one in done)]
        total = sum(parts)
        for stage, part in zip(("upscale", "encode", "sign"), parts, strict=True):  # after any upscale stage's
            stages[stage] = stages.get(stage, 0.0) + (wall * part / total if total > 0 else 0.0)
        stages["sign"] += checking
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
            and plan.matting is None
            and keeps_alpha_as_sent(item.image, request.background)
        )

    def _finish_one(
        self, generated: GeneratedImage, *, plan: Plan, sizes: SizePlan, ingredients: Sequence[Ingredient]
    ) -> tuple[Encoded, float, float, float]:
        """One image finished, encoded and signed (CPU work, in a worker thread), with the seconds each part took."""
        request = plan.request
        started = time.perf_counter()
        item = finish(generated, plan, sizes)
        if self.watermark is not None:
            marked = self.watermark.apply(item.image)
            if marked is not item.image:  # a provider's own URL no longer shows what limner delivers
                item = replace(item, image=marked, source_url=None)
        scaled = time.perf_counter()
        sent = source_of(generated.image)  # a provider's bytes, where they were kept
        sent_format = signed_format(sent) if sent is not None and self.credentials is not None else None
        untouched = item.image is generated.image and keeps_alpha_as_sent(item.image, request.background)
        if sent is not None and sent_format == MIME_BY_FORMAT[request.output_format] and untouched:
            return Encoded(item, sent, sent_format), scaled - started, 0.0, 0.0  # its own credentials, untouched
        metadata = image_metadata(plan, sizes, item.seed) if self.embed_metadata and request.embed_metadata else None
        source = sent if item.image is generated.image and request.output_format == "png" else None
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
                full_chroma=self.watermark is not None,
            )
        encoded = time.perf_counter()
        if self.credentials is not None:
            parents = [checked_ingredient(sent, sent_format, "provider image")] if sent and sent_format else []
            prompt = plan.prompt if self.include_prompt else None
            made = Made(model=plan.entry.id, ingredients=[*parents, *ingredients], prompt=prompt)
            data = self._sign(data, mime, made)
        return Encoded(item, data, mime), scaled - started, encoded - scaled, time.perf_counter() - encoded

    def _sign(self, data: bytes, mime: str, made: Made) -> bytes:
        """Signed; where the library still refuses an input's own manifest (``_checked`` let it through), the
        inputs stay ingredients without their manifests, then, as a last resort, are left out; where it
        refuses altogether, a 503: an image is never delivered unsigned."""
        assert self.credentials is not None
        try:
            return self.credentials.sign(data, mime, made)
        except ProvenanceError:
            if not made.ingredients:
                log.exception("signing Content Credentials failed")
                raise ServiceUnavailable(
                    "Content Credentials could not be signed; the image was not delivered."
                ) from None
            log.warning("signing with the inputs' own credentials failed; signing without them", exc_info=True)
        bare = [bare_ingredient(one, "its Content Credentials could not be used") for one in made.ingredients]
        try:
            return self.credentials.sign(data, mime, replace(made, ingredients=bare))
        except ProvenanceError:
            log.warning("signing with the inputs as ingredients failed; signing without them", exc_info=True)
        try:
            return self.credentials.sign(data, mime, replace(made, ingredients=()))
        except ProvenanceError:
            log.exception("signing Content Credentials failed")
            raise ServiceUnavailable("Content Credentials could not be signed; the image was not delivered.") from None


def _checked(ingredients: Sequence[Ingredient]) -> list[Ingredient]:
    """Each input as ``limner.media.ingredients`` lets it be one (once a request, in a worker thread)."""
    return [checked_ingredient(one.data, one.mime_type, one.title) for one in ingredients]


def keeps_alpha_as_sent(image: Image.Image, background: str | None) -> bool:
    """Whether ``image`` can go out with the alpha it came with: it has none, or ``background`` keeps it."""
    return image.mode == "RGB" or keeps_alpha(image, "png", background)


def finish(item: GeneratedImage, plan: Plan, sizes: SizePlan) -> GeneratedImage:
    """``item`` at the output size, styled, its background cut out where asked (``Plan.matting``) and
    watermarked; a provider's image at its own URL as it is."""
    request = plan.request
    changed = request.keep_media or plan.styled or request.watermark or plan.matting is not None
    if item.source_url and plan.entry.pass_through_urls and not changed:
        return item
    image = fit_to_size(item.image, *sizes.output)
    if plan.styled and plan.style.postprocess is not None:
        image = postprocessed(image, plan.style.postprocess)
    if plan.matting is not None and not has_alpha(image):
        image = plan.matting.cut_out(image)
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

"""The upscale stage: images made 2x or 4x larger by an upscaler, then, if asked, refined ("hires fix").

An upscale request (``/v1/images/upscale``) is only this: its ``model`` is the upscaler and the generate
stage runs it like any model (its line, its residency, its price). A generation or edit with ``upscale``
runs it after the model: each image at its output size, upscaled through the upscaler's own line, then with
``refine`` an image-to-image pass of the generating model at that strength over the larger image, which
puts back the detail an upscaler cannot invent. Everything here is checked by the plan stage first
(``limner.service.stages.plan.check_upscale``), so a request that cannot be upscaled is refused before it
costs anything."""

from __future__ import annotations

import time
from dataclasses import replace

from limner.core.errors import InvalidRequest
from limner.core.models import Capabilities, GeneratedImage, Mode, SourceImage
from limner.core.sizes import SizePlan, fit_to_size
from limner.engines.catalog import Catalog
from limner.service.jobs import Job
from limner.service.stages.generate import GenerateStage
from limner.service.stages.plan import Plan


def upscaled_sizes(sizes: SizePlan, scale: int) -> SizePlan:
    width, height = sizes.output
    return SizePlan((width * scale, height * scale), (width * scale, height * scale))


def check_final(plan: Plan, sizes: SizePlan, upscaler_caps: Capabilities) -> None:
    """The upscaled size, once the output size is known: within what the upscaler makes, and, to be refined,
    within what the generating model paints; refused naming ``upscale.scale`` before any credit is held."""
    choice = plan.request.upscale
    if choice is None or plan.request.mode is Mode.UPSCALE:
        return
    width, height = upscaled_sizes(sizes, choice.scale).output
    limits = [("the upscaler", upscaler_caps.max_pixels, upscaler_caps.max_side)]
    if choice.refine:
        limits.append((f"model '{plan.request.model}'", plan.caps.max_pixels, plan.caps.max_side))
    for who, pixels, side in limits:
        if width * height > pixels or max(width, height) > side:
            raise InvalidRequest(
                f"Upscaled {choice.scale}x the images would be {width}x{height}; {who} makes images of at most "
                f"{pixels} pixels and {side} a side. Ask for a smaller size or scale.",
                param="upscale.scale",
            )


def check_source(plan: Plan, source: SourceImage) -> None:
    """An image to upscale arrives whole: one shrunk as it was decoded (past what the upscaler's largest
    result allows) is refused instead of upscaled from fewer pixels than were sent."""
    if plan.request.mode is not Mode.UPSCALE or source.size == source.image.size:
        return
    scale = plan.request.upscale.scale if plan.request.upscale else 1
    width, height = source.size
    raise InvalidRequest(
        f"{source.label} is {width}x{height}; a {scale}x upscale takes at most {plan.input_pixels} pixels "
        f"(results of at most {plan.caps.max_pixels} pixels).",
        param="image",
    )


class UpscaleStage:
    """Runs a generation's ``upscale``: the upscaler, then the refining pass, each in its model's line."""

    def __init__(self, catalog: Catalog, generator: GenerateStage) -> None:
        self.catalog = catalog
        self.generator = generator

    async def run(
        self,
        generated: list[GeneratedImage],
        plan: Plan,
        sizes: SizePlan,
        job: Job,
        stages: dict[str, float],
    ) -> tuple[list[GeneratedImage], SizePlan]:
        """The images upscaled (and refined) and the sizes they now have; as they were without ``upscale``."""
        request, upscaler = plan.request, plan.upscaler
        choice = request.upscale
        if choice is None or upscaler is None or request.mode is Mode.UPSCALE:
            return generated, sizes
        started = time.perf_counter()
        final = upscaled_sizes(sizes, choice.scale)
        inner: dict[str, float] = {}
        done: list[GeneratedImage] = []
        for item in generated:
            base = fit_to_size(item.image, *sizes.output)
            upscale = self.generator.bare_request(Mode.UPSCALE, final, [base], scale=choice.scale)
            (larger,) = await self.generator.run(upscaler, upscale, job, inner)
            image = larger.image
            if choice.refine:
                refine = self.generator.bare_request(Mode.EDIT, final, [image], plan=plan, seed=item.seed)
                refine = replace(refine, strength=choice.refine)
                (refined,) = await self.generator.run(plan.entry, refine, job, inner)
                image = fit_to_size(refined.image, *final.output)
            done.append(replace(item, image=image, source_url=None, timings=None))
        stages["upscale"] = time.perf_counter() - started
        return done, final

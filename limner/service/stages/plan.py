"""The plan stage: what a request asks of which model, checked before anything is admitted or decoded.

Everything here is decided from the request and the catalog alone, so a request that cannot run is
refused before it costs a rate-limit slot, a credit hold or an image decode."""

from __future__ import annotations

from dataclasses import dataclass

from PIL import Image

from limner.core.errors import InvalidRequest, UnsupportedOperation
from limner.core.models import (
    UPSCALE_FACTORS,
    Capabilities,
    ControlChoice,
    ImageRequest,
    LoraChoice,
    Mode,
    ReferenceChoice,
)
from limner.core.sizes import SizePlan, input_pixels, resolve_size
from limner.core.styles import StylePreset, get_style
from limner.engines.adapters import resolve_loras
from limner.engines.catalog import Catalog, ModelEntry
from limner.engines.controls import resolve_controls, resolve_references
from limner.engines.matting import Matting
from limner.service.stages.outpaint import check_expand

HIGH_EFFORT_STEPS_FACTOR = 2
"""``effort="high"`` runs this many times the model's default denoising steps."""


@dataclass(frozen=True)
class Plan:
    """One request as the later stages need it: its model, style, adapters and denoising steps."""

    request: ImageRequest
    entry: ModelEntry
    caps: Capabilities
    style: StylePreset
    loras: tuple[LoraChoice, ...]
    controls: tuple[ControlChoice, ...]
    """The request's controls with the catalog's defaults filled in (images still as sent)."""
    references: tuple[ReferenceChoice, ...]
    """The request's reference images with their scale filled in (images still as sent)."""
    prompt: str
    """The prompt with the style applied: what the model reads."""
    negative_prompt: str | None
    steps: int | None
    """Steps the engine is asked for; None: its own default."""
    expected_steps: int | None
    """Steps the request will run, as far as is known before it runs (progress, metadata)."""
    input_pixels: int
    """At most this many pixels of each input image are kept (``limner.core.sizes.input_pixels``)."""
    upscaler: ModelEntry | None = None
    """The upscaler an upscale request runs, or a generation's ``upscale`` runs after it; None: no upscale."""
    matting: Matting | None = None
    """Cuts the background out of each image (``background: "transparent"`` on a model without alpha)."""

    def sizes(self, first_image: Image.Image | None) -> SizePlan:
        """Output and generation sizes; ``auto`` follows the first input image's shape. An upscale's result
        is its image ``scale`` times larger."""
        upscale = self.request.upscale
        if self.request.mode is Mode.UPSCALE and upscale is not None and first_image is not None:
            output = (first_image.width * upscale.scale, first_image.height * upscale.scale)
            return SizePlan(output, output)
        return resolve_size(self.request.size, self.caps, first_image=first_image)

    @property
    def styled(self) -> bool:
        """Whether the style changes this model's pixels after generation (not only its prompt)."""
        return self.entry.style_postprocess and self.style.postprocess is not None


def plan_request(catalog: Catalog, request: ImageRequest) -> Plan:
    """The plan for ``request``, or the error that refuses it (model, counts, modes, style, adapters, controls,
    reference images, upscale, background, expand, size)."""
    if request.mode is Mode.UPSCALE:
        return _plan_upscale(catalog, request)
    entry = catalog.resolve(request.model)
    if entry.engine == "upscaler":
        raise InvalidRequest(
            f"Model '{request.model}' is an upscaler: send images to /v1/images/upscale, or name it in upscale.model.",
            param="model",
        )
    caps = catalog.capabilities(entry)
    check_request(request, caps)
    upscaler = check_upscale(catalog, request, caps)
    matting = check_background(catalog, entry, caps, request)
    check_expand(request, caps)
    style = get_style(request.style)
    loras = resolve_loras(entry, request.loras, catalog)
    controls = resolve_controls(entry, request.controls, catalog)
    references = resolve_references(entry, request.reference_images)
    # Without images this is the final size (an invalid one is refused here); with images the area is the
    # same whatever shape ``auto`` takes from them, which is all the input bound needs.
    unshaped = resolve_size(request.size, caps)
    prompt, negative = style.apply(request.prompt, request.negative_prompt)
    steps = _steps(request, entry, caps)
    return Plan(
        request=request,
        entry=entry,
        caps=caps,
        style=style,
        loras=loras,
        controls=controls,
        references=references,
        prompt=prompt,
        negative_prompt=negative,
        steps=steps,
        expected_steps=steps or entry.default_steps or caps.default_steps,
        input_pixels=caps.max_pixels if request.expand else input_pixels(unshaped),  # kept whole: see outpaint
        upscaler=upscaler,
        matting=matting,
    )


def _plan_upscale(catalog: Catalog, request: ImageRequest) -> Plan:
    """An upscale request's plan: its model is the upscaler, its one image is kept whole up to the size
    whose result the upscaler can make."""
    entry = catalog.upscaler(request.model, param="model")
    caps = catalog.capabilities(entry)
    upscaler = check_upscale(catalog, request, caps)
    if len(request.images) != 1 or request.mask is not None:
        raise InvalidRequest("An upscale takes exactly one image and no mask.", param="image")
    scale = request.upscale.scale if request.upscale else 1
    return Plan(
        request=request,
        entry=entry,
        caps=caps,
        style=get_style(None),
        loras=(),
        controls=(),
        references=(),
        prompt="",
        negative_prompt=None,
        steps=None,
        expected_steps=None,
        input_pixels=caps.max_pixels // (scale * scale),
        upscaler=upscaler,
    )


def check_request(request: ImageRequest, caps: Capabilities) -> None:
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


def _steps(request: ImageRequest, entry: ModelEntry, caps: Capabilities) -> int | None:
    """Explicit steps win; high effort multiplies the model's default (none known: the engine's own)."""
    if request.steps is not None or request.effort != "high":
        return request.steps
    default = entry.default_steps or caps.default_steps
    return default * HIGH_EFFORT_STEPS_FACTOR if default else None


def check_upscale(catalog: Catalog, request: ImageRequest, caps: Capabilities) -> ModelEntry | None:
    """The upscaler ``request`` asks for, checked (factor, refine strength, the model's image-to-image);
    None when it asks for no upscale. ``param`` names the field as the dialects spell it."""
    choice = request.upscale
    if choice is None:
        return None
    only = request.mode is Mode.UPSCALE
    prefix = "" if only else "upscale."
    entry = catalog.upscaler(request.model if only else choice.model, param=f"{prefix}model")
    if choice.scale not in UPSCALE_FACTORS:
        factors = " or ".join(str(factor) for factor in UPSCALE_FACTORS)
        raise InvalidRequest(f"scale must be {factors}; got {choice.scale}.", param=f"{prefix}scale")
    if choice.refine is None or choice.refine == 0 or only:
        return entry
    if not 0 < choice.refine <= 1:
        raise InvalidRequest(f"refine must be between 0 and 1; got {choice.refine:g}.", param="upscale.refine")
    if Mode.EDIT not in caps.modes or caps.native_size is not None:
        raise UnsupportedOperation(
            f"Model '{request.model}' cannot refine an upscaled image (it has no image-to-image at any size); "
            "omit upscale.refine.",
            param="upscale.refine",
        )
    return entry


def check_background(catalog: Catalog, entry: ModelEntry, caps: Capabilities, request: ImageRequest) -> Matting | None:
    """A transparent background is delivered, or refused: by the model's own alpha, by its matting model
    (returned), or a 400 naming ``background`` and the models that can, never an opaque image in its place."""
    if request.background != "transparent":
        return None
    matting = catalog.matting(entry)
    if matting is not None or caps.transparency:
        return matting
    able = catalog.transparent_models()
    raise UnsupportedOperation(
        f"Model '{request.model}' cannot make a transparent background (it paints no alpha and has no matting "
        f"model); models that can: {', '.join(able) or 'none on this server'}.",
        param="background",
    )

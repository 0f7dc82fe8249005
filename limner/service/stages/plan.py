"""The plan stage: what a request asks of which model, checked before anything is admitted or decoded.

Everything here is decided from the request and the catalog alone, so a request that cannot run is
refused before it costs a rate-limit slot, a credit hold or an image decode."""

from __future__ import annotations

from dataclasses import dataclass

from PIL import Image

from limner.core.errors import InvalidRequest, UnsupportedOperation
from limner.core.models import Capabilities, ControlChoice, ImageRequest, LoraChoice, Mode, ReferenceChoice
from limner.core.sizes import SizePlan, input_pixels, resolve_size
from limner.core.styles import StylePreset, get_style
from limner.engines.adapters import resolve_loras
from limner.engines.catalog import Catalog, ModelEntry
from limner.engines.controls import resolve_controls, resolve_references

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

    def sizes(self, first_image: Image.Image | None) -> SizePlan:
        """Output and generation sizes; ``auto`` follows the first input image's shape."""
        return resolve_size(self.request.size, self.caps, first_image=first_image)

    @property
    def styled(self) -> bool:
        """Whether the style changes this model's pixels after generation (not only its prompt)."""
        return self.entry.style_postprocess and self.style.postprocess is not None


def plan_request(catalog: Catalog, request: ImageRequest) -> Plan:
    """The plan for ``request``, or the error that refuses it (model, counts, modes, style, adapters, controls,
    reference images, size)."""
    entry = catalog.resolve(request.model)
    caps = catalog.capabilities(entry)
    check_request(request, caps)
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
        input_pixels=input_pixels(unshaped),
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

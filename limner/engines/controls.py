"""Controls (ControlNets, T2I-Adapters) and reference images (IP-Adapter): which a request may use.

Requests name controls of their own model, each with an image and optional scale, start, end and
preprocessor; reference images go to the model's one IP-Adapter. ``resolve_controls`` and
``resolve_references`` fill in the catalog's defaults or refuse with a 400 naming ``controls`` or
``reference_images``: an unknown control, one that belongs to another model, values out of range, kinds
that cannot run together. Everything here is decided from the request and the catalog alone (the plan
stage), before anything is admitted or decoded; loading the weights is ``control_models``' job.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from limner.core.errors import InvalidRequest
from limner.core.models import ControlChoice, ReferenceChoice
from limner.core.preprocess import PREPROCESSORS
from limner.engines.catalog import Catalog, ModelEntry

MAX_CONTROLS = 4
"""Controls one request may combine."""
MAX_REFERENCES = 4
"""Reference images one request may carry."""
SCALE_RANGE = (0.0, 2.0)


@dataclass(frozen=True)
class ControlSpec:
    """One control as the engine loads it."""

    name: str
    path: Path
    type: str = "controlnet"
    base: str | None = None


@dataclass(frozen=True)
class ReferenceSpec:
    """The model's IP-Adapter as the engine loads it."""

    path: Path
    image_encoder: Path
    weight_name: str | None = None
    base: str | None = None


def control_specs(entry: ModelEntry) -> tuple[ControlSpec, ...]:
    return tuple(ControlSpec(c.name, c.path, c.type, c.base) for c in entry.controls)


def reference_spec(entry: ModelEntry) -> ReferenceSpec | None:
    ip = entry.ip_adapter
    return None if ip is None else ReferenceSpec(ip.path, ip.image_encoder, ip.weight_name, ip.base)


def resolve_controls(
    entry: ModelEntry, choices: Sequence[ControlChoice], catalog: Catalog
) -> tuple[ControlChoice, ...]:
    """The controls a request asked for, checked against its model, with every default filled in."""
    if len(choices) > MAX_CONTROLS:
        raise InvalidRequest(f"At most {MAX_CONTROLS} controls per request; got {len(choices)}.", param="controls")
    resolved: list[ControlChoice] = []
    types: set[str] = set()
    for choice in choices:
        control = entry.control(choice.name)
        if control is None:
            raise InvalidRequest(_unknown(entry, choice.name, catalog.control_owners(choice.name)), param="controls")
        scale = control.scale if choice.scale is None else choice.scale
        _in_range(f"Control '{choice.name}' scale", scale, *SCALE_RANGE)
        start = 0.0 if choice.start is None else choice.start
        end = 1.0 if choice.end is None else choice.end
        _in_range(f"Control '{choice.name}' start", start, 0.0, 1.0)
        _in_range(f"Control '{choice.name}' end", end, 0.0, 1.0)
        if start >= end:
            raise InvalidRequest(
                f"Control '{choice.name}' start {start:g} must be before its end {end:g}.", param="controls"
            )
        if control.type == "t2i-adapter" and (start, end) != (0.0, 1.0):
            raise InvalidRequest(
                f"Control '{choice.name}' is a T2I-Adapter, which steers every step: start and end are for "
                "ControlNets.",
                param="controls",
            )
        preprocess = choice.preprocess or control.preprocessor
        if preprocess not in PREPROCESSORS:
            raise InvalidRequest(
                f"Control '{choice.name}' preprocess '{preprocess}' is unknown: expected one of "
                f"{', '.join(PREPROCESSORS)}.",
                param="controls",
            )
        resolved.append(replace(choice, scale=scale, start=start, end=end, preprocess=preprocess))
        types.add(control.type)
    if len(types) > 1:
        raise InvalidRequest(
            "ControlNets and T2I-Adapters cannot steer one image together: pick controls of one type.",
            param="controls",
        )
    return tuple(resolved)


def resolve_references(entry: ModelEntry, choices: Sequence[ReferenceChoice]) -> tuple[ReferenceChoice, ...]:
    """The reference images a request carries, checked against its model, each with its scale filled in."""
    if not choices:
        return ()
    if entry.ip_adapter is None:
        raise InvalidRequest(
            f"Model '{entry.id}' takes no reference images: it has no IP-Adapter in the catalog.",
            param="reference_images",
        )
    if len(choices) > MAX_REFERENCES:
        raise InvalidRequest(
            f"At most {MAX_REFERENCES} reference images per request; got {len(choices)}.", param="reference_images"
        )
    default = entry.ip_adapter.scale
    scales = [default if choice.scale is None else choice.scale for choice in choices]
    for scale in scales:
        _in_range("Reference image scale", scale, *SCALE_RANGE, param="reference_images")
    if len(set(scales)) > 1:
        shown = ", ".join(f"{scale:g}" for scale in sorted(set(scales)))
        raise InvalidRequest(
            f"The reference images of one request share one scale (the IP-Adapter's strength); got {shown}.",
            param="reference_images",
        )
    return tuple(replace(choice, scale=scale) for choice, scale in zip(choices, scales, strict=True))


def _in_range(what: str, value: float, low: float, high: float, *, param: str = "controls") -> None:
    if not low <= value <= high:
        raise InvalidRequest(f"{what} {value:g} is out of range: between {low:g} and {high:g}.", param=param)


def _unknown(entry: ModelEntry, name: str, owners: list[str]) -> str:
    offered = ", ".join(control.name for control in entry.controls)
    offers = f"it offers: {offered}" if offered else "it offers no controls"
    if owners:
        return f"Control '{name}' is for model '{owners[0]}', not '{entry.id}'; {offers}."
    return f"Unknown control '{name}' for model '{entry.id}'; {offers}."

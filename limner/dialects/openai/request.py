"""OpenAI's request bodies as limner's ``ImageRequest`` (``to_request``): defaults as OpenAI has them, and
what limner cannot deliver refused with the field named, never served as something else."""

from __future__ import annotations

from typing import cast

from limner.core.errors import InvalidRequest, UnsupportedOperation
from limner.core.models import Expand, ImageRequest, OutputFormat, SizeSpec, UpscaleChoice
from limner.core.sizes import parse_size
from limner.dialects.controls import control_choices, reference_choices
from limner.dialects.loras import lora_choices
from limner.dialects.openai.protocol import (
    DEFAULT_MODEL,
    DIALECT,
    ExpandOption,
    ImageParams,
    ResponseFormat,
    UpscaleOption,
    UpscaleParams,
    is_gpt_image,
)

DELIVERED_FORMATS = ("png", "jpeg", "webp")


def refuse_undeliverable(params: ImageParams) -> OutputFormat:
    """The output format to deliver; refused, naming the field, what asks for output limner does not make
    (GIF or SVG files)."""
    fmt = params.output_format or "png"
    if fmt not in DELIVERED_FORMATS:
        raise UnsupportedOperation(
            f"output_format '{params.output_format}' is not available on this server; use png, jpeg or webp.",
            param="output_format",
        )
    for name, output in (("frame_count", "GIF"), ("frame_duration_ms", "GIF"), ("svg", "SVG")):
        if getattr(params, name) is not None:
            raise UnsupportedOperation(
                f"{name} applies to {output} output, which this server does not produce; omit it.", param=name
            )
    return cast(OutputFormat, fmt)


def safety_identifier(params: ImageParams) -> str | None:
    """The effective safety identifier: a non-empty ``safety_identifier``, else the deprecated ``user``."""
    return params.safety_identifier or params.user or None


def to_request(params: ImageParams, consumer: str, prompt: str) -> ImageRequest:
    """The fields every OpenAI image endpoint shares; each endpoint adds its own (images, mask, style)."""
    model = params.model or DEFAULT_MODEL
    output_format = refuse_undeliverable(params)
    size = parse_size(params.size) if params.size else None
    if params.background == "transparent" and params.output_format == "jpeg":
        raise InvalidRequest("A transparent background needs output_format 'png' or 'webp'.", param="background")
    if params.output_compression is not None and params.output_format not in ("jpeg", "webp"):
        raise InvalidRequest(
            "output_compression applies to output_format 'jpeg' or 'webp'.", param="output_compression"
        )
    return ImageRequest(
        prompt=prompt,
        model=model,
        dialect=DIALECT,
        n=params.n or 1,
        size=SizeSpec(*size) if size else SizeSpec(),
        negative_prompt=params.negative_prompt,
        seed=params.seed,
        steps=params.steps,
        guidance=params.guidance_scale,
        style=params.style_preset,
        output_format=output_format,
        output_compression=params.output_compression,
        background=params.background,
        quality=params.quality,
        effort="high" if params.complexity == "high" else "normal",
        consumer=consumer,
        partial_images=(params.partial_images or 0) if params.stream else 0,
        links=response_format_for(params) == "url" and not params.stream,
        report_usage=bool(params.stream) or is_gpt_image(model),
        loras=lora_choices(params.loras),
        scheduler=params.scheduler,
        exact=bool(params.exact),
        controls=control_choices(params.controls),
        reference_images=reference_choices(params.reference_images),
        upscale=upscale_choice(params.upscale),
    )


def expand_of(option: ExpandOption | None) -> Expand | None:
    if option is None:
        return None
    return Expand(option.left, option.right, option.top, option.bottom, option.aspect_ratio)


def upscale_choice(option: UpscaleOption | None) -> UpscaleChoice | None:
    return UpscaleChoice(option.model, option.scale, option.refine) if option else None


def upscale_request(params: UpscaleParams, consumer: str) -> ImageRequest:
    """An upscale: its model is the upscaler (empty: the built-in one); the image is the route's to add."""
    return ImageRequest(
        prompt="",
        model=params.model or "",
        dialect=DIALECT,
        output_format=params.output_format or "png",
        output_compression=params.output_compression,
        consumer=consumer,
        links=(params.response_format or "url") == "url",
        upscale=UpscaleChoice(params.model, params.scale),
        upscale_only=True,
    )


def response_format_for(params: ImageParams) -> ResponseFormat:
    """OpenAI's default: URLs for DALL-E, base64 for the GPT image models."""
    if params.response_format:
        return params.response_format
    return "b64_json" if is_gpt_image(params.model or DEFAULT_MODEL) else "url"

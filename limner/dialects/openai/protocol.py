"""OpenAI Images' wire models: the request bodies (fields as the ``openai`` SDK sends them, limner's
extensions fenced), and the answer shapes (images, usage, errors, models) as the SDK types them, which the
dialect's routes document in OpenAPI."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from pydantic.json_schema import SkipJsonSchema

from limner.dialects.controls import ControlList, ReferenceList
from limner.dialects.loras import LoraList

DIALECT = "openai"
DEFAULT_MODEL = "dall-e-2"
GPT_IMAGE_PREFIXES = ("gpt-image", "chatgpt-image")
ResponseFormat = Literal["url", "b64_json"]


def is_gpt_image(model: str) -> bool:
    """OpenAI's GPT image family (``gpt-image-*``, ``chatgpt-image-latest``): base64 by default, and answers
    that report ``quality``, ``background`` and ``usage``."""
    return model.startswith(GPT_IMAGE_PREFIXES)


class UpscaleOption(BaseModel):
    """limner extension on generations and edits: the images upscaled by ``model`` (unset: the built-in
    upscaler) ``scale`` times, then refined by the generating model at strength ``refine`` ("hires fix").
    Typed strictly in forms too, which carry it as JSON text."""

    model_config = ConfigDict(extra="forbid", strict=True)

    model: str | None = Field(None, max_length=256)
    scale: int = 2
    refine: float | None = None


def _json_text(value: Any) -> Any:
    """A multipart field is text: an object field arrives as the JSON it holds (anything else is left to fail)."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


class ImageParams(BaseModel):
    """The fields generations, edits and variations share."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = None
    n: int | None = Field(None, ge=1, le=10)
    size: str | None = None
    response_format: ResponseFormat | None = None
    output_format: Literal["png", "jpeg", "webp", "gif", "svg"] | None = None
    output_compression: int | None = Field(None, ge=0, le=100)
    background: Literal["transparent", "opaque", "auto"] | None = None
    quality: Literal["auto", "high", "medium", "low", "xhigh", "max", "hd", "standard"] | None = None
    complexity: Literal["low", "medium", "high"] | None = None
    frame_count: int | None = Field(None, ge=2, le=16)
    frame_duration_ms: int | None = Field(None, ge=0)
    svg: dict[str, Any] | None = None
    safety_identifier: str | None = Field(None, max_length=512)
    user: str | None = None
    stream: bool | None = None
    partial_images: int | None = Field(None, ge=0, le=3)
    # limner extensions
    seed: int | None = Field(None, ge=0, le=2**32 - 1)
    negative_prompt: str | None = Field(None, max_length=4000)
    steps: int | None = Field(None, ge=1, le=150)
    guidance_scale: float | None = Field(None, ge=0, le=30)
    style_preset: str | None = None
    loras: LoraList | None = None
    scheduler: str | None = Field(None, max_length=64)
    exact: bool | None = None
    """Run without the model's denoising cache: the pixels of the full computation."""
    controls: ControlList | None = None
    reference_images: ReferenceList | None = None
    upscale: Annotated[UpscaleOption, BeforeValidator(_json_text)] | None = None


class GenerationParams(ImageParams):
    """The JSON body: typed as strictly as OpenAI types it (``"n": "2"``, ``2.0`` or ``true``, ``"stream":
    "true"`` are 400s naming the field). Edits and variations are forms, whose fields arrive as text."""

    model_config = ConfigDict(extra="forbid", strict=True)

    prompt: str = Field(min_length=1, max_length=32000)
    style: Literal["vivid", "natural"] | None = None
    moderation: Literal["low", "auto"] | None = None


class ExpandOption(BaseModel):
    """limner extension on edits (outpainting): pixels to add on each side, or an ``aspect_ratio`` ("16:9") to
    grow to; a JSON object in the form's ``expand`` field."""

    model_config = ConfigDict(extra="forbid", strict=True)

    left: int = 0
    right: int = 0
    top: int = 0
    bottom: int = 0
    aspect_ratio: str | None = Field(None, max_length=16)


class EditParams(ImageParams):
    prompt: str = Field(min_length=1, max_length=32000)
    input_fidelity: Literal["high", "low"] | None = None
    strength: float | None = Field(None, ge=0, le=1)
    expand: Annotated[ExpandOption, BeforeValidator(_json_text)] | None = None


class VariationParams(ImageParams):
    pass


class UpscaleParams(BaseModel):
    """``/v1/images/upscale`` (limner extension, after LocalAI's): one image, as a multipart file or, in a JSON
    body, as base64, a data URL or an http(s) URL in ``image``; ``model`` an upscaler (unset: the built-in one)."""

    model_config = ConfigDict(extra="forbid")

    image: str | SkipJsonSchema[None] = Field(None, description="JSON bodies: base64, a data URL or an http(s) URL.")
    model: str | None = Field(None, max_length=256)
    scale: int = Field(2, description="2 or 4.")
    response_format: ResponseFormat | None = None
    output_format: Literal["png", "jpeg", "webp"] | None = None
    output_compression: int | None = Field(None, ge=0, le=100)


ReportedQuality = Literal["low", "medium", "high", "xhigh", "max"]
"""The ``quality`` words OpenAI's answers use (the SDK's ``ImagesResponse.quality``)."""
ReportedBackground = Literal["transparent", "opaque"]
"""The ``background`` words OpenAI's answers use (the SDK's ``ImagesResponse.background``)."""
REPORTED_QUALITIES: tuple[str, ...] = get_args(ReportedQuality)
REPORTED_BACKGROUNDS: tuple[str, ...] = get_args(ReportedBackground)


class ImageObject(BaseModel):
    """One image of an answer: ``url`` or ``b64_json``, as ``response_format`` asked."""

    url: str | SkipJsonSchema[None] = Field(
        None, description="The image's signed URL (response_format url); it expires."
    )
    b64_json: str | SkipJsonSchema[None] = Field(
        None, description="The image, base64-encoded (response_format b64_json)."
    )
    revised_prompt: str | SkipJsonSchema[None] = Field(
        None, description="The prompt the model used, when it rewrote it."
    )
    seed: int | None = Field(None, description="limner extension: the seed that reproduces this image.")


class InputTokensDetails(BaseModel):
    image_tokens: int
    text_tokens: int


class OutputTokensDetails(BaseModel):
    image_tokens: int
    text_tokens: int


class Usage(BaseModel):
    """OpenAI's image-token accounting of the request (``limner.core.usage`` says how it is counted)."""

    input_tokens: int
    input_tokens_details: InputTokensDetails
    output_tokens: int
    output_tokens_details: OutputTokensDetails
    total_tokens: int


class ImagesResponse(BaseModel):
    """The answer of generations, edits and variations (and AIGNE Hub's)."""

    created: int = Field(description="Unix seconds when the images were made.")
    data: list[ImageObject]
    output_format: Literal["png", "jpeg", "webp"]
    size: str = Field(description="WIDTHxHEIGHT of the images.")
    quality: ReportedQuality | SkipJsonSchema[None] = Field(
        None,
        description="GPT image models: the quality that ran; other models: the one asked for, when OpenAI's "
        "answers use that word.",
    )
    background: ReportedBackground | SkipJsonSchema[None] = Field(
        None,
        description="GPT image models: transparent when the images kept an alpha channel, else opaque; other "
        "models: the one asked for, unless auto.",
    )
    usage: Usage | SkipJsonSchema[None] = Field(None, description="GPT image models: the request in image tokens.")
    safety_identifier: str | SkipJsonSchema[None] = Field(
        None, description="The effective safety_identifier (or user) of the request, when it named one."
    )


class OpenAIError(BaseModel):
    message: str
    type: str = Field(description="OpenAI's error class, e.g. invalid_request_error, insufficient_quota.")
    param: str | None = Field(description="The request field at fault, if one is.")
    code: str | None = Field(description="A stable, machine-readable cause.")


class OpenAIErrorResponse(BaseModel):
    """``{"error": {...}}``, which the ``openai`` SDK raises as the exception class for its status."""

    error: OpenAIError


class ModelObject(BaseModel):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str
    # limner extensions, for local models
    precision: str | None = Field(None, description="The dtype its entry asks for (auto, float32, bfloat16, ...)")
    quantization: str | None = Field(None, description="Its quantised weights: none, or a mode and the components")


class ModelList(BaseModel):
    object: Literal["list"]
    data: list[ModelObject]

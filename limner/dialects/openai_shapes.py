"""OpenAI's answer shapes (images, usage, errors, models), as the ``openai`` SDK types them: what the
dialect's routes document in OpenAPI. The dialect itself is ``limner.dialects.openai``."""

from __future__ import annotations

from typing import Literal, get_args

from pydantic import BaseModel, Field
from pydantic.json_schema import SkipJsonSchema

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


class ModelList(BaseModel):
    object: Literal["list"]
    data: list[ModelObject]

"""AIGNE Hub: ``POST /api/images/generations``. OpenAI-shaped JSON with one difference: ``image``
(a URL or base64 string, or a list of them) turns a generation into an edit. URLs last one hour."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from limner.core.models import ImageRequest, SizeSpec
from limner.core.sizes import parse_size
from limner.dialects import openai
from limner.dialects.controls import ControlList, ReferenceList, control_choices, reference_choices
from limner.dialects.images import encoded, references
from limner.dialects.loras import LoraList, lora_choices
from limner.dialects.openai import render_error, render_result
from limner.http import openapi
from limner.http.context import current_request_id
from limner.http.deps import get_consumer, get_state
from limner.http.dialect import Envelope, VendorDialect
from limner.http.routing import dialect_route, read_json
from limner.http.scheduling import read_scheduling

DIALECT = "aigne"


class AigneParams(BaseModel):
    model_config = ConfigDict(extra="ignore")

    prompt: str = Field(min_length=1, max_length=32000)
    model: str = "dall-e-2"
    image: str | list[str] | None = None
    n: int = Field(1, ge=1, le=10)
    size: str = "1024x1024"
    response_format: Literal["url", "b64_json"] = "url"
    quality: Literal["standard", "hd", "auto", "high", "medium", "low"] = "standard"
    style: Literal["vivid", "natural"] = "vivid"
    # limner extensions, as in the OpenAI dialect
    seed: int | None = Field(None, ge=0, le=2**32 - 1)
    negative_prompt: str | None = Field(None, max_length=4000)
    loras: LoraList | None = None
    controls: ControlList | None = None
    reference_images: ReferenceList | None = None
    scheduler: str | None = Field(None, max_length=64)
    exact: bool = False


async def create_image(request: Request) -> Response:
    """Create an image from a prompt, or edit the given image(s)."""
    state = get_state(request)
    params = await read_json(request, AigneParams)
    images = encoded(references(params.image, empty_ok=True), param="image")
    size = parse_size(params.size)
    image_request = ImageRequest(
        prompt=params.prompt,
        model=params.model,
        dialect=DIALECT,
        n=params.n,
        size=SizeSpec(*size) if size else SizeSpec(),
        seed=params.seed,
        negative_prompt=params.negative_prompt,
        images=images,
        quality=params.quality,
        rendering_style=params.style,
        links=params.response_format == "url",
        report_usage=openai.is_gpt_image(params.model),
        loras=lora_choices(params.loras),
        controls=control_choices(params.controls),
        reference_images=reference_choices(params.reference_images),
        scheduler=params.scheduler,
        exact=params.exact,
        consumer=get_consumer(request),
    )
    result = await state.service.run(read_scheduling(request, image_request), current_request_id())
    if not openai.is_gpt_image(params.model):
        result.quality = None  # its default "standard" is no answer field of DALL-E's
    return render_result(result, params.response_format, request, state, model=params.model)


def build_router(envelope: Envelope) -> APIRouter:
    router = APIRouter(route_class=dialect_route(envelope), tags=["AIGNE Hub"])
    router.add_api_route(
        "/api/images/generations",
        create_image,
        methods=["POST"],
        openapi_extra=openapi.request_body(openapi.json_body(AigneParams)),
        responses={**openapi.ok("The images (URLs last one hour).", openai.ImagesResponse), **openai.ERROR_RESPONSES},
    )
    return router


AIGNE = VendorDialect(DIALECT, openai.ERROR_MAP, render_error, lambda dialect, _mount: build_router(dialect))
"""AIGNE Hub: OpenAI's error envelope and table, tokens over any transport."""

"""ImagineArt's forms as limner's ``ImageRequest``: the two fixed model ids, seeds 0 and -1 as "draw one",
PNG without metadata, and the edit's reference images in order."""

from __future__ import annotations

from typing import Any

from limner.core.errors import InvalidImage, InvalidRequest
from limner.core.models import EncodedImage, ImageInput, ImageRequest, SizeSpec
from limner.dialects.controls import control_choices, reference_choices
from limner.dialects.imagineart.protocol import (
    DIALECT,
    EDIT_MODEL,
    GENERATE_MODEL,
    MAX_IMAGES,
    RANDOM_SEEDS,
    EditForm,
    GenerationForm,
)
from limner.dialects.loras import lora_choices
from limner.http.routing import FormBody


def seed_for(seed: int | None) -> int | None:
    """0, -1 and omitted all mean "draw one"."""
    return None if seed is None or seed in RANDOM_SEEDS else seed


def form_fields(form: FormBody) -> dict[str, Any]:
    fields = form.scalars()
    if fields.get("seed") == "":
        del fields["seed"]  # an empty form field is an omitted one
    return fields


def generation_request(params: GenerationForm, consumer: str) -> ImageRequest:
    return ImageRequest(
        prompt=params.prompt,
        model=GENERATE_MODEL,
        dialect=DIALECT,
        size=SizeSpec(aspect_ratio=params.aspect_ratio, resolution=params.resolution),
        seed=seed_for(params.seed),
        effort="high" if params.reasoning == "high" else "normal",
        output_format="png",
        embed_metadata=False,
        links=False,  # the answer is the PNG itself
        loras=lora_choices(params.loras),
        controls=control_choices(params.controls),
        reference_images=reference_choices(params.reference_images),
        consumer=consumer,
    )


def edit_request(params: EditForm, images: list[ImageInput], consumer: str) -> ImageRequest:
    return ImageRequest(
        prompt=params.prompt,
        model=EDIT_MODEL,
        dialect=DIALECT,
        size=SizeSpec(aspect_ratio=params.aspect_ratio, resolution=params.resolution),
        seed=seed_for(params.seed),
        images=images,
        output_format="png",
        embed_metadata=False,
        links=False,  # the answer is the PNG itself
        loras=lora_choices(params.loras),
        controls=control_choices(params.controls),
        reference_images=reference_choices(params.reference_images),
        consumer=consumer,
    )


def load_images(form: FormBody) -> list[ImageInput]:
    """1-4 ``images`` files, in order (image 1 first); the service decodes them and judges their type."""
    uploads = form.files.get("images", [])
    if not uploads:
        if "images" in form.fields:
            raise InvalidImage("'images' must be files (multipart file parts), not text fields.", param="images")
        raise InvalidRequest("Missing required parameter: 'images'.", param="images")
    if len(uploads) > MAX_IMAGES:
        raise InvalidRequest(f"At most {MAX_IMAGES} images can be given; got {len(uploads)}.", param="images")
    # No check of each part's label: curl calls .webp and .heic files application/octet-stream. The
    # service decodes the bytes (PNG, JPEG, WebP, HEIC, HEIF) and names the image whose bytes are not one.
    return [EncodedImage(upload.data, f"image {index}", "images") for index, upload in enumerate(uploads, start=1)]

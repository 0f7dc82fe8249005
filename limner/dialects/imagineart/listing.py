"""``GET /v1/models`` for ImagineArt: the two models as OpenAI model objects that also carry the reference's
name, modality and a JSON schema of each endpoint's parameters, with the pixel sizes this catalog makes."""

from __future__ import annotations

import copy
import functools
from typing import Any

from pydantic import BaseModel

from limner.core.errors import ModelNotFound
from limner.core.imagineart import RESOLUTIONS
from limner.core.models import Capabilities, SizeSpec
from limner.core.sizes import resolve_size
from limner.dialects.imagineart.protocol import (
    EDIT_MODEL,
    EXTENSIONS,
    GENERATE_MODEL,
    IMAGE_TYPES,
    MAX_IMAGES,
    MODEL_NAMES,
    EditForm,
    GenerationForm,
)
from limner.http.access import Visible, everything
from limner.http.deps import AppState


def models_payload(state: AppState, visible: Visible = everything) -> list[dict[str, Any]]:
    """The two models, as OpenAI model objects that also carry ImagineArt's name, modality and parameters."""
    items = []
    for model_id, modality, form in (
        (GENERATE_MODEL, "text-to-image", GenerationForm),
        (EDIT_MODEL, "image-to-image", EditForm),
    ):
        try:
            info = state.service.describe(model_id)
        except ModelNotFound:
            continue  # not configured: not listed
        if not visible(model_id):
            continue
        items.append(
            {
                "id": model_id,
                "object": "model",
                "created": state.started,
                "owned_by": info.owned_by,
                "name": MODEL_NAMES[model_id],
                "modality": modality,
                "parameters": parameters_schema(form, state.service.capabilities(info.id), info.id),
                "served_by": info.id,
            }
        )
    return items


def flat_properties(schema: dict[str, Any]) -> dict[str, Any]:
    """A pydantic JSON schema's properties without titles, optional fields as their non-null type."""
    properties: dict[str, Any] = {}
    for name, prop in schema["properties"].items():
        prop = {key: value for key, value in prop.items() if key != "title"}
        variants = [variant for variant in prop.pop("anyOf", []) if variant.get("type") != "null"]
        if len(variants) == 1:
            prop = {**variants[0], **prop}
        elif variants:
            prop["anyOf"] = variants
        properties[name] = prop
    return properties


def _pixels(spec: SizeSpec, caps: Capabilities) -> str:
    width, height = resolve_size(spec, caps).output
    return f"{width}x{height}"


def model_schema(form: type[BaseModel]) -> dict[str, Any]:
    """``form``'s JSON schema, a copy the caller may change: pydantic builds it anew on every call,
    which made listing models cost as much as generating an image."""
    return copy.deepcopy(_model_schema(form))


@functools.cache
def _model_schema(form: type[BaseModel]) -> dict[str, Any]:
    return form.model_json_schema()


def parameters_schema(form: type[BaseModel], caps: Capabilities, model: str) -> dict[str, Any]:
    """A JSON-schema object for one endpoint: the form model's fields, enums, defaults and limits,
    the ``images`` files for edits, and the pixel sizes this catalog model produces per resolution.
    limner's own extensions (``loras``) stay out: clients walk this list as the reference defines it."""
    schema = model_schema(form)
    properties = {name: prop for name, prop in flat_properties(schema).items() if name not in EXTENSIONS}
    if form is EditForm:
        properties["images"] = {
            "type": "array",
            "items": {"type": "string", "format": "binary"},
            "mime_types": list(IMAGE_TYPES),
            "minItems": 1,
            "maxItems": MAX_IMAGES,
            "description": "Reference image files; image 1 first.",
        }
    ratios = [ratio for ratio in properties["aspect_ratio"]["enum"] if ratio != "auto"]
    properties["resolution"]["sizes"] = {
        resolution: {ratio: _pixels(SizeSpec(aspect_ratio=ratio, resolution=resolution), caps) for ratio in ratios}
        for resolution in RESOLUTIONS
    }
    return {
        "type": "object",
        "endpoint": "/v1/images/edits" if form is EditForm else "/v1/images/generations",
        "content_type": "multipart/form-data",
        "required": [*schema.get("required", []), *(["images"] if form is EditForm else [])],
        "properties": properties,
        "model": model,
        "supports_seed": caps.supports_seed,
        "output": {
            "mime_type": "image/png",
            "metadata": "none",
            "headers": ["X-Seed", "X-Model", "X-Width", "X-Height", "X-Request-Id"],
        },
    }

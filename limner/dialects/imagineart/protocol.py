"""ImagineArt 2.0's wire models: the two endpoints' form fields in the reference's order (limner's
``loras`` fenced), its error envelope, and its model listing."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from limner.core.imagineart import EditAspectRatio, GenerateAspectRatio, Resolution
from limner.dialects.controls import CONTROLS_HELP, REFERENCES_HELP, ControlList, ReferenceList
from limner.dialects.loras import LoraList

DIALECT = "imagineart"
GENERATE_MODEL = "text-to-image"
EDIT_MODEL = "image-edit"
MODEL_NAMES = {GENERATE_MODEL: "ImagineArt 2.0", EDIT_MODEL: "ImagineArt 2.0 Edit"}
"""The two models' names as the reference lists them (``served_by`` says which catalog model runs each)."""
MAX_IMAGES = 4
IMAGE_TYPES = ("image/png", "image/jpeg", "image/webp", "image/heic", "image/heif")
SEED_MAX = 2**32 - 1
RANDOM_SEEDS = (0, -1)
PROMPT_LIMIT = 4000
RESOLUTION_HELP = "1K (faster) or 2K (higher fidelity)."
EXTENSIONS = frozenset({"loras", "controls", "reference_images"})
"""Form fields limner adds to the reference's (documented in OpenAPI, not in the model listing)."""
LORAS_HELP = 'limner extension: LoRA adapters of the serving model, as a JSON list [{"name": ..., "weight": ...}].'
SEED_HELP = "Deterministic seed. 0, -1, or omitted = random."


class GenerationForm(BaseModel):
    """``/v1/images/generations`` fields, in the reference's order."""

    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(min_length=1, max_length=PROMPT_LIMIT, description="Text prompt describing the image.")
    aspect_ratio: GenerateAspectRatio = Field("1:1", description="Output aspect ratio.")
    resolution: Resolution = Field("2K", description=RESOLUTION_HELP)
    seed: int | None = Field(None, ge=-1, le=SEED_MAX, description=SEED_HELP)
    reasoning: Literal["low", "high"] = Field(
        "low", description="Visual reasoning level: low (faster) or high (richer compositions: more denoising steps)."
    )
    loras: LoraList | None = Field(None, description=LORAS_HELP)
    controls: ControlList | None = Field(None, description=CONTROLS_HELP)
    reference_images: ReferenceList | None = Field(None, description=REFERENCES_HELP)


class EditForm(BaseModel):
    """``/v1/images/edits`` fields, in the reference's order (``images`` are files, checked separately)."""

    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(min_length=1, max_length=PROMPT_LIMIT, description="Editing instruction.")
    aspect_ratio: EditAspectRatio = Field("auto", description="Output aspect ratio; auto matches the first image.")
    resolution: Resolution = Field("2K", description=RESOLUTION_HELP)
    seed: int | None = Field(None, ge=-1, le=SEED_MAX, description=SEED_HELP)
    loras: LoraList | None = Field(None, description=LORAS_HELP)
    controls: ControlList | None = Field(None, description=CONTROLS_HELP)
    reference_images: ReferenceList | None = Field(None, description=REFERENCES_HELP)


class ImagineArtError(BaseModel):
    code: str = Field(description="The machine-readable cause, safe to switch on.")
    message: str
    request_id: str


class ImagineArtErrorResponse(BaseModel):
    """``{"error": {"code", "message", "request_id"}}``: every ImagineArt error has this stable shape."""

    error: ImagineArtError


class ImagineArtModel(BaseModel):
    """A model as OpenAI lists it, plus ImagineArt's name, modality and parameters."""

    id: str
    object: Literal["model"]
    created: int
    owned_by: str
    name: str = Field(description="As the reference names it: ImagineArt 2.0, ImagineArt 2.0 Edit.")
    modality: Literal["text-to-image", "image-to-image"]
    parameters: dict[str, Any] = Field(description="A JSON schema of the endpoint's form fields, and output details.")
    served_by: str = Field(description="limner extension: the catalog model that does the work.")
    precision: str | None = Field(None, description="limner extension: a local model's dtype.")
    quantization: str | None = Field(None, description="limner extension: a local model's quantised weights.")


class ImagineArtModelList(BaseModel):
    object: Literal["list"]
    data: list[ImagineArtModel]

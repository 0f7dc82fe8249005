"""limner's fenced ``controls`` and ``reference_images`` extensions, shared by the dialects that take them.

``controls: [{"name", "image", "scale", "start", "end", "preprocess"}]`` picks controls (ControlNets,
T2I-Adapters) of the requested model by catalog name; ``reference_images: [{"image", "scale"}]`` gives
images whose look the result follows (the model's IP-Adapter). Each ``image`` is a data URL, base64 or an
http(s) URL, decoded by the service after admission like any input image. JSON bodies carry the lists as
they are; multipart forms (OpenAI edits, ImagineArt) carry the same lists as JSON strings. Which controls
exist, and for which model, is the service's question, not the dialect's.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from limner.core.models import ControlChoice, EncodedImage, ReferenceChoice
from limner.dialects.loras import from_form_text

CONTROLS_HELP = (
    "limner extension: controls of the model (ControlNets, T2I-Adapters), each "
    '{"name", "image", "scale", "start", "end", "preprocess"}; in forms, a JSON string. GET /v1/models lists them.'
)
REFERENCES_HELP = (
    'limner extension: images whose look the result follows (the model\'s IP-Adapter), each {"image", "scale"}; '
    "in forms, a JSON string."
)


class ControlParam(BaseModel):
    """One control of the requested model, by its catalog name, with its image; unset fields: the catalog's."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64)
    image: str = Field(min_length=1, description="A data URL, base64 or an http(s) URL")
    scale: float | None = Field(None, allow_inf_nan=False)
    start: float | None = Field(None, allow_inf_nan=False, description="Fraction of the steps it starts at")
    end: float | None = Field(None, allow_inf_nan=False, description="Fraction of the steps it ends at")
    preprocess: Literal["canny", "none"] | None = Field(
        None, description="canny: edges are drawn from the image first; none: the image is the map"
    )


class ReferenceParam(BaseModel):
    """One reference image; ``scale`` unset: the IP-Adapter's default."""

    model_config = ConfigDict(extra="forbid")

    image: str = Field(min_length=1, description="A data URL, base64 or an http(s) URL")
    scale: float | None = Field(None, allow_inf_nan=False)


ControlList = Annotated[list[ControlParam], BeforeValidator(from_form_text), Field(max_length=8)]
ReferenceList = Annotated[list[ReferenceParam], BeforeValidator(from_form_text), Field(max_length=8)]


def control_choices(controls: list[ControlParam] | None) -> list[ControlChoice]:
    return [
        ControlChoice(
            name=control.name,
            image=EncodedImage(control.image, f"control {index} ('{control.name}')", "controls"),
            scale=control.scale,
            start=control.start,
            end=control.end,
            preprocess=control.preprocess,
        )
        for index, control in enumerate(controls or [], start=1)
    ]


def reference_choices(references: list[ReferenceParam] | None) -> list[ReferenceChoice]:
    return [
        ReferenceChoice(EncodedImage(reference.image, f"reference image {index}", "reference_images"), reference.scale)
        for index, reference in enumerate(references or [], start=1)
    ]

"""limner's fenced ``loras`` extension, shared by the dialects that take it: ``[{"name", "weight"}]``.

JSON bodies carry the list as is; multipart forms (OpenAI edits) carry the same list as a JSON string.
Which names exist, and for which model, is the service's question, not the dialect's.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from limner.core.models import LoraChoice


class LoraParam(BaseModel):
    """One adapter of the requested model, by its catalog name; ``weight`` unset: the catalog's default."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64)
    weight: float | None = Field(None, allow_inf_nan=False)


def from_form_text(value: Any) -> Any:
    """A multipart field is text: decode it as the JSON list it holds (anything else is left to fail)."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


LoraList = Annotated[list[LoraParam], BeforeValidator(from_form_text), Field(max_length=16)]


def lora_choices(loras: list[LoraParam] | None) -> list[LoraChoice]:
    return [LoraChoice(lora.name, lora.weight) for lora in loras or []]

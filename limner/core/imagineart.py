"""What the ImagineArt API accepts, in one place: its dialect serves these values and its upstream engine
sends them, so both must change together."""

from __future__ import annotations

from typing import Literal, get_args

SharedAspectRatio = Literal["1:1", "16:9", "9:16", "4:3", "3:4", "3:2", "2:3", "21:9", "4:5", "5:4", "3:1", "1:3"]
GenerateAspectRatio = Literal[SharedAspectRatio, "4:1", "1:4"]
"""Generations also take the two panoramic ratios."""
EditAspectRatio = Literal["auto", SharedAspectRatio]
"""Edits take ``auto``: the first reference image's ratio."""
Resolution = Literal["1K", "2K"]

GENERATE_RATIOS: tuple[str, ...] = get_args(GenerateAspectRatio)
EDIT_RATIOS: tuple[str, ...] = tuple(ratio for ratio in get_args(EditAspectRatio) if ratio != "auto")
"""The fixed ratios an edit may name (``auto`` aside)."""
RESOLUTIONS: tuple[str, ...] = get_args(Resolution)

"""What a seed changes in a built-in image: where the emoji sits, how large, how tilted, and its colours.

The same augmentations the upsampler was trained under (shifts, turns, colour changes), kept small enough
that the subject stays what it is: a seed never changes which emoji is drawn, only how.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

SCALE_RANGE = (0.70, 0.92)
"""Side of the emoji as a fraction of the canvas's shorter side."""
SHIFT = 0.07
"""Largest move of the centre, as a fraction of the canvas's shorter side (kept inside the canvas)."""
TILT_DEGREES = 12.0
HUE_DEGREES = 14.0
SATURATION = (0.85, 1.2)
BRIGHTNESS = (0.92, 1.06)


@dataclass(frozen=True)
class Variation:
    """One image's draw; ``Variation()`` is the emoji as the font draws it, centred."""

    scale: float = 0.86
    shift_x: float = 0.0
    shift_y: float = 0.0
    tilt: float = 0.0
    hue: float = 0.0
    saturation: float = 1.0
    brightness: float = 1.0

    def colour_matrix(self) -> torch.Tensor:
        """3x3 RGB matrix: hue turned about the grey axis (YIQ), saturation and brightness scaled. Linear, so it
        applies to premultiplied colour as it is."""
        to_yiq = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
        angle = math.radians(self.hue)
        turn = torch.tensor(
            [
                [1.0, 0.0, 0.0],
                [0.0, self.saturation * math.cos(angle), -self.saturation * math.sin(angle)],
                [0.0, self.saturation * math.sin(angle), self.saturation * math.cos(angle)],
            ]
        )
        return self.brightness * torch.linalg.inv(to_yiq) @ turn @ to_yiq


def draw_variation(generator: torch.Generator | None) -> Variation:
    """A seeded variation (a generator of that seed); the canonical one when ``generator`` is None."""
    if generator is None:
        return Variation()
    u = torch.rand(7, generator=generator, device=generator.device).cpu().tolist()
    scale = SCALE_RANGE[0] + (SCALE_RANGE[1] - SCALE_RANGE[0]) * u[0]
    room = min(SHIFT, (1 - scale) / 2)
    return Variation(
        scale=scale,
        shift_x=room * (2 * u[1] - 1),
        shift_y=room * (2 * u[2] - 1),
        tilt=TILT_DEGREES * (2 * u[3] - 1),
        hue=HUE_DEGREES * (2 * u[4] - 1),
        saturation=SATURATION[0] + (SATURATION[1] - SATURATION[0]) * u[5],
        brightness=BRIGHTNESS[0] + (BRIGHTNESS[1] - BRIGHTNESS[0]) * u[6],
    )


def recolour(premultiplied: torch.Tensor, variation: Variation) -> torch.Tensor:
    """[4, H, W] premultiplied -> the same with colours changed, kept valid (colour never above alpha)."""
    colour = torch.einsum("ij,jhw->ihw", variation.colour_matrix(), premultiplied[:3].float())
    alpha = premultiplied[3:].float()
    return torch.cat([torch.minimum(colour.clamp(min=0), alpha), alpha])

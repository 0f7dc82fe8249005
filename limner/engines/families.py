"""Pipeline families: what each kind of diffusers model wants by default, and how to tell which one a model is.

A family's defaults (steps, guidance, strength, size, negative prompts, samplers, half-precision type,
when to decode in tiles) apply only where the catalog entry leaves a setting unset. The family comes from
the catalog's ``family`` or is read from the model's configs (pipeline class, UNet/transformer config,
scheduler config), never from its weights. Models of no known family (limner's built-in model, custom
pipelines) keep the plain behaviour: what their ``__call__`` accepts, and the catalog's settings.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

UNET_SAMPLERS = ("euler", "euler_a", "dpmpp_2m", "dpmpp_2m_karras", "ddim", "unipc", "heun", "lcm", "pndm")
FLOW_SAMPLERS = ("flow_euler",)
SAMPLERS: dict[str, tuple[str, dict[str, Any]]] = {
    "euler": ("EulerDiscreteScheduler", {}),
    "euler_a": ("EulerAncestralDiscreteScheduler", {}),
    "dpmpp_2m": ("DPMSolverMultistepScheduler", {}),
    "dpmpp_2m_karras": ("DPMSolverMultistepScheduler", {"use_karras_sigmas": True}),
    "ddim": ("DDIMScheduler", {}),
    "unipc": ("UniPCMultistepScheduler", {}),
    "heun": ("HeunDiscreteScheduler", {}),
    "lcm": ("LCMScheduler", {}),
    "pndm": ("PNDMScheduler", {}),
    "flow_euler": ("FlowMatchEulerDiscreteScheduler", {}),
}
"""Request sampler names -> (diffusers scheduler class, config overrides), built from the model's own config."""


@dataclass(frozen=True)
class Family:
    name: str
    base: str
    """The architecture adapters are trained for: turbo and full models of one base share LoRAs."""
    steps: int
    guidance: float
    strength: float
    size: int
    """The side the family was trained at, used when the configs do not say."""
    size_multiple: int
    negative_prompt: bool
    samplers: tuple[str, ...]
    cuda_dtype: str
    """What ``dtype = "auto"`` means on CUDA: bfloat16 where float16 overflows (FLUX), else float16."""
    text_to_image: bool = True
    max_sequence_length: int | None = None
    """FLUX's T5 prompt length (schnell was distilled at 256 tokens, dev at 512)."""

    @property
    def note(self) -> str:
        """Its sampling defaults in words, as ``limner pull`` reports them."""
        guidance = f"guidance {self.guidance:g}" if self.guidance else "no guidance"
        return f"{self.name}: {self.steps} step{'s' if self.steps > 1 else ''}, {guidance}"

    @property
    def tile_above(self) -> int:
        """Pixels past which ``vae_tiling`` unset decodes in tiles: more than twice the trained area."""
        return 2 * self.size * self.size


def _family(name: str, base: str, steps: int, guidance: float, strength: float, size: int, **more: Any) -> Family:
    flow = base in ("sd3", "flux")
    defaults: dict[str, Any] = {
        "size_multiple": 16 if flow else 8,
        "negative_prompt": base != "flux",
        "samplers": FLOW_SAMPLERS if flow else UNET_SAMPLERS,
        "cuda_dtype": "bfloat16" if base == "flux" else "float16",
    }
    return Family(name, base, steps, guidance, strength, size, **(defaults | more))


FAMILIES: dict[str, Family] = {
    family.name: family
    for family in (
        _family("sd1", "sd1", 30, 7.5, 0.75, 512),
        _family("sd2", "sd2", 30, 7.5, 0.75, 768),
        _family("sd-turbo", "sd2", 1, 0.0, 0.5, 512),
        _family("sdxl", "sdxl", 30, 5.0, 0.6, 1024),
        _family("sdxl-turbo", "sdxl", 1, 0.0, 0.5, 512),
        _family("sdxl-refiner", "sdxl-refiner", 30, 5.0, 0.3, 1024, text_to_image=False),
        _family("sd3", "sd3", 28, 7.0, 0.6, 1024),
        _family("flux-schnell", "flux", 4, 0.0, 0.6, 1024, max_sequence_length=256),
        _family("flux-dev", "flux", 28, 3.5, 0.6, 1024, max_sequence_length=512),
        # Distilled variants: their own sampling defaults over their base's architecture
        _family("sd3-turbo", "sd3", 4, 0.0, 0.6, 1024),
        _family("sdxl-lightning", "sdxl", 4, 0.0, 0.6, 1024),
        _family("sdxl-lcm", "sdxl", 4, 1.0, 0.6, 1024),
        _family("sd1-lcm", "sd1", 4, 1.0, 0.75, 512),
    )
}
"""Every family limner knows, by name: the one table of sampling defaults (the engine's and ``limner pull``'s)."""

NAMED_BY: tuple[tuple[tuple[str, ...], str], ...] = (
    (("flux", "schnell"), "flux-schnell"),
    (("flux",), "flux-dev"),
    (("3.5", "turbo"), "sd3-turbo"),
    (("xl", "turbo"), "sdxl-turbo"),
    (("turbo",), "sd-turbo"),
    (("lightning",), "sdxl-lightning"),
    (("xl", "lcm"), "sdxl-lcm"),
    (("lcm",), "sd1-lcm"),
)
"""Words in a repository id or file name (all of them, lower-cased) that name a distilled family; first match wins.
A pulled model of none of these keeps its pipeline's own defaults."""


def same_base(declared: str, family: Family) -> bool:
    """Whether an adapter declared for ``declared`` (a family or a base: sdxl, sd1, flux, ...) fits ``family``."""
    other = FAMILIES.get(declared)
    return (other.base if other else declared) == family.base


def family_for(*names: str) -> Family | None:
    """The distilled family whose words all occur in the given repository ids or file names (``NAMED_BY``)."""
    text = " ".join(names).lower()
    return next((FAMILIES[name] for words, name in NAMED_BY if all(word in text for word in words)), None)


def family_named(name: str) -> Family:
    family = FAMILIES.get(name)
    if family is None:
        raise ValueError(f"unknown model family {name!r}: expected one of {', '.join(FAMILIES)}")
    return family


def detect_family(class_name: str | None, root: Path | None) -> Family | None:
    """The family of the pipeline class ``class_name`` with the configs under ``root`` (a diffusers directory)."""
    if not class_name:
        return None
    index = _read(root / "model_index.json") if root else {}
    turbo = _read(root / "scheduler" / "scheduler_config.json").get("timestep_spacing") == "trailing" if root else False
    if class_name.startswith("StableDiffusionXL"):
        refiner = index.get("requires_aesthetics_score") is True or index.get("text_encoder", [None])[0] is None
        if refiner and index:
            return FAMILIES["sdxl-refiner"]
        return FAMILIES["sdxl-turbo" if turbo else "sdxl"]
    if class_name.startswith("StableDiffusion3"):
        return FAMILIES["sd3"]
    if class_name.startswith("Flux") and not class_name.startswith("Flux2"):
        guided = _read(root / "transformer" / "config.json").get("guidance_embeds") if root else False
        return FAMILIES["flux-dev" if guided else "flux-schnell"]
    if class_name in ("StableDiffusionPipeline", "StableDiffusionImg2ImgPipeline", "StableDiffusionInpaintPipeline"):
        cross = _read(root / "unet" / "config.json").get("cross_attention_dim") if root else None
        if cross == 1024:  # SD 2.x's OpenCLIP text encoder
            return FAMILIES["sd-turbo" if turbo else "sd2"]
        return FAMILIES["sd1"]
    return None


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}

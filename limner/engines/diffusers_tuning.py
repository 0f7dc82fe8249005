"""Memory options applied at load, and the per-call knobs of a loaded pipeline (sampler, VAE tiling).

Half precision and model CPU offload are CUDA features: asked for on another device they are a load error
that says so, never silently ignored. ``compile`` (``limner.engines.compiling``), attention slicing and VAE
tiling work on any device. Samplers are built once per name from the model's own scheduler config and swapped in per
call, so a request's sampler choice never leaks into the next request.
"""

from __future__ import annotations

from typing import Any

from limner.core.errors import InvalidRequest, ModelNotAvailable
from limner.engines.compiling import compile_denoiser
from limner.engines.diffusers_loading import DiffusersSettings, Pipeline, dtype_argument, pipeline_class
from limner.engines.families import SAMPLERS, Family

HALF = ("float16", "fp16", "bfloat16", "bf16")
REFINER_CLASS = "StableDiffusionXLImg2ImgPipeline"


def check_device(settings: DiffusersSettings, device: Any) -> None:
    """Refuse CUDA-only options on other devices, naming each one."""
    if device.type == "cuda":
        return
    wanted = [
        name
        for name, on in (
            (f"dtype = {settings.dtype!r}", settings.dtype in HALF),
            ("cpu_offload", settings.cpu_offload),
        )
        if on
    ]
    if wanted:
        raise ModelNotAvailable(
            f"{', '.join(wanted)} need{'s' if len(wanted) == 1 else ''} a CUDA device, and this model runs on "
            f"{device.type}: remove {'it' if len(wanted) == 1 else 'them'} from the catalog entry or run on a GPU."
        )


def auto_dtype(family: Family | None, device: Any) -> str:
    """``dtype = "auto"``: the family's half type on CUDA, float32 elsewhere."""
    if device.type != "cuda":
        return "float32"
    return family.cuda_dtype if family else "float16"


def place(pipe: Pipeline, settings: DiffusersSettings, device: Any) -> None:
    """Move the pipeline to its device with the memory options the entry asked for."""
    if settings.attention_slicing:
        pipe.enable_attention_slicing()
    if settings.cpu_offload:
        pipe.enable_model_cpu_offload(device=device)
    else:
        pipe.to(device)
    if settings.compile:
        compile_denoiser(pipe)


def load_refiner(settings: DiffusersSettings, base: Pipeline, dtype: Any, device: Any) -> Pipeline | None:
    """The SDXL refiner, sharing the base's second text encoder and VAE (as the two were trained)."""
    if settings.refiner is None:
        return None
    path = settings.refiner.expanduser()
    if not (path / "model_index.json").is_file():
        raise ModelNotAvailable(f"refiner {path} is not a diffusers directory: it has no model_index.json.")
    shared = {name: getattr(base, name) for name in ("text_encoder_2", "vae") if getattr(base, name, None) is not None}
    refiner = pipeline_class(REFINER_CLASS).from_pretrained(
        str(path), local_files_only=True, **shared, **dtype_argument(dtype)
    )
    place(refiner, settings, device)
    refiner.set_progress_bar_config(disable=True)
    return refiner


def set_vae_tiling(pipe: Pipeline, settings: DiffusersSettings, family: Family | None, pixels: int) -> None:
    """Decode in tiles when the entry says so, or (unset) when the image is much larger than the family's."""
    vae = getattr(pipe, "vae", None)
    if vae is None or not hasattr(vae, "enable_tiling"):
        return
    tile = settings.vae_tiling if settings.vae_tiling is not None else bool(family and pixels > family.tile_above)
    if tile != bool(getattr(vae, "use_tiling", False)):
        vae.enable_tiling() if tile else vae.disable_tiling()


class Samplers:
    """The model's allow-listed samplers, built on first use from its own scheduler config."""

    def __init__(self, allowed: tuple[str, ...]) -> None:
        self.allowed = allowed
        self._built: dict[str, Any] = {}
        self._default: Any = None

    def check(self, name: str | None) -> None:
        if name is None or name in self.allowed:
            return
        choices = f"one of {', '.join(self.allowed)}" if self.allowed else "none (this model has no sampler choice)"
        raise InvalidRequest(f"Unknown sampler {name!r} for this model: expected {choices}.", param="scheduler")

    def reset(self, default: Any) -> None:
        self._default = default
        self._built.clear()

    def pick(self, name: str | None) -> Any:
        """The scheduler to use for one call: the requested sampler, or the model's own."""
        if name is None:
            return self._default
        if name not in self._built:
            import diffusers

            class_name, overrides = SAMPLERS[name]
            self._built[name] = getattr(diffusers, class_name).from_config(self._default.config, **overrides)
        return self._built[name]

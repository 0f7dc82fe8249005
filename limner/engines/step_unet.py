"""Step functions (``limner.engines.stepping``) for the UNet families: SD 1.x, 2.x, SDXL and their turbo variants.

They use the loaded pipeline's own components and public methods (``encode_prompt``, the UNet, the VAE
and image processor) and a fresh instance of the request's scheduler per trajectory, so a request's noise
and sampler state are its own. What they do not cover runs whole through the pipeline's ``__call__``:
image-to-image and inpainting, an SDXL refiner, LCM's guidance embedding (``time_cond_proj_dim``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

from PIL import Image

from limner.core.models import EngineRequest, Mode
from limner.engines.adapters import LoraSet
from limner.engines.diffusers_tuning import Samplers
from limner.engines.step_hooks import decode_latents
from limner.engines.stepping import Tensor, Trajectory

STEPPED_PIPELINES = ("StableDiffusionPipeline", "StableDiffusionXLPipeline")


@dataclass(frozen=True)
class StepDefaults:
    """What a request leaves unset, resolved as the engine's whole-pipeline call would."""

    steps: int
    guidance: float


class PipelineSteps(ABC):
    """What every step function of a diffusers pipeline shares: defaults, samplers, adapters, the batch key."""

    def __init__(self, pipe: Any, samplers: Samplers, loras: LoraSet, defaults: StepDefaults) -> None:
        self.pipe = pipe
        self.samplers = samplers
        self.loras = loras
        self.defaults = defaults

    def key(self, request: EngineRequest) -> Hashable | None:
        if request.mode is not Mode.GENERATE or request.images or request.mask is not None or request.prompts:
            return None
        if request.controls or request.references:  # their pipelines are the control or IP-Adapter ones
            return None
        return (request.width, request.height, request.loras, self.guidance(request) > 1.0)

    def prepare(self, request: EngineRequest) -> None:
        self.loras.apply(self.pipe, request.loras)

    def steps(self, request: EngineRequest) -> int:
        return request.steps or self.defaults.steps

    def guidance(self, request: EngineRequest) -> float:
        return request.guidance if request.guidance is not None else self.defaults.guidance

    @abstractmethod
    def begin(self, request: EngineRequest) -> Trajectory: ...

    @abstractmethod
    def model(self, sample: Tensor, timesteps: Tensor, cond: dict[str, Tensor]) -> Tensor: ...

    @abstractmethod
    def decode(self, trajectories: Sequence[Trajectory]) -> list[list[Image.Image]]: ...

    @abstractmethod
    def preview(self, trajectory: Trajectory) -> list[Image.Image] | None: ...

    def scheduler(self, request: EngineRequest, device: Any) -> Any:
        """A scheduler of the request's own (its sampler, set to its steps): multistep samplers keep history."""
        shared = self.samplers.pick(request.scheduler)
        own = type(shared).from_config(shared.config)
        own.set_timesteps(self.steps(request), device=device)
        return own


class UNetSteps(PipelineSteps):
    """Text-to-image with a ``StableDiffusionPipeline`` or ``StableDiffusionXLPipeline``."""

    def __init__(self, pipe: Any, samplers: Samplers, loras: LoraSet, defaults: StepDefaults) -> None:
        super().__init__(pipe, samplers, loras, defaults)
        self.xl = type(pipe).__name__ == "StableDiffusionXLPipeline"

    def begin(self, request: EngineRequest) -> Trajectory:
        import torch
        from diffusers.utils.torch_utils import randn_tensor

        pipe, n = self.pipe, request.n
        device, dtype = pipe.unet.device, pipe.unet.dtype
        guided = self.guidance(request) > 1.0
        with torch.inference_mode():
            encoded = pipe.encode_prompt(
                prompt=request.prompt,
                device=device,
                num_images_per_prompt=n,
                do_classifier_free_guidance=guided,
                negative_prompt=request.negative_prompt,
            )
        cond = {"encoder_hidden_states": _rows(encoded[0], encoded[1], guided)}
        if self.xl:
            cond["text_embeds"] = _rows(encoded[2], encoded[3], guided)
            h, w = request.height, request.width
            ids = torch.tensor([[h, w, 0, 0, h, w]], dtype=cond["text_embeds"].dtype, device=device)
            cond["time_ids"] = ids.repeat(len(cond["text_embeds"]), 1)
        scheduler = self.scheduler(request, device)
        scale = pipe.vae_scale_factor
        shape = (n, pipe.unet.config.in_channels, request.height // scale, request.width // scale)
        generators = [torch.Generator(device=device).manual_seed(seed) for seed in request.seeds]
        noise = randn_tensor(shape, generator=generators, device=device, dtype=dtype)
        return Trajectory(
            request=request,
            scheduler=scheduler,
            timesteps=scheduler.timesteps,
            latents=noise * scheduler.init_noise_sigma,
            cond=cond,
            guidance=self.guidance(request),
            guided=guided,
            step_kwargs=_step_kwargs(scheduler, generators),
        )

    def model(self, sample: Tensor, timesteps: Tensor, cond: dict[str, Tensor]) -> Tensor:
        import torch

        added = {name: cond[name] for name in ("text_embeds", "time_ids") if name in cond}
        with torch.inference_mode():
            return self.pipe.unet(
                sample,
                timesteps,
                encoder_hidden_states=cond["encoder_hidden_states"],
                added_cond_kwargs=added or None,
                return_dict=False,
            )[0]

    def decode(self, trajectories: Sequence[Trajectory]) -> list[list[Image.Image]]:
        import torch

        images = decode_latents(self.pipe, torch.cat([t.latents for t in trajectories]))
        if images is None:
            raise ValueError("the pipeline's VAE could not decode its latents")
        return split(images, trajectories)

    def preview(self, trajectory: Trajectory) -> list[Image.Image] | None:
        return decode_latents(self.pipe, trajectory.latents)


def unet_steps(pipe: Any, samplers: Samplers, loras: LoraSet, defaults: StepDefaults) -> UNetSteps | None:
    """The step function for ``pipe``, or None when it has to run whole (another class, LCM's guidance input)."""
    unet = getattr(pipe, "unet", None)
    if type(pipe).__name__ not in STEPPED_PIPELINES or unet is None:
        return None
    if getattr(unet.config, "time_cond_proj_dim", None) is not None:
        return None
    return UNetSteps(pipe, samplers, loras, defaults)


def split(images: list[Image.Image], trajectories: Sequence[Trajectory]) -> list[list[Image.Image]]:
    """Images decoded together, back to their trajectories (``n`` each, in order)."""
    parts, start = [], 0
    for trajectory in trajectories:
        parts.append(images[start : start + trajectory.request.n])
        start += trajectory.request.n
    return parts


def call_defaults(pipe: Any) -> dict[str, Any]:
    """The defaults of the pipeline's ``__call__`` (its steps and guidance when neither catalog nor family says)."""
    import inspect

    if pipe is None:
        return {}
    parameters = inspect.signature(type(pipe).__call__).parameters.values()
    return {p.name: p.default for p in parameters if p.default is not inspect.Parameter.empty}


def _rows(positive: Tensor, negative: Tensor | None, guided: bool) -> Tensor:
    """Conditioning rows in model-input order: unconditional first under guidance."""
    import torch

    return torch.cat([negative, positive]) if guided and negative is not None else positive


def _step_kwargs(scheduler: Any, generators: list[Any]) -> dict[str, Any]:
    """What the pipelines pass to ``scheduler.step``: the request's generators (ancestral samplers draw noise)."""
    import inspect

    return {"generator": generators} if "generator" in inspect.signature(scheduler.step).parameters else {}

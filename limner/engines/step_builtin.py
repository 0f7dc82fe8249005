"""The built-in model's step function (``limner.engines.stepping``): a small adapter over its pipeline's parts.

The pipeline denoises pixel-unshuffled 32x32 images conditioned on one sentence embedding (through both the
cross-attention and the time embedding); this adapter encodes a request's prompts with the pipeline's own
encoder, draws its noise per seed as the pipeline does, and decodes by shuffling the pixels back.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

from PIL import Image

from limner.builtin.pipeline import NATIVE_SIZE, UNSHUFFLE, predicted_clean, tensor_to_images
from limner.core.models import EngineRequest
from limner.engines.step_unet import PipelineSteps, split
from limner.engines.stepping import Tensor, Trajectory

BUILTIN_PIPELINE_CLASS = "EmojiDiffusionPipeline"


class BuiltinSteps(PipelineSteps):
    """Text-to-image on the built-in model, one step at a time."""

    def key(self, request: EngineRequest) -> Hashable | None:
        key = super().key(request)
        return None if key is None else ("native", request.loras, self.guidance(request) > 1.0)

    def begin(self, request: EngineRequest) -> Trajectory:
        import torch

        pipe, n = self.pipe, request.n
        device, dtype = pipe.unet.device, pipe.unet.dtype
        guided = self.guidance(request) > 1.0
        with torch.inference_mode():
            cond = pipe.encode_prompts([request.prompt] * n)
            if guided:
                cond = torch.cat([pipe.encode_prompts([request.negative_prompt or ""] * n), cond])
        scheduler = self.scheduler(request, device)
        side = NATIVE_SIZE // UNSHUFFLE
        generators = [torch.Generator(device=device).manual_seed(seed) for seed in request.seeds]
        noise = torch.cat(
            [torch.randn((1, 3 * UNSHUFFLE * UNSHUFFLE, side, side), generator=g, device=device) for g in generators]
        ).to(device, dtype)
        return Trajectory(
            request=request,
            scheduler=scheduler,
            timesteps=scheduler.timesteps,
            latents=noise * getattr(scheduler, "init_noise_sigma", 1.0),
            cond={"embeddings": cond},
            guidance=self.guidance(request),
            guided=guided,
            step_kwargs={"generator": generators[0]} if _takes_generator(scheduler) else {},
        )

    def model(self, sample: Tensor, timesteps: Tensor, cond: dict[str, Tensor]) -> Tensor:
        import torch

        embeddings = cond["embeddings"]
        with torch.inference_mode():
            return self.pipe.unet(
                sample, timesteps, encoder_hidden_states=embeddings[:, None, :], class_labels=embeddings
            ).sample

    def decode(self, trajectories: Sequence[Trajectory]) -> list[list[Image.Image]]:
        import torch
        import torch.nn.functional as F

        latents = torch.cat([t.latents for t in trajectories])
        return split(tensor_to_images(F.pixel_shuffle(latents, UNSHUFFLE).float()), trajectories)

    def preview(self, trajectory: Trajectory) -> list[Image.Image] | None:
        import torch.nn.functional as F

        t = trajectory.timesteps[trajectory.index - 1]
        clean = predicted_clean(trajectory.scheduler, trajectory.last_input, trajectory.last_prediction, t)
        return None if clean is None else tensor_to_images(F.pixel_shuffle(clean, UNSHUFFLE).float())


def _takes_generator(scheduler: Any) -> bool:
    import inspect

    return "generator" in inspect.signature(scheduler.step).parameters

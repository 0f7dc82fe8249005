"""Per-step hooks for diffusers pipelines: progress, cancellation at the next step, and previews.

A pipeline takes its hook in one of two forms: stock diffusers pipelines have ``callback_on_step_end``
(called after each step with the current latents), limner's own pipelines have ``step_callback`` and
``preview_callback`` (they compute previews themselves, cheaply), and ``rows_wanted`` (they drop the
images of departed callers from a running batch). Everything here runs in the engine's
worker thread: callbacks that touch the event loop must use ``call_soon_threadsafe``.

Previews of stock pipelines decode the current latents with the pipeline's VAE: noisy early, close
to the final image late (limner spaces them evenly, so the last one comes three quarters in). They
are best effort: a pipeline whose latents the VAE cannot decode as they are (packed transformer
latents, say) gives no previews, and a preview that fails never fails the generation.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from PIL import Image

from limner.core.models import EngineRequest

log = logging.getLogger(__name__)

Pipeline = Any  # a diffusers.DiffusionPipeline


class Cancelled(Exception):
    """Raised from a step callback to stop a generation whose caller went away."""


def step_arguments(
    params: set[str], request: EngineRequest, steps: int | None, cancel: threading.Event
) -> dict[str, Any]:
    """The pipeline call's hook arguments: they report (steps done, total), stop on ``cancel`` and
    hand previews to ``request.preview`` every ``request.preview_every`` steps (never after the last)."""
    progress, preview, every = request.progress, request.preview, request.preview_every

    def step(done: int, total: int) -> None:
        if cancel.is_set():
            raise Cancelled
        if progress is not None:
            progress(done, total)

    if "callback_on_step_end" in params:
        previews = _LatentPreviews(preview, every)

        def on_step_end(pipe: Pipeline, index: int, timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
            total = getattr(pipe, "num_timesteps", None)  # img2img runs fewer steps than asked
            total = total if isinstance(total, int) else steps or index + 1
            step(index + 1, total)
            previews.maybe(pipe, index + 1, total, tensors.get("latents"))
            return tensors

        return {"callback_on_step_end": on_step_end}
    arguments: dict[str, Any] = {}
    if "step_callback" in params:  # limner's own pipelines
        arguments["step_callback"] = lambda index, total: step(index + 1, total)
    if preview is not None and every > 0 and {"preview_callback", "preview_every"} <= params:
        arguments |= {"preview_callback": preview, "preview_every": every}
    if request.rows_wanted is not None and "rows_wanted" in params:
        arguments["rows_wanted"] = request.rows_wanted
    return arguments


class _LatentPreviews:
    """Previews for stock pipelines: the current latents through the pipeline's VAE."""

    def __init__(self, preview: Any, every: int) -> None:
        self.preview = preview
        self.every = every if preview is not None else 0

    def maybe(self, pipe: Pipeline, done: int, total: int, latents: Any) -> None:
        if self.every <= 0 or done % self.every or done >= total or latents is None:
            return
        try:
            images = decode_latents(pipe, latents)
        except Exception:
            log.debug("preview decoding failed; no more previews for this request", exc_info=True)
            images = None
        if images is None:
            self.every = 0
            return
        self.preview(done, images)


def decode_latents(pipe: Pipeline, latents: Any) -> list[Image.Image] | None:
    """Latents [B, C, H, W] as PIL images through the pipeline's own VAE and image processor."""
    import torch

    vae = getattr(pipe, "vae", None)
    processor = getattr(pipe, "image_processor", None)
    if vae is None or processor is None or not isinstance(latents, torch.Tensor) or latents.ndim != 4:
        return None
    config = vae.config
    scaling = getattr(config, "scaling_factor", None) or 1.0
    shift = getattr(config, "shift_factor", None) or 0.0
    with torch.no_grad():
        decoded = vae.decode(latents.to(vae.dtype) / scaling + shift, return_dict=False)[0]
    images: list[Image.Image] = processor.postprocess(decoded.float(), output_type="pil")
    return images

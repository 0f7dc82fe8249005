"""Upscaler engines: one image made ``scale`` times larger, by a model file or by a weight-free filter.

A catalog entry with ``engine = "upscaler"`` is one: ``path`` a ``.pth`` / ``.safetensors`` file of an
ESRGAN-, SwinIR-, HAT- or similar architecture (loaded by spandrel, which reads the architecture and its
factor from the weights), a directory of diffusers' 4x upscaler (``StableDiffusionUpscalePipeline``,
``default_steps`` its denoising steps), or nothing, for the built-in filter (Lanczos resampling then an unsharp mask:
no weights, no torch, any factor). A model trained for another factor than the one asked for runs as many
times as it takes to reach it, and the result is resampled to exactly ``scale`` times the input.

Transparency survives: the colour goes through the model, the alpha channel through Lanczos."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageFilter

from limner.core.errors import InvalidRequest, ModelNotAvailable
from limner.core.models import Capabilities, EngineRequest, GeneratedImage, Mode
from limner.engines.base import Engine

log = logging.getLogger(__name__)

MAX_OUTPUT_PIXELS = 4096 * 4096
"""The largest result an upscaler makes by default (a 1024x1024 image at 4x)."""
UNSHARP = ImageFilter.UnsharpMask(radius=1.5, percent=60, threshold=2)
"""What the built-in filter sharpens with: Lanczos alone leaves an enlarged image soft."""
MODEL_SUFFIXES = (".pth", ".pt", ".ckpt", ".safetensors")

Upscale = Callable[[Image.Image], Image.Image]
"""A loaded upscaler: an RGB image in, the image ``native`` times larger out."""


def resample(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """``image`` at ``size`` by Lanczos."""
    return image if image.size == size else image.resize(size, Image.Resampling.LANCZOS)


def filter_upscale(image: Image.Image, scale: int) -> Image.Image:
    """The built-in upscale: Lanczos to ``scale`` times the size, then an unsharp mask (alpha left unsharpened)."""
    size = (image.width * scale, image.height * scale)
    larger = resample(image, size)
    if larger.mode == "RGBA":
        sharp = larger.convert("RGB").filter(UNSHARP)
        sharp.putalpha(larger.getchannel("A"))
        return sharp
    return larger.convert("RGB").filter(UNSHARP) if larger.mode != "RGB" else larger.filter(UNSHARP)


class ModelUpscaler:
    """An upscaler model file loaded by spandrel, with the factor it was trained for."""

    def __init__(self, path: Path, device: str = "auto") -> None:
        self.path = path
        self.device = device
        self._model: Any = None
        self.native = 0

    def load(self) -> None:
        """The weights read (CPU or GPU work: call it in a thread); a file spandrel cannot read is a
        ``ModelNotAvailable``."""
        if self._model is not None:
            return
        import torch

        from limner.engines.spandrel_import import spandrel

        try:
            library = spandrel()
        except ImportError as exc:
            raise ModelNotAvailable("Upscaler models need spandrel: pip install 'limner[upscale]'.") from exc
        if self.path.suffix.lower() not in MODEL_SUFFIXES:
            raise ModelNotAvailable(f"Upscaler file {self.path.name} is not one of {', '.join(MODEL_SUFFIXES)}.")
        try:
            auto = "cuda" if torch.cuda.is_available() else "cpu"
            device = torch.device(auto if self.device == "auto" else self.device)
            model = library.ModelLoader(device).load_from_file(self.path)
        except (OSError, ValueError, RuntimeError, library.UnsupportedModelError) as exc:
            raise ModelNotAvailable(f"Upscaler file {self.path.name} could not be loaded: {exc}") from exc
        if not isinstance(model, library.ImageModelDescriptor) or model.scale < 2:
            raise ModelNotAvailable(f"{self.path.name} is a {model.architecture.name} model, not an upscaler.")
        self._model = model.eval()
        self.native = int(model.scale)

    def unload(self) -> None:
        self._model = None

    @property
    def loaded(self) -> bool:
        return self._model is not None

    @property
    def resident_bytes(self) -> int:
        if self._model is None:
            return 0
        return sum(param.numel() * param.element_size() for param in self._model.model.parameters())

    @property
    def parameters(self) -> int:
        """The loaded network's parameter count (0 before it is loaded)."""
        return 0 if self._model is None else sum(param.numel() for param in self._model.model.parameters())

    def __call__(self, image: Image.Image) -> Image.Image:
        """One pass of the model: an RGB image ``native`` times larger."""
        import torch

        model = self._model
        pixels = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
        tensor = torch.from_numpy(pixels).permute(2, 0, 1).unsqueeze(0).to(model.device, model.dtype)
        with torch.inference_mode():
            output = model(tensor)
        array = output.squeeze(0).permute(1, 2, 0).float().cpu().numpy()
        return Image.fromarray((array * 255.0).round().clip(0, 255).astype(np.uint8), "RGB")

    def upscale(self, image: Image.Image, scale: int) -> Image.Image:
        """``image`` exactly ``scale`` times larger: the model as many times as it takes, then Lanczos to the size."""
        self.load()
        target = (image.width * scale, image.height * scale)
        colour = image.convert("RGB")
        reached = 1
        while reached < scale:
            colour = self(colour)
            reached *= self.native
        larger = resample(colour, target)
        if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
            larger.putalpha(resample(image.convert("RGBA").getchannel("A"), target))
        return larger


class DiffusionUpscaler(ModelUpscaler):
    """diffusers' 4x upscaler (``StableDiffusionUpscalePipeline``, a directory): a diffusion model that
    denoises the larger image, conditioned on the smaller; ``steps`` and ``noise_level`` as its model card
    suggests. Inputs are padded to a multiple of 8 (its UNet halves them) and the padding cut off after."""

    MULTIPLE = 8

    def __init__(self, path: Path, device: str = "auto", steps: int = 20, noise_level: int = 20) -> None:
        super().__init__(path, device)
        self.steps = steps
        self.noise_level = noise_level

    def load(self) -> None:
        if self._model is not None:
            return
        import torch
        from diffusers import StableDiffusionUpscalePipeline

        auto = "cuda" if torch.cuda.is_available() else "cpu"
        try:
            pipe = StableDiffusionUpscalePipeline.from_pretrained(self.path, local_files_only=True)
        except (OSError, ValueError, TypeError) as exc:
            raise ModelNotAvailable(f"Upscaler directory {self.path.name} could not be loaded: {exc}") from exc
        pipe.set_progress_bar_config(disable=True)
        self._model = pipe.to(auto if self.device == "auto" else self.device)
        self.native = 4

    @property
    def resident_bytes(self) -> int:
        if self._model is None:
            return 0
        modules = (self._model.unet, self._model.vae, self._model.text_encoder)
        return sum(param.numel() * param.element_size() for module in modules for param in module.parameters())

    @property
    def parameters(self) -> int:
        if self._model is None:
            return 0
        modules = (self._model.unet, self._model.vae, self._model.text_encoder)
        return sum(param.numel() for module in modules for param in module.parameters())

    def __call__(self, image: Image.Image) -> Image.Image:
        width, height = image.size
        pad_x, pad_y = -width % self.MULTIPLE, -height % self.MULTIPLE
        pixels = np.pad(np.asarray(image.convert("RGB")), ((0, pad_y), (0, pad_x), (0, 0)), mode="edge")
        result = self._model(
            prompt="",
            image=Image.fromarray(pixels, "RGB"),
            num_inference_steps=self.steps,
            noise_level=self.noise_level,
        ).images[0]
        return result.crop((0, 0, width * self.native, height * self.native))


class UpscalerEngine(Engine):
    """The engine of an ``engine = "upscaler"`` entry: ``Mode.UPSCALE`` only, one image a call."""

    def __init__(
        self, path: Path | None, device: str = "auto", max_pixels: int = MAX_OUTPUT_PIXELS, steps: int | None = None
    ) -> None:
        self.model: ModelUpscaler | None = None
        if path is not None:
            self.model = DiffusionUpscaler(path, device, steps or 20) if path.is_dir() else ModelUpscaler(path, device)
        self.capabilities = Capabilities(
            modes=frozenset({Mode.UPSCALE}),
            max_images=1,
            max_input_images=1,
            min_side=1,
            max_side=16384,
            size_multiple=1,
            max_pixels=max_pixels,
        )

    def upscale(self, image: Image.Image, scale: int) -> Image.Image:
        """``image`` ``scale`` times larger (CPU or GPU work: call it in a thread)."""
        if self.model is None:
            return filter_upscale(image, scale)
        return self.model.upscale(image, scale)

    async def generate(self, request: EngineRequest) -> list[GeneratedImage]:
        if request.mode is not Mode.UPSCALE or len(request.images) != 1:
            raise InvalidRequest("An upscaler only upscales one image.", param="model")
        image = await asyncio.to_thread(self.upscale, request.images[0], request.scale)
        return [GeneratedImage(image=image)]

    async def load(self) -> None:
        if self.model is not None:
            await asyncio.to_thread(self.model.load)

    async def aclose(self) -> None:
        if self.model is not None:
            self.model.unload()

    @property
    def loaded(self) -> bool:
        return self.model is None or self.model.loaded

    @property
    def resident_bytes(self) -> int:
        return self.model.resident_bytes if self.model is not None else 0

"""A deterministic test-pattern engine: no weights, instant, for dialect tests and benchmarks.

Pixels are a pure function of prompt, seed and size (a gradient and blocks coloured from a hash),
so tests can check determinism and that different inputs differ. It pretends to denoise in steps
(``delay`` spread over them) so progress, previews and the job endpoint can be tested without
weights. Never a default model.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import replace

import numpy as np
from PIL import Image

from limner.core.models import Capabilities, EngineRequest, GeneratedImage, Mode
from limner.engines.base import Engine

DEFAULT_STEPS = 4
"""Pretend denoising steps when a request names none (progress and previews have something to show)."""


def pattern(prompt: str, seed: int, width: int, height: int) -> Image.Image:
    digest = hashlib.sha256(f"{prompt}\x00{seed}".encode()).digest()
    rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
    colors = rng.integers(0, 256, size=(4, 4, 3), dtype=np.uint8)
    blocks = np.kron(colors, np.ones((-(-height // 4), -(-width // 4), 1), dtype=np.uint8))[:height, :width]
    gradient = np.linspace(0, 64, width, dtype=np.float32)[None, :, None]
    return Image.fromarray(np.clip(blocks.astype(np.float32) * 0.75 + gradient, 0, 255).astype(np.uint8))


class TestPatternEngine(Engine):
    capabilities = Capabilities(
        modes=frozenset(Mode),
        max_images=10,
        max_input_images=16,
        supports_mask=True,
        default_size=(256, 256),
        min_side=16,
        max_side=4096,
        size_multiple=1,
        max_pixels=4096 * 4096,
        default_steps=DEFAULT_STEPS,
    )

    def __init__(self, delay: float = 0.0, steps: int | None = None) -> None:
        self.delay = delay
        self.steps = steps or DEFAULT_STEPS
        if steps:
            self.capabilities = replace(type(self).capabilities, default_steps=steps)
        self.calls = 0

    async def generate(self, request: EngineRequest) -> list[GeneratedImage]:
        """Spreads ``delay`` over ``steps`` pretend denoising steps, reporting progress after each and
        pixelated previews (coarse to fine) every ``preview_every`` steps, like a real pipeline."""
        self.calls += 1
        images = []
        prompts = request.prompts or (request.prompt,) * request.n
        for prompt, seed in zip(prompts, request.seeds, strict=True):
            image = pattern(prompt, seed, request.width, request.height)
            if request.images and request.mode is not Mode.GENERATE:
                source = request.images[0].convert("RGB").resize(image.size)
                image = Image.blend(source, image, 0.5)
            images.append(GeneratedImage(image=image, seed=seed))
        total = request.steps or self.steps
        for step in range(1, total + 1):
            if self.delay:
                await asyncio.sleep(self.delay / total)
            if request.progress is not None:
                request.progress(step, total)
            every = request.preview_every
            if request.preview is not None and every > 0 and step % every == 0 and step < total:
                request.preview(step, [pixelated(item.image, step / total) for item in images])
        return images


def pixelated(image: Image.Image, done: float) -> Image.Image:
    """A preview ``done`` (0-1) of the way: the image in blocks that shrink as the steps go by."""
    scale = max(done / 8, 1 / max(image.size))
    small = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))))
    return small.resize(image.size, Image.Resampling.NEAREST)

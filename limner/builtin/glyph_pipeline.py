"""The built-in model, second generation: every emoji Noto Color Emoji draws, found from plain words and drawn
crisp at any size with its own transparency.

Three parts, all in the model directory and all trained or built by ``limner.builtin.train_emoji``:

- ``captions``: the caption encoder (``caption_encoder``) picks the emoji a prompt describes (a negative prompt
  pushes emoji it describes away);
- ``bases``: each emoji's 64x64 RGBA base, the glyph as the font draws it (one PNG atlas);
- ``upsampler``: the learned upsampler, applied until the emoji is as large as the answer needs (at most
  1024 px, beyond that a plain resize), so edges stay sharp instead of a blurred thumbnail.

A seed changes position, size, tilt and colours (``variety``), never the subject. Text-to-image answers keep
the emoji's transparency (an RGBA image on a transparent canvas); an edit draws the emoji over the source
image (``strength``: its opacity), and with a mask, inside the masked area. Steps are the stages (choose and
colour, each upsampling pass, place; ``num_inference_steps`` spreads more steps over them, for progress bars
and previews, without changing the image), reported through ``step_callback``, previewed through
``preview_callback`` and where ``rows_wanted`` may drop images nobody waits for.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import DiffusionPipeline
from PIL import Image
from safetensors.torch import load_file, save_file
from torch import nn

from limner.builtin.caption_encoder import CaptionEncoder
from limner.builtin.glyph_store import BASE_SIDE, build_atlas, read_atlas
from limner.builtin.upsampler import Upsampler, stages_for
from limner.builtin.variety import Variation, draw_variation, recolour

StepCallback = Callable[[int, int], None]
PreviewCallback = Callable[[int, list[Image.Image]], None]
MAX_LEARNED_SIDE = 1024
"""Largest emoji the upsampler draws (two passes from 64); larger answers resize that, which stays sharp."""
NEGATIVE_WEIGHT = 1.0
FORMAT = 1


class GlyphBases(nn.Module):
    """The 64x64 bases as one uint8 buffer [N, 64, 64, 4], straight alpha (a module, so memory accounting sees it)."""

    tiles: torch.Tensor

    def __init__(self, tiles: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("tiles", tiles)

    def base(self, index: int) -> torch.Tensor:
        """Emoji ``index`` as [4, 64, 64] premultiplied floats in [0, 1]."""
        pixels = self.tiles[index].permute(2, 0, 1).float() / 255.0
        return torch.cat([pixels[:3] * pixels[3:], pixels[3:]])


class EmojiGlyphPipeline(DiffusionPipeline):  # type: ignore[misc]
    """Text-to-image, edits and inpainting on the built-in emoji model (a directory it loads and saves).

    A ``DiffusionPipeline`` by class, so the diffusers engine serves it like any pipeline, but with its own
    files (``from_pretrained`` / ``save_pretrained``), components and device handling: no part of it is a
    diffusers model."""

    __setattr__ = object.__setattr__  # plain attributes: no diffusers config stands behind them

    SIZE_LIMITS = (16, 4096, 4096 * 4096)
    """(min side, max side, max pixels) it draws at directly, with no resize after."""

    def __init__(
        self, captions: CaptionEncoder, upsampler: Upsampler, bases: GlyphBases, emoji: list[dict[str, str]]
    ) -> None:
        self.captions = captions.eval()
        self.upsampler = upsampler.eval()
        self.bases = bases
        self.emoji = emoji
        self.scheduler = None
        self.record: dict[str, Any] = {}

    # --- what the engine expects of a pipeline ---

    @property
    def components(self) -> dict[str, nn.Module]:
        return {"captions": self.captions, "upsampler": self.upsampler, "bases": self.bases}

    @property
    def device(self) -> torch.device:
        return next(self.upsampler.parameters()).device

    def to(self, device: torch.device | str | None = None, *_: Any, **__: Any) -> EmojiGlyphPipeline:
        if device is not None:
            for module in self.components.values():
                module.to(device)
        return self

    def set_progress_bar_config(self, **_: Any) -> None:
        """No progress bars: the stages report through ``step_callback``."""

    # --- files ---

    @classmethod
    def from_pretrained(cls, path: str | Path, **_: Any) -> EmojiGlyphPipeline:
        """Load a model directory (any dtype asked is ignored: it runs in float32, and is small)."""
        root = Path(path)
        config = json.loads((root / "config.json").read_text())
        if config.get("format") != FORMAT:
            raise ValueError(f"{root} holds built-in model format {config.get('format')}, expected {FORMAT}")
        emoji = json.loads((root / "emoji.json").read_text(encoding="utf-8"))
        captions = CaptionEncoder(len(emoji), config["encoder"]["buckets"], config["encoder"]["dim"])
        captions.load_state_dict({k: v.float() for k, v in load_file(root / "captions.safetensors").items()})
        upsampler = Upsampler(config["upsampler"]["width"], config["upsampler"]["depth"])
        upsampler.load_state_dict(load_file(root / "upsampler.safetensors"))
        with Image.open(root / "bases.png") as atlas:
            tiles = read_atlas(atlas, len(emoji), config["base_side"])
        pipe = cls(captions, upsampler, GlyphBases(tiles), emoji)
        pipe.record = config.get("training", {})
        return pipe

    def save_pretrained(self, path: str | Path, training: dict[str, Any] | None = None) -> None:
        root = Path(path)
        root.mkdir(parents=True, exist_ok=True)
        config = {
            "format": FORMAT,
            "base_side": BASE_SIDE,
            "encoder": {"buckets": self.captions.table.num_embeddings, "dim": self.captions.table.embedding_dim},
            "upsampler": {"width": self.upsampler.width, "depth": self.upsampler.depth},
            "training": training if training is not None else self.record,
        }
        (root / "model_index.json").write_text(json.dumps({"_class_name": type(self).__name__}, indent=2) + "\n")
        (root / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        (root / "emoji.json").write_text(json.dumps(self.emoji, ensure_ascii=False, indent=0) + "\n", encoding="utf-8")
        tables = {k: v.detach().to(torch.float16).contiguous() for k, v in self.captions.state_dict().items()}
        save_file(tables, root / "captions.safetensors")
        save_file(
            {k: v.detach().contiguous() for k, v in self.upsampler.state_dict().items()}, root / "upsampler.safetensors"
        )
        build_atlas(self.bases.tiles.numpy()).save(root / "bases.png", optimize=True)

    # --- choosing ---

    @torch.inference_mode()
    def choose(
        self,
        prompts: Sequence[str],
        negatives: Sequence[str] | None = None,
        generators: Sequence[torch.Generator | None] | None = None,
    ) -> list[int]:
        """The emoji each prompt describes best (less what its negative prompt describes). A prompt with no
        subject ("", "a picture of") describes none: its seed picks one, so seeds still give different emoji."""
        scores = self.captions.scores(list(prompts))
        if negatives is not None and any(negatives):
            scores = scores - NEGATIVE_WEIGHT * self.captions.scores(list(negatives)).clamp(min=0)
        chosen = []
        for row, generator in zip(scores, generators or [None] * len(prompts), strict=True):
            known = bool(row.abs().max() > 1e-6)
            if known or generator is None:
                chosen.append(int(row.argmax()))
            else:
                chosen.append(int(torch.randint(len(self.emoji), (1,), generator=generator, device=generator.device)))
        return chosen

    def ranked(self, prompt: str, count: int = 5) -> list[str]:
        """The labels of the ``count`` best emoji for ``prompt``: what the evaluation and the docs show."""
        scores = self.captions.scores([prompt])[0]
        return [self.emoji[int(index)]["label"] for index in scores.topk(count).indices]

    # --- drawing ---

    @torch.inference_mode()
    def __call__(
        self,
        prompt: str | list[str],
        negative_prompt: str | list[str] | None = None,
        num_images_per_prompt: int = 1,
        width: int | None = None,
        height: int | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        image: Image.Image | list[Image.Image] | None = None,
        mask_image: Image.Image | list[Image.Image] | None = None,
        strength: float = 1.0,
        num_inference_steps: int | None = None,
        output_type: str = "pil",
        step_callback: StepCallback | None = None,
        preview_callback: PreviewCallback | None = None,
        preview_every: int = 0,
        rows_wanted: Callable[[], Sequence[bool]] | None = None,
        **_: Any,
    ) -> _Output:
        """One image per prompt and seed; rows that ``rows_wanted`` turns False stop there and come back as None."""
        if output_type != "pil":
            raise ValueError(f"this model returns PIL images only, not output_type={output_type!r}")
        if not 0.0 <= strength <= 1.0:
            raise ValueError(f"strength must be between 0 and 1, got {strength}")
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        prompts = [p for p in prompts for _ in range(num_images_per_prompt)]
        count = len(prompts)
        negatives = _broadcast(negative_prompt or "", count // num_images_per_prompt)
        negatives = [n for n in negatives for _ in range(num_images_per_prompt)]
        generators = generator if isinstance(generator, list) else [generator] * count
        if len(generators) != count:
            raise ValueError(f"expected {count} generators, got {len(generators)}")
        sources = _broadcast(image, count) if image is not None else [None] * count
        masks = _broadcast(mask_image, count) if mask_image is not None else [None] * count
        if mask_image is not None and image is None:
            raise ValueError("mask_image needs image")
        first = sources[0]
        canvas = (width or (first.width if first else 1024), height or (first.height if first else 1024))

        variations = [draw_variation(g) for g in generators]
        chosen = self.choose(prompts, negatives, generators)
        boxes = [_target_box(canvas, mask, v) for mask, v in zip(masks, variations, strict=True)]
        need = max(math.ceil(box[2]) for box in boxes)
        stages = stages_for(BASE_SIDE, min(need, MAX_LEARNED_SIDE))
        rows = list(range(count))
        pixels = torch.stack([recolour(self.bases.base(i), v) for i, v in zip(chosen, variations, strict=True)])
        pixels = pixels.to(self.device)

        pace = _Pace(stages + 2, num_inference_steps, step_callback, preview_every if preview_callback else 0)

        def advance(stage: int) -> bool:
            """Report stage ``stage`` done (previews included); False when nobody waits for any row any more."""
            nonlocal rows, pixels
            shown = pace.done(stage)
            if stage < pace.stages and rows_wanted is not None:
                wanted = rows_wanted()
                keep = [position for position, row in enumerate(rows) if wanted[row]]
                if len(keep) < len(rows):
                    rows = [rows[position] for position in keep]
                    pixels = pixels[keep]
            if rows and shown is not None and preview_callback is not None:
                placed = [self._place(pixels[k], row, canvas, boxes, sources, masks, strength, variations)
                          for k, row in enumerate(rows)]  # fmt: skip
                preview_callback(shown, placed)
            return bool(rows)

        if not advance(1):
            return _Output([None] * count)
        for stage in range(stages):
            pixels = self.upsampler(pixels)
            if not advance(stage + 2):
                return _Output([None] * count)
        images: list[Image.Image | None] = [None] * count
        for k, row in enumerate(rows):
            images[row] = self._place(pixels[k], row, canvas, boxes, sources, masks, strength, variations)
        pace.done(pace.stages)
        return _Output(images)

    def _place(
        self,
        emoji: torch.Tensor,
        row: int,
        canvas: tuple[int, int],
        boxes: list[tuple[float, float, float]],
        sources: list[Image.Image | None],
        masks: list[Image.Image | None],
        strength: float,
        variations: list[Variation],
    ) -> Image.Image:
        """The emoji (premultiplied [4, S, S]) tilted and placed on the canvas: transparent, or over the source."""
        layer = _transformed(emoji, canvas, boxes[row], variations[row].tilt).convert("RGBA")
        source, mask = sources[row], masks[row]
        if source is None:
            return layer
        alpha = np.asarray(layer.getchannel("A"), dtype=np.float32) / 255.0 * strength
        if mask is not None:
            alpha *= np.asarray(mask.convert("L").resize(canvas, Image.Resampling.BILINEAR), dtype=np.float32) / 255.0
        colour = np.asarray(layer, dtype=np.float32)[..., :3]
        background = np.asarray(source.convert("RGB").resize(canvas, Image.Resampling.LANCZOS), dtype=np.float32)
        blended = colour * alpha[..., None] + background * (1 - alpha[..., None])
        return Image.fromarray(blended.round().clip(0, 255).astype(np.uint8), "RGB")


class _Pace:
    """Stages as the caller's steps: ``steps`` (at least one per stage) spread evenly over the stages, so a
    progress bar and previews asked for every N steps work as with a diffusion model; the image does not
    depend on ``steps``."""

    def __init__(self, stages: int, steps: int | None, callback: StepCallback | None, every: int) -> None:
        self.stages, self.steps = stages, max(stages, steps or stages)
        self.callback, self.every, self.reported = callback, every, 0

    def done(self, stage: int) -> int | None:
        """Report the steps up to the end of ``stage``; the step to preview at, if one was passed (not the last)."""
        target = self.steps if stage >= self.stages else stage * self.steps // self.stages
        shown = None
        for step in range(self.reported + 1, target + 1):
            if self.callback is not None:
                self.callback(step - 1, self.steps)
            if self.every > 0 and step % self.every == 0 and step < self.steps:
                shown = step
        self.reported = max(self.reported, target)
        return shown


class _Output:
    """What diffusers pipelines return: ``.images``."""

    def __init__(self, images: list[Image.Image | None]) -> None:
        self.images = images


def _target_box(canvas: tuple[int, int], mask: Image.Image | None, variation: Variation) -> tuple[float, float, float]:
    """(centre x, centre y, side) of the emoji on the canvas: the variation's place, or inside the mask's box."""
    width, height = canvas
    if mask is not None:
        box = (
            mask.convert("L").resize(canvas, Image.Resampling.BILINEAR).point(lambda v: 255 if v > 127 else 0).getbbox()
        )
        if box is not None:
            left, top, right, bottom = box
            side = min(right - left, bottom - top) * (0.85 + 0.15 * (variation.scale - 0.7) / 0.22)
            return (left + right) / 2, (top + bottom) / 2, max(side, 1.0)
    short = min(width, height)
    return width / 2 + variation.shift_x * short, height / 2 + variation.shift_y * short, variation.scale * short


def _transformed(
    emoji: torch.Tensor, canvas: tuple[int, int], box: tuple[float, float, float], tilt: float
) -> Image.Image:
    """Premultiplied [4, S, S] -> an "RGBa" canvas with the emoji scaled to the box's side, turned by ``tilt``
    degrees and centred on it (one bicubic resampling, in premultiplied form so edges keep their colour)."""
    side = emoji.shape[-1]
    data = (emoji.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    layer = Image.frombuffer("RGBa", (side, side), np.ascontiguousarray(data).tobytes(), "raw", "RGBa", 0, 1)
    centre_x, centre_y, target = box
    scale = side / target  # source pixels per canvas pixel
    angle = math.radians(tilt)
    cos, sin = math.cos(angle) * scale, math.sin(angle) * scale
    # Canvas (x, y) -> source: rotate about the box centre, scale, move to the source centre.
    a, b = cos, sin
    d, e = -sin, cos
    c = side / 2 - a * centre_x - b * centre_y
    f = side / 2 - d * centre_x - e * centre_y
    resample = Image.Resampling.BICUBIC if scale <= 1.5 else Image.Resampling.BILINEAR
    if scale > 1.5:  # much smaller than drawn: reduce first so the transform does not alias
        reduced = max(1, round(target * 1.25))
        layer = layer.resize((reduced, reduced), Image.Resampling.LANCZOS)
        factor = side / reduced
        a, b, c, d, e, f = a / factor, b / factor, (c + 0.0) / factor, d / factor, e / factor, f / factor
        resample = Image.Resampling.BICUBIC
    return layer.transform(canvas, Image.Transform.AFFINE, (a, b, c, d, e, f), resample=resample)


def _broadcast(value: Any, count: int) -> list[Any]:
    items = list(value) if isinstance(value, list | tuple) else [value]
    if len(items) == count:
        return items
    if len(items) == 1:
        return items * count
    raise ValueError(f"expected 1 or {count} items, got {len(items)}")

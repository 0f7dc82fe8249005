"""The only shapes that cross layers: ``ImageRequest`` in, ``ImageResult`` out, and what engines see."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal

from PIL import Image

OutputFormat = Literal["png", "jpeg", "webp"]
Effort = Literal["normal", "high"]
"""How hard a model works: ``high`` runs more denoising steps (see ``ImageService``)."""
ProgressCallback = Callable[[int, int], None]
"""Called by engines after each step with (step, total steps)."""
PreviewCallback = Callable[[int, list[Image.Image]], None]
"""Called by engines with (step, one rough image per seed) every ``preview_every`` steps; may run in a worker thread."""
RowsWanted = Callable[[], tuple[bool, ...]]
"""Asked by engines before each step: one flag per image of the call; False rows may be dropped from then on."""


class Mode(StrEnum):
    """What a request asks of an engine; decided by the images it carries."""

    GENERATE = "generate"  # text to image
    EDIT = "edit"  # one source image (with an optional mask)
    COMPOSE = "compose"  # several source images into one new image
    VARIATION = "variation"  # one source image, no prompt


@dataclass(frozen=True)
class SourceImage:
    """A decoded input image; ``label`` names it in error messages ("image 2", "mask")."""

    image: Image.Image
    label: str
    mime_type: str = "image/png"


@dataclass(frozen=True)
class SizeSpec:
    """What the client asked for, before it is snapped to what a model accepts.

    Either an explicit ``width``/``height``, or an ``aspect_ratio`` ("16:9", "auto") with an optional
    ``resolution`` preset ("1K", "2K", "4K"); all empty means the model's default.
    """

    width: int | None = None
    height: int | None = None
    aspect_ratio: str | None = None
    resolution: str | None = None

    @property
    def is_default(self) -> bool:
        return self.width is None and self.aspect_ratio is None and self.resolution is None


@dataclass
class ImageRequest:
    """One request in any dialect, canonical."""

    prompt: str
    model: str
    dialect: str = "openai"
    n: int = 1
    size: SizeSpec = field(default_factory=SizeSpec)
    negative_prompt: str | None = None
    seed: int | None = None
    steps: int | None = None
    guidance: float | None = None
    strength: float | None = None
    style: str | None = None
    images: list[SourceImage] = field(default_factory=list)
    mask: SourceImage | None = None
    variation: bool = False
    output_format: OutputFormat = "png"
    output_compression: int | None = None
    background: str | None = None
    quality: str | None = None
    watermark: bool = False
    effort: Effort = "normal"
    embed_metadata: bool = True
    """False delivers images with no generation metadata (no prompt text chunks), whatever the server default."""
    keep_media: bool = False
    """The dialect's response points at stored media by key, so provider URLs are never passed through."""
    user: str | None = None
    consumer: str = "local"
    partial_images: int = 0
    """Previews wanted while the images are made (OpenAI's ``partial_images``); 0: none, the engine skips them."""
    options: dict[str, Any] = field(default_factory=dict)
    """Dialect fields with no canonical meaning, passed to upstream engines that understand them."""

    @property
    def mode(self) -> Mode:
        if self.variation:
            return Mode.VARIATION
        if len(self.images) > 1:
            return Mode.COMPOSE
        if self.images:
            return Mode.EDIT
        return Mode.GENERATE


@dataclass(frozen=True)
class EngineRequest:
    """What an engine is asked to do: sizes resolved, seeds drawn, style applied."""

    mode: Mode
    prompt: str
    width: int
    height: int
    seeds: list[int]
    negative_prompt: str | None = None
    steps: int | None = None
    guidance: float | None = None
    strength: float | None = None
    images: list[Image.Image] = field(default_factory=list)
    mask: Image.Image | None = None
    upstream_model: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    progress: ProgressCallback | None = None
    preview: PreviewCallback | None = None
    preview_every: int = 0
    """Call ``preview`` after every this many steps (never after the last: the final images follow); 0: never."""
    prompts: tuple[str, ...] = ()
    """One prompt per image when a batch joins several requests; empty means ``prompt`` for every image."""
    rows_wanted: RowsWanted | None = None
    """For joined batches: an engine that can drop rows mid-run (whose callers went away) asks this before
    each step and returns only the other rows' images, in order. Engines that cannot ignore it."""

    @property
    def n(self) -> int:
        return len(self.seeds)


@dataclass
class GeneratedImage:
    """One image from an engine: decoded pixels, or encoded bytes from an upstream provider."""

    image: Image.Image
    seed: int | None = None
    text: str | None = None
    source_url: str | None = None
    """Where an upstream provider serves this image, for models with ``pass_through_urls``."""


@dataclass(frozen=True)
class StoredImage:
    """One delivered image: where it lives and what it is."""

    key: str
    url: str
    data: bytes
    mime_type: str
    width: int
    height: int
    seed: int | None = None
    text: str | None = None
    revised_prompt: str | None = None

    @property
    def file_size(self) -> int:
        return len(self.data)


@dataclass
class ImageResult:
    """The outcome of one request, rendered by the dialect that received it."""

    model: str
    images: list[StoredImage]
    request_id: str
    created: int = field(default_factory=lambda: int(time.time()))
    seconds: float = 0.0
    output_format: OutputFormat = "png"
    width: int = 0
    height: int = 0
    quality: str | None = None
    background: str | None = None
    warnings: list[str] = field(default_factory=list)
    storage_error: str | None = None
    """Set when images could not be stored: dialects that allow it fall back to inline base64."""

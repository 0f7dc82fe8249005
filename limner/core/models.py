"""The only shapes that cross layers: ``ImageRequest`` in, ``ImageResult`` out, and what engines see."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal

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
    UPSCALE = "upscale"  # one source image made larger by an upscaler model (``/v1/images/upscale``)


@dataclass(frozen=True)
class SourceImage:
    """A decoded input image; ``label`` names it in error messages ("image 2", "mask")."""

    image: Image.Image
    label: str
    mime_type: str = "image/png"
    original_size: tuple[int, int] | None = None
    """Upright width and height as sent, where ``image`` was shrunk to what the request can use."""
    data: bytes | None = None
    """The bytes as sent: a result's Content Credentials name them as its ingredient (their own manifest kept)."""

    @property
    def size(self) -> tuple[int, int]:
        """Width and height as the client sent them (usage is counted on these)."""
        return self.original_size or self.image.size


@dataclass(frozen=True)
class MediaRef:
    """One of limner's own stored images, named by the consumer it belongs to and its store key."""

    owner: str
    key: str


@dataclass(frozen=True)
class EncodedImage:
    """An input image as the client sent it: file bytes, a data URL, base64, an http(s) URL or limner's own
    media. The service decodes (or fetches) it only after the request is admitted, so a refused request
    never costs a decode or a download."""

    source: bytes | str | MediaRef
    label: str
    """Names it in error messages ("image 2", "mask")."""
    param: str
    """The request field it came from, set on errors about it."""


ImageInput = SourceImage | EncodedImage
"""What a request may carry as an image: already decoded (in-process callers) or as sent (dialects)."""
RenderingStyle = Literal["vivid", "natural"]
"""OpenAI's ``style`` for DALL-E 3: passed to providers that take it; local models ignore it."""


@dataclass(frozen=True)
class LoraChoice:
    """One LoRA adapter asked for by name; ``weight`` None means the catalog's default for it."""

    name: str
    weight: float | None = None


@dataclass(frozen=True)
class LoraInfo:
    """One LoRA adapter a catalog model offers, as model lists describe it."""

    name: str
    weight: float
    description: str = ""


UPSCALE_FACTORS = (2, 4)
"""The factors an upscale may ask for (``UpscaleChoice.scale``)."""


@dataclass(frozen=True)
class UpscaleChoice:
    """An upscale asked for: by an upscaler of the catalog (None: the built-in, weight-free one), by ``scale``,
    then on generations optionally refined by the generating model at strength ``refine`` ("hires fix")."""

    model: str | None = None
    scale: int = 2
    refine: float | None = None


@dataclass(frozen=True)
class Expand:
    """Outpainting: the canvas grows by these many pixels on each side, or (``aspect_ratio``, "16:9") to that
    shape, evenly on the two sides it needs; the model paints the new area, the image's own pixels stay."""

    left: int = 0
    right: int = 0
    top: int = 0
    bottom: int = 0
    aspect_ratio: str | None = None


@dataclass(frozen=True)
class ControlChoice:
    """One control (ControlNet or T2I-Adapter) of the requested model, by catalog name, with its image.

    ``None`` fields take the catalog's defaults: ``scale`` its default scale, ``start``/``end`` the whole
    run (fractions of the denoising steps), ``preprocess`` the control's own (canny for a canny control)."""

    name: str
    image: ImageInput
    scale: float | None = None
    start: float | None = None
    end: float | None = None
    preprocess: str | None = None


@dataclass(frozen=True)
class ReferenceChoice:
    """One reference image (IP-Adapter) whose look the result follows; ``scale`` None: the catalog's."""

    image: ImageInput
    scale: float | None = None


@dataclass(frozen=True)
class ControlInfo:
    """One control a catalog model offers, as model lists describe it."""

    name: str
    kind: str
    type: str
    """``controlnet`` or ``t2i-adapter``."""
    scale: float
    description: str = ""


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
    images: list[ImageInput] = field(default_factory=list)
    mask: ImageInput | None = None
    variation: bool = False
    output_format: OutputFormat = "png"
    output_compression: int | None = None
    background: str | None = None
    quality: str | None = None
    """As the client named it (``hd``, ``high``, ...): prices and providers read this one field."""
    rendering_style: RenderingStyle | None = None
    watermark: bool = False
    effort: Effort = "normal"
    embed_metadata: bool = True
    """False delivers images with no generation metadata (no prompt text chunks), whatever the server default."""
    keep_media: bool = False
    """The dialect's response points at stored media by key, so provider URLs are never passed through."""
    links: bool = True
    """The answer links to stored media (a URL or a media path). False when every image goes back inline
    (base64, raw bytes): nothing is stored, since no client could ever ask for it again."""
    consumer: str = "local"
    partial_images: int = 0
    """Previews wanted while the images are made (OpenAI's ``partial_images``); 0: none, the engine skips them."""
    report_usage: bool = False
    """The dialect's answer reports OpenAI's token ``usage`` (GPT image answers, OpenAI streams): only then is
    it counted (tokenizing a long prompt is work every other answer would pay for nothing)."""
    permanent_links: bool = False
    """The dialect promises links that last as long as the image (Milady's ``url``): the service signs them
    without an expiry instead of for ``url_ttl_seconds``."""
    loras: list[LoraChoice] = field(default_factory=list)
    """LoRA adapters of the model to apply, in order; the service checks them against the catalog."""
    scheduler: str | None = None
    """A sampler from the model's allow-list (``euler``, ``dpmpp_2m``, ...); None: the model's own."""
    exact: bool = False
    """Run without the model's denoising cache, if it has one: the pixels the full computation gives."""
    priority: int | None = None
    """Asked-for queue priority (``Limner-Priority``), capped at the consumer's maximum; None: 0."""
    start_deadline: float | None = None
    """Seconds the request may wait to start (``Limner-Start-Deadline``); None: the consumer's default."""
    controls: list[ControlChoice] = field(default_factory=list)
    """Controls of the model (ControlNets or T2I-Adapters) with their images; the service checks them."""
    reference_images: list[ReferenceChoice] = field(default_factory=list)
    """Images whose look the result follows (the model's IP-Adapter); the service checks them."""
    upscale: UpscaleChoice | None = None
    """On generations and edits: the images upscaled (and refined) before they are finished. With
    ``upscale_only``: the whole request, ``model`` being the upscaler."""
    upscale_only: bool = False
    """The request upscales its one image (``/v1/images/upscale``) and generates nothing."""
    expand: Expand | None = None
    """On edits: outpaint the one image onto a larger canvas (``limner.service.stages.outpaint``)."""

    @property
    def mode(self) -> Mode:
        if self.upscale_only:
            return Mode.UPSCALE
        if self.variation:
            return Mode.VARIATION
        if len(self.images) > 1:
            return Mode.COMPOSE
        if self.images:
            return Mode.EDIT
        return Mode.GENERATE


@dataclass(frozen=True)
class Capabilities:
    """What an engine accepts; the service checks requests against it before any work starts."""

    modes: frozenset[Mode] = frozenset({Mode.GENERATE})
    max_images: int = 10
    max_input_images: int = 1
    supports_mask: bool = False
    supports_seed: bool = True
    supports_negative_prompt: bool = True
    default_size: tuple[int, int] = (512, 512)
    min_side: int = 64
    max_side: int = 2048
    size_multiple: int = 8
    max_pixels: int = 2048 * 2048
    allowed_sizes: tuple[tuple[int, int], ...] = ()
    """When set, only these exact sizes are accepted (e.g. DALL-E 2's three squares)."""
    native_size: tuple[int, int] | None = None
    """When set, the engine always generates at this size and limner scales to the request."""
    default_steps: int | None = None
    transparency: bool = True
    """Whether the engine can deliver alpha when asked (``background: "transparent"``); a model whose engine
    cannot is refused such a request unless its catalog entry has a matting model (``limner.engines.matting``)."""
    extras: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelInfo:
    """A catalog model as the dialects describe it in their model lists."""

    id: str
    owned_by: str
    display_name: str
    loras: tuple[LoraInfo, ...] = ()
    precision: str | None = None
    """A local model's dtype ("auto", "float32", ...); None for upstream models."""
    quantization: str | None = None
    """A local model's quantised weights ("none", "int8-weight (denoiser)", ...); None for upstream models."""
    controls: tuple[ControlInfo, ...] = ()
    reference_scale: float | None = None
    """The default scale of the model's IP-Adapter; None: it takes no reference images."""


@dataclass(frozen=True)
class EngineControl:
    """One control as an engine runs it: the decoded image (a map, or a photo to preprocess), all defaults
    filled in. ``start``/``end`` are fractions of the denoising steps during which it steers."""

    name: str
    image: Image.Image
    scale: float
    start: float = 0.0
    end: float = 1.0
    preprocess: str = "none"
    """``canny``: edges are drawn from ``image`` first (``limner.core.preprocess``); ``none``: it is the map."""


@dataclass(frozen=True)
class EngineReference:
    """One decoded reference image and the IP-Adapter scale it runs at."""

    image: Image.Image
    scale: float


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
    quality: str | None = None
    background: str | None = None
    rendering_style: RenderingStyle | None = None
    effort: Effort = "normal"
    progress: ProgressCallback | None = None
    preview: PreviewCallback | None = None
    preview_every: int = 0
    """Call ``preview`` after every this many steps (never after the last: the final images follow); 0: never."""
    prompts: tuple[str, ...] = ()
    """One prompt per image when a batch joins several requests; empty means ``prompt`` for every image."""
    rows_wanted: RowsWanted | None = None
    """For joined batches: an engine that can drop rows mid-run (whose callers went away) asks this before
    each step and returns only the other rows' images, in order. Engines that cannot ignore it."""
    loras: tuple[LoraChoice, ...] = ()
    """LoRA adapters to apply, checked against the catalog, each with its weight filled in."""
    scheduler: str | None = None
    """A sampler name from the model's allow-list; None: the model's own."""
    exact: bool = False
    """Run without the model's denoising cache (``limner.engines.denoise_cache``), for the uncached pixels."""
    controls: tuple[EngineControl, ...] = ()
    """Controls to steer with, checked against the catalog, each with its image decoded."""
    references: tuple[EngineReference, ...] = ()
    """Reference images for the model's IP-Adapter, decoded."""
    scale: int = 1
    """``Mode.UPSCALE``: the factor to enlarge ``images[0]`` by (``width``/``height`` are the result's)."""

    @property
    def n(self) -> int:
        return len(self.seeds)


@dataclass(frozen=True)
class EngineTimings:
    """Where an engine call's time went, in seconds, for the per-stage metrics.

    ``denoise``: from the start of the pipeline call to the end of its last denoising step (prompt
    encoding and the initial noise included); ``decode``: from there until the images are pixels (a VAE
    or pixel-space decoder, the conversion to PIL). The rest of the engine call (handing the work to the
    engine's thread, a batching window, setting up the pipeline) is neither."""

    denoise: float
    decode: float


@dataclass
class GeneratedImage:
    """One image from an engine: decoded pixels, or encoded bytes from an upstream provider."""

    image: Image.Image
    seed: int | None = None
    text: str | None = None
    source_url: str | None = None
    """Where an upstream provider serves this image, for models with ``pass_through_urls``."""
    timings: EngineTimings | None = None
    """The split of the engine call this image came from (every image of one call carries the same); None
    from engines that cannot tell. Carried by the image, not the request, so that it survives micro-batching
    (each caller of a joined call gets the call's figures) and a trip through Ray Serve."""


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

    @property
    def file_size(self) -> int:
        return len(self.data)


@dataclass(frozen=True)
class TokenUsage:
    """A request in OpenAI's image-token accounting: input text and images, output images."""

    text_tokens: int
    image_tokens: int
    output_image_tokens: int

    @property
    def input_tokens(self) -> int:
        return self.text_tokens + self.image_tokens

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_image_tokens


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
    storage_error: str | None = None
    """Set when images could not be stored: dialects that allow it fall back to inline base64."""
    prompt: str = ""
    """The prompt the engine ran: the client's after any style preset (OpenAI's ``revised_prompt``)."""
    transparent: bool = False
    """Whether the delivered images kept an alpha channel (OpenAI's ``background``: transparent or opaque)."""
    usage: TokenUsage | None = None
    """What the request counts in OpenAI's image tokens (``limner.core.usage``)."""

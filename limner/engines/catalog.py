"""The model catalog: public model ids and aliases -> an engine, its defaults and its price.

Unknown ids are an error that lists what exists; nothing silently falls back to another model.
Engines are built lazily on first use, so listing models never loads weights.
"""

from __future__ import annotations

import asyncio
import difflib
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from limner.builtin import BUILTIN_MODEL_DIR
from limner.core.errors import InvalidRequest, ModelNotFound
from limner.core.models import Capabilities
from limner.engines.base import Engine
from limner.engines.denoise_cache import DenoiseCache
from limner.engines.families import SAMPLERS, family_named
from limner.engines.matting import Matting
from limner.engines.quantization import DEFAULT_QUANTIZED, Component, Quantization
from limner.media.fetch import DEFAULT_MAX_BYTES
from limner.media.inputs import DEFAULT_MAX_PIXELS

UPSTREAM_PROVIDERS = {
    "openai": "limner.engines.upstream.openai:OpenAIEngine",
    "gemini": "limner.engines.upstream.gemini:GeminiEngine",
    "bfl": "limner.engines.upstream.bfl:BflEngine",
    "aiml": "limner.engines.upstream.aiml:AimlEngine",
    "milady": "limner.engines.upstream.milady:MiladyEngine",
    "aigne": "limner.engines.upstream.aigne:AigneEngine",
    "imagineart": "limner.engines.upstream.imagineart:ImagineArtEngine",
}
"""The engines that call a hosted provider (``limner.engines.upstream``), by catalog ``engine`` name, with the
class each is built from (imported on first use). They guard no local hardware, so they get many slots."""
UPSTREAM_CONCURRENCY = 32
"""Default ``max_concurrency`` of an upstream entry: waiting on a network call costs limner almost nothing."""
BUILTIN_DEFAULTS: dict[str, Any] = {
    "path": BUILTIN_MODEL_DIR,
    "default_steps": 4,
    "default_strength": 1.0,
    "default_size": (1024, 1024),
    "style_postprocess": True,
    "max_queue": 32,
    "batch_window_ms": 25.0,
    "max_batch_images": 16,
}
"""What an ``engine = "builtin"`` entry leaves unset: the shipped directory and the settings it was trained for."""


LOCAL_ENGINES = ("builtin", "diffusers", "testpattern", "upscaler")
BUILTIN_UPSCALER_ID = "lanczos"
"""The upscaler every server has without configuring one: Lanczos and an unsharp mask, no weights
(``limner.engines.upscaler``). A catalog entry of this id replaces it (to price it, say)."""
LORA_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"


class EngineOptions(BaseModel):
    """The ``[models.options]`` table: engine settings too specific for a field of their own, typed here so that
    a misspelt one is an error, not a silent default. Engines limner does not ship (a factory passed to the
    catalog) may read keys of their own, from ``model_extra``."""

    model_config = ConfigDict(extra="allow")

    # testpattern
    delay: float = Field(0.0, ge=0, description="testpattern: seconds each call takes (queueing and timeout tests)")
    # local diffusers models
    max_images: int | None = Field(None, ge=1, description="Images one call may make; unset: the engine's own")
    attention_slicing: bool | None = Field(None, description="The older spelling of the field of the same name")
    cpu_offload: bool | None = Field(None, description="The older spelling of the field of the same name")
    # upstream providers
    response_format: Literal["url", "b64_json", "presigned_url"] | None = Field(
        None, description="How the provider is asked to answer (presigned_url: aiml only); unset: its engine's choice"
    )
    breaker_threshold: int = Field(5, ge=1, description="Failures in a row that open the circuit breaker")
    breaker_cooldown: float = Field(30.0, gt=0, description="Seconds the breaker stays open")
    backoff: float = Field(0.5, ge=0, description="First retry delay in seconds, doubled each retry")
    max_backoff: float = Field(8.0, ge=0, description="Longest retry delay")
    max_retry_after: float = Field(30.0, ge=0, description="Longest provider Retry-After that is waited out")
    max_bytes: int = Field(DEFAULT_MAX_BYTES, ge=1, description="Largest result image accepted from the provider")
    max_pixels: int = Field(DEFAULT_MAX_PIXELS, ge=1, description="Largest result image, in pixels")
    trust_env: bool = Field(True, description="Use HTTP(S)_PROXY and friends from the environment")
    poll_interval: float = Field(0.5, gt=0, description="bfl: seconds between polls of a queued task")
    safety_tolerance: int | None = Field(None, description="bfl: the provider's moderation level")
    max_input_images: int = Field(3, ge=1, description="gemini: input images a request may carry")
    image_config: bool = Field(True, description="gemini: send imageConfig (aspect ratio, size)")
    image_size: str | None = Field(None, description="gemini: imageSize, such as 2K")

    def extra(self, name: str) -> Any:
        """A key only an engine from outside limner knows; ``KeyError`` when unset."""
        return (self.model_extra or {})[name]


class LoraEntry(BaseModel):
    """One LoRA adapter of a local model (a ``[[models.loras]]`` table): loaded on first use, then kept."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=LORA_NAME, description="What requests call it (``loras: [{name, weight}]``)")
    path: Path = Field(description="A .safetensors file, or a directory holding one (a pulled hub repository)")
    weight_name: str | None = Field(None, description="The file inside ``path`` when it is a directory of several")
    weight: float = Field(1.0, ge=-4, le=4, description="The weight when a request names it without one")
    base: str | None = Field(None, description="The family it was trained for (sdxl, sd1, flux-dev, ...)")
    description: str = ""
    repo: str | None = Field(None, description="The hub repository it was pulled from, if any")


ControlKind = Literal["canny", "depth", "pose", "lineart", "scribble", "tile", "segmentation", "normal", "other"]


class ControlEntry(BaseModel):
    """One control of a local model (a ``[[models.controls]]`` table): a ControlNet or a T2I-Adapter, loaded
    on first use, then kept."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=LORA_NAME, description="What requests call it (``controls: [{name, image}]``)")
    path: Path = Field(description="A diffusers directory of the ControlNet or T2I-Adapter (config.json, weights)")
    type: Literal["controlnet", "t2i-adapter"] = "controlnet"
    kind: ControlKind = Field("other", description="What its images show: canny edges, a depth map, a pose, ...")
    scale: float = Field(1.0, ge=0, le=2, description="Its conditioning scale when a request gives none")
    preprocess: Literal["canny", "none"] | None = Field(
        None, description="What is drawn from a request's image first; unset: canny for canny controls, else none"
    )
    base: str | None = Field(None, description="The family it was trained for (sdxl, sd1, ...)")
    description: str = ""

    @property
    def preprocessor(self) -> str:
        return self.preprocess or ("canny" if self.kind == "canny" else "none")


class ReferenceEntry(BaseModel):
    """A local model's IP-Adapter (the ``[models.ip_adapter]`` table): what ``reference_images`` run through."""

    model_config = ConfigDict(extra="forbid")

    path: Path = Field(description="The IP-Adapter weights: a .safetensors/.bin file, or a directory holding one")
    weight_name: str | None = Field(None, description="The file inside ``path`` when it is a directory")
    image_encoder: Path = Field(description="A CLIP vision encoder directory (CLIPVisionModelWithProjection)")
    scale: float = Field(1.0, ge=0, le=2, description="Its scale when a request's reference gives none")
    base: str | None = Field(None, description="The family it was trained for (sdxl, sd1, ...)")
    description: str = ""


class MattingEntry(BaseModel):
    """A local model's background remover (a ``[models.matting]`` table): an ONNX network whose foreground
    map becomes the alpha of images asked for with a transparent background (``limner.engines.matting``)."""

    model_config = ConfigDict(extra="forbid")

    path: Path = Field(description="An .onnx file: one RGB image in (N, 3, H, W), one foreground map out")
    size: int | None = Field(None, ge=16, le=4096, description="Input side when the file leaves it open")
    mean: tuple[float, float, float] = Field((0.485, 0.456, 0.406), description="Per-channel mean it was trained with")
    std: tuple[float, float, float] = Field((0.229, 0.224, 0.225), description="Per-channel deviation likewise")


class ModelEntry(BaseModel):
    """One catalog entry (a ``[[models]]`` table in ``limner.toml``)."""

    model_config = ConfigDict(extra="forbid")

    id: str
    engine: str = Field(description="builtin | diffusers | testpattern | upscaler | an upstream provider")
    aliases: list[str] = Field(default_factory=list)
    name: str | None = None
    description: str = ""
    path: Path | None = None
    pipeline_class: str | None = None
    single_file_class: str | None = None
    config_dir: Path | None = None
    device: str = "auto"
    dtype: str = "auto"
    scheduler: str | None = None
    default_steps: int | None = None
    default_guidance: float | None = None
    default_strength: float | None = None
    default_size: tuple[int, int] | None = None
    native_size: tuple[int, int] | None = None
    style_postprocess: bool = False
    compose: str = "layout"
    """How several input images reach an engine that takes one: 'layout' side by side, or 'none' (an error)."""
    max_concurrency: int = 1
    max_queue: int = 16
    batch_window_ms: float = 0.0
    """Local engines: join compatible text-to-image requests arriving within this window into one call."""
    max_batch_images: int = 8
    """Local engines: images in one batch (request-level or step-level)."""
    step_batching: bool = Field(
        True,
        description="SD 1.x/2.x/SDXL (turbo too): text-to-image requests join and leave a "
        "running batch between denoising steps (limner.engines.stepping); false: request-level batching only",
    )
    batch_invariant: bool = Field(
        False,
        description="Step-level batching: one denoiser call per request within each step, so pixels are bit for "
        "bit those made alone (batched matrix kernels round differently by batch size), at the batched call's cost",
    )

    # Local diffusers models: family, adapters, samplers, memory
    family: str | None = Field(
        None,
        description="sd1 | sd2 | sd-turbo | sdxl | sdxl-turbo | sdxl-refiner | sd3 | "
        "flux-schnell | flux-dev; unset: detected from the model's configs",
    )
    loras: list[LoraEntry] = Field(default_factory=list)
    controls: list[ControlEntry] = Field(default_factory=list)
    ip_adapter: ReferenceEntry | None = Field(None, description="The IP-Adapter that reads reference images")
    refiner: Path | None = Field(None, description="SDXL: a refiner directory that finishes text-to-image images")
    refiner_start: float = Field(0.8, gt=0, lt=1, description="The fraction of steps the base model runs")
    matting: MattingEntry | None = Field(
        None, description="Makes background: transparent real for a model without alpha"
    )
    schedulers: list[str] | None = Field(None, description="Samplers requests may pick; unset: the family's list")
    attention_slicing: bool | None = None
    vae_tiling: bool | None = Field(None, description="Decode in tiles; unset: only for sizes past the family's")
    cpu_offload: bool | None = Field(None, description="CUDA only: weights in RAM, each model on the GPU as it runs")
    compile: bool = Field(
        False,
        description="torch.compile the denoiser (regionally where diffusers can) while the model loads, with a warm-up "
        "image; compiled code is kept in <data_dir>/compile-cache for the next start",
    )
    quantization: Quantization = Field(
        "none",
        description="Quantised weights (limner.engines.quantization): int8-weight or int8-dynamic on any device, "
        "fp8-weight, int4-weight or nf4 on CUDA; a .gguf path is a GGUF denoiser, quantised already",
    )
    quantize: list[Component] = Field(
        default_factory=lambda: list(DEFAULT_QUANTIZED), description="The components quantization applies to"
    )
    cache: DenoiseCache = Field(
        "none",
        description="A denoising cache (limner.engines.denoise_cache): first-block or taylorseer, on denoisers "
        "with diffusers' cache hooks (FLUX); requests with exact = true run without it",
    )
    cache_threshold: float | None = Field(
        None, gt=0, description="first-block: relative change of the first block below which the rest is reused"
    )
    cache_interval: int | None = Field(None, ge=2, description="taylorseer: steps between full computations")

    # Where a local model runs: in this process, or as a Ray Serve deployment (limner.engines.ray_serve)
    runtime: Literal["local", "ray"] = Field("local", description="local: in the API process; ray: on Ray Serve")
    ray_address: str | None = Field(None, description="Ray cluster to use (ray://... or auto); unset: a local Ray")
    ray_replicas: int = Field(1, ge=1, description="Ray Serve replicas (the lower bound with ray_max_replicas)")
    ray_max_replicas: int | None = Field(None, ge=1, description="Set to autoscale between ray_replicas and this")
    ray_actor_options: dict[str, Any] = Field(
        default_factory=dict, description="Ray actor options per replica, e.g. {num_gpus = 1, num_cpus = 2}"
    )

    def precision_fields(self) -> dict[str, str]:
        """``precision`` and ``quantization`` for a local model's listings (empty for an upstream one)."""
        if self.engine not in LOCAL_ENGINES:
            return {}
        components = "+".join(self.quantize)
        quantization = self.quantization if self.quantization == "none" else f"{self.quantization} ({components})"
        if self.path is not None and self.path.suffix.lower() == ".gguf":
            quantization = "gguf (denoiser)" + ("" if self.quantization == "none" else f", {quantization}")
        return {"precision": self.dtype, "quantization": quantization}

    @property
    def admitted(self) -> int:
        """How many requests may be inside the engine at once: batches count as one run of the engine.
        On Ray, Ray Serve admits and queues (per replica, with its own backpressure), so limner does not."""
        if self.runtime == "ray":
            return (self.ray_max_replicas or self.ray_replicas) * (self.max_queue + self.max_concurrency * 64)
        batching = self.batch_window_ms > 0 or self.steps_in_batches
        return self.max_concurrency * (self.max_batch_images if batching else 1)

    @property
    def steps_in_batches(self) -> bool:
        """Whether this entry's engine gets step-level batching (its requests join a running batch). The shipped
        built-in model draws in stages, not denoising steps, in under a second: it batches per request."""
        return self.step_batching and self.runtime == "local" and self.engine == "diffusers"

    price_per_image: float = 0.0
    cache_results: bool | None = Field(
        None,
        description="Answer a repeated seeded request from the result cache; unset: on for local models, off for "
        "upstream providers",
    )
    cache_price_per_image: float | None = Field(
        None, ge=0, description="Credits per image answered from the result cache; unset: the usual price"
    )
    price_scale: dict[str, float] = Field(default_factory=dict)
    """Multipliers of ``price_per_image`` by output size (``"1792x1024"``) or quality (``"hd"``); both apply."""
    owned_by: str = "limner"
    options: EngineOptions = Field(default_factory=EngineOptions)

    # Upstream providers (engine = a key of UPSTREAM_PROVIDERS)
    provider_url: str | None = Field(None, description="Base URL of the provider's API; unset: its public one")
    upstream_model: str | None = Field(None, description="The provider's model id; unset: this entry's id")
    api_key_env: str | None = Field(None, description="Environment variable holding the provider credential")
    api_key_file: Path | None = Field(None, description="File holding the provider credential (a mounted secret)")
    fallbacks: list[str] = Field(
        default_factory=list,
        description="Other catalog ids tried in order when this model fails for a provider-side reason",
    )
    timeout: float = Field(120.0, gt=0, description="Seconds for each request to the provider (and for polling)")
    max_retries: int = Field(2, ge=0, le=10, description="Retries on 429, 5xx and connection errors")
    pass_through_urls: bool = Field(
        False,
        description="Return the provider's own image URLs instead of limner's (images left as the provider made "
        "them are not stored; resized, styled or watermarked ones are)",
    )
    allow_private_urls: bool = Field(
        False, description="Download result images from private addresses (a provider on the LAN, tests)"
    )

    @model_validator(mode="after")
    def _known_options(self) -> ModelEntry:
        """limner's own engines read only the typed options: any other key there is a mistake to point out."""
        unknown = sorted(self.options.model_extra or {})
        if unknown and (self.engine in LOCAL_ENGINES or self.engine in UPSTREAM_PROVIDERS):
            known = list(EngineOptions.model_fields)
            hints = [f"'{key}'" + did_you_mean(key, known) for key in unknown]
            raise ValueError(f"unknown option {', '.join(hints)} in [models.options] of model '{self.id}'")
        return self

    @model_validator(mode="after")
    def _engine_defaults(self) -> ModelEntry:
        """Defaults that depend on the engine, for the fields an entry leaves unset.

        The built-in model is one known directory with known settings, so ``engine = "builtin"`` alone serves it;
        upstream calls mostly wait on the network, so they default to many concurrent slots."""
        if self.engine == "builtin":
            for field, value in BUILTIN_DEFAULTS.items():
                if field not in self.model_fields_set:
                    setattr(self, field, value)
        if self.engine in UPSTREAM_PROVIDERS and "max_concurrency" not in self.model_fields_set:
            self.max_concurrency = UPSTREAM_CONCURRENCY
            if "max_queue" not in self.model_fields_set:
                self.max_queue = 4 * UPSTREAM_CONCURRENCY
        return self

    @model_validator(mode="after")
    def _check_local_options(self) -> ModelEntry:
        names = [lora.name for lora in self.loras]
        if len(set(names)) != len(names):
            raise ValueError(f"model '{self.id}' lists a LoRA name twice: {names}")
        controls = [control.name for control in self.controls]
        if len(set(controls)) != len(controls):
            raise ValueError(f"model '{self.id}' lists a control name twice: {controls}")
        if (self.controls or self.ip_adapter) and self.engine != "diffusers":
            raise ValueError(f"model '{self.id}': controls and ip_adapter need engine 'diffusers', not '{self.engine}'")
        if self.family is not None:
            family_named(self.family)
        for knob, kind in (("cache_threshold", "first-block"), ("cache_interval", "taylorseer")):
            if getattr(self, knob) is not None and self.cache != kind:
                raise ValueError(f"model '{self.id}': {knob} is for cache = '{kind}', and its cache is '{self.cache}'")
        unknown = sorted(set(self.schedulers or ()) - set(SAMPLERS))
        if unknown:
            raise ValueError(f"model '{self.id}': unknown schedulers {unknown}; expected some of {sorted(SAMPLERS)}")
        return self

    def lora(self, name: str) -> LoraEntry | None:
        return next((lora for lora in self.loras if lora.name == name), None)

    def control(self, name: str) -> ControlEntry | None:
        return next((control for control in self.controls if control.name == name), None)

    @property
    def display_name(self) -> str:
        return self.name or self.id

    def price_for(self, n: int, width: int, height: int, quality: str | None = None) -> float:
        """Credits for ``n`` images of this size and quality: the per-image price times any configured scales."""
        scale = self.price_scale.get(f"{width}x{height}", 1.0)
        if quality:
            scale *= self.price_scale.get(quality, 1.0)
        return self.price_per_image * n * scale


EngineFactory = Callable[[ModelEntry], Engine]


def builtin_upscaler() -> ModelEntry:
    """The weight-free upscaler's entry, for servers whose catalog names none of that id."""
    return ModelEntry(
        id=BUILTIN_UPSCALER_ID,
        engine="upscaler",
        name="Lanczos and unsharp mask",
        description="limner's built-in upscaler: Lanczos resampling then an unsharp mask; no weights.",
        max_concurrency=2,
    )


class Catalog:
    """Resolves model names to entries and owns the engines built for them."""

    def __init__(self, entries: list[ModelEntry], factories: dict[str, EngineFactory]) -> None:
        self.entries = entries
        self.factories = factories
        self._by_name: dict[str, ModelEntry] = {}
        for entry in entries:
            for name in (entry.id, *entry.aliases):
                if name in self._by_name:
                    raise ValueError(f"model name '{name}' is used by two catalog entries")
                self._by_name[name] = entry
        for entry in entries:
            for name in entry.fallbacks:
                if name not in self._by_name:
                    raise ValueError(f"model '{entry.id}' falls back to unknown model '{name}'")
                if self._by_name[name] is entry:
                    raise ValueError(f"model '{entry.id}' lists itself among its fallbacks")
        self._builtin_upscaler = builtin_upscaler()
        self._mattings: dict[str, Matting] = {}
        self._engines: dict[str, Engine] = {}
        self._built: dict[str, Engine] = {}
        """The factories' engines; ``_engines`` may wrap them (fallbacks), and only these are closed."""
        self._lock = asyncio.Lock()

    def names(self) -> list[str]:
        return list(self._by_name)

    def resolve(self, name: str, *, param: str | None = "model") -> ModelEntry:
        entry = self._by_name.get(name)
        if entry is None:
            raise ModelNotFound(
                name, [e.id for e in self.entries] + [a for e in self.entries for a in e.aliases], param=param
            )
        return entry

    def upscaler(self, name: str | None, *, param: str) -> ModelEntry:
        """The upscaler called ``name`` (None: the built-in one): a catalog entry of ``engine = "upscaler"``, or
        the built-in one where the catalog has no entry of its id; anything else is refused naming ``param``."""
        name = name or BUILTIN_UPSCALER_ID
        entry = self._by_name.get(name)
        if entry is None and name == BUILTIN_UPSCALER_ID:
            entry = self._builtin_upscaler
        upscalers = self.upscaler_names()
        if entry is None:
            raise ModelNotFound(name, upscalers, param=param)
        if entry.engine != "upscaler":
            raise InvalidRequest(
                f"Model '{name}' is not an upscaler; the upscalers here are: {', '.join(upscalers)}.", param=param
            )
        return entry

    def upscaler_names(self) -> list[str]:
        """The built-in upscaler's id and every upscaler entry's id and aliases."""
        names = [name for entry in self.entries if entry.engine == "upscaler" for name in (entry.id, *entry.aliases)]
        return names if BUILTIN_UPSCALER_ID in names else [BUILTIN_UPSCALER_ID, *names]

    def matting(self, entry: ModelEntry) -> Matting | None:
        """``entry``'s background remover (made once, loaded on first use); None where it has none."""
        if entry.matting is None:
            return None
        matting = self._mattings.get(entry.id)
        if matting is None:
            spec = entry.matting
            matting = self._mattings[entry.id] = Matting(spec.path, spec.size, spec.mean, spec.std)
        return matting

    def transparent_models(self) -> list[str]:
        """The ids of the models that can deliver a transparent background: by their engine, or a matting model."""
        able = []
        for entry in self.entries:
            if entry.engine == "upscaler":
                continue
            try:
                transparency = entry.matting is not None or self.capabilities(entry).transparency
            except Exception:  # an engine that cannot even be built is not one to recommend
                transparency = False
            if transparency:
                able.append(entry.id)
        return able

    def lora_owners(self, name: str) -> list[str]:
        """The ids of the models that offer a LoRA called ``name``."""
        return [entry.id for entry in self.entries if entry.lora(name) is not None]

    def control_owners(self, name: str) -> list[str]:
        """The ids of the models that offer a control called ``name``."""
        return [entry.id for entry in self.entries if entry.control(name) is not None]

    def engine(self, entry: ModelEntry) -> Engine:
        """The engine for ``entry``, built on first use (its weights still load lazily).

        With ``fallbacks`` it is a ``FallbackEngine`` over this entry's engine and the listed entries'
        own engines (shared with direct requests for them, breakers and connections included); a
        fallback's own fallbacks are not followed, so cycles cannot form."""
        engine = self._engines.get(entry.id)
        if engine is None:
            engine = self._build(entry)
            if entry.fallbacks:
                from limner.engines.fallback import FallbackEngine

                others = [self.resolve(name, param=None) for name in entry.fallbacks]
                engine = FallbackEngine(entry.id, engine, [(other.id, partial(self._build, other)) for other in others])
            self._engines[entry.id] = engine
        return engine

    def _build(self, entry: ModelEntry) -> Engine:
        engine = self._built.get(entry.id)
        if engine is None:
            factory = self.factories.get(entry.engine)
            if factory is None:
                raise ValueError(f"model '{entry.id}' names unknown engine '{entry.engine}'")
            engine = self._built[entry.id] = factory(entry)
        return engine

    def capabilities(self, entry: ModelEntry) -> Capabilities:
        return self.engine(entry).capabilities

    def built(self) -> dict[str, Engine]:
        """The engines the factories built so far, by model id: the ones holding memory or connections
        (fallback wrappers hold neither, so they are not here)."""
        return dict(self._built)

    async def aclose(self) -> None:
        engines, self._built, self._engines = list(self._built.values()), {}, {}
        for engine in engines:
            await engine.aclose()


def did_you_mean(key: str, known: list[str]) -> str:
    """A hint for a misspelt name: the closest of ``known``, if any is close."""
    close = difflib.get_close_matches(key, known, n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""

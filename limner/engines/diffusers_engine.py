"""Local diffusers pipelines: a diffusers directory or one ``.safetensors``/``.ckpt`` file, loaded lazily.

Weights are loaded on first use (or ``load()``) in the engine's own worker thread, so the event loop never
waits on disk or on the accelerator. Every pipeline call runs in that thread under a lock (diffusers
pipelines are not thread-safe); queueing and concurrency limits live in the scheduler, not here.

Loading is local only (``local_files_only=True``): a single file needs ``config_dir``, a diffusers directory
holding its component configs, because without one diffusers goes to the Hub for them. Pipeline classes
are resolved by import path, never with remote code.

Capabilities are planned at construction from settings, config files and the pipeline class (importing
diffusers, never reading weights) and corrected after load. Without torch or diffusers installed the engine
still constructs, and load reports what is missing.

The model's family (``limner.engines.families``) supplies the defaults a catalog entry leaves unset.
LoRA adapters load on first use and stay (``adapters.LoraSet``); so do controls and the IP-Adapter
(``control_models``); the sampler, the active adapters, controls and VAE tiling are set per call, so requests
never see each other's choices.

Each image reports how the call split into denoising and decoding (``GeneratedImage.timings``): the step
hooks already report every step, so the end of the last one marks where decoding began.
"""

from __future__ import annotations

import asyncio
import gc
import importlib.util
import logging
import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

from PIL import Image

from limner.core.errors import InvalidRequest, LimnerError, ModelError, ModelNotAvailable, UnsupportedOperation
from limner.core.models import Capabilities, EngineRequest, EngineTimings, GeneratedImage, Mode, ProgressCallback
from limner.engines.adapters import LoraSet
from limner.engines.base import Engine
from limner.engines.compiling import check_compiler, use_cache_dir
from limner.engines.control_models import ControlModels, ReferenceModel, control_arguments, reference_arguments
from limner.engines.denoise_cache import Cache
from limner.engines.diffusers_loading import (
    DiffusersSettings,
    Pipeline,
    call_parameters,
    load_directory,
    load_single_file,
    loaded_capabilities,
    module_bytes,
    planned_capabilities,
    planned_family,
    resolve_device,
    resolve_dtype,
    scheduler_class,
    task_pipelines,
)
from limner.engines.diffusers_tuning import Samplers, auto_dtype, check_device, load_refiner, place, set_vae_tiling
from limner.engines.families import same_base
from limner.engines.gguf_loading import is_gguf
from limner.engines.quantization import check_quantization, quantize
from limner.engines.step_builtin import BUILTIN_PIPELINE_CLASS, BuiltinSteps
from limner.engines.step_hooks import Cancelled, step_arguments
from limner.engines.step_unet import PipelineSteps, StepDefaults, call_defaults, unet_steps
from limner.engines.stepping import StepFunction

log = logging.getLogger(__name__)


class DiffusersEngine(Engine):
    """Text-to-image, image-to-image and inpainting with one local diffusers pipeline."""

    def __init__(self, settings: DiffusersSettings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None
        self._pipe: Pipeline | None = None
        self._tasks: dict[str, Pipeline | None] = {}
        self._device: Any = None  # torch.device once loaded
        self._resident_bytes = 0
        self._refiner: Pipeline | None = None
        self._steps: PipelineSteps | None = None
        self.family = planned_family(settings)
        self.capabilities = planned_capabilities(settings, self.family)
        self.loras = LoraSet(settings.loras, hotswap=settings.compile)
        self.controls = ControlModels(settings.controls)
        self.references = ReferenceModel(settings.ip_adapter)
        self._dtype: Any = None
        allowed = settings.samplers if settings.samplers is not None else self.family.samplers if self.family else ()
        self.samplers = Samplers(tuple(allowed))
        self.precision: str | None = None
        """The dtype the pipeline computes in, once loaded ("float32", "bfloat16", ...)."""
        self.quantized: list[str] = []
        """The pipeline attributes whose weights ``settings.quantization`` quantised, once loaded."""
        self.cache = Cache(settings.cache, settings.cache_threshold, settings.cache_interval)
        self._loading = False
        self.warm_up_seconds: float | None = None
        """How long the compiling warm-up took at the last load (``compile = true``), for logs and benchmarks."""

    @property
    def loaded(self) -> bool:
        return self._pipe is not None

    @property
    def loading(self) -> bool:
        """True while the weights load and, with ``compile``, while the warm-up image compiles the denoiser."""
        return self._loading

    @property
    def resident_bytes(self) -> int:
        """Parameter and buffer bytes of the loaded pipeline's torch modules (measured once, at load)."""
        return self._resident_bytes if self._pipe is not None else 0

    async def load(self) -> None:
        await self._run(self._ensure_loaded)

    async def generate(self, request: EngineRequest) -> list[GeneratedImage]:
        if self._pipe is None and not self.settings.path.expanduser().exists():
            raise ModelNotAvailable(f"Model path {self.settings.path.expanduser()} does not exist.")
        self.check(request)  # fail fast, before any weights are read
        if request.n == 0:
            return []
        cancel = threading.Event()
        try:
            return await self._run(self._generate_sync, request, cancel)
        except asyncio.CancelledError:
            cancel.set()  # stops the worker at its next step
            raise

    async def aclose(self) -> None:
        executor, self._executor = self._executor, None
        if executor is None:
            return
        try:
            await asyncio.get_running_loop().run_in_executor(executor, self._unload)
        finally:
            executor.shutdown(wait=False)

    def step_function(self) -> StepFunction | None:
        """The loaded pipeline's step function for step-level batching (``limner.engines.stepping``); None
        while unloaded, with an SDXL refiner, and for pipelines that only run whole (SD 3, FLUX, custom)."""
        if self._pipe is None or self._refiner is not None or (self.settings.native_size and not self._builtin):
            return None
        if self._steps is None or self._steps.pipe is not self._tasks.get("generate"):
            pipe, defaults = self._tasks.get("generate"), self._step_defaults()
            steps = BuiltinSteps if self._builtin else unet_steps
            self._steps = steps(pipe, self.samplers, self.loras, defaults)
        return self._steps

    async def in_worker(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn`` in the engine's worker thread holding the pipeline lock (step-level batching's calls)."""

        def locked() -> Any:
            with self._lock:
                return fn(*args)

        return await self._run(locked)

    def _step_defaults(self) -> StepDefaults:
        settings, family = self.settings, self.family
        steps = settings.default_steps or (family.steps if family else None)
        guidance = next(
            (g for g in (settings.default_guidance, family.guidance if family else None) if g is not None), None
        )
        pipe = self._tasks.get("generate")
        fallback = call_defaults(pipe)
        return StepDefaults(
            steps=steps or fallback.get("num_inference_steps", 50),
            guidance=guidance if guidance is not None else fallback.get("guidance_scale", 7.5),
        )

    @property
    def _builtin(self) -> bool:
        return type(self._tasks.get("generate")).__name__ == BUILTIN_PIPELINE_CLASS

    # --- worker thread ---

    async def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="limner-diffusers")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def _ensure_loaded(self) -> Pipeline:
        with self._lock:
            if self._pipe is None:
                self._loading = True
                try:
                    self._pipe = self._load_sync()
                finally:
                    self._loading = False
            return self._pipe

    def _unload(self) -> None:
        with self._lock:
            pipe, self._pipe = self._pipe, None
            self._resident_bytes = 0
            self._tasks.clear()
            self._refiner = None
            self.cache.detach()
            self._steps = None
            self.loras.reset()
            self.controls.reset()
            self.references.reset()
            if pipe is not None and self.settings.cpu_offload:
                pipe.remove_all_hooks()
            del pipe
            gc.collect()
            if self._device is not None and self._device.type == "cuda":
                import torch

                torch.cuda.empty_cache()

    def _load_sync(self) -> Pipeline:
        settings = self.settings
        path = settings.path.expanduser()
        if not path.exists():
            raise ModelNotAvailable(f"Model path {path} does not exist.")
        if importlib.util.find_spec("torch") is None:
            raise ModelNotAvailable("Local models need torch and diffusers: pip install 'limner[local]'.")
        device = resolve_device(settings.device)
        check_device(settings, device)
        check_quantization(settings.quantization, device, settings.quantize, gguf=is_gguf(path))
        if settings.compile:
            check_compiler(device)
            use_cache_dir(settings.compile_cache)
        dtype = resolve_dtype(settings.dtype, device, auto_dtype(self.family, device))
        try:
            load = load_single_file if path.is_file() else load_directory
            pipe = load(path, settings, dtype)
            if settings.scheduler:
                pipe.scheduler = scheduler_class(settings.scheduler).from_config(pipe.scheduler.config)
            self.quantized = quantize(pipe, settings.quantization, settings.quantize)
            self.cache.attach(pipe)  # before any compile, so the compiled graph includes its hooks
            if settings.compile:
                self.loras.prepare_hotswap(pipe)  # likewise the LoRA slot adapters are swapped into
            place(pipe, settings, device)
            self._refiner = load_refiner(settings, pipe, dtype, device)
        except LimnerError:
            raise
        except Exception as exc:
            raise ModelNotAvailable(f"Could not load the model at {path}: {exc}") from exc
        self._device = device
        self._dtype = dtype
        self.precision = str(dtype).removeprefix("torch.")
        self._tasks = task_pipelines(pipe)
        if self.family is not None and not self.family.text_to_image:
            self._tasks["generate"] = None  # a refiner only finishes images
        for task in self._tasks.values():
            if task is not None:
                task.set_progress_bar_config(disable=True)
        self.samplers.reset(pipe.scheduler)
        self.capabilities = loaded_capabilities(self.capabilities, pipe, self._tasks, self.family)
        self._resident_bytes = module_bytes(pipe)
        if settings.compile:
            self._warm_up()
        return pipe

    def _warm_up(self) -> None:
        """Compile now rather than in a caller's request: one image at the default size (``compiling``)."""
        import torch

        pipe = self._tasks.get("generate")
        if pipe is None:  # an image-to-image-only model (a refiner) compiles on its first request
            return
        width, height = self.capabilities.default_size
        request = EngineRequest(mode=Mode.GENERATE, prompt="warm-up", width=width, height=height, seeds=[0], steps=2)
        generators = [torch.Generator(device=self._device).manual_seed(0)]
        started = time.perf_counter()
        try:
            pipe(**self._call_arguments(pipe, request, generators, threading.Event()))
        except Exception as exc:
            raise ModelNotAvailable(f"compile: the warm-up image failed ({type(exc).__name__}: {exc})") from exc
        self.warm_up_seconds = time.perf_counter() - started
        log.info("compiled the denoiser in a %.1f s warm-up at %dx%d", self.warm_up_seconds, width, height)

    def _generate_sync(self, request: EngineRequest, cancel: threading.Event) -> list[GeneratedImage]:
        import torch

        base = self._ensure_loaded()
        with self._lock:
            self.check(request)  # capabilities are exact now that the pipeline is loaded
            task = "inpaint" if request.mask is not None else "edit" if request.mode is Mode.EDIT else "generate"
            pipe = self._tasks.get(task)
            if pipe is None:  # _check already refused, unless the pipeline vanished in between
                raise UnsupportedOperation(f"This model does not support {task}.")
            if request.controls:
                loads = self.controls.loads
                pipe = self.controls.pipeline(task, pipe, request.controls, self._dtype, self._device)
                if self.controls.loads != loads:  # control models add weights: count them once, when they arrive
                    self._resident_bytes = self._measure(base)
            self._prepare(base, pipe, request)
            # One generator per image: a seed gives the same noise alone or anywhere in a batch.
            generators = [torch.Generator(device=self._device).manual_seed(seed) for seed in request.seeds]
            clock = DenoiseClock(request.progress, self._device)
            kwargs = self._call_arguments(pipe, replace(request, progress=clock), generators, cancel)
            refine = self._refiner is not None and task == "generate" and not (request.controls or request.references)
            started = time.perf_counter()
            try:
                with self.cache.off(request.exact):
                    images = self._refined(kwargs, generators) if refine else pipe(**kwargs).images
            except Cancelled:
                raise
            except torch.OutOfMemoryError as exc:
                if self._device.type == "cuda":
                    torch.cuda.empty_cache()
                raise ModelError("The model ran out of memory; try fewer or smaller images.") from exc
            except ValueError as exc:  # diffusers' input checks: sizes, strength, steps
                raise InvalidRequest(f"The model rejected the request: {exc}") from exc
            except Exception as exc:
                raise ModelError(f"The model failed: {type(exc).__name__}: {exc}") from exc
            # The refiner denoises after the base's last reported step: no clean split to report there.
            timings = None if refine else clock.timings(started, time.perf_counter())
        if len(images) != request.n:
            raise ModelError(f"The model returned {len(images)} images, expected {request.n}.")
        # Rows dropped mid-run (see EngineRequest.rows_wanted) come back as None and are left out.
        return [
            GeneratedImage(image=image, seed=seed, timings=timings)
            for image, seed in zip(images, request.seeds, strict=True)
            if image is not None
        ]

    def _prepare(self, base: Pipeline, pipe: Pipeline, request: EngineRequest) -> None:
        """Per-call state of the shared weights: adapters, sampler, VAE tiling (worker thread, under the lock)."""
        loads = self.loras.loads
        self.loras.apply(base, request.loras)
        if self.loras.loads != loads:  # adapters add weights: count them once, when they arrive
            self._resident_bytes = self._measure(base)
        self.references.apply(base, pipe, request.references, self._dtype, self._device)
        if hasattr(pipe, "scheduler"):
            pipe.scheduler = self.samplers.pick(request.scheduler)
        set_vae_tiling(pipe, self.settings, self.family, request.width * request.height)

    def _measure(self, base: Pipeline) -> int:
        """The pipeline's weights and the control models kept beside it."""
        return module_bytes(base) + _bytes_of(self.controls.models.values())

    def _refined(self, kwargs: dict[str, Any], generators: list[Any]) -> list[Any]:
        """SDXL's ensemble of experts: the base denoises the first steps, the refiner the rest."""
        base = self._tasks["generate"]
        assert self._refiner is not None and base is not None
        start = self.settings.refiner_start
        latents = base(**{**kwargs, "output_type": "latent", "denoising_end": start}).images
        prompt = kwargs["prompt"]
        prompts = list(prompt) if isinstance(prompt, list) else [prompt] * len(latents)
        negative = kwargs.get("negative_prompt")
        refined = self._refiner(
            prompt=prompts,
            negative_prompt=[negative] * len(prompts) if negative else None,
            image=latents,
            num_inference_steps=kwargs.get("num_inference_steps"),
            denoising_start=start,
            generator=generators[: len(prompts)],
            output_type="pil",
        )
        images: list[Any] = refined.images
        return images

    def _call_arguments(
        self, pipe: Pipeline, request: EngineRequest, generators: list[Any], cancel: threading.Event
    ) -> dict[str, Any]:
        settings, family = self.settings, self.family
        params = call_parameters(pipe)
        kwargs: dict[str, Any] = {
            "prompt": list(request.prompts) if request.prompts else request.prompt,
            "num_images_per_prompt": 1 if request.prompts else request.n,
            "generator": generators,
            "output_type": "pil",
        }
        if request.negative_prompt:
            kwargs["negative_prompt"] = request.negative_prompt
        steps = request.steps or settings.default_steps or (family.steps if family else None)
        guidance = next((g for g in (request.guidance, settings.default_guidance) if g is not None), None)
        optional: dict[str, Any] = {
            "num_inference_steps": steps,
            "guidance_scale": guidance if guidance is not None or family is None else family.guidance,
            "max_sequence_length": family.max_sequence_length if family else None,
        }
        native = settings.native_size is not None
        if not native:
            optional |= {"width": request.width, "height": request.height}
        if request.mode is Mode.EDIT:
            strength = next((v for v in (request.strength, settings.default_strength) if v is not None), None)
            if strength is None and family is not None:
                strength = family.strength
            optional["strength"] = strength
            if steps and strength and steps * strength < 1:  # image-to-image runs steps x strength steps
                optional["num_inference_steps"] = steps = math.ceil(1 / strength)
            size = None if native else (request.width, request.height)
            kwargs["image"] = _prepared(request.images[0], "RGB", size, Image.Resampling.LANCZOS)
            if request.mask is not None:  # white repaints, black keeps: diffusers' convention
                kwargs["mask_image"] = _prepared(request.mask, "L", size, Image.Resampling.BILINEAR)
        kwargs |= {name: value for name, value in optional.items() if value is not None and name in params}
        kwargs |= step_arguments(params, request, steps, cancel)
        if request.controls:
            made = settings.native_size or (request.width, request.height)  # the size the pipeline makes
            kwargs |= control_arguments(pipe, request.controls, made)
        if request.references:
            kwargs |= reference_arguments(request.references)
        return kwargs

    # --- checks ---

    def check(self, request: EngineRequest) -> None:
        caps = self.capabilities
        if request.mode not in caps.modes:
            raise UnsupportedOperation(f"This model does not support {request.mode.value} requests.", param="image")
        if request.mode is Mode.EDIT and len(request.images) != 1:
            raise InvalidRequest("Editing takes exactly one source image.", param="image")
        if request.mask is not None and request.mode is not Mode.EDIT:
            raise InvalidRequest("A mask needs a source image.", param="mask")
        if request.mask is not None and not caps.supports_mask:
            raise UnsupportedOperation("This model does not support masks (inpainting).", param="mask")
        if request.negative_prompt and not caps.supports_negative_prompt:
            raise UnsupportedOperation("This model does not support negative prompts.", param="negative_prompt")
        if request.n > caps.max_images and not request.prompts:  # joined batches are sized by the batcher
            raise InvalidRequest(f"This model makes at most {caps.max_images} images per request.", param="n")
        if caps.native_size is None:
            _check_size(request.width, request.height, caps)
        self.samplers.check(request.scheduler)
        for choice in request.loras:
            spec = self.loras.specs.get(choice.name)
            if spec is None:
                raise InvalidRequest(f"Unknown LoRA '{choice.name}' for this model.", param="loras")
            if spec.base and self.family and not same_base(spec.base, self.family):
                raise InvalidRequest(
                    f"LoRA '{choice.name}' was made for {spec.base} models; this model is {self.family.name}.",
                    param="loras",
                )
        self._check_controls(request)

    def _check_controls(self, request: EngineRequest) -> None:
        for control in request.controls:
            spec = self.controls.specs.get(control.name)
            if spec is None:
                raise InvalidRequest(f"Unknown control '{control.name}' for this model.", param="controls")
            if spec.base and self.family and not same_base(spec.base, self.family):
                raise InvalidRequest(
                    f"Control '{control.name}' was made for {spec.base} models; this model is {self.family.name}.",
                    param="controls",
                )
        if request.references:
            ip = self.references.spec
            if ip is None:
                raise InvalidRequest("This model takes no reference images.", param="reference_images")
            if ip.base and self.family and not same_base(ip.base, self.family):
                raise InvalidRequest(
                    f"The IP-Adapter was made for {ip.base} models; this model is {self.family.name}.",
                    param="reference_images",
                )


class DenoiseClock:
    """The request's progress callback, noting when the last denoising step ended (worker thread).

    Every step hook (``step_hooks.step_arguments``) reports each step through ``progress``; a pipeline
    whose hooks never report leaves the clock unset, and its call reports no split."""

    def __init__(self, progress: ProgressCallback | None, device: Any) -> None:
        self.progress = progress
        self.device = device
        self.last_step: float | None = None

    def __call__(self, done: int, total: int) -> None:
        if self.progress is not None:
            self.progress(done, total)
        if done >= total:
            _synchronize(self.device)  # an accelerator runs the loop's queued kernels after Python issued them
        self.last_step = time.perf_counter()

    def timings(self, started: float, finished: float) -> EngineTimings | None:
        """Denoising from ``started`` to the last step, decoding from there to ``finished``."""
        if self.last_step is None or not started <= self.last_step <= finished:
            return None
        return EngineTimings(denoise=self.last_step - started, decode=finished - self.last_step)


def _synchronize(device: Any) -> None:
    """Wait for the work queued on a CUDA or MPS device (once, after the last step: the decode waits anyway)."""
    kind = getattr(device, "type", None)
    if kind == "cuda":
        import torch

        torch.cuda.synchronize(device)
    elif kind == "mps":
        import torch

        torch.mps.synchronize()


# --- loading ---


def _check_size(width: int, height: int, caps: Capabilities) -> None:
    ok = all(caps.min_side <= side <= caps.max_side and side % caps.size_multiple == 0 for side in (width, height))
    if not ok:
        raise InvalidRequest(
            f"Size {width}x{height} is not supported: width and height must be multiples of {caps.size_multiple} "
            f"between {caps.min_side} and {caps.max_side}.",
            param="size",
        )


def _bytes_of(models: Any) -> int:
    """Parameter bytes of modules kept beside the pipeline (control models)."""
    return sum(p.numel() * p.element_size() for model in models for p in model.parameters())


def _prepared(image: Image.Image, mode: str, size: tuple[int, int] | None, resample: Image.Resampling) -> Image.Image:
    """The source at the requested size: img2img pipelines make images the size of their input."""
    image = image.convert(mode)
    return image.resize(size, resample) if size is not None and image.size != size else image

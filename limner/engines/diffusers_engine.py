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
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib
import inspect
import json
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from PIL import Image

from limner.core.errors import InvalidRequest, LimnerError, ModelError, ModelNotAvailable, UnsupportedOperation
from limner.core.models import EngineRequest, GeneratedImage, Mode
from limner.engines.base import Capabilities, Engine
from limner.engines.step_hooks import Cancelled, step_arguments

Pipeline = Any  # a diffusers.DiffusionPipeline; typed loosely so this module imports without diffusers


@dataclass(frozen=True)
class DiffusersSettings:
    """One local model. Only ``path`` is required; everything else has a laptop-friendly default."""

    path: Path
    """A diffusers directory (``model_index.json``) or a single ``.safetensors``/``.ckpt`` checkpoint."""
    pipeline_class: str | None = None
    """Import path ``module:Class`` (or a diffusers class name); default: the class in ``model_index.json``."""
    single_file_class: str | None = None
    """The diffusers class that reads a single file, e.g. ``StableDiffusionXLPipeline``; default from ``config_dir``."""
    config_dir: Path | None = None
    """A diffusers directory with the component configs (weights not needed); required for single files."""
    device: str = "auto"  # auto: cuda when available, else cpu
    dtype: str = "auto"  # auto: float16 on CUDA, float32 elsewhere; or float16 / bfloat16 / float32
    scheduler: str | None = None  # a diffusers scheduler class name, built from the pipeline's scheduler config
    default_steps: int | None = None
    default_guidance: float | None = None
    default_strength: float | None = None  # image-to-image
    native_size: tuple[int, int] | None = None  # the model always makes this size; limner scales afterwards
    default_size: tuple[int, int] | None = None
    max_images: int = 4
    attention_slicing: bool = False
    cpu_offload: bool = False  # CUDA only: keep weights in RAM, move each model to the GPU while it runs
    compile: bool = False  # torch.compile the denoiser (slow first call, faster after)


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
        self.capabilities = _planned_capabilities(settings)

    @property
    def loaded(self) -> bool:
        return self._pipe is not None

    @property
    def resident_bytes(self) -> int:
        """Parameter and buffer bytes of the loaded pipeline's torch modules (measured once, at load)."""
        return self._resident_bytes if self._pipe is not None else 0

    async def load(self) -> None:
        await self._run(self._ensure_loaded)

    async def generate(self, request: EngineRequest) -> list[GeneratedImage]:
        if self._pipe is None and not self.settings.path.expanduser().exists():
            raise ModelNotAvailable(f"Model path {self.settings.path.expanduser()} does not exist.")
        self._check(request)  # fail fast, before any weights are read
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

    # --- worker thread ---

    async def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="limner-diffusers")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def _ensure_loaded(self) -> Pipeline:
        with self._lock:
            if self._pipe is None:
                self._pipe = self._load_sync()
            return self._pipe

    def _unload(self) -> None:
        with self._lock:
            pipe, self._pipe = self._pipe, None
            self._resident_bytes = 0
            self._tasks.clear()
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
        try:
            import torch
        except ImportError as exc:
            raise ModelNotAvailable("Local models need torch and diffusers: pip install 'limner[local]'.") from exc
        device = _resolve_device(settings.device)
        dtype = _resolve_dtype(settings.dtype, device)
        try:
            load = _load_single_file if path.is_file() else _load_directory
            pipe = load(path, settings, dtype)
            if settings.scheduler:
                pipe.scheduler = _scheduler_class(settings.scheduler).from_config(pipe.scheduler.config)
            if settings.attention_slicing:
                pipe.enable_attention_slicing()
            if settings.cpu_offload and device.type == "cuda":
                pipe.enable_model_cpu_offload(device=device)
            else:
                pipe.to(device)
            if settings.compile:
                for name in ("unet", "transformer"):
                    module = getattr(pipe, name, None)
                    if isinstance(module, torch.nn.Module):
                        module.compile()
        except LimnerError:
            raise
        except Exception as exc:
            raise ModelNotAvailable(f"Could not load the model at {path}: {exc}") from exc
        self._device = device
        self._tasks = _task_pipelines(pipe)
        for task in self._tasks.values():
            if task is not None:
                task.set_progress_bar_config(disable=True)
        self.capabilities = _loaded_capabilities(self.capabilities, pipe, self._tasks)
        self._resident_bytes = _module_bytes(pipe)
        return pipe

    def _generate_sync(self, request: EngineRequest, cancel: threading.Event) -> list[GeneratedImage]:
        import torch

        self._ensure_loaded()
        with self._lock:
            self._check(request)  # capabilities are exact now that the pipeline is loaded
            task = "inpaint" if request.mask is not None else "edit" if request.mode is Mode.EDIT else "generate"
            pipe = self._tasks.get(task)
            if pipe is None:  # _check already refused, unless the pipeline vanished in between
                raise UnsupportedOperation(f"This model does not support {task}.")
            # One generator per image: a seed gives the same noise alone or anywhere in a batch.
            generators = [torch.Generator(device=self._device).manual_seed(seed) for seed in request.seeds]
            kwargs = self._call_arguments(pipe, request, generators, cancel)
            try:
                images = pipe(**kwargs).images
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
        if len(images) != request.n:
            raise ModelError(f"The model returned {len(images)} images, expected {request.n}.")
        return [GeneratedImage(image=image, seed=seed) for image, seed in zip(images, request.seeds, strict=True)]

    def _call_arguments(
        self, pipe: Pipeline, request: EngineRequest, generators: list[Any], cancel: threading.Event
    ) -> dict[str, Any]:
        settings = self.settings
        params = _call_parameters(pipe)
        kwargs: dict[str, Any] = {
            "prompt": list(request.prompts) if request.prompts else request.prompt,
            "num_images_per_prompt": 1 if request.prompts else request.n,
            "generator": generators,
            "output_type": "pil",
        }
        if request.negative_prompt:
            kwargs["negative_prompt"] = request.negative_prompt
        steps = request.steps or settings.default_steps
        optional: dict[str, Any] = {
            "num_inference_steps": steps,
            "guidance_scale": request.guidance if request.guidance is not None else settings.default_guidance,
        }
        native = settings.native_size is not None
        if not native:
            optional |= {"width": request.width, "height": request.height}
        if request.mode is Mode.EDIT:
            optional["strength"] = request.strength if request.strength is not None else settings.default_strength
            size = None if native else (request.width, request.height)
            kwargs["image"] = _prepared(request.images[0], "RGB", size, Image.Resampling.LANCZOS)
            if request.mask is not None:  # white repaints, black keeps: diffusers' convention
                kwargs["mask_image"] = _prepared(request.mask, "L", size, Image.Resampling.BILINEAR)
        kwargs |= {name: value for name, value in optional.items() if value is not None and name in params}
        kwargs |= step_arguments(params, request, steps, cancel)
        return kwargs

    # --- checks ---

    def _check(self, request: EngineRequest) -> None:
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


# --- loading ---


def _module_bytes(pipe: Pipeline) -> int:
    """What the pipeline's weights occupy: a cheap estimate (tensor sizes, not allocator overhead),
    good enough to compare models against a memory budget. Shared modules are counted once."""
    import torch

    seen: set[int] = set()
    total = 0
    for component in getattr(pipe, "components", {}).values():
        if not isinstance(component, torch.nn.Module):
            continue
        for tensor in (*component.parameters(), *component.buffers()):
            if id(tensor) not in seen:
                seen.add(id(tensor))
                total += tensor.numel() * tensor.element_size()
    return total


def _load_directory(path: Path, settings: DiffusersSettings, dtype: Any) -> Pipeline:
    import torch

    index = _read_json(path / "model_index.json")
    if index is None:
        raise ModelNotAvailable(f"{path} is not a diffusers directory: it has no model_index.json.")
    class_name = index.get("_class_name")
    if not isinstance(class_name, str):
        raise ModelNotAvailable(
            f"{path}/model_index.json names pipeline code to run from the model directory ({class_name!r}); "
            "limner loads pipelines by import path only: set pipeline_class to 'module:Class'."
        )
    cls = _pipeline_class(settings.pipeline_class or class_name)
    kwargs: dict[str, Any] = {"local_files_only": True, **_dtype_argument(dtype)}
    if dtype == torch.float16 and any(path.glob("*/*.fp16.*")):
        kwargs["variant"] = "fp16"  # half-size files where the model ships them; others load as they are
    return cls.from_pretrained(str(path), **kwargs)


def _load_single_file(path: Path, settings: DiffusersSettings, dtype: Any) -> Pipeline:
    config_dir = settings.config_dir
    if config_dir is None:
        raise ModelNotAvailable(
            f"{path} is a single-file checkpoint: set config_dir to a diffusers directory with its component "
            "configs (limner never downloads them)."
        )
    config_dir = config_dir.expanduser()
    if not (config_dir / "model_index.json").is_file():
        raise ModelNotAvailable(f"config_dir {config_dir} is not a diffusers directory: it has no model_index.json.")
    name = settings.single_file_class or _class_name_in(config_dir) or "StableDiffusionPipeline"
    cls = _pipeline_class(name)
    if not hasattr(cls, "from_single_file"):
        raise ModelNotAvailable(f"{cls.__name__} cannot load single-file checkpoints; set single_file_class.")
    return cls.from_single_file(str(path), config=str(config_dir), local_files_only=True, **_dtype_argument(dtype))


def _dtype_argument(dtype: Any) -> dict[str, Any]:
    """diffusers 0.42 renamed ``torch_dtype`` to ``dtype`` (older versions ignore ``dtype``: weights stay float32)."""
    import diffusers

    major, minor = (int(part) for part in diffusers.__version__.split(".")[:2])
    return {"dtype" if (major, minor) >= (0, 42) else "torch_dtype": dtype}


def _pipeline_class(spec: str) -> Any:
    """``module:Class`` or a diffusers class name -> a ``DiffusionPipeline`` subclass."""
    import diffusers

    try:
        if ":" in spec:
            module_name, _, class_name = spec.partition(":")
            cls = getattr(importlib.import_module(module_name), class_name)
        else:
            cls = getattr(diffusers, spec)
    except (ImportError, AttributeError) as exc:
        hint = "" if ":" in spec else " (for a class outside diffusers, set pipeline_class to 'module:Class')"
        raise ModelNotAvailable(f"Unknown pipeline class {spec!r}{hint}.") from exc
    if not (isinstance(cls, type) and issubclass(cls, diffusers.DiffusionPipeline)):
        raise ModelNotAvailable(f"{spec!r} is not a diffusers pipeline class.")
    return cls


def _scheduler_class(name: str) -> Any:
    import diffusers

    cls = getattr(diffusers, name, None)
    if not (isinstance(cls, type) and issubclass(cls, diffusers.SchedulerMixin)):
        raise ModelNotAvailable(f"Unknown scheduler {name!r}: expected a diffusers scheduler class name.")
    return cls


def _resolve_device(spec: str) -> Any:
    import torch

    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(spec)
    except (RuntimeError, ValueError) as exc:
        raise ModelNotAvailable(f"Unknown device {spec!r}.") from exc


_DTYPES = {"float16": "float16", "fp16": "float16", "bfloat16": "bfloat16", "bf16": "bfloat16"}
_DTYPES |= {"float32": "float32", "fp32": "float32"}


def _resolve_dtype(spec: str, device: Any) -> Any:
    import torch

    if spec == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    if spec not in _DTYPES:
        raise ModelNotAvailable(f"Unknown dtype {spec!r}: expected auto, {', '.join(sorted(_DTYPES))}.")
    return getattr(torch, _DTYPES[spec])


# --- what a pipeline can do ---


def _task_pipelines(pipe: Pipeline) -> dict[str, Pipeline | None]:
    """The pipeline to call per task, sharing one set of weights (``from_pipe`` copies no tensors)."""
    if not type(pipe).__module__.startswith("diffusers."):
        params = _call_parameters(pipe)  # limner's own and other custom classes say it in __call__
        return {
            "generate": pipe,
            "edit": pipe if "image" in params else None,
            "inpaint": pipe if {"image", "mask_image"} <= params else None,
        }
    from diffusers import AutoPipelineForImage2Image, AutoPipelineForInpainting, AutoPipelineForText2Image

    def derived(auto: Any) -> Pipeline | None:
        try:
            task = auto.from_pipe(pipe)
        except Exception:  # not in diffusers' task tables, or components missing
            return None
        return pipe if type(task) is type(pipe) else task

    return {
        "generate": derived(AutoPipelineForText2Image) or pipe,
        "edit": derived(AutoPipelineForImage2Image),
        "inpaint": derived(AutoPipelineForInpainting),
    }


def _class_tasks(cls: type) -> tuple[bool, bool, bool]:
    """(edit, inpaint, negative prompt) for a pipeline class, without loading it."""
    params = set(inspect.signature(cls.__call__).parameters)
    if not cls.__module__.startswith("diffusers."):
        return "image" in params, {"image", "mask_image"} <= params, "negative_prompt" in params
    from diffusers.pipelines import auto_pipeline

    tables = {
        "generate": auto_pipeline.AUTO_TEXT2IMAGE_PIPELINES_MAPPING,
        "edit": auto_pipeline.AUTO_IMAGE2IMAGE_PIPELINES_MAPPING,
        "inpaint": auto_pipeline.AUTO_INPAINT_PIPELINES_MAPPING,
    }
    family = next(
        (key for table in tables.values() for key, task in table.items() if task.__name__ == cls.__name__), None
    )
    return family in tables["edit"], family in tables["inpaint"], "negative_prompt" in params


def _call_parameters(pipe: Pipeline) -> set[str]:
    return set(inspect.signature(type(pipe).__call__).parameters)


def _planned_capabilities(settings: DiffusersSettings) -> Capabilities:
    """What the model will accept, from settings and config files alone (no weights read)."""
    root = settings.path.expanduser()
    single = root.is_file() or root.suffix in (".safetensors", ".ckpt")
    config_root: Path | None = root
    if single:
        config_root = settings.config_dir.expanduser() if settings.config_dir else None
    spec = (settings.single_file_class if single else settings.pipeline_class) or _class_name_in(config_root)
    edit = inpaint = False
    negative = True
    if spec:
        with contextlib.suppress(Exception):  # unknown until load, which reports the problem properly
            edit, inpaint, negative = _class_tasks(_pipeline_class(spec))
    size, multiple = _size_from_configs(config_root) if config_root else (None, 8)
    return Capabilities(
        modes=_modes(edit or inpaint),
        max_images=settings.max_images,
        max_input_images=1,
        supports_mask=inpaint,
        supports_negative_prompt=negative,
        default_size=settings.default_size or settings.native_size or size or (512, 512),
        min_side=max(64, multiple),
        max_side=2048,
        size_multiple=multiple,
        native_size=settings.native_size,
        default_steps=settings.default_steps,
        extras={"engine": "diffusers"},
    )


def _loaded_capabilities(planned: Capabilities, pipe: Pipeline, tasks: dict[str, Pipeline | None]) -> Capabilities:
    """The plan, corrected by what the loaded pipeline can actually do."""
    edit, inpaint = tasks["edit"] is not None, tasks["inpaint"] is not None
    return replace(
        planned,
        modes=_modes(edit or inpaint),
        supports_mask=inpaint,
        supports_negative_prompt="negative_prompt" in _call_parameters(tasks["generate"]),
        extras={**planned.extras, "pipeline": type(pipe).__name__},
    )


def _modes(edit: bool) -> frozenset[Mode]:
    return frozenset({Mode.GENERATE, Mode.EDIT} if edit else {Mode.GENERATE})


def _size_from_configs(root: Path) -> tuple[tuple[int, int] | None, int]:
    vae = _read_json(root / "vae" / "config.json") or {}
    channels = vae.get("block_out_channels")
    scale = 2 ** (len(channels) - 1) if isinstance(channels, list) and channels else 8
    for name in ("unet", "transformer"):
        sample = (_read_json(root / name / "config.json") or {}).get("sample_size")
        if isinstance(sample, list) and sample:
            sample = sample[0]
        if isinstance(sample, int):
            return (sample * scale, sample * scale), scale
    return None, scale


def _class_name_in(root: Path | None) -> str | None:
    index = _read_json(root / "model_index.json") if root else None
    name = index.get("_class_name") if index else None
    return name if isinstance(name, str) else None


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


# --- request plumbing ---


def _check_size(width: int, height: int, caps: Capabilities) -> None:
    ok = all(caps.min_side <= side <= caps.max_side and side % caps.size_multiple == 0 for side in (width, height))
    if not ok:
        raise InvalidRequest(
            f"Size {width}x{height} is not supported: width and height must be multiples of {caps.size_multiple} "
            f"between {caps.min_side} and {caps.max_side}.",
            param="size",
        )


def _prepared(image: Image.Image, mode: str, size: tuple[int, int] | None, resample: Image.Resampling) -> Image.Image:
    """The source at the requested size: img2img pipelines make images the size of their input."""
    image = image.convert(mode)
    return image.resize(size, resample) if size is not None and image.size != size else image

"""Loading local diffusers pipelines and planning what they can do, apart from running them.

Loading is local only (``local_files_only=True``); pipeline and scheduler classes are resolved by import
path, never with remote code; capabilities are planned from settings, configs and the pipeline class
without reading weights, then corrected after load.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from limner.core.errors import ModelNotAvailable
from limner.core.models import Capabilities, Mode
from limner.engines.adapters import LoraSpec
from limner.engines.controls import ControlSpec, ReferenceSpec
from limner.engines.families import Family, detect_family, family_named
from limner.engines.gguf_loading import is_gguf, load_gguf
from limner.engines.quantization import load_arguments

Pipeline = Any  # a diffusers.DiffusionPipeline; typed loosely so this module imports without diffusers


@dataclass(frozen=True)
class DiffusersSettings:
    """One local model. Only ``path`` is required; everything else has a laptop-friendly default."""

    path: Path
    """A diffusers directory (``model_index.json``), a single ``.safetensors``/``.ckpt`` checkpoint, or a
    ``.gguf`` denoiser (``limner.engines.gguf_loading``)."""
    pipeline_class: str | None = None
    """Import path ``module:Class`` (or a diffusers class name); default: the class in ``model_index.json``."""
    single_file_class: str | None = None
    """The diffusers class that reads a single file, e.g. ``StableDiffusionXLPipeline``; default from ``config_dir``."""
    config_dir: Path | None = None
    """A diffusers directory with the component configs (weights not needed); required for single files.
    For a ``.gguf`` denoiser it also holds the other components' weights."""
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
    vae_tiling: bool | None = None  # None: tiles only for sizes well past the family's own
    compile: bool = False  # torch.compile the denoiser at load (limner.engines.compiling)
    compile_cache: Path | None = None  # where compiled code is kept across restarts (<data_dir>/compile-cache)
    quantization: str = "none"  # see limner.engines.quantization
    quantize: tuple[str, ...] = ("denoiser",)  # the components quantization applies to
    cache: str = "none"  # a denoising cache, see limner.engines.denoise_cache
    cache_threshold: float | None = None  # first-block: the relative change below which blocks are reused
    cache_interval: int | None = None  # taylorseer: steps between full computations
    family: str | None = None  # see limner.engines.families; None: detected from the configs
    loras: tuple[LoraSpec, ...] = ()
    controls: tuple[ControlSpec, ...] = ()
    ip_adapter: ReferenceSpec | None = None
    samplers: tuple[str, ...] | None = None  # the samplers requests may pick; None: the family's
    refiner: Path | None = None  # SDXL: a refiner directory run on the last steps of text-to-image
    refiner_start: float = 0.8
    transparency: bool = False  # whether the pipeline paints alpha itself (the built-in one); else matting only


def module_bytes(pipe: Pipeline) -> int:
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
                total += tensor_bytes(tensor)
    return total


def tensor_bytes(tensor: Any) -> int:
    """Bytes a tensor holds; a quantised one (torchao's int8 weights: a tensor subclass over int8 data and
    scales) is the sum of the tensors inside it, not its logical size in its nominal dtype."""
    flatten = getattr(tensor, "__tensor_flatten__", None)
    if flatten is None:
        return int(tensor.numel() * tensor.element_size())
    names, _ = flatten()
    return sum(tensor_bytes(getattr(tensor, name)) for name in names)


def quiet_progress_bars() -> None:
    """Loading bars are for terminals; in a server they are noise in the logs."""
    with contextlib.suppress(ImportError):
        from diffusers.utils import logging as diffusers_logging

        diffusers_logging.disable_progress_bar()
    with contextlib.suppress(ImportError):
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()


def load_directory(path: Path, settings: DiffusersSettings, dtype: Any) -> Pipeline:
    import torch

    quiet_progress_bars()

    index = read_json(path / "model_index.json")
    if index is None:
        raise ModelNotAvailable(f"{path} is not a diffusers directory: it has no model_index.json.")
    class_name = index.get("_class_name")
    if not isinstance(class_name, str):
        raise ModelNotAvailable(
            f"{path}/model_index.json names pipeline code to run from the model directory ({class_name!r}); "
            "limner loads pipelines by import path only: set pipeline_class to 'module:Class'."
        )
    cls = pipeline_class(settings.pipeline_class or class_name)
    kwargs: dict[str, Any] = {"local_files_only": True, **dtype_argument(dtype)}
    kwargs |= load_arguments(settings.quantization, settings.quantize, index)
    if dtype == torch.float16 and any(path.glob("*/*.fp16.*")):
        kwargs["variant"] = "fp16"  # half-size files where the model ships them; others load as they are
    return cls.from_pretrained(str(path), **kwargs)


def load_single_file(path: Path, settings: DiffusersSettings, dtype: Any) -> Pipeline:
    quiet_progress_bars()
    gguf = is_gguf(path)
    config_dir = settings.config_dir
    if config_dir is None:
        needs = "configs and the other components' weights" if gguf else "component configs"
        raise ModelNotAvailable(
            f"{path} is a single-file {'GGUF denoiser' if gguf else 'checkpoint'}: set config_dir to a diffusers "
            f"directory of the same model with its {needs} (limner never downloads them)."
        )
    config_dir = config_dir.expanduser()
    if not (config_dir / "model_index.json").is_file():
        raise ModelNotAvailable(f"config_dir {config_dir} is not a diffusers directory: it has no model_index.json.")
    name = settings.single_file_class or class_name_in(config_dir) or "StableDiffusionPipeline"
    cls = pipeline_class(name)
    if gguf:
        return load_gguf(path, config_dir, cls, dtype, dtype_argument(dtype))
    if not hasattr(cls, "from_single_file"):
        raise ModelNotAvailable(f"{cls.__name__} cannot load single-file checkpoints; set single_file_class.")
    return cls.from_single_file(str(path), config=str(config_dir), local_files_only=True, **dtype_argument(dtype))


def dtype_argument(dtype: Any) -> dict[str, Any]:
    """diffusers 0.42 renamed ``torch_dtype`` to ``dtype`` (older versions ignore ``dtype``: weights stay float32)."""
    import diffusers

    major, minor = (int(part) for part in diffusers.__version__.split(".")[:2])
    return {"dtype" if (major, minor) >= (0, 42) else "torch_dtype": dtype}


def pipeline_class(spec: str) -> Any:
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


def scheduler_class(name: str) -> Any:
    import diffusers

    cls = getattr(diffusers, name, None)
    if not (isinstance(cls, type) and issubclass(cls, diffusers.SchedulerMixin)):
        raise ModelNotAvailable(f"Unknown scheduler {name!r}: expected a diffusers scheduler class name.")
    return cls


def resolve_device(spec: str) -> Any:
    import torch

    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(spec)
    except (RuntimeError, ValueError) as exc:
        raise ModelNotAvailable(f"Unknown device {spec!r}.") from exc


DTYPES = {"float16": "float16", "fp16": "float16", "bfloat16": "bfloat16", "bf16": "bfloat16"}
DTYPES |= {"float32": "float32", "fp32": "float32"}


def resolve_dtype(spec: str, device: Any, auto: str = "float16") -> Any:
    """``auto``: ``auto`` (the family's half type) on CUDA, float32 elsewhere."""
    import torch

    if spec == "auto":
        return getattr(torch, auto) if device.type == "cuda" else torch.float32
    if spec not in DTYPES:
        raise ModelNotAvailable(f"Unknown dtype {spec!r}: expected auto, {', '.join(sorted(DTYPES))}.")
    return getattr(torch, DTYPES[spec])


# --- what a pipeline can do ---


def task_pipelines(pipe: Pipeline) -> dict[str, Pipeline | None]:
    """The pipeline to call per task, sharing one set of weights (``from_pipe`` copies no tensors)."""
    if not type(pipe).__module__.startswith("diffusers."):
        params = call_parameters(pipe)  # limner's own and other custom classes say it in __call__
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


def class_tasks(cls: type) -> tuple[bool, bool, bool]:
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


def call_parameters(pipe: Pipeline) -> set[str]:
    return set(inspect.signature(type(pipe).__call__).parameters)


def config_root(settings: DiffusersSettings) -> tuple[Path | None, str | None]:
    """Where the model's configs are, and its pipeline class name, read without loading anything."""
    root = settings.path.expanduser()
    single = root.is_file() or root.suffix in (".safetensors", ".ckpt") or is_gguf(root)
    configs: Path | None = root
    if single:
        configs = settings.config_dir.expanduser() if settings.config_dir else None
    spec = (settings.single_file_class if single else settings.pipeline_class) or class_name_in(configs)
    return configs, spec


def planned_family(settings: DiffusersSettings) -> Family | None:
    """The catalog's ``family``, else the one the configs show (None for custom pipelines)."""
    if settings.family:
        try:
            return family_named(settings.family)
        except ValueError as exc:
            raise ModelNotAvailable(str(exc)) from exc
    configs, spec = config_root(settings)
    return detect_family(spec.rpartition(":")[2] if spec else None, configs)


def planned_capabilities(settings: DiffusersSettings, family: Family | None = None) -> Capabilities:
    """What the model will accept, from settings and config files alone (no weights read)."""
    configs, spec = config_root(settings)
    edit = inpaint = False
    negative = True
    if spec:
        with contextlib.suppress(Exception):  # unknown until load, which reports the problem properly
            edit, inpaint, negative = class_tasks(pipeline_class(spec))
    size, multiple = size_from_configs(configs) if configs else (None, 8)
    if family is not None:
        negative = negative and family.negative_prompt
        multiple = max(multiple, family.size_multiple)
        size = size or (family.size, family.size)
    return Capabilities(
        modes=modes(edit or inpaint, text=family is None or family.text_to_image),
        max_images=settings.max_images,
        max_input_images=1,
        supports_mask=inpaint,
        supports_negative_prompt=negative,
        default_size=settings.default_size or settings.native_size or size or (512, 512),
        min_side=max(64, multiple),
        max_side=2048,
        size_multiple=multiple,
        native_size=settings.native_size,
        transparency=settings.transparency,
        default_steps=settings.default_steps or (family.steps if family else None),
        extras={"engine": "diffusers", **({"family": family.name} if family else {})},
    )


def loaded_capabilities(
    planned: Capabilities, pipe: Pipeline, tasks: dict[str, Pipeline | None], family: Family | None = None
) -> Capabilities:
    """The plan, corrected by what the loaded pipeline can actually do."""
    edit, inpaint = tasks["edit"] is not None, tasks["inpaint"] is not None
    first = tasks["generate"] or tasks["edit"] or pipe
    negative = "negative_prompt" in call_parameters(first) and (family is None or family.negative_prompt)
    return replace(
        planned,
        modes=modes(edit or inpaint, text=tasks["generate"] is not None),
        supports_mask=inpaint,
        supports_negative_prompt=negative,
        extras={**planned.extras, "pipeline": type(pipe).__name__},
    )


def modes(edit: bool, *, text: bool = True) -> frozenset[Mode]:
    return frozenset(({Mode.GENERATE} if text else set()) | ({Mode.EDIT} if edit else set()))


def size_from_configs(root: Path) -> tuple[tuple[int, int] | None, int]:
    vae = read_json(root / "vae" / "config.json") or {}
    channels = vae.get("block_out_channels")
    scale = 2 ** (len(channels) - 1) if isinstance(channels, list) and channels else 8
    for name in ("unet", "transformer"):
        sample = (read_json(root / name / "config.json") or {}).get("sample_size")
        if isinstance(sample, list) and sample:
            sample = sample[0]
        if isinstance(sample, int):
            return (sample * scale, sample * scale), scale
    return None, scale


def class_name_in(root: Path | None) -> str | None:
    index = read_json(root / "model_index.json") if root else None
    name = index.get("_class_name") if index else None
    return name if isinstance(name, str) else None


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


# --- request plumbing ---

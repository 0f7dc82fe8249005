"""Engine factories by catalog ``engine`` name. Heavy imports (torch, diffusers) happen on first use."""

from __future__ import annotations

from functools import partial
from importlib import import_module
from pathlib import Path

from limner.engines.base import Engine
from limner.engines.catalog import UPSTREAM_PROVIDERS, EngineFactory, ModelEntry
from limner.engines.compiling import CACHE_FOLDER
from limner.engines.ray_serve import on_ray

BUILTIN_PIPELINE = "limner.builtin.pipeline:EmojiDiffusionPipeline"


def _diffusers(
    entry: ModelEntry,
    *,
    pipeline_class: str | None = None,
    max_images: int = 4,
    data_dir: Path | None = None,
    transparency: bool = False,
) -> Engine:
    from limner.engines.adapters import specs_for
    from limner.engines.controls import control_specs, reference_spec
    from limner.engines.diffusers_engine import DiffusersEngine, DiffusersSettings

    if entry.path is None:
        raise ValueError(f"model '{entry.id}' needs a 'path' to a diffusers directory, a .safetensors or a .gguf file")
    return DiffusersEngine(
        DiffusersSettings(
            path=entry.path,
            pipeline_class=pipeline_class or entry.pipeline_class,
            single_file_class=entry.single_file_class,
            config_dir=entry.config_dir,
            device=entry.device,
            dtype=entry.dtype,
            scheduler=entry.scheduler,
            default_steps=entry.default_steps,
            default_guidance=entry.default_guidance,
            default_strength=entry.default_strength,
            native_size=entry.native_size,
            default_size=entry.default_size,
            attention_slicing=_flag(entry.attention_slicing, entry.options.attention_slicing),
            cpu_offload=_flag(entry.cpu_offload, entry.options.cpu_offload),
            max_images=entry.options.max_images or max_images,
            vae_tiling=entry.vae_tiling,
            compile=entry.compile,
            compile_cache=data_dir / CACHE_FOLDER if data_dir is not None else None,
            quantization=entry.quantization,
            quantize=tuple(entry.quantize),
            cache=entry.cache,
            cache_threshold=entry.cache_threshold,
            cache_interval=entry.cache_interval,
            family=entry.family,
            loras=specs_for(entry),
            controls=control_specs(entry),
            ip_adapter=reference_spec(entry),
            samplers=tuple(entry.schedulers) if entry.schedulers is not None else None,
            refiner=entry.refiner,
            refiner_start=entry.refiner_start,
            transparency=transparency,
        )
    )


def _flag(typed: bool | None, legacy: object) -> bool:
    """A memory option set as a field, or in the older ``options`` table."""
    return bool(typed if typed is not None else legacy)


def _builtin(entry: ModelEntry, *, data_dir: Path | None = None) -> Engine:
    # 32x32: any n fits; it paints emoji on transparency itself
    return _diffusers(entry, pipeline_class=BUILTIN_PIPELINE, max_images=10, data_dir=data_dir, transparency=True)


def batched(factory: EngineFactory) -> EngineFactory:
    """Wrap a local engine factory: entries with ``batch_window_ms`` get request-level micro-batching, and
    those with ``step_batching`` step-level batching over it (for the requests their pipeline can step)."""

    def build(entry: ModelEntry) -> Engine:
        engine = request_level = factory(entry)
        if entry.batch_window_ms > 0:
            from limner.engines.batching import BatchingEngine

            request_level = BatchingEngine(
                engine,
                window=entry.batch_window_ms / 1000,
                max_images=entry.max_batch_images,
                concurrency=entry.max_concurrency,
            )
        if not (entry.steps_in_batches and hasattr(engine, "step_function")):
            return request_level
        from limner.engines.stepping import SteppingEngine

        return SteppingEngine(engine, request_level, max_images=entry.max_batch_images, invariant=entry.batch_invariant)

    return build


def _testpattern(entry: ModelEntry) -> Engine:
    from limner.engines.testpattern import TestPatternEngine

    return TestPatternEngine(delay=entry.options.delay, steps=entry.default_steps)


def _upscaler(entry: ModelEntry) -> Engine:
    from limner.engines.upscaler import UpscalerEngine

    return UpscalerEngine(entry.path, entry.device, steps=entry.default_steps)


def _upstream(target: str) -> EngineFactory:
    def build(entry: ModelEntry) -> Engine:
        module, _, name = target.partition(":")
        engine: Engine = getattr(import_module(module), name).from_entry(entry)
        return engine

    return build


def default_factories(data_dir: Path | None = None) -> dict[str, EngineFactory]:
    """Every engine limner ships, by catalog name; ``data_dir`` keeps what local engines write (compiled code)."""
    factories: dict[str, EngineFactory] = {
        "builtin": on_ray(batched(partial(_builtin, data_dir=data_dir))),
        "diffusers": on_ray(batched(partial(_diffusers, data_dir=data_dir))),
        "testpattern": on_ray(batched(_testpattern)),
        "upscaler": _upscaler,
    }
    factories.update({name: _upstream(target) for name, target in UPSTREAM_PROVIDERS.items()})
    return factories

"""Engine factories by catalog ``engine`` name. Heavy imports (torch, diffusers) happen on first use."""

from __future__ import annotations

from importlib import import_module

from limner.engines.base import Engine
from limner.engines.catalog import UPSTREAM_PROVIDERS, EngineFactory, ModelEntry
from limner.engines.ray_serve import on_ray

BUILTIN_PIPELINE = "limner.builtin.glyph_pipeline:EmojiGlyphPipeline"


def _diffusers(entry: ModelEntry, *, pipeline_class: str | None = None, max_images: int = 4) -> Engine:
    from limner.engines.adapters import specs_for
    from limner.engines.diffusers_engine import DiffusersEngine, DiffusersSettings

    if entry.path is None:
        raise ValueError(f"model '{entry.id}' needs a 'path' to a diffusers directory or a .safetensors file")
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
            quantization=entry.quantization,
            quantize=tuple(entry.quantize),
            family=entry.family,
            loras=specs_for(entry),
            samplers=tuple(entry.schedulers) if entry.schedulers is not None else None,
            refiner=entry.refiner,
            refiner_start=entry.refiner_start,
        )
    )


def _flag(typed: bool | None, legacy: object) -> bool:
    """A memory option set as a field, or in the older ``options`` table."""
    return bool(typed if typed is not None else legacy)


def _builtin(entry: ModelEntry) -> Engine:
    return _diffusers(entry, pipeline_class=BUILTIN_PIPELINE, max_images=10)  # every dialect's n fits


def batched(factory: EngineFactory) -> EngineFactory:
    """Wrap a local engine factory so entries with ``batch_window_ms`` get micro-batching."""

    def build(entry: ModelEntry) -> Engine:
        engine = factory(entry)
        if entry.batch_window_ms <= 0:
            return engine
        from limner.engines.batching import BatchingEngine

        return BatchingEngine(
            engine,
            window=entry.batch_window_ms / 1000,
            max_images=entry.max_batch_images,
            concurrency=entry.max_concurrency,
        )

    return build


def _testpattern(entry: ModelEntry) -> Engine:
    from limner.engines.testpattern import TestPatternEngine

    return TestPatternEngine(delay=entry.options.delay, steps=entry.default_steps)


def _upstream(target: str) -> EngineFactory:
    def build(entry: ModelEntry) -> Engine:
        module, _, name = target.partition(":")
        engine: Engine = getattr(import_module(module), name).from_entry(entry)
        return engine

    return build


def default_factories() -> dict[str, EngineFactory]:
    factories: dict[str, EngineFactory] = {
        "builtin": on_ray(batched(_builtin)),
        "diffusers": on_ray(batched(_diffusers)),
        "testpattern": on_ray(batched(_testpattern)),
    }
    factories.update({name: _upstream(target) for name, target in UPSTREAM_PROVIDERS.items()})
    return factories

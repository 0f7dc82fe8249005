"""Catalog entries to engines: the factories by ``engine`` name, and the defaults an engine name implies."""

from __future__ import annotations

from importlib import import_module
from pathlib import Path

import pytest
import torch

from limner.builtin import BUILTIN_MODEL_DIR
from limner.config.defaults import default_models
from limner.core.models import EngineRequest, Mode
from limner.engines.batching import BatchingEngine
from limner.engines.catalog import UPSTREAM_CONCURRENCY, UPSTREAM_PROVIDERS, Catalog, ModelEntry
from limner.engines.diffusers_engine import DiffusersEngine
from limner.engines.registry import BUILTIN_PIPELINE, default_factories
from limner.engines.stepping import SteppingEngine
from limner.settings import Settings

SHIPPED = pytest.mark.skipif(not (BUILTIN_MODEL_DIR / "model_index.json").exists(), reason="weights not shipped")


def _diffusers_engine(catalog: Catalog, entry: ModelEntry) -> DiffusersEngine:
    engine = catalog.engine(entry)
    inner = engine.inner if isinstance(engine, BatchingEngine | SteppingEngine) else engine
    assert isinstance(inner, DiffusersEngine)
    return inner


def test_a_builtin_entry_needs_nothing_but_its_engine() -> None:
    entry = ModelEntry(id="emoji", engine="builtin")
    engine = _diffusers_engine(Catalog([entry], default_factories()), entry)
    assert engine.settings.path == BUILTIN_MODEL_DIR
    assert engine.settings.pipeline_class == BUILTIN_PIPELINE
    assert (engine.settings.native_size, engine.settings.default_steps) == (None, 4), "draws at any size, 4 stages"
    assert engine.capabilities.min_side == 16 and engine.capabilities.max_side == 4096
    shipped = default_models()[0]
    assert entry.model_dump(exclude={"id", "name", "description", "aliases"}) == shipped.model_dump(
        exclude={"id", "name", "description", "aliases"}
    ), "the same model as the default catalog's"


def test_a_builtin_entry_keeps_what_it_sets(tmp_path: Path) -> None:
    entry = ModelEntry(
        id="emoji", engine="builtin", path=tmp_path / "retrained", default_strength=0.5, batch_window_ms=0
    )
    engine = _diffusers_engine(Catalog([entry], default_factories()), entry)
    assert (engine.settings.path, engine.settings.default_strength) == (tmp_path / "retrained", 0.5)
    assert engine.settings.native_size is None


def test_a_builtin_entry_in_limner_toml_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "limner.toml"
    config.write_text('[[models]]\nid = "emoji"\nengine = "builtin"\naliases = ["dall-e-2"]\n')
    monkeypatch.setenv("LIMNER_CONFIG", str(config))
    [entry] = Settings(data_dir=tmp_path).models
    assert entry.path == BUILTIN_MODEL_DIR


def test_local_diffusers_entries_step_in_batches_unless_told_not_to(tmp_path: Path) -> None:
    stepped = ModelEntry(id="sd", engine="diffusers", path=tmp_path, batch_window_ms=5)
    whole = ModelEntry(id="whole", engine="diffusers", path=tmp_path, batch_window_ms=5, step_batching=False)
    emoji = ModelEntry(id="emoji", engine="builtin")  # draws in stages, not denoising steps: per request
    pattern = ModelEntry(id="pattern", engine="testpattern")
    catalog = Catalog([stepped, whole, emoji, pattern], default_factories())
    engine = catalog.engine(stepped)
    assert isinstance(engine, SteppingEngine) and isinstance(engine.fallback, BatchingEngine)
    assert engine.max_images == stepped.max_batch_images == stepped.admitted
    assert isinstance(catalog.engine(whole), BatchingEngine)
    assert isinstance(catalog.engine(emoji), BatchingEngine)
    assert not isinstance(catalog.engine(pattern), SteppingEngine) and pattern.admitted == 1


def test_a_diffusers_entry_still_needs_a_path() -> None:
    entry = ModelEntry(id="sd", engine="diffusers")
    with pytest.raises(ValueError, match="model 'sd' needs a 'path'"):
        Catalog([entry], default_factories()).engine(entry)


@SHIPPED
async def test_a_builtin_entry_without_a_path_generates() -> None:
    torch.set_num_threads(1)
    entry = ModelEntry(id="emoji", engine="builtin", batch_window_ms=0)
    catalog = Catalog([entry], default_factories())
    try:
        [image] = await catalog.engine(entry).generate(EngineRequest(Mode.GENERATE, "red apple", 32, 32, [1], steps=2))
    finally:
        await catalog.aclose()
    assert image.image.size == (32, 32) and image.seed == 1


def test_every_upstream_provider_has_an_engine_of_its_name() -> None:
    assert set(default_factories()) == {"builtin", "diffusers", "testpattern", "upscaler", *UPSTREAM_PROVIDERS}
    for name, target in UPSTREAM_PROVIDERS.items():
        module, _, attribute = target.partition(":")
        assert getattr(import_module(module), attribute).provider == name
        assert ModelEntry(id=name, engine=name).max_concurrency == UPSTREAM_CONCURRENCY

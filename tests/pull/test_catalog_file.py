"""Writing a pulled model into ``limner.toml``: the user's file survives, the catalog still loads."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from limner.config.defaults import BUILTIN_MODEL_ID, default_models
from limner.engines.catalog import ModelEntry
from limner.engines.families import FAMILIES, family_for
from limner.pull.catalog_file import upsert_model

USER_FILE = """\
# my server
port = 8080  # behind the proxy

[[models]]
id = "mine"
engine = "diffusers"
path = "/models/mine"
aliases = ["dall-e-3"]
default_steps = 30  # tuned by hand
"""


def _models(config: Path) -> list[dict[str, Any]]:
    return tomllib.loads(config.read_text())["models"]


def test_a_new_file_gets_the_default_catalog_and_the_entry(tmp_path: Path) -> None:
    config = tmp_path / "limner.toml"
    assert upsert_model(config, {"id": "sd-turbo", "engine": "diffusers", "path": "/m/sd-turbo"}) == "added"
    models = _models(config)
    assert [m["id"] for m in models] == [BUILTIN_MODEL_ID, "sd-turbo"]
    assert "dall-e-2" in models[0]["aliases"]  # the dialects' default names still reach the built-in model
    assert "path" not in models[0], "the built-in model's directory moves with limner; the engine implies it"
    assert ModelEntry(**models[0]) == default_models()[0]
    assert (config.stat().st_mode & 0o777) == 0o644  # a config file, readable like any other


def test_an_existing_file_keeps_its_comments_and_the_users_choices(tmp_path: Path) -> None:
    config = tmp_path / "limner.toml"
    config.write_text(USER_FILE)
    assert upsert_model(config, {"id": "new", "engine": "diffusers", "path": "/m/new"}) == "added"
    assert config.read_text().startswith(USER_FILE)
    pulled = {"id": "mine", "engine": "diffusers", "path": "/m/mine-v2", "default_steps": 2, "default_guidance": 0.0}
    assert upsert_model(config, pulled) == "updated"
    mine = _models(config)[0]
    assert mine["path"] == "/m/mine-v2" and mine["default_steps"] == 30 and mine["default_guidance"] == 0.0
    assert mine["aliases"] == ["dall-e-3"] and "# tuned by hand" in config.read_text()
    assert [m["id"] for m in _models(config)] == ["mine", "new"]


def test_a_catalog_that_would_not_load_is_not_written(tmp_path: Path) -> None:
    config = tmp_path / "limner.toml"
    config.write_text(USER_FILE)
    with pytest.raises(ValueError, match="'dall-e-3' is used by two catalog entries"):
        upsert_model(config, {"id": "dall-e-3", "engine": "diffusers", "path": "/m/x"})
    with pytest.raises(ValueError, match="would not load"):
        upsert_model(config, {"id": "x", "engine": "diffusers", "path": "/m/x", "default_stepz": 4})
    assert config.read_text() == USER_FILE
    assert not [p for p in tmp_path.iterdir() if p.name != "limner.toml"]  # no temporary file left behind


def test_models_written_inline_are_left_to_the_user(tmp_path: Path) -> None:
    config = tmp_path / "limner.toml"
    config.write_text('models = [{id = "a", engine = "builtin"}]\n')
    with pytest.raises(ValueError, match="not written as \\[\\[models\\]\\] tables"):
        upsert_model(config, {"id": "b", "engine": "diffusers", "path": "/m/b"})


@pytest.mark.parametrize(
    ("source", "name", "steps", "guidance"),
    [
        ("stabilityai/sd-turbo", "sd-turbo", 1, 0.0),
        ("stabilityai/sdxl-turbo", "sdxl-turbo", 1, 0.0),
        ("black-forest-labs/FLUX.1-schnell", "flux-schnell", 4, 0.0),
        ("black-forest-labs/FLUX.1-dev", "flux-dev", 28, 3.5),
        ("stabilityai/stable-diffusion-3.5-large-turbo", "sd3-turbo", 4, 0.0),
        ("ByteDance/SDXL-Lightning", "sdxl-lightning", 4, 0.0),
    ],
)
def test_known_families_get_their_defaults(source: str, name: str, steps: int, guidance: float) -> None:
    """A pulled model's defaults come from the engine's own family table: one fact, one place."""
    family = family_for(source)
    assert family is FAMILIES[name]
    assert (family.steps, family.guidance) == (steps, guidance)


def test_unknown_models_keep_the_pipelines_own_defaults() -> None:
    assert family_for("stable-diffusion-v1-5/stable-diffusion-v1-5") is None

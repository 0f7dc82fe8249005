"""A misspelt key in ``limner.toml`` stops the server with one line that names the key and the file, instead
of being ignored in silence (and its default used)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from limner.engines.catalog import ModelEntry

LIMNER = Path(sys.executable).with_name("limner")


def serve_with(tmp_path: Path, config: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "limner.toml"
    path.write_text(config)
    env = {**os.environ, "LIMNER_CONFIG": str(path), "LIMNER_DATA_DIR": str(tmp_path / "data")}
    return subprocess.run([str(LIMNER), "serve"], env=env, capture_output=True, text=True, timeout=120)


def test_a_misspelt_setting_stops_serve_naming_the_key_and_file(tmp_path: Path) -> None:
    run = serve_with(tmp_path, "prot = 8100\n")
    assert run.returncode == 2
    assert run.stderr.strip() == f"error: {tmp_path / 'limner.toml'}: unknown setting 'prot' (did you mean 'port'?)"


def test_a_misspelt_model_key_stops_serve_naming_the_key_and_file(tmp_path: Path) -> None:
    run = serve_with(tmp_path, '[[models]]\nid = "p"\nengine = "testpattern"\ndefualt_steps = 4\n')
    assert run.returncode == 2
    assert str(tmp_path / "limner.toml") in run.stderr
    assert "unknown key 'models[0].defualt_steps' (did you mean 'default_steps'?)" in run.stderr
    assert "Traceback" not in run.stderr


def test_a_misspelt_engine_option_is_an_error() -> None:
    with pytest.raises(ValidationError, match=r"unknown option 'delya' \(did you mean 'delay'\?\)"):
        ModelEntry(id="p", engine="testpattern", options={"delya": 1})
    entry = ModelEntry(id="p", engine="testpattern", options={"delay": 0.25, "max_bytes": 10})
    assert entry.options.delay == 0.25 and entry.options.max_bytes == 10


def test_engines_from_outside_limner_keep_options_of_their_own() -> None:
    entry = ModelEntry(id="m", engine="custom", options={"mb": 3})
    assert entry.options.extra("mb") == 3

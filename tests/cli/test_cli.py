"""The ``limner`` command line, configured through a real ``limner.toml``."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from limner.cli import app


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "limner.toml"
    path.write_text(
        f'data_dir = "{tmp_path / "data"}"\n'
        'default_model = "pattern"\n\n'
        '[[models]]\nid = "pattern"\nengine = "testpattern"\naliases = ["dall-e-2"]\n\n'
        '[[models]]\nid = "local-sd"\nengine = "diffusers"\npath = "/nowhere/sd"\n'
    )
    monkeypatch.setenv("LIMNER_CONFIG", str(path))
    return path


def test_models_lists_the_catalog_and_missing_weights(config: Path) -> None:
    result = CliRunner().invoke(app, ["models"])
    assert result.exit_code == 0, result.output
    assert "pattern [default]  engine=testpattern" in result.output
    assert "aliases: dall-e-2" in result.output
    assert "local-sd  engine=diffusers  (weights missing)" in result.output


def test_generate_writes_an_image(config: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.jpg"
    result = CliRunner().invoke(app, ["generate", "a red apple", "-o", str(out), "--size", "96x64", "--seed", "3"])
    assert result.exit_code == 0, result.output
    assert "seed 3" in result.output
    with Image.open(out) as image:
        assert (image.format, image.size) == ("JPEG", (96, 64))


def test_generate_reports_errors_plainly(config: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["generate", "x", "--model", "nope", "-o", str(tmp_path / "x.png")])
    assert result.exit_code == 1
    assert "error: Unknown model 'nope'" in result.output


def test_env_overrides_the_file(config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from limner.settings import Settings

    monkeypatch.setenv("LIMNER_PORT", "9123")
    settings = Settings()
    assert settings.port == 9123 and settings.default_model == "pattern"


def test_models_url_shows_what_a_running_server_has_loaded(pattern_server: str) -> None:
    import httpx

    httpx.post(f"{pattern_server}/v1/images/generations", json={"prompt": "x", "model": "pattern"}).raise_for_status()
    body = httpx.get(f"{pattern_server}/limner/models").json()
    assert body["idle_unload_seconds"] == 900
    assert [model["id"] for model in body["models"]] == ["pattern", "pattern-slow"]
    assert body["models"][0]["idle_seconds"] is not None
    result = CliRunner().invoke(app, ["models", "--url", pattern_server])
    assert result.exit_code == 0, result.output
    assert "pattern  engine=testpattern  loaded, idle 0 s" in result.output
    assert "unload after: 900 s idle; memory budget: none" in result.output

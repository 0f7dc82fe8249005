"""``limner serve``: what reaches uvicorn, in one process and with ``--workers``."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, cast

import pytest
import typer
import uvicorn
from typer.testing import CliRunner
from uvicorn.importer import import_from_string

import limner.app
import limner.http.logging
from limner.cli import app
from limner.cli.serve import worker_app
from limner.settings import Settings


@pytest.fixture
def calls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[tuple[tuple[Any, ...], dict[str, Any]]]:
    """uvicorn.run, create_app and the logging set-up recorded instead of run; settings from a real limner.toml."""
    config = tmp_path / "limner.toml"
    config.write_text(f'data_dir = "{tmp_path / "data"}"\nport = 8100\nlog_format = "json"\n')
    monkeypatch.setenv("LIMNER_CONFIG", str(config))
    for name in ("HOST", "PORT", "PRELOAD", "LOG_FORMAT"):  # set now so that whatever serve sets is undone
        monkeypatch.setenv(f"LIMNER_{name}", "")
        monkeypatch.delenv(f"LIMNER_{name}")
    recorded: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
    monkeypatch.setattr(uvicorn, "run", lambda *args, **kwargs: recorded.append((args, kwargs)))
    monkeypatch.setattr(limner.app, "create_app", lambda settings: ("app built from", settings))
    monkeypatch.setattr(limner.http.logging, "configure_logging", lambda *args: recorded.append((args, {})))
    access = logging.getLogger("uvicorn.access")
    monkeypatch.setattr(access, "propagate", access.propagate)
    return recorded


def test_one_worker_runs_the_app_built_in_this_process(calls: list[tuple[tuple[Any, ...], dict[str, Any]]]) -> None:
    result = CliRunner().invoke(app, ["serve", "--preload"])
    assert result.exit_code == 0, result.output
    [(log_setup, _), (args, kwargs)] = calls
    assert log_setup == ("INFO", "json")
    built, settings = args[0]
    assert built == "app built from" and isinstance(settings, Settings)
    assert settings.preload and settings.log_format == "json"
    assert (kwargs["host"], kwargs["port"]) == ("127.0.0.1", 8100)
    assert "workers" not in kwargs and "factory" not in kwargs
    assert kwargs["log_config"] is None and kwargs["proxy_headers"] is True


def test_workers_get_a_factory_that_reads_the_same_settings(
    calls: list[tuple[tuple[Any, ...], dict[str, Any]]],
) -> None:
    result = CliRunner().invoke(app, ["serve", "--workers", "3", "--port", "8200", "--preload"])
    assert result.exit_code == 0, result.output
    [(log_setup, _), (args, kwargs)] = calls
    assert log_setup == ("INFO", "json")  # the process manager's own lines
    assert args == ("limner.cli.serve:worker_app",) and import_from_string(args[0]) is worker_app
    assert (kwargs["factory"], kwargs["workers"]) == (True, 3)
    assert (kwargs["host"], kwargs["port"]) == ("127.0.0.1", 8200)
    assert kwargs["log_config"] is None
    # What each worker process does: the command line's choices, limner.toml's rest.
    built, settings = cast(Any, worker_app())
    assert built == "app built from" and calls[-1] == (("INFO", "json"), {})  # and each worker's
    assert (settings.port, settings.preload, settings.log_format) == (8200, True, "json")


@pytest.mark.parametrize("workers", ["0", "-2", "two"])
def test_workers_must_be_a_positive_number(calls: list[tuple[tuple[Any, ...], dict[str, Any]]], workers: str) -> None:
    result = CliRunner().invoke(app, ["serve", "--workers", workers])
    assert result.exit_code == 2
    assert "--workers" in result.output
    assert calls == []


def test_the_help_says_what_workers_share() -> None:
    serve = typer.main.get_command(app).commands["serve"]  # type: ignore[attr-defined]
    [workers] = [option for option in serve.params if option.name == "workers"]
    assert "Each loads its own models" in workers.help and "redis_url" in workers.help
    assert "--workers N" in (serve.help or "")

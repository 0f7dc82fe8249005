"""Shared fixtures: settings on a temporary data dir, and apps with the test-pattern engine."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("LIMNER_CONFIG", "/nonexistent/limner.toml")

from limner.cli.local_services import Postgres
from limner.engines.catalog import ModelEntry
from limner.settings import LOOPBACK_HOSTS, Settings


def pattern_models() -> list[ModelEntry]:
    """A catalog of instant test-pattern models answering to every dialect's default name."""
    from limner.config.defaults import DIALECT_DEFAULT_ALIASES

    return [
        ModelEntry(id="pattern", engine="testpattern", aliases=list(DIALECT_DEFAULT_ALIASES), max_queue=64),
        ModelEntry(id="pattern-slow", engine="testpattern", options={"delay": 0.5}, max_queue=1),
    ]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    # ``testserver`` is the Host header of Starlette's TestClient; real sockets use 127.0.0.1.
    # Content Credentials off: a signed manifest differs on every signing, and many tests compare bytes
    # (tests/media/test_provenance.py and tests/integration/test_content_credentials.py turn it on).
    return Settings(
        data_dir=tmp_path / "data",
        models=pattern_models(),
        default_model="pattern",
        allowed_hosts=[*LOOPBACK_HOSTS, "testserver"],
        c2pa="off",
    )


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """One PostgreSQL server for the whole run (each test takes a database of its own: ``new_database``);
    the tests that need it skip, saying why, where it cannot be started."""
    from limner.cli.local_services import postgres_server

    with postgres_server() as server:
        if isinstance(server, str):
            pytest.skip(f"no PostgreSQL: {server}")
        yield server


@pytest.fixture
def pattern_server(settings: Settings) -> Iterator[str]:
    from limner.app import create_app
    from tests.support.live_server import live_server

    with live_server(create_app(settings)) as url:
        yield url

"""Accounts fixtures: priced test-pattern catalogs, and real PostgreSQL and Redis servers (session-wide,
installed and started on loopback when missing; tests that need them skip, saying why, when impossible)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from limner.accounts.db import default_url
from limner.accounts.service import Accounts
from limner.cli.local_services import Postgres, redis_server
from limner.config.defaults import DIALECT_DEFAULT_ALIASES
from limner.engines.catalog import ModelEntry
from limner.settings import Settings


def priced_models(price: float = 1.0) -> list[ModelEntry]:
    """Instant test-pattern models costing ``price`` credits per image (and a slow one, which tests leave)."""
    return [
        ModelEntry(
            id="pattern",
            engine="testpattern",
            aliases=list(DIALECT_DEFAULT_ALIASES),
            max_queue=64,
            price_per_image=price,
            price_scale={"512x512": 2.0, "hd": 3.0},
        ),
        ModelEntry(id="pattern-slow", engine="testpattern", options={"delay": 60.0}, price_per_image=price),
        ModelEntry(id="pattern-free", engine="testpattern"),
        ModelEntry(id="broken", engine="broken", price_per_image=price),
    ]


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    with redis_server() as url:
        if not url.startswith("redis://"):
            pytest.skip(f"no Redis for the shared rate limiter tests: {url}")
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The accounts database, once on SQLite and once on a real PostgreSQL."""
    if request.param == "sqlite":
        return default_url(tmp_path)
    server: Postgres = request.getfixturevalue("postgres")
    return server.new_database()


@pytest.fixture
def priced(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", models=priced_models(), default_model="pattern")


@pytest.fixture
def accounts(priced: Settings, database_url: str) -> Iterator[Accounts]:
    opened = Accounts.open(priced.with_overrides(database_url=database_url))
    yield opened
    opened.db.dispose()

"""Reliability fixtures: the accounts tests' priced test-pattern catalog."""

from __future__ import annotations

from pathlib import Path

import pytest

from limner.settings import Settings
from tests.accounts.conftest import priced_models


@pytest.fixture
def priced(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", models=priced_models(), default_model="pattern")

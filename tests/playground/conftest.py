"""Servers and a browser shared by the playground tests (started once per session, only if a test asks).

``open_server`` is a fresh install's server (the built-in emoji model, open on loopback) plus a slow
test-pattern model for cancelling; ``locked_playground`` requires tokens, prices images, and has an
admin token, for the token errors and the admin view.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from limner.config.defaults import BUILTIN_MODEL_ID, DIALECT_DEFAULT_ALIASES, default_models
from limner.engines.catalog import ModelEntry
from limner.settings import Settings
from tests.playground.pages import open_playground
from tests.support.accounts import TestTokens, issue_tokens
from tests.support.browser import Tab, launched
from tests.support.live_server import live_server

if TYPE_CHECKING:  # playwright is imported only where it is installed (tests skip otherwise)
    from playwright.sync_api import Browser

SLOW_MODEL = "slow-pattern"
SLOW_STEPS = 40
ADMIN_TOKEN = "playground-admin-token"
PRICE = 1.0
AXE = Path(__file__).parent / "node_modules" / "axe-core" / "axe.min.js"


@pytest.fixture(scope="package")
def browser() -> Iterator[Browser]:
    """One chromium for this package's tests. Package scope, not session: Playwright's sync API keeps an
    event loop running on the main thread while it is open, which would break every asyncio test after."""
    with launched() as launched_browser:
        yield launched_browser


@pytest.fixture
def playground(browser: Browser) -> Iterator[Callable[..., Tab]]:
    """Opens the page at a server's root in a fresh browser context; closes them all after the test, so no
    connection outlives it."""
    opened: list[Tab] = []

    def open_page(url: str, **options: object) -> Tab:
        tab = open_playground(browser, url, **options)  # type: ignore[arg-type]
        opened.append(tab)
        return tab

    yield open_page
    for tab in opened:
        tab.page.context.close()


@pytest.fixture(scope="session")
def open_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """What `make serve` runs (the built-in model answering every default name), plus a model that takes
    40 s unless cancelled."""
    from limner.app import create_app

    models = [
        *default_models(),
        ModelEntry(id=SLOW_MODEL, engine="testpattern", options={"delay": 40.0}, default_steps=SLOW_STEPS),
    ]
    settings = Settings(data_dir=tmp_path_factory.mktemp("open"), models=models, default_model=BUILTIN_MODEL_ID)
    with live_server(create_app(settings)) as url:
        yield url


@dataclass(frozen=True)
class Locked:
    url: str
    tokens: TestTokens
    admin: str = ADMIN_TOKEN

    def admin_client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {self.admin}"})


@pytest.fixture(scope="session")
def locked_playground(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Locked]:
    """Tokens required (alice holds a valid one), images cost a credit, and the admin API is on."""
    from limner.app import create_app

    models = [
        ModelEntry(id="pattern", engine="testpattern", aliases=list(DIALECT_DEFAULT_ALIASES), price_per_image=PRICE)
    ]
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("locked"), models=models, default_model="pattern", admin_token=ADMIN_TOKEN
    )
    issued = issue_tokens(settings)
    with live_server(create_app(settings)) as url:
        yield Locked(url, issued)


@pytest.fixture
def axe_source() -> str:
    if not AXE.exists():
        pytest.skip("axe-core is not installed: `make test` runs npm install in tests/playground")
    return AXE.read_text(encoding="utf-8")

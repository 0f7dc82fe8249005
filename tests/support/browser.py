"""A real browser for tests: Debian's ``chromium`` driven by Playwright, kept on 127.0.0.1.

    with launched() as browser:                  # skips the test when chromium or playwright is missing
        tab = watch(browser, viewport=(1280, 900))
        tab.page.goto(url)
        ...
        tab.assert_clean()                       # nothing left loopback, no console errors

Every request the page makes goes through ``watch``'s route: anything not for 127.0.0.1 is recorded
and aborted, and the resolver rule is a second wall (no public host can even be looked up), so a
regression to a CDN fails a test instead of leaking. Console errors and uncaught exceptions are kept
for the test to assert on.
"""

from __future__ import annotations

import base64
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import pytest

if TYPE_CHECKING:
    from playwright.sync_api import Browser, ConsoleMessage, Page, Request, Route

NO_DNS = "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"
LOOPBACK = "127.0.0.1"


def chromium_path() -> str:
    """Debian's chromium, or a skip saying how to get it."""
    path = shutil.which("chromium")
    if path is None:
        pytest.skip("Debian's chromium is not installed (make setup installs it)")
    return path


@contextmanager
def launched() -> Iterator[Browser]:
    """A headless chromium that cannot resolve any host but loopback."""
    executable = chromium_path()
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (the dev extra)")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True, args=[NO_DNS])
        try:
            yield browser
        finally:
            browser.close()


@dataclass
class Tab:
    """One page in its own browser context, and what it did."""

    page: Page
    requested: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)

    def assert_clean(self, *, http_errors_expected: bool = False) -> None:
        """Nothing left 127.0.0.1, no uncaught exception, and no console error (but the ones Chromium logs
        for 4xx answers, when the test provoked them)."""
        assert self.refused == [], f"the page reached beyond {LOOPBACK}: {self.refused}"
        assert self.page_errors == [], self.page_errors
        errors = [
            text
            for text in self.console_errors
            if not (http_errors_expected and text.startswith("Failed to load resource: the server responded"))
        ]
        assert errors == [], errors

    def image(self, selector: str) -> bytes:
        """The pixels an ``<img>`` shows, as PNG, read in the page (through a canvas: the page's CSP may
        forbid fetching its own blob: URLs, and should)."""
        data_url = self.page.eval_on_selector(
            selector,
            """async (img) => {
                await img.decode();
                const canvas = document.createElement("canvas");
                canvas.width = img.naturalWidth;
                canvas.height = img.naturalHeight;
                canvas.getContext("2d").drawImage(img, 0, 0);
                return canvas.toDataURL("image/png");
            }""",
        )
        return base64.b64decode(data_url.split(",", 1)[1])


def watch(browser: Browser, *, viewport: tuple[int, int] = (1280, 900), **options: Any) -> Tab:
    """A new context and page whose every request is checked against loopback."""
    context = browser.new_context(
        service_workers="block", viewport={"width": viewport[0], "height": viewport[1]}, **options
    )
    page = context.new_page()
    tab = Tab(page)

    def only_loopback(route: Route, request: Request) -> None:
        tab.requested.append(request.url)
        if urlsplit(request.url).scheme in ("blob", "data") or urlsplit(request.url).hostname == LOOPBACK:
            route.continue_()
        else:
            tab.refused.append(request.url)
            route.abort("blockedbyclient")

    def console(message: ConsoleMessage) -> None:
        if message.type == "error":
            tab.console_errors.append(message.text)

    context.route("**/*", only_loopback)
    page.on("console", console)
    page.on("pageerror", lambda error: tab.page_errors.append(str(error)))
    return tab

"""``/docs`` works offline: the page and every asset it loads come from limner itself, with no token.

The browser test opens the page in headless Chromium (Debian's ``chromium``, driven by Playwright)
with every request the page makes routed through the test: anything not for 127.0.0.1 is recorded
and aborted, so a regression to a CDN fails here instead of showing a blank page to offline users.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from urllib.parse import urljoin, urlsplit

import httpx
import pytest

from limner.settings import Settings
from tests.support.accounts import locked_server

IMAGE_ROUTES = {
    "/v1/images/generations",  # OpenAI (JSON) and ImagineArt (multipart), one shared route
    "/v1/images/edits",
    "/api/v1/generate-image",  # Milady
    "/v1/generation/images",  # AI.ML
    "/api/images/generations",  # AIGNE Hub
}
ASSET_TYPES = {".js": "javascript", ".css": "text/css", ".png": "image/png"}


@pytest.fixture
def locked_url(settings: Settings) -> Iterator[str]:
    """A live server whose image routes require a token, to show the docs do not."""
    with locked_server(settings) as (url, _tokens):
        yield url


def page_urls(html: str) -> list[str]:
    """Every URL the docs page names: ``src``/``href`` attributes and Swagger UI's ``url:`` option."""
    return re.findall(r"""(?:src|href)=["']([^"']+)["']""", html) + re.findall(r"""\burl:\s*["']([^"']+)["']""", html)


def test_docs_name_only_local_assets_and_they_answer_without_a_token(locked_url: str) -> None:
    with httpx.Client(base_url=locked_url) as client:
        assert client.post("/api/v1/generate-image", json={"prompt": "x"}).status_code == 401  # the server is locked
        page = client.get("/docs")
        assert page.status_code == 200, page.text[:300]
        assert page.headers["content-type"].startswith("text/html")
        urls = page_urls(page.text)
        assert {urlsplit(url).path.rsplit(".", 1)[-1] for url in urls} >= {"js", "css", "png", "json"}, urls
        for url in urls:
            assert not urlsplit(url).netloc and url.startswith("/"), f"/docs names a non-local URL: {url}"
            answer = client.get(url)
            assert answer.status_code == 200, f"{url}: {answer.status_code}"
            kind = next((kind for suffix, kind in ASSET_TYPES.items() if url.endswith(suffix)), "application/json")
            assert kind in answer.headers["content-type"], f"{url}: {answer.headers['content-type']}"
        assert set(client.get("/openapi.json").json()["paths"]) >= IMAGE_ROUTES
        assert client.get("/redoc").status_code == 404


def test_docs_render_in_a_browser_without_leaving_loopback(locked_url: str) -> None:
    chromium_path = shutil.which("chromium")
    if chromium_path is None:
        pytest.skip("Debian's chromium is not installed (make setup installs it)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (the dev extra)")

    requested: list[str] = []
    refused: list[str] = []
    errors: list[str] = []

    def only_loopback(route: object, request: object) -> None:
        assert isinstance(route, sync_api.Route) and isinstance(request, sync_api.Request)
        requested.append(request.url)
        if urlsplit(request.url).hostname == "127.0.0.1":
            route.continue_()
        else:
            refused.append(request.url)
            route.abort("blockedbyclient")

    with sync_api.sync_playwright() as playwright:
        # The resolver rule is a second wall: even a request that escaped routing could not look up a public host.
        no_dns = "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"
        browser = playwright.chromium.launch(executable_path=chromium_path, headless=True, args=[no_dns])
        try:
            context = browser.new_context(service_workers="block")
            context.route("**/*", only_loopback)
            page = context.new_page()
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(urljoin(locked_url, "/docs"))
            page.wait_for_selector(".opblock .opblock-summary-path", timeout=60_000)
            rendered = page.locator(".opblock-summary-path").evaluate_all("spans => spans.map(s => s.dataset.path)")
        finally:
            browser.close()

    assert refused == [], f"/docs reached beyond 127.0.0.1: {refused}"
    assert urljoin(locked_url, "/openapi.json") in requested
    assert any(url.endswith("/swagger-ui-bundle.js") for url in requested)
    assert errors == [], errors
    assert set(rendered) >= IMAGE_ROUTES, sorted(rendered)

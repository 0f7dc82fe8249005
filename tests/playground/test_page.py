"""The playground over plain HTTP: who gets the page at ``/``, what it loads, and the model choices it offers."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import httpx
from fastapi.testclient import TestClient

from limner.app import create_app
from limner.core.models import Capabilities
from limner.engines.base import Engine
from limner.engines.catalog import ModelEntry
from limner.http.playground import assets, size_choices
from limner.settings import Settings
from tests.support.accounts import bearer, locked_server
from tests.support.fakes import factories

BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8"
MODULE_IMPORT = r"""^import\b[^;]*?from\s+["']([^"']+)["']"""
PAGE_BUDGET = 100_000
"""Bytes of the page and every asset together, uncompressed: it must load at once on any link."""


def page_urls(html: str) -> list[str]:
    """Every URL the page names (in-page anchors aside)."""
    return [url for url in re.findall(r"""(?:src|href)=["']([^"']+)["']""", html) if not url.startswith("#")]


def test_root_is_the_page_for_browsers_and_unchanged_for_api_clients(pattern_server: str) -> None:
    with httpx.Client(base_url=pattern_server) as client:
        page = client.get("/", headers={"Accept": BROWSER_ACCEPT})
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert "<title>limner playground</title>" in page.text
        assert "connect-src 'self'" in page.headers["content-security-policy"]
        assert page.headers["vary"] == "Accept"
        for headers in ({}, {"Accept": "*/*"}, {"Accept": "application/json"}):
            answer = client.get("/", headers=headers)
            assert (answer.status_code, answer.json()) == (404, {"detail": "Not Found"}), headers
        for method in ("POST", "PUT", "DELETE"):
            answer = client.request(method, "/", headers={"Accept": BROWSER_ACCEPT})
            assert (answer.status_code, answer.json()) == (404, {"detail": "Not Found"}), method
        assert client.get("/playground").text == page.text, "/playground is the page whatever Accept says"


def test_the_page_names_only_local_assets_that_ship_in_the_package(pattern_server: str) -> None:
    with httpx.Client(base_url=pattern_server) as client:
        html = client.get("/playground").text
        urls = page_urls(html)
        assert {url.rsplit(".", 1)[-1] for url in urls} >= {"js", "css", "svg"}, urls
        total = len(html.encode())
        for url in urls:
            assert not urlsplit(url).netloc and url.startswith("/"), f"non-local URL in the page: {url}"
            if url == "/docs":
                continue
            answer = client.get(url)
            assert answer.status_code == 200, url
        for name, asset in assets().items():
            answer = client.get(f"/playground/assets/{name}")
            assert answer.status_code == 200 and answer.content == asset.body, name
            assert answer.headers["content-type"].startswith(asset.media_type), name
            total += len(answer.content)
            imports = (
                re.findall(r"""^import\b[^;]*?from\s+["']([^"']+)["']""", answer.text, re.M)
                if name.endswith(".js")
                else []
            )
            assert all(spec.startswith("./") for spec in imports), f"{name} imports from elsewhere: {imports}"
        assert total < PAGE_BUDGET, f"the page weighs {total} bytes"
        assert client.get("/playground/assets/nothing.js").status_code == 404
        assert client.get("/playground/assets/..%2Fplayground.py").status_code == 404


def test_the_page_carries_a_proxy_prefix(settings: Settings) -> None:
    with TestClient(create_app(settings), root_path="/limner") as client:
        html = client.get("/playground").text
    assert '<meta name="limner-root" content="/limner">' in html
    assert all(url.startswith("/limner/") for url in page_urls(html)), page_urls(html)


def test_model_choices_are_sizes_the_server_accepts(pattern_server: str) -> None:
    with httpx.Client(base_url=pattern_server, timeout=30) as client:
        info = client.get("/playground/models").json()
        assert info["default_model"] == "pattern"
        assert "line-art" in {style["id"] for style in info["styles"]}
        models = {model["name"]: model for model in info["models"]}
        assert set(models) == {item["id"] for item in client.get("/v1/models").json()["data"]}
        pattern = models["dall-e-2"]
        assert (pattern["model"], pattern["max_images"], pattern["supports_mask"]) == ("pattern", 10, True)
        assert set(pattern["sizes"]) >= {"1:1", "16:9", "9:16"}
        for ratio, sizes in pattern["sizes"].items():
            wide, high = (int(part) for part in ratio.split(":"))
            for size in (sizes[0], sizes[-1]):
                width, height = (int(part) for part in size.split("x"))
                assert abs(width / height - wide / high) < 0.05, (ratio, size)
            answer = client.post(
                "/v1/images/generations",
                json={"model": "pattern", "prompt": "a red apple", "size": sizes[0], "response_format": "b64_json"},
            )
            assert answer.status_code == 200, answer.text
            assert answer.json()["size"] == sizes[0]


def test_a_model_with_fixed_sizes_offers_exactly_those() -> None:
    caps = Capabilities(allowed_sizes=((256, 256), (512, 512), (1792, 1024), (1024, 1792)))
    assert size_choices(caps) == {"1:1": ["256x256", "512x512"], "7:4": ["1792x1024"], "4:7": ["1024x1792"]}
    native = Capabilities(native_size=(32, 32), default_size=(1024, 1024))
    assert size_choices(native)["1:1"] == ["256x256", "512x512", "768x768", "1024x1024", "1536x1536", "2048x2048"]


def test_model_choices_need_a_token_like_the_model_list(settings: Settings) -> None:
    with locked_server(settings) as (url, tokens), httpx.Client(base_url=url) as client:
        refused = client.get("/playground/models")
        assert refused.status_code == 401
        assert refused.json()["error"]["code"] == "missing_bearer_token"
        assert client.get("/playground/models", headers=bearer("lim_" + "x" * 43)).json()["error"]["code"] == (
            "invalid_token"
        )
        assert client.get("/playground/models", headers=bearer(tokens.valid)).status_code == 200
        assert client.get("/playground", headers={"Accept": BROWSER_ACCEPT}).status_code == 200, "the page is open"
        assert client.get("/playground/assets/app.js").status_code == 200


def test_a_model_whose_engine_cannot_be_built_is_listed_without_choices(settings: Settings) -> None:
    def cannot_build(entry: ModelEntry) -> Engine:
        raise ValueError("no API key in OPENAI_API_KEY")

    models = [*settings.models, ModelEntry(id="hosted", engine="unbuildable")]
    app = create_app(settings.with_overrides(models=models), factories=factories(unbuildable=cannot_build))
    with TestClient(app) as client:
        described = {model["name"]: model for model in client.get("/playground/models").json()["models"]}
    assert described["hosted"] == {"name": "hosted", "model": "hosted", "display_name": "hosted", "available": False}
    assert described["pattern"]["available"] is True

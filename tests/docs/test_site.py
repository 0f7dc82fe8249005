"""The documentation site: ``mkdocs build --strict`` succeeds (no broken link, no missing page), every page
is built, the README excerpts and the API reference are filled in from the sources, and no page, style
sheet or script refers to another host (no CDN fonts, no "made with" link)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from limner.app import create_app
from limner.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
ELSEWHERE = r"""["']?(?:https?:)?//"""
OTHER_HOST = re.compile(rf"(?:src|href|action)\s*=\s*{ELSEWHERE}|url\(\s*{ELSEWHERE}|@import\s+{ELSEWHERE}")
"""An attribute or CSS reference that makes a browser fetch from (or go to) another host."""


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("material")
    built = tmp_path_factory.mktemp("site")
    environment = {**os.environ, "PYTHONPATH": str(ROOT), "NO_MKDOCS_2_WARNING": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(built)],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return built


def nav_pages() -> list[str]:
    config = yaml.load((ROOT / "mkdocs.yml").read_text(), Loader=yaml.BaseLoader)
    return [page for entry in config["nav"] for page in entry.values()]


def test_every_page_is_built_and_no_excerpt_is_left_unfilled(site: Path) -> None:
    for page in nav_pages():
        html = site / ("index.html" if page == "index.md" else page.removesuffix(".md") + "/index.html")
        text = html.read_text(encoding="utf-8")
        assert "readme:" not in text, page
    scale_out = (site / "scale-out" / "index.html").read_text(encoding="utf-8")
    assert "API replicas keep no state of their own" in scale_out, "the README's section, excerpted"
    assert "replicas.svg" in scale_out and (site / "replicas.svg").exists(), "its image, from docs/"


def test_the_api_reference_is_the_servers_own_document(site: Path, settings: Settings) -> None:
    published = json.loads((site / "openapi.json").read_text(encoding="utf-8"))
    assert set(published["paths"]) == set(create_app(settings).openapi()["paths"])
    reference = (site / "api" / "index.html").read_text(encoding="utf-8")
    for path in ("/v1/images/generations", "/v1/jobs/{request_id}", "/health", "/api/v1/generate-image"):
        assert f"<code>{path}</code>" in reference, path


def test_nothing_is_loaded_from_another_host(site: Path) -> None:
    offenders = []
    for file in site.rglob("*"):
        if file.suffix in (".html", ".css", ".js"):
            text = file.read_text(encoding="utf-8", errors="replace")
            offenders += [f"{file.relative_to(site)}: {match}" for match in OTHER_HOST.findall(text)]
    assert not offenders
    assert not any(site.rglob("*.woff2")), "no web fonts: the system's own"


def test_the_check_finds_a_cdn_reference() -> None:
    """The pattern above is not vacuous: Material's Google Fonts link and a CSS import are caught."""
    assert OTHER_HOST.search('<link rel="stylesheet" href="https://fonts.googleapis.com/css?family=Roboto">')
    assert OTHER_HOST.search("@import url(//cdn.example.com/x.css)")
    assert not OTHER_HOST.search('<a href="../api/">API</a> <code>http://127.0.0.1:8000</code>')

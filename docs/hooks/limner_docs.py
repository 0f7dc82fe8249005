"""MkDocs hooks for limner's documentation site (mkdocs.yml).

* ``<!-- readme: Heading -->`` on a line of its own is replaced by that ``##`` section of README.md (up to
  the next ``##``), so a page excerpts the README instead of repeating it. Links into docs/ are made
  relative to the site; other relative links and links to other hosts keep only their text, and images
  outside docs/ are left out: the built site refers to no other host and no missing page.
* ``api.md`` and ``openapi.json`` are generated at build time from limner's own OpenAPI document
  (``create_app(...).openapi()`` on a throwaway data directory), so the API reference is the running code's.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files
from mkdocs.structure.pages import Page

ROOT = Path(__file__).resolve().parents[2]
MARKER = re.compile(r"^<!-- readme: (?P<heading>.+?) -->$", re.MULTILINE)
AUTOLINK = re.compile(r"<(?P<url>https?://[^>\s]+)>")
LINK = re.compile(r"(?P<bang>!?)\[(?P<text>[^\]]*)\]\((?P<target>[^)\s]+)\)")
METHODS = ("get", "post", "put", "patch", "delete")


def readme_section(heading: str) -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    match = re.search(rf"^## {re.escape(heading)}\n(?P<body>.*?)(?=^## |\Z)", text, re.MULTILINE | re.DOTALL)
    if match is None:
        raise ValueError(f"README.md has no section '## {heading}'")
    return AUTOLINK.sub(lambda link: f"`{link['url']}`", LINK.sub(_relink, match["body"])).strip()


def _relink(link: re.Match[str]) -> str:
    target = link["target"]
    if target.startswith("docs/"):
        return f"{link['bang']}[{link['text']}]({target.removeprefix('docs/')})"
    if link["bang"]:
        return ""  # an image outside docs/ (benchmark plots): not part of the site
    return f"`{link['text']}`" if not target.startswith("#") else link["text"]


def on_page_markdown(markdown: str, page: Page, config: MkDocsConfig, files: Files) -> str:
    return MARKER.sub(lambda marker: readme_section(marker["heading"]), markdown)


def on_files(files: Files, config: MkDocsConfig) -> Files:
    document = openapi_document()
    files.append(File.generated(config, "openapi.json", content=json.dumps(document, indent=2)))
    files.append(File.generated(config, "api.md", content=api_page(document)))
    return files


def openapi_document() -> dict[str, Any]:
    """limner's OpenAPI document, as ``GET /openapi.json`` serves it with the default mounts."""
    from limner.app import create_app
    from limner.settings import Settings

    with tempfile.TemporaryDirectory() as workdir:
        previous = os.environ.get("LIMNER_CONFIG")
        os.environ["LIMNER_CONFIG"] = str(Path(workdir) / "absent.toml")  # not the builder's own limner.toml
        try:
            app = create_app(Settings(data_dir=Path(workdir) / "data", c2pa="off"))
            return app.openapi()
        finally:
            if previous is None:
                os.environ.pop("LIMNER_CONFIG", None)
            else:
                os.environ["LIMNER_CONFIG"] = previous


def api_page(document: dict[str, Any]) -> str:
    lines = [
        "# API reference",
        "",
        f"limner {document['info']['version']}: every route, generated from the server's own OpenAPI document "
        "when this site was built ([openapi.json](openapi.json); a running server serves the same at "
        "`/openapi.json`, and an interactive view at `/docs`).",
    ]
    by_tag: dict[str, list[tuple[str, str, dict[str, Any]]]] = {}
    for path, operations in document["paths"].items():
        for method in METHODS:
            if method in operations:
                operation = operations[method]
                by_tag.setdefault((operation.get("tags") or ["Other"])[0], []).append((method, path, operation))
    for tag, operations in by_tag.items():
        lines += ["", f"## {tag}", "", "| method | path | summary | responses |", "|---|---|---|---|"]
        for method, path, operation in operations:
            summary = (operation.get("summary") or "").replace("|", "\\|")
            statuses = ", ".join(sorted(operation.get("responses", {})))
            lines.append(f"| `{method.upper()}` | `{path}` | {summary} | {statuses} |")
    return "\n".join(lines) + "\n"

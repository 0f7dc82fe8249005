"""The playground: a web page to draw, edit and compare, served by limner itself.

- ``GET /`` answers the page to browsers (an ``Accept`` header naming ``text/html``); every other
  request to ``/`` gets the 404 it always got, so API clients see no change.
- ``GET /playground`` always answers the page; ``GET /playground/assets/<file>`` its scripts and
  styles, shipped in the package (``limner/static/playground``): no build step, nothing from a CDN, and a
  Content-Security-Policy that lets the page talk to this origin only.
- ``GET /playground/models`` tells the page what each model name accepts (modes, sizes per aspect
  ratio, batch size, masks, defaults) and the style presets, computed from the same rules the service
  applies, so the page only offers choices the model takes. It needs a token like ``/v1/models``.
- ``POST /playground/credentials`` reads a result's Content Credentials (``limner.http.credentials``),
  with a token too.

The page itself calls the public API (OpenAI's streaming generations and edits, ``/v1/jobs``,
``/admin``) with the token the user typed, which it keeps in the browser's local storage.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.exceptions import HTTPException

from limner.core.errors import InvalidRequest, LimnerError
from limner.core.models import Capabilities, SizeSpec
from limner.core.sizes import resolve_size, shape_for
from limner.core.styles import PRESETS
from limner.http.credentials import read_credentials
from limner.http.deps import get_state
from limner.http.dialect import Errors
from limner.http.errors import error_response
from limner.http.routing import dialect_route

PAGE = "index.html"
ASSET_TYPES = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; connect-src 'self'; "
    "font-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
"""The page may load and call this origin only (images it shows arrive as base64 and become blob URLs)."""
PAGE_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
    "Vary": "Accept",
}
EVERY_METHOD = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
"""``/`` answers each method as before (404) but a browser's GET: a 405 would tell API clients something new."""
ASPECT_RATIOS = ("1:1", "4:3", "3:4", "3:2", "2:3", "16:9", "9:16", "21:9")
SIDES = (256, 512, 768, 1024, 1536, 2048)
"""Each size offered at an aspect ratio has about the area of one of these squares."""


@dataclass(frozen=True)
class Asset:
    body: bytes
    media_type: str


def _static() -> resources.abc.Traversable:
    return resources.files("limner").joinpath("static", "playground")


@cache
def assets() -> dict[str, Asset]:
    """The shipped files by name (read once: they are part of the installed package)."""
    found: dict[str, Asset] = {}
    for item in _static().iterdir():
        suffix = "." + item.name.rsplit(".", 1)[-1]
        if item.is_file() and suffix in ASSET_TYPES:
            found[item.name] = Asset(item.read_bytes(), ASSET_TYPES[suffix])
    return found


@cache
def page_template() -> str:
    return _static().joinpath(PAGE).read_text(encoding="utf-8")


def wants_html(request: Request) -> bool:
    """A browser navigating here: it names ``text/html`` (``*/*`` alone is an API client's default)."""
    return request.method in ("GET", "HEAD") and "text/html" in request.headers.get("accept", "").lower()


def render_page(request: Request) -> HTMLResponse:
    # Behind a proxy that strips a prefix, every URL the page uses must carry it (like /docs).
    root = html.escape(request.scope.get("root_path", "").rstrip("/"), quote=True)
    return HTMLResponse(page_template().replace("%ROOT%", root), headers=PAGE_HEADERS)


async def root_page(request: Request) -> Response:
    """The playground for browsers; the usual 404 for everything else."""
    if not wants_html(request):
        raise HTTPException(404, headers={"Vary": "Accept"})
    return render_page(request)


async def playground_page(request: Request) -> Response:
    """The playground."""
    return render_page(request)


async def playground_asset(name: str) -> Response:
    """One of the page's scripts or stylesheets."""
    asset = assets().get(name)
    if asset is None:
        raise HTTPException(404)
    return Response(asset.body, media_type=asset.media_type, headers={"Cache-Control": "no-cache"})


def size_choices(caps: Capabilities) -> dict[str, list[str]]:
    """``{"16:9": ["336x192", ...], ...}``: sizes the model accepts, grouped by aspect ratio, smallest first."""
    if caps.allowed_sizes:
        grouped: dict[str, list[str]] = {}
        for width, height in caps.allowed_sizes:
            divisor = math.gcd(width, height)
            grouped.setdefault(f"{width // divisor}:{height // divisor}", []).append(f"{width}x{height}")
        return grouped
    multiple = 8 if caps.native_size else max(8, caps.size_multiple)
    choices: dict[str, list[str]] = {}
    for ratio in ASPECT_RATIOS:
        wide, high = (int(part) for part in ratio.split(":"))
        sizes: list[str] = []
        for side in SIDES:
            width, height = shape_for(wide / high, side * side, multiple)
            try:
                resolve_size(SizeSpec(width, height), caps)
            except InvalidRequest:
                continue
            if f"{width}x{height}" not in sizes:
                sizes.append(f"{width}x{height}")
        if sizes:
            choices[ratio] = sizes
    return choices


def describe(request: Request, name: str) -> dict[str, Any]:
    """What the page may offer for one model name."""
    service = get_state(request).service
    entry = service.catalog.resolve(name)
    described: dict[str, Any] = {"name": name, "model": entry.id, "display_name": entry.display_name}
    try:
        caps = service.capabilities(name)
    except Exception:  # an engine that cannot be built (a provider without its key): offer the defaults only
        return {**described, "available": False}
    return {
        **described,
        "available": True,
        "modes": sorted(mode.value for mode in caps.modes),
        "max_images": caps.max_images,
        "max_input_images": caps.max_input_images,
        "composes": entry.compose == "layout",
        "supports_mask": caps.supports_mask,
        "supports_seed": caps.supports_seed,
        "supports_negative_prompt": caps.supports_negative_prompt,
        "default_size": "{}x{}".format(*caps.default_size),
        "default_steps": caps.default_steps or entry.default_steps,
        "default_guidance": entry.default_guidance,
        "default_strength": entry.default_strength,
        "sizes": size_choices(caps),
        "controls": [{"name": c.name, "kind": c.kind, "scale": c.scale} for c in entry.controls],
        "reference_scale": entry.ip_adapter.scale if entry.ip_adapter else None,
    }


async def list_playground_models(request: Request) -> Response:
    """Every model name with the choices the playground may offer for it, and the style presets."""
    state = get_state(request)
    return JSONResponse(
        {
            "default_model": state.settings.default_model,
            "styles": [{"id": preset.id, "description": preset.description} for preset in PRESETS.values()],
            "models": [describe(request, name) for name in state.service.model_names()],
        }
    )


def render_error(error: LimnerError, request_id: str) -> Response:
    """``{"error": {"code", "message", "param"}}``, as the admin API answers."""
    body = {"error": {"code": error.code, "message": error.message, "param": error.param}}
    return error_response(body, error.status, error)


def build_router() -> APIRouter:
    """The page at ``/`` (browsers only) and ``/playground``, its assets, its model helper and its
    credentials reader."""
    router = APIRouter(include_in_schema=False)
    router.add_route("/", root_page, methods=EVERY_METHOD, include_in_schema=False)  # 404 unless a browser
    router.add_api_route("/playground", playground_page, methods=["GET", "HEAD"])
    router.add_api_route("/playground/assets/{name}", playground_asset, methods=["GET", "HEAD"])
    api = APIRouter(route_class=dialect_route(Errors(render_error)), include_in_schema=False)
    api.add_api_route("/playground/models", list_playground_models, methods=["GET"])
    router.include_router(api)
    reader = APIRouter(route_class=dialect_route(Errors(render_error), durable_posts=False), include_in_schema=False)
    reader.add_api_route("/playground/credentials", read_credentials, methods=["POST"])
    router.include_router(reader)
    return router

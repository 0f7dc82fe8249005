"""``GET /docs``: Swagger UI served by limner itself, so the API reference works without internet.

FastAPI's own page loads Swagger UI from a public CDN, which is a blank page on an offline or
firewalled machine. The same page is built here with FastAPI's ``get_swagger_ui_html``, pointing at
Swagger UI's dist files from the ``fastapi-offline`` package, mounted under ``/docs/assets``. Like
``/openapi.json``, the page and its assets are open to everyone: they describe the API, not its data.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

DOCS_URL = "/docs"
ASSETS_URL = "/docs/assets"
ASSETS_PACKAGE = ("fastapi_offline", "static")  # swagger-ui-bundle.js, swagger-ui.css, favicon.png


def install_docs(app: FastAPI) -> None:
    """Add ``/docs``, its OAuth2 redirect page and the local assets (build ``app`` with ``docs_url=None``)."""
    openapi_url = app.openapi_url
    if openapi_url is None:
        return  # no OpenAPI document, nothing to show
    redirect_url = app.swagger_ui_oauth2_redirect_url
    app.mount(ASSETS_URL, StaticFiles(packages=[ASSETS_PACKAGE]), name="docs-assets")

    async def swagger_ui(request: Request) -> HTMLResponse:
        # Behind a proxy that strips a prefix, every URL the page loads must carry it (as FastAPI's own page does).
        root = request.scope.get("root_path", "").rstrip("/")
        return get_swagger_ui_html(
            openapi_url=root + openapi_url,
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{root}{ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
            oauth2_redirect_url=root + redirect_url if redirect_url else None,
            init_oauth=app.swagger_ui_init_oauth,
            swagger_ui_parameters=app.swagger_ui_parameters,
        )

    app.add_route(DOCS_URL, swagger_ui, include_in_schema=False)
    if redirect_url:

        async def oauth2_redirect(_request: Request) -> HTMLResponse:
            return get_swagger_ui_oauth2_redirect_html()

        app.add_route(redirect_url, oauth2_redirect, include_in_schema=False)

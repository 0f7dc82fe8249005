"""``create_app(settings)``: the whole server built in one place; no module-level state."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import parse_qs, urlsplit

from fastapi import APIRouter, FastAPI
from fastapi.responses import JSONResponse

from limner import __version__
from limner.core.errors import InvalidImage
from limner.core.service import ImageService, ServiceOptions
from limner.engines.catalog import Catalog, EngineFactory
from limner.engines.registry import default_factories
from limner.http.context import RequestIdMiddleware
from limner.http.deps import AppState
from limner.http.media import router as media_router
from limner.media.inputs import ImageDecoder, ImageFetcher, ImageLoader
from limner.media.signing import UrlSigner, load_or_create_secret
from limner.media.store import LocalMediaStore
from limner.settings import Settings

log = logging.getLogger("limner")
MEDIA_PREFIX = "/media/"


def build_state(settings: Settings, factories: dict[str, EngineFactory] | None = None) -> AppState:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    secret = settings.signing_secret.encode() if settings.signing_secret else load_or_create_secret(settings.data_dir)
    signer = UrlSigner(secret, default_ttl=settings.url_ttl_seconds)
    store = LocalMediaStore(settings.data_dir / "media")
    catalog = Catalog(settings.models, factories or default_factories())
    loader = ImageLoader(
        ImageDecoder(max_bytes=settings.max_upload_bytes, max_pixels=settings.max_image_pixels),
        ImageFetcher(
            allow_private=settings.fetch_allow_private,
            max_bytes=settings.max_upload_bytes,
            timeout=settings.fetch_timeout,
            max_redirects=settings.fetch_max_redirects,
        ),
        local_media=None,
    )
    service = ImageService(
        catalog,
        store,
        signer,
        ServiceOptions(
            public_url=None,
            embed_metadata=settings.embed_metadata,
            request_timeout=settings.request_timeout,
        ),
    )
    state = AppState(settings, catalog, store, signer, loader, service, started=int(time.time()))
    loader.local_media = LocalMediaResolver(state).read
    return state


class LocalMediaResolver:
    """Reads limner's own media links (signed, absolute or relative) from the store, never over the network."""

    def __init__(self, state: AppState) -> None:
        self.state = state

    async def read(self, url: str) -> bytes | None:
        parts = urlsplit(url)
        if parts.netloc and not self._is_own(url, parts.netloc):
            return None
        if not parts.path.startswith(MEDIA_PREFIX):
            return None
        key = parts.path.removeprefix(MEDIA_PREFIX)
        query = parse_qs(parts.query)
        expires = query.get("expires", ["0"])[0]
        signature = query.get("signature", [""])[0]
        if not self.state.signer.verify(key, expires, signature):
            raise InvalidImage("image link is invalid or has expired")
        return await self.state.store.get(key)

    def _is_own(self, url: str, netloc: str) -> bool:
        settings = self.state.settings
        if settings.public_url and url.startswith(settings.public_url + "/"):
            return True
        port = settings.port
        return netloc in {f"{settings.host}:{port}", f"127.0.0.1:{port}", f"localhost:{port}"}


def _warn_about_models(state: AppState) -> None:
    for entry in state.catalog.entries:
        if entry.path is not None and not entry.path.exists():
            log.warning(
                "model '%s': weights not found at %s; requests for it will fail with model_not_available "
                "until they exist (the built-in model is rebuilt with `python -m limner.builtin.train`)",
                entry.id,
                entry.path,
            )


def create_app(settings: Settings | None = None, *, factories: dict[str, EngineFactory] | None = None) -> FastAPI:
    settings = settings or Settings()
    state = build_state(settings, factories)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        _warn_about_models(state)
        if settings.preload:
            for entry in state.catalog.entries:
                await state.catalog.engine(entry).load()
        log.info("limner %s ready with %d models", __version__, len(state.catalog.entries))
        try:
            yield
        finally:
            await state.catalog.aclose()
            await state.loader.aclose()

    app = FastAPI(title="limner", version=__version__, lifespan=lifespan, docs_url="/docs", redoc_url=None)
    app.state.limner = state
    app.add_middleware(RequestIdMiddleware)

    ops = APIRouter(tags=["Ops"])

    @ops.get("/health")
    async def health() -> JSONResponse:
        """Liveness probe, open to all."""
        return JSONResponse({"ok": True})

    app.include_router(ops)
    app.include_router(media_router)
    _mount_dialects(app, settings)
    return app


def _mount_dialects(app: FastAPI, settings: Settings) -> None:
    from limner.dialects import aigne, openai

    mounts = settings.mounts
    if "openai" in mounts:
        app.include_router(openai.build_router(), prefix=mounts["openai"])
    if "aigne" in mounts:
        app.include_router(aigne.build_router(), prefix=mounts["aigne"])

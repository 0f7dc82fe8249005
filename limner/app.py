"""``create_app(settings)``: the whole server built in one place; no module-level state."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from fastapi import APIRouter, FastAPI
from fastapi.responses import JSONResponse

from limner import __version__
from limner.accounts.service import Accounts
from limner.core.files import make_private
from limner.core.tracing import configure_tracing
from limner.dialects import openai
from limner.engines import threads
from limner.engines.catalog import Catalog, EngineFactory
from limner.engines.registry import default_factories
from limner.engines.residency import Residency
from limner.http import admin as accounts_admin
from limner.http import guards, jobs
from limner.http.context import RequestIdMiddleware
from limner.http.delivery import SettleAfterResponse
from limner.http.deps import AppState
from limner.http.disconnect import CancelOnDisconnectMiddleware
from limner.http.docs import install_docs
from limner.http.job_answers import DialectAnswers
from limner.http.key_waits import KeyWaits
from limner.http.linger import DrainUnreadBody
from limner.http.media import router as media_router
from limner.http.metrics import MetricsMiddleware
from limner.http.metrics import router as metrics_router
from limner.http.openapi import install as install_openapi
from limner.http.playground import build_router as playground_router
from limner.http.residency import router as residency_router
from limner.media.inputs import ImageDecoder, ImageFetcher, ImageLoader
from limner.media.own_links import OwnMediaLinks
from limner.media.provenance import ContentCredentials, load_credentials
from limner.media.signing import UrlSigner
from limner.media.store import LocalMediaStore, MediaStore
from limner.media.watermark import InvisibleWatermark
from limner.service.accounting import AccountsGate
from limner.service.image_service import ImageService, ServiceOptions
from limner.service.job_runner import JobRunner
from limner.service.job_service import JobLimits, JobService
from limner.service.media_access import MediaAccess
from limner.service.metrics import Metrics
from limner.service.stages.cache import ResultCache
from limner.service.webhooks import WebhookSecrets, WebhookSender, server_secret
from limner.settings import Settings

if TYPE_CHECKING:
    from fastapi.telemetry import TelemetryConfig  # FastAPI before 0.16x takes the argument as an unused extra

log = logging.getLogger("limner")


def media_store(settings: Settings) -> MediaStore:
    """The local directory by default; an S3-compatible bucket when ``media_store = "s3"``."""
    if settings.media_store == "local":
        return LocalMediaStore(settings.data_dir / "media")
    from limner.media.s3_store import S3Location, S3MediaStore  # boto3 only where it is used

    assert settings.s3_bucket is not None  # the settings refuse s3 without a bucket
    location = S3Location(
        bucket=settings.s3_bucket,
        endpoint_url=settings.s3_endpoint_url,
        prefix=settings.s3_prefix,
        region=settings.s3_region,
        access_key_id=settings.s3_access_key_id,
        secret_access_key=settings.secret("s3_secret_access_key"),
        path_style=settings.s3_path_style,
    )
    return S3MediaStore(location, presign_ttl=settings.url_ttl_seconds)


def webhook_sender(state: AppState) -> WebhookSender:
    settings = state.settings
    return WebhookSender(
        state.accounts.db,
        WebhookSecrets.from_settings(settings),
        timeout=settings.webhook_timeout_seconds,
        retry_seconds=settings.webhook_retry_seconds,
        max_attempts=settings.webhook_max_attempts,
        allow_private=settings.webhook_allow_private,
    )


def content_credentials(settings: Settings) -> ContentCredentials | None:
    """The C2PA signer from the settings; ``ProvenanceError`` (startup stops) for an unusable certificate."""
    if settings.c2pa == "off":
        return None
    return load_credentials(
        settings.data_dir, cert=settings.c2pa_cert, key=settings.c2pa_key, remote=settings.c2pa_signer
    )


def invisible_watermark(settings: Settings) -> InvisibleWatermark | None:
    """The pixel watermark from the settings; ``WatermarkError`` (startup stops) when its package is missing."""
    if settings.invisible_watermark == "off":
        return None
    return InvisibleWatermark(settings.invisible_watermark_payload, settings.invisible_watermark)


def build_state(settings: Settings, factories: dict[str, EngineFactory] | None = None) -> AppState:
    """Everything a request needs, built bottom-up: media, catalog, accounts, then the service over them."""
    make_private(settings.data_dir, create="directory")
    secret = server_secret(settings)
    signer = UrlSigner(secret, default_ttl=settings.url_ttl_seconds)
    store = media_store(settings)
    catalog = Catalog(settings.models, factories or default_factories(settings.data_dir))
    loader = ImageLoader(
        ImageDecoder(
            max_bytes=settings.max_upload_bytes,
            max_pixels=settings.max_image_pixels,
            max_aspect_ratio=settings.max_image_aspect_ratio,
        ),
        ImageFetcher(
            allow_private=settings.fetch_allow_private,
            max_bytes=settings.max_upload_bytes,
            timeout=settings.fetch_timeout,
            max_redirects=settings.fetch_max_redirects,
        ),
        local_media=OwnMediaLinks(signer, store, settings.public_url).read,
        decode_concurrency=settings.decode_concurrency,
    )
    accounts = Accounts.open(settings)
    metrics = Metrics()
    service = ImageService(
        catalog,
        MediaAccess(store, signer, direct_links=settings.s3_direct_links),
        loader,
        ServiceOptions(
            embed_metadata=settings.embed_metadata,
            request_timeout=settings.request_timeout,
            input_memory=settings.input_memory_mb * 2**20,
            credentials=content_credentials(settings),
            credentials_include_prompt=settings.c2pa_include_prompt,
            watermark=invisible_watermark(settings),
        ),
        gate=AccountsGate(accounts, catalog, metrics),
        residency=Residency(
            catalog,
            idle_seconds=settings.model_idle_unload_seconds,
            budget_bytes=settings.model_memory_budget_mb * 2**20,
        ),
        stages=metrics.observe_stages,
        cache=ResultCache(settings.result_cache_bytes, observe=metrics.observe_cache),
    )
    metrics.watch_queues(service.queues)
    return AppState(
        settings,
        catalog,
        store,
        signer,
        loader,
        service,
        started=int(time.time()),
        accounts=accounts,
        metrics=metrics,
        key_waits=KeyWaits(settings.idempotency_waiters_per_key, settings.idempotency_waiters_per_consumer),
        job_service=JobService(accounts, job_limits(settings)),
    )


def job_limits(settings: Settings) -> JobLimits:
    return JobLimits(
        ttl_seconds=settings.idempotency_ttl_hours * 3600,
        max_pending=settings.job_queue_per_consumer,
        max_attempts=settings.job_max_attempts,
    )


async def _prepare_models(state: AppState) -> None:
    """Build every engine before serving (off the event loop: building one may import torch and diffusers),
    so no request pays for it; weights still load on first use unless ``preload`` is set."""
    if not state.catalog.entries:
        log.warning("no models configured: every image request will fail with an unknown-model error")
    for entry in state.catalog.entries:
        try:
            await asyncio.to_thread(state.catalog.engine, entry)
        except Exception as exc:
            log.error("model '%s' cannot be served: %s", entry.id, exc)
        if entry.path is not None and not entry.path.exists():
            log.warning(
                "model '%s': weights not found at %s; requests for it will fail with model_not_available "
                "until they exist (the built-in model is rebuilt with `make train`)",
                entry.id,
                entry.path,
            )


def create_app(settings: Settings | None = None, *, factories: dict[str, EngineFactory] | None = None) -> FastAPI:
    settings = settings or Settings()
    traced = configure_tracing()  # OTEL_* variables; before the state, whose database and Redis clients it traces
    state = build_state(settings, factories)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await asyncio.to_thread(
            threads.configure,
            state.catalog.entries,
            processes=settings.worker_processes,
            override=settings.torch_threads,
        )
        await _prepare_models(state)
        if settings.preload:
            for entry in state.catalog.entries:
                await state.catalog.engine(entry).load()
        await state.accounts.describe_policy(loopback=settings.is_loopback_bind)
        await state.accounts.start(settings.data_dir)
        await state.accounts.recover()
        sweeper = asyncio.create_task(state.accounts.sweep_forever(), name="limner-reservation-sweeper")
        unloader = asyncio.create_task(state.service.residency.sweep_forever(), name="limner-model-unloader")
        state.runner = runner = job_runner(state)
        jobs_task = asyncio.create_task(runner.run_forever(), name="limner-job-runner")
        sender = webhook_sender(state)
        pinned = await state.accounts.db.call(sender.secrets.pin_all, state.accounts.db)
        if pinned:  # the first start after an upgrade: their secrets no longer follow the media signing key
            log.info("stored the webhook secrets of %d consumer(s), unchanged", pinned)
        webhooks_task = asyncio.create_task(sender.run_forever(settings.job_poll_seconds), name="limner-webhook-sender")
        log.info("limner %s ready with %d models", __version__, len(state.catalog.entries))
        try:
            yield
        finally:
            await runner.aclose()  # running jobs go back to the queue for the next start or another replica
            for task in (jobs_task, webhooks_task, sweeper, unloader):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await sender.aclose()
            await state.catalog.aclose()
            await state.loader.aclose()
            await state.store.aclose()
            await state.accounts.aclose()

    # FastAPI's own telemetry stays off: its server span would record query strings, and a media link's
    # ``signature`` is not among the parameters it redacts. limner's span (limner.http.tracing) never does.
    telemetry: TelemetryConfig = {"tracing": False, "metrics": False, "logs": False}
    app = FastAPI(
        title="limner", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None, telemetry=telemetry
    )
    app.state.limner = state
    app.add_middleware(CancelOnDisconnectMiddleware)
    app.add_middleware(SettleAfterResponse)
    guards.install(app, settings)
    app.add_middleware(MetricsMiddleware, metrics=state.metrics)
    app.add_middleware(RequestIdMiddleware)
    if traced:  # off: no middleware, no spans
        from limner.http.tracing import TracingMiddleware

        app.add_middleware(TracingMiddleware)  # outside the request id: the access line carries the trace id
    app.add_middleware(DrainUnreadBody)  # outermost: logs and metrics time the answer, not the drain

    ops = APIRouter(tags=["Ops"])

    @ops.get("/health")
    async def health() -> JSONResponse:
        """Liveness probe, open to all."""
        return JSONResponse({"ok": True})

    install_docs(app)
    app.include_router(ops)
    app.include_router(media_router)
    app.include_router(jobs.build_router(openai.render_error, openai.ERROR_RESPONSES))
    app.include_router(metrics_router)
    app.include_router(residency_router)
    app.include_router(accounts_admin.router)
    app.include_router(playground_router())
    _mount_dialects(app, settings)
    install_openapi(app)
    return app


def job_runner(state: AppState) -> JobRunner:
    """This replica's async job runner, answering each job through its dialect's renderer (registered here,
    so the service never imports a dialect): a job's answer is the one it would have had at once."""
    from limner.dialects import registry

    settings = state.settings
    answers = DialectAnswers(registry.renderers())
    return JobRunner(
        state.job_service, state.service, answers, workers=settings.job_workers, poll_seconds=settings.job_poll_seconds
    )


def _mount_dialects(app: FastAPI, settings: Settings) -> None:
    """Mount every dialect named in ``settings.mounts`` (dialect -> path prefix; '' is the root), as
    ``limner.dialects.registry`` lists them; limner's own jobs routes stay at the root.

    A path under ImagineArt's ``<prefix>/v1/`` that no route matches is a 404 ``unknown_request`` in its
    envelope (in the envelope both SDKs read when shared), and a wrong method on any dialect path a 405 in
    that dialect's envelope (``limner.dialects.unrouted``); other dialects' 404s are unchanged.
    """
    from limner.dialects import registry, unrouted

    for router, prefix in registry.routers(settings.mounts):
        app.include_router(router, prefix=prefix)
    unrouted.install(app, settings.mounts)

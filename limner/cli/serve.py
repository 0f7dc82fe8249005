"""``limner serve``: the HTTP server under uvicorn, in this process or in several worker processes.

One worker runs the app built here from the settings. Several are uvicorn's own process manager, which imports
the app in each worker: it gets :func:`worker_app` as a factory, and the command line's overrides travel to the
workers as ``LIMNER_*`` environment variables, so every worker reads the same settings (environment over
``limner.toml``) and configures its own logging.

``--tls-cert`` / ``--tls-key`` make uvicorn terminate TLS itself. ``X-Forwarded-For`` and
``X-Forwarded-Proto`` are believed only from ``LIMNER_TRUSTED_PROXIES`` (uvicorn's
``forwarded_allow_ips``), so a client cannot claim to have come over HTTPS.
"""

from __future__ import annotations

import gc
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from limner.settings import Settings, load_settings

if TYPE_CHECKING:
    from fastapi import FastAPI

UVICORN_OPTIONS: dict[str, Any] = {
    "log_config": None,  # limner's logging, configured per process
    "timeout_graceful_shutdown": 30,
    "proxy_headers": True,
    "access_log": False,  # limner logs each request itself, with its request id
    # An idle keep-alive connection stays open longer than clients and proxies keep theirs (httpx 5 s,
    # nginx 60 s), so a client never sends a request on a connection the server is just closing (a
    # request lost before it arrives; uvicorn's own default, 5 s, races httpx's).
    "timeout_keep_alive": 75,
}


def serve(
    host: Annotated[str | None, typer.Option(help="Address to bind (default from settings: 127.0.0.1)")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default 8000)")] = None,
    preload: Annotated[bool, typer.Option(help="Load every model before accepting requests")] = False,
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            help="Worker processes sharing the port. Each loads its own models; jobs, accounts and credits are "
            "shared through the database, rate limits only with redis_url set",
        ),
    ] = 1,
    tls_cert: Annotated[
        Path | None, typer.Option("--tls-cert", help="PEM certificate (chain): serve HTTPS on the port")
    ] = None,
    tls_key: Annotated[Path | None, typer.Option("--tls-key", help="PEM private key for --tls-cert")] = None,
) -> None:
    """Start the HTTP server: one process, or --workers N processes sharing the port."""
    import uvicorn

    given = {"host": host, "port": port, "tls_certfile": tls_cert, "tls_keyfile": tls_key}
    overrides: dict[str, Any] = {key: value for key, value in given.items() if value is not None}
    if preload:
        overrides["preload"] = True
    if workers > 1:
        overrides["worker_processes"] = workers  # each worker's share of the cores (the thread policy)
    settings = load_settings(**overrides)  # refuses unsafe settings here, before any worker starts
    _configure_logging(settings)
    address: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "forwarded_allow_ips": settings.trusted_proxies,
    }
    if settings.tls_certfile is not None:
        address |= {"ssl_certfile": str(settings.tls_certfile), "ssl_keyfile": str(settings.tls_keyfile)}
    from limner.http.wire import HttpProtocol

    options = UVICORN_OPTIONS | {"http": HttpProtocol}
    if workers == 1:
        from limner.app import create_app

        uvicorn.run(_frozen(create_app(settings)), **address, **options)
        return
    os.environ.update({f"LIMNER_{key.upper()}": str(value) for key, value in overrides.items()})
    uvicorn.run(f"{__name__}:worker_app", factory=True, workers=workers, **address, **options)


def worker_app() -> FastAPI:
    """The app of one worker process: settings from the environment and ``limner.toml``, as the parent read them."""
    from limner.app import create_app

    settings = Settings()
    _configure_logging(settings)
    return _frozen(create_app(settings))


def _frozen(app: FastAPI) -> FastAPI:
    """``app``, with everything made so far (modules, the app, its routes) moved out of the cyclic garbage
    collector's sight: it lives as long as the process, and a full collection that walks it on every few
    thousand requests was a visible share of a gateway's CPU and of its slowest answers."""
    gc.collect()
    gc.freeze()
    return app


def _configure_logging(settings: Settings) -> None:
    """limner's log lines; a worker runs this after uvicorn set up its loggers, so it repeats ``access_log``."""
    from limner.http.logging import configure_logging

    configure_logging(settings.log_level, settings.log_format)
    logging.getLogger("uvicorn.access").propagate = UVICORN_OPTIONS["access_log"]

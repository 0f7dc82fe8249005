"""``limner serve``: the HTTP server under uvicorn, in this process or in several worker processes.

One worker runs the app built here from the settings. Several are uvicorn's own process manager, which imports
the app in each worker: it gets :func:`worker_app` as a factory, and the command line's overrides travel to the
workers as ``LIMNER_*`` environment variables, so every worker reads the same settings (environment over
``limner.toml``) and configures its own logging.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Annotated, Any

import typer

from limner.settings import Settings

if TYPE_CHECKING:
    from fastapi import FastAPI

UVICORN_OPTIONS: dict[str, Any] = {
    "log_config": None,  # limner's logging, configured per process
    "timeout_graceful_shutdown": 30,
    "proxy_headers": True,
    "access_log": False,  # limner logs each request itself, with its request id
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
) -> None:
    """Start the HTTP server: one process, or --workers N processes sharing the port."""
    import uvicorn

    overrides: dict[str, Any] = {key: value for key, value in {"host": host, "port": port}.items() if value is not None}
    if preload:
        overrides["preload"] = True
    settings = Settings(**overrides)  # refuses unsafe settings here, before any worker starts
    _configure_logging(settings)
    address: dict[str, Any] = {"host": settings.host, "port": settings.port}
    if workers == 1:
        from limner.app import create_app

        uvicorn.run(create_app(settings), **address, **UVICORN_OPTIONS)
        return
    os.environ.update({f"LIMNER_{key.upper()}": str(value) for key, value in overrides.items()})
    uvicorn.run(f"{__name__}:worker_app", factory=True, workers=workers, **address, **UVICORN_OPTIONS)


def worker_app() -> FastAPI:
    """The app of one worker process: settings from the environment and ``limner.toml``, as the parent read them."""
    from limner.app import create_app

    settings = Settings()
    _configure_logging(settings)
    return create_app(settings)


def _configure_logging(settings: Settings) -> None:
    """limner's log lines; a worker runs this after uvicorn set up its loggers, so it repeats ``access_log``."""
    from limner.http.logging import configure_logging

    configure_logging(settings.log_level, settings.log_format)
    logging.getLogger("uvicorn.access").propagate = UVICORN_OPTIONS["access_log"]

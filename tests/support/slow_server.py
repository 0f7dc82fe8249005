"""A live app whose one model takes a minute per request, for tests about busy servers: they hold a
slot with a request, watch its job's state by id, and hang up to free it (never waiting it out)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
from fastapi import FastAPI

from limner.app import create_app
from limner.engines.catalog import ModelEntry
from limner.settings import Settings

SLOW = {"model": "slow", "prompt": "x", "response_format": "b64_json"}
"""An OpenAI request for the slow model."""


JobState = Callable[[str], str | None]


def slow_app(tmp_path: Path, *, max_concurrency: int = 1, max_queue: int = 0) -> tuple[FastAPI, JobState]:
    """The app, and the state of a request's job by its ``X-Request-Id`` (8+ characters; None before it opens)."""
    slow = ModelEntry(
        id="slow", engine="testpattern", options={"delay": 60.0}, max_concurrency=max_concurrency, max_queue=max_queue
    )
    app = create_app(Settings(data_dir=tmp_path, models=[slow], default_model="slow"))
    jobs = app.state.limner.service.jobs

    def state(request_id: str) -> str | None:
        job = jobs.get("local", request_id)
        return job.state if job is not None else None

    return app, state


async def post_slow(url: str, request_id: str | None = None) -> httpx.Response:
    """``SLOW`` on a connection of its own: cancelling the call hangs up, as a departing client does."""
    headers = {"X-Request-Id": request_id} if request_id else {}
    async with httpx.AsyncClient(timeout=60) as client:
        return await client.post(url + "/v1/images/generations", json=SLOW, headers=headers)

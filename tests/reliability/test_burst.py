"""A burst on loopback: 1,000 requests, 64 at a time, against a live server. None is lost, none is a 5xx,
and every 429 says when to come back."""

from __future__ import annotations

import asyncio
import base64
import io
import os
import re
from collections import Counter
from pathlib import Path

import httpx
from PIL import Image

from limner.app import create_app
from limner.cli.serve import UVICORN_OPTIONS
from limner.config.defaults import DIALECT_DEFAULT_ALIASES
from limner.engines.catalog import ModelEntry
from limner.settings import Settings
from tests.support.live_server import live_server

REQUESTS = int(os.environ.get("LIMNER_BURST_REQUESTS", "1000"))
CONCURRENCY = 64


async def burst(url: str) -> list[httpx.Response | BaseException]:
    gate = asyncio.Semaphore(CONCURRENCY)
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    body = {"prompt": "a cat", "size": "64x64", "response_format": "b64_json"}

    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:

        async def one(i: int) -> httpx.Response:
            async with gate:
                return await client.post("/v1/images/generations", json={**body, "seed": i})

        return await asyncio.gather(*(one(i) for i in range(REQUESTS)), return_exceptions=True)


def test_a_burst_loses_nothing_and_every_429_says_when_to_retry(tmp_path: Path) -> None:
    # One slot and a queue shorter than the concurrency, so the burst also meets full queues.
    model = ModelEntry(id="pattern", engine="testpattern", aliases=list(DIALECT_DEFAULT_ALIASES), max_queue=16)
    app = create_app(Settings(data_dir=tmp_path, models=[model], default_model="pattern"))
    with live_server(app, timeout_keep_alive=UVICORN_OPTIONS["timeout_keep_alive"]) as url:
        results = asyncio.run(burst(url))
    failures = [r for r in results if isinstance(r, BaseException)]
    assert failures == [], f"{len(failures)} requests got no answer: {failures[:3]}"
    responses = [r for r in results if isinstance(r, httpx.Response)]
    statuses = Counter(r.status_code for r in responses)
    assert set(statuses) <= {200, 429}, statuses
    assert statuses[200] > 0
    for response in responses:
        if response.status_code == 429:
            assert response.json()["error"]["code"] == "rate_limit_exceeded"
            assert re.fullmatch(r"[1-9][0-9]*", response.headers["retry-after"]), response.headers
        else:
            [item] = response.json()["data"]
            image = Image.open(io.BytesIO(base64.b64decode(item["b64_json"])))
            assert image.size == (64, 64)
    served = app.state.limner.metrics.render().decode()
    counted = sum(float(m) for m in re.findall(r'limner_http_requests_total\{[^}]*method="POST"[^}]*\} (\S+)', served))
    assert counted == REQUESTS, "the server counted every request it was sent"

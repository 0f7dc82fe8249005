"""A live server for the durable-jobs tests (``docs/jobs.md``): metered consumers with tokens, an engine
that counts its calls, a slow model that holds a worker, and readers of the ledger and usage rows.

    with durable_server(settings) as server:          # real HTTP on 127.0.0.1
        server.post("/v1/images/generations", token=server.alice, json=...)
        server.usage("alice"), server.balance("alice"), server.engine.requests

Every image of ``pattern`` costs one credit; ``slow`` takes ``SLOW_SECONDS`` (so a job stays running, or
queued behind it with ``job_workers=1``); ``broken`` fails every request with a 5xx engine error.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI
from PIL import Image
from sqlalchemy import select

from limner.accounts import credits, tokens
from limner.accounts.models import UsageRecord, to_micros
from limner.accounts.service import Accounts
from limner.app import create_app
from limner.config.defaults import DIALECT_DEFAULT_ALIASES
from limner.core.models import EngineRequest, GeneratedImage
from limner.engines.catalog import ModelEntry
from limner.settings import LOOPBACK_HOSTS, Settings
from tests.support.accounts import bearer
from tests.support.fakes import RecordingEngine, factories, raising
from tests.support.live_server import live_server
from tests.support.waiting import wait_until

PRICE = 1.0
SLOW_SECONDS = 30.0
"""Longer than any test waits for it: a slow job ends only when cancelled (or when the server stops)."""
START_BALANCE = 100.0


class ControlledEngine(RecordingEngine):
    """The test-pattern engine, counting its calls; it holds each call while ``gate`` is clear (so duplicates
    arrive while the first runs) and raises ``failure`` while one is set (a 5xx a retry may not get)."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.gate.set()
        self.failure: Exception | None = None

    async def generate(self, request: EngineRequest) -> list[GeneratedImage]:
        self.requests.append(request)
        while not self.gate.is_set():
            await asyncio.sleep(0.01)
        if self.failure is not None:
            raise self.failure
        return await super(RecordingEngine, self).generate(request)


def durable_models() -> list[ModelEntry]:
    return [
        ModelEntry(
            id="pattern",
            engine="recording",
            aliases=list(DIALECT_DEFAULT_ALIASES),
            max_queue=64,
            price_per_image=PRICE,
        ),
        ModelEntry(id="slow", engine="testpattern", options={"delay": SLOW_SECONDS}, price_per_image=PRICE),
        ModelEntry(id="broken", engine="broken", price_per_image=PRICE),
    ]


def base_settings(data_dir: Path) -> Settings:
    """The conftest's ``settings`` (for a module-wide server, which a function fixture cannot feed)."""
    return Settings(data_dir=data_dir, allowed_hosts=[*LOOPBACK_HOSTS, "testserver"])


def durable_settings(settings: Settings, **overrides: Any) -> Settings:
    """The conftest's settings with the durable catalog and a fast job runner and webhook sender."""
    values: dict[str, Any] = {
        "models": durable_models(),
        "default_model": "pattern",
        "job_poll_seconds": 0.05,
        "webhook_allow_private": True,
        "webhook_retry_seconds": 0.1,
        **overrides,
    }
    return settings.with_overrides(**values)


@dataclass
class Server:
    url: str
    app: FastAPI
    engine: ControlledEngine
    alice: str
    """Metered (``START_BALANCE`` credits)."""
    bob: str
    """Metered too: another consumer, for ownership and per-consumer keys."""
    usage_mark: int = 0
    """Usage rows up to this id belong to earlier tests (``reset``)."""
    prefix: str = ""
    """Of this test's idempotency keys (``key``): tests sharing the server never share a key."""

    reset_at: float = 0.0
    """Unix seconds of the last ``reset``: jobs created before it are earlier tests'."""

    def key(self, name: str) -> str:
        return self.prefix + name

    def token_for(self, consumer: str) -> str:
        """A token for ``consumer`` (made, metered with ``START_BALANCE``, on first use)."""
        db = self.app.state.limner.accounts.db
        token = tokens.create_token(db, consumer).token
        if credits.balance(db, consumer) is None:
            credits.grant(db, consumer, to_micros(START_BALANCE))
        return token

    def reset(self) -> None:
        """Between tests sharing this server: the engine as new, balances back at the start, usage forgotten."""
        self.prefix = uuid.uuid4().hex[:8] + "-"
        self.reset_at = time.time()
        self.engine.requests.clear()
        self.engine.gate.set()
        self.engine.failure = None
        for name in ("alice", "bob"):
            self.grant(name, START_BALANCE - self.balance(name))
        accounts = self.app.state.limner.accounts
        accounts.flush_usage()
        with accounts.db.read() as session:
            self.usage_mark = max(session.scalars(select(UsageRecord.id)).all(), default=0)

    def request(
        self, method: str, path: str, *, token: str, headers: dict[str, str] | None = None, **kw: Any
    ) -> httpx.Response:
        return httpx.request(method, self.url + path, headers={**bearer(token), **(headers or {})}, timeout=60, **kw)

    def post(self, path: str, *, token: str, headers: dict[str, str] | None = None, **kw: Any) -> httpx.Response:
        return self.request("POST", path, token=token, headers=headers, **kw)

    def get(self, path: str, *, token: str, headers: dict[str, str] | None = None, **kw: Any) -> httpx.Response:
        return self.request("GET", path, token=token, headers=headers, **kw)

    def usage(self, consumer: str) -> list[UsageRecord]:
        """The consumer's usage rows, after writing those the server still batches."""
        accounts = self.app.state.limner.accounts
        accounts.flush_usage()
        with accounts.db.read() as session:
            query = (
                select(UsageRecord)
                .where(UsageRecord.consumer == consumer, UsageRecord.id > self.usage_mark)
                .order_by(UsageRecord.id)
            )
            return list(session.scalars(query))

    def balance(self, consumer: str) -> float:
        micros = credits.balance(self.app.state.limner.accounts.db, consumer)
        assert micros is not None, f"{consumer} is metered"
        return micros / to_micros(1)

    def grant(self, consumer: str, amount: float) -> None:
        if amount:
            credits.grant(self.app.state.limner.accounts.db, consumer, to_micros(amount))

    def job(self, job_id: str, token: str) -> dict[str, Any]:
        response = self.get(f"/v1/jobs/{job_id}", token=token)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def wait_job(self, job_id: str, token: str, *statuses: str) -> dict[str, Any]:
        """Poll the job until its status is one of ``statuses`` (default: any finished one)."""
        wanted = statuses or ("done", "failed", "cancelled")
        seen: dict[str, Any] = {}

        def reached() -> bool:
            seen.update(self.job(job_id, token))
            return seen["status"] in wanted

        wait_until(reached, what=f"job {job_id} reaching {'/'.join(wanted)}")
        return seen


def _provision(settings: Settings) -> tuple[str, str]:
    accounts = Accounts.open(settings)
    try:
        issued = []
        for name in ("alice", "bob"):
            issued.append(tokens.create_token(accounts.db, name).token)
            credits.grant(accounts.db, name, to_micros(START_BALANCE))
        return issued[0], issued[1]
    finally:
        accounts.db.dispose()


@contextmanager
def durable_server(settings: Settings) -> Iterator[Server]:
    """A live app with ``durable_settings``' catalog (see the module doc) and two metered consumers."""
    engine = ControlledEngine()
    alice, bob = _provision(settings)
    app = create_app(
        settings,
        factories=factories(recording=lambda entry: engine, broken=raising(RuntimeError("the GPU fell over"))),
    )
    with live_server(app) as url:
        yield Server(url, app, engine, alice, bob)


# --- reading answers ------------------------------------------------------------------------------


def decode(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def png(color: tuple[int, int, int], size: tuple[int, int] = (64, 64)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, "PNG")
    return buffer.getvalue()


def b64_image(data: str) -> Image.Image:
    return decode(base64.b64decode(data))


def sse_events(text: str) -> list[tuple[str, str]]:
    """(event, data) of each server-sent event in ``text`` (comments and empty events skipped)."""
    events = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        name, data = "message", []
        for line in block.split("\n"):
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].lstrip())
        if data:
            events.append((name, "\n".join(data)))
    return events


def sse_json(text: str) -> list[tuple[str, Any]]:
    return [(name, json.loads(data)) for name, data in sse_events(text)]

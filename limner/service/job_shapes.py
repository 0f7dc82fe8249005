"""A durable job as the rest of limner sees it, without the database: its view, its kept request and
answer, its progress. ``limner.service.job_store`` reads and writes them; ``limner.http`` only reads them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

JobStatus = Literal["queued", "running", "done", "failed", "cancelled"]
FINISHED: frozenset[str] = frozenset({"done", "failed", "cancelled"})


@dataclass(frozen=True)
class StoredRequest:
    """A request as its job keeps it: where it came (method, path, query) and, for an async job, what runs
    (its ``ImageRequest`` and its dialect's ``Answer``, ``limner.service.job_requests``); no header, no
    credential."""

    method: str
    path: str
    query: str
    request: bytes = b""
    answer: str = ""


@dataclass(frozen=True)
class StoredResponse:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    @property
    def content_type(self) -> str:
        return next((value for name, value in self.headers if name.lower() == "content-type"), "")


@dataclass(frozen=True)
class JobView:
    """A job as its owner sees it (no request body)."""

    id: str
    consumer: str
    token_id: int | None
    idempotency_key: str | None
    fingerprint: str
    asynchronous: bool
    status: str
    model: str | None
    attempts: int
    instance_id: str | None
    cancel_requested: bool
    step: int
    total_steps: int | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    response: StoredResponse | None
    error_code: str | None
    error_message: str | None
    webhook_url: str | None
    queue_position: int | None = None

    @property
    def finished(self) -> bool:
        return self.status in FINISHED


@dataclass(frozen=True)
class Opened:
    """What ``open_job`` found: ``new`` (this request runs), ``existing`` (same key, same request: replay or
    wait for ``job``), or ``reused`` (same key, another request)."""

    outcome: Literal["new", "existing", "reused"]
    job: JobView


@dataclass(frozen=True)
class Progress:
    model: str | None
    step: int
    total_steps: int | None

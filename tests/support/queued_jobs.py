"""A queued async job put straight into the job store, for tests of what happens to jobs (cancelling them)."""

from __future__ import annotations

from limner.accounts.db import Database
from limner.service import job_store
from limner.service.job_store import StoredRequest

REQUEST = StoredRequest("POST", "/v1/images/generations", "", b"{}", "{}")


def queue_job(db: Database, consumer: str, token_id: int | None) -> str:
    """The id of a new queued job of ``consumer``, submitted with ``token_id``."""
    opened = job_store.open_job(
        db,
        consumer=consumer,
        token_id=token_id,
        key=None,
        fingerprint="0" * 64,
        request=REQUEST,
        asynchronous=True,
        ttl_seconds=3600,
        instance_id=None,
    )
    return opened.job.id

"""Cancelling async jobs: by their owner (``DELETE /v1/jobs/{id}``), by an operator (``/admin``, ``limner jobs
cancel``), and when the token that submitted them is revoked.

Every path ends in ``job_store.stop``: a queued job ends at once, with its webhook event, and never runs
(it holds no credits: a job reserves when it starts); a running one is flagged, and the replica running it
stops it within ``job_poll_seconds``, refunding its hold like a client that left. Running jobs are cancelled
too, as the owner's cancel does: a revoked token must not go on spending the consumer's credits, and
an operator stopping a consumer's work means all of it. Synchronous requests kept for an
``Idempotency-Key`` are live connections, not jobs: they are left to finish.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select

from limner.accounts import tokens
from limner.accounts.db import Database
from limner.accounts.models import JobRecord
from limner.accounts.tokens import TokenInfo
from limner.core.errors import InvalidRequest
from limner.service.job_store import OPERATOR, OWNER, REVOKED, CancelReason, JobView, OnFinished, stop, view_of

MAX_JOB_IDS = 100
"""Job ids one operator request may name (a consumer's whole queue is cancelled by its name instead)."""


def cancel(db: Database, consumer: str, job_id: str, *, on_finished: OnFinished | None = None) -> JobView | None:
    """The owner cancels its job (None: not the consumer's, the same answer as for no job)."""
    with db.write() as session:
        row = session.get(JobRecord, job_id)
        if row is None or row.consumer != consumer:
            return None
        if row.asynchronous:
            stop(session, row, OWNER, on_finished)
        return view_of(session, row)


def cancel_jobs(
    db: Database,
    *,
    reason: CancelReason = OPERATOR,
    consumer: str | None = None,
    token_id: int | None = None,
    job_ids: Sequence[str] = (),
    on_finished: OnFinished | None = None,
) -> list[JobView]:
    """Cancel the queued and running async jobs that match every filter given (a consumer's, a token's, or
    these ids), oldest first; each as it now stands (queued ones cancelled, running ones flagged)."""
    if consumer is None and token_id is None and not job_ids:
        raise InvalidRequest("Name the jobs to cancel: a consumer, a token or job ids.")
    if len(job_ids) > MAX_JOB_IDS:
        raise InvalidRequest(f"At most {MAX_JOB_IDS} job ids at once; cancel a consumer's jobs by its name.")
    query = select(JobRecord).where(JobRecord.asynchronous, JobRecord.status.in_(["queued", "running"]))
    if consumer is not None:
        query = query.where(JobRecord.consumer == consumer)
    if token_id is not None:
        query = query.where(JobRecord.token_id == token_id)
    if job_ids:
        query = query.where(JobRecord.id.in_(list(job_ids)))
    with db.write() as session:
        rows = session.scalars(query.order_by(JobRecord.created_at, JobRecord.id)).all()
        for row in rows:
            stop(session, row, reason, on_finished)
        return [view_of(session, row, with_response=False) for row in rows]


def revoke_token(db: Database, ident: str, *, on_finished: OnFinished | None = None) -> tuple[TokenInfo, list[JobView]]:
    """Revoke a token and cancel the async jobs it submitted that have not finished. A job another replica
    queues in the second before it notices the revocation is cancelled when claimed (``job_store.claim``)."""
    info = tokens.revoke_token(db, ident)
    return info, cancel_jobs(db, reason=REVOKED, token_id=info.id, on_finished=on_finished)

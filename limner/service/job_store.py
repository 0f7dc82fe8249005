"""Durable jobs and idempotency keys: the ``jobs`` table, read and written by every replica.

One row per request that must outlive its connection::

    async job (Prefer: respond-async)     queued ──claim──> running ──> done | failed | cancelled
                                                  <─requeue─  (its server died: attempts < max)
    Idempotency-Key, synchronous                    running ──> done (the response kept for replays)
                                                       └────> deleted (a retryable failure, or its server died)

A row is created before the client hears anything (the 202, or the first byte of a kept response),
so an accepted job is never lost: a ``running`` row whose instance is dead is queued again, or failed
once it was interrupted ``max_attempts`` times (``limner.service.job_recovery``). Ownership is the
instance id of the process running it (``limner.accounts.leases``), so only that process stores its
result. A job whose token was revoked never starts: ``claim`` cancels it instead (``stop``, the one way
to cancel a job, which ``limner.service.job_cancel`` uses for owners, operators and revocations).
Every function here is blocking; the server calls them through ``Database.call``.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from limner.accounts.db import Database
from limner.accounts.models import ApiToken, JobRecord, utcnow
from limner.core.errors import InvalidRequest, QueueFull
from limner.service.job_shapes import (
    FINISHED,
    JobStatus,
    JobView,
    Opened,
    Progress,
    StoredRequest,
    StoredResponse,
)

PENDING_RETRY_SECONDS = 5.0
OnFinished = Callable[[Session, "JobView"], None]
"""Called inside the transaction that ends an async job (the webhook event is queued there)."""


@dataclass(frozen=True)
class CancelReason:
    """Why a job was cancelled, as its ``error_message`` says it: before it started, or while it ran."""

    queued: str
    running: str


OWNER = CancelReason("Cancelled by its owner before it started.", "Cancelled by its owner.")
OPERATOR = CancelReason("Cancelled by an administrator before it started.", "Cancelled by an administrator.")
REVOKED = CancelReason(
    "Cancelled before it started: the token that submitted it was revoked.",
    "Cancelled: the token that submitted it was revoked.",
)


def new_job_id() -> str:
    return "job_" + secrets.token_hex(12)


def view_of(session: Session, row: JobRecord, *, with_response: bool = True) -> JobView:
    """The row as its owner sees it (``with_response``: with the kept response), inside ``session``."""
    response = None
    if with_response and row.response_status is not None:
        headers = [(str(name), str(value)) for name, value in json.loads(row.response_headers or "[]")]
        response = StoredResponse(row.response_status, headers, row.response_body or b"")
    position = None
    if row.status == "queued" and row.asynchronous:
        ahead = session.scalar(
            select(func.count())
            .select_from(JobRecord)
            .where(JobRecord.status == "queued", JobRecord.asynchronous, JobRecord.created_at < row.created_at)
        )
        position = int(ahead or 0) + 1
    return JobView(
        id=row.id,
        consumer=row.consumer,
        token_id=row.token_id,
        idempotency_key=row.idempotency_key,
        fingerprint=row.fingerprint,
        asynchronous=row.asynchronous,
        status=row.status,
        model=row.model,
        attempts=row.attempts,
        instance_id=row.instance_id,
        cancel_requested=row.cancel_requested,
        step=row.step,
        total_steps=row.total_steps,
        created_at=row.created_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        response=response,
        error_code=row.error_code,
        error_message=row.error_message,
        webhook_url=row.webhook_url,
        queue_position=position,
    )


# --- opening -------------------------------------------------------------------------------------


def open_job(
    db: Database,
    *,
    consumer: str,
    token_id: int | None,
    key: str | None,
    fingerprint: str,
    request: StoredRequest,
    asynchronous: bool,
    ttl_seconds: float,
    instance_id: str | None,
    webhook_url: str | None = None,
    max_pending: int | None = None,
) -> Opened:
    """Insert the row for a new request, or return the one that holds its idempotency key.

    A synchronous row starts ``running`` on ``instance_id`` (the caller runs it now, and keeps no body);
    an async one starts ``queued`` with its request, for any replica to claim, unless the consumer already
    has ``max_pending`` async jobs waiting or running (``QueueFull``: a 429). An expired key is
    forgotten first. Two replicas racing on one key: the loser's insert fails and it reads the winner's."""
    for _ in range(3):
        now = utcnow()
        try:
            with db.write() as session:
                if key is not None:
                    row = session.scalars(
                        select(JobRecord).where(JobRecord.consumer == consumer, JobRecord.idempotency_key == key)
                    ).first()
                    if row is not None and row.expires_at <= now and row.status in FINISHED:
                        session.delete(row)
                        session.flush()
                    elif row is not None:
                        same = row.fingerprint == fingerprint
                        return Opened("existing" if same else "reused", view_of(session, row))
                if asynchronous and max_pending is not None:
                    pending = session.scalar(
                        select(func.count())
                        .select_from(JobRecord)
                        .where(
                            JobRecord.consumer == consumer,
                            JobRecord.asynchronous,
                            JobRecord.status.in_(["queued", "running"]),
                        )
                    )
                    if int(pending or 0) >= max_pending:
                        raise QueueFull(
                            f"You have {max_pending} async jobs queued or running, the most one consumer may; "
                            "submit more when some have finished.",
                            retry_after=PENDING_RETRY_SECONDS,
                        )
                row = JobRecord(
                    id=new_job_id(),
                    consumer=consumer,
                    token_id=token_id,
                    idempotency_key=key,
                    fingerprint=fingerprint,
                    asynchronous=asynchronous,
                    method=request.method,
                    path=request.path,
                    query=request.query,
                    body=request.request if asynchronous else None,
                    answer=request.answer if asynchronous else None,
                    status="queued" if asynchronous else "running",
                    attempts=0 if asynchronous else 1,
                    instance_id=None if asynchronous else instance_id,
                    cancel_requested=False,
                    step=0,
                    created_at=now,
                    started_at=None if asynchronous else now,
                    expires_at=now + timedelta(seconds=ttl_seconds),
                    webhook_url=webhook_url,
                )
                session.add(row)
                session.flush()
                return Opened("new", view_of(session, row))
        except IntegrityError:
            continue  # another replica inserted the same key between our read and our insert: read it
    raise RuntimeError("could not open a job row: the idempotency key kept changing hands")


def get(db: Database, consumer: str, job_id: str) -> JobView | None:
    """The consumer's job ``job_id`` (None for anyone else's: the same answer as for no job)."""
    with db.read() as session:
        row = session.get(JobRecord, job_id)
        if row is None or row.consumer != consumer:
            return None
        return view_of(session, row)


def find(db: Database, job_id: str) -> JobView | None:
    with db.read() as session:
        row = session.get(JobRecord, job_id)
        return None if row is None else view_of(session, row)


def listing(
    db: Database, consumer: str, *, statuses: Sequence[str], limit: int, after: str | None
) -> tuple[list[JobView], bool]:
    """The consumer's async jobs, newest first, ``limit`` of them after the job ``after``; and whether more exist."""
    with db.read() as session:
        query = select(JobRecord).where(JobRecord.consumer == consumer, JobRecord.asynchronous)
        if statuses:
            query = query.where(JobRecord.status.in_(list(statuses)))
        if after is not None:
            anchor = session.get(JobRecord, after)
            if anchor is None or anchor.consumer != consumer or not anchor.asynchronous:
                raise InvalidRequest(
                    f"Unknown job id '{after[:80]}' in 'after': pass the last id of the previous page.", param="after"
                )
            query = query.where(
                (JobRecord.created_at < anchor.created_at)
                | ((JobRecord.created_at == anchor.created_at) & (JobRecord.id < anchor.id))
            )
        rows = session.scalars(query.order_by(JobRecord.created_at.desc(), JobRecord.id.desc()).limit(limit + 1)).all()
        return [view_of(session, row, with_response=False) for row in rows[:limit]], len(rows) > limit


def request_of(db: Database, job_id: str) -> StoredRequest | None:
    with db.read() as session:
        row = session.get(JobRecord, job_id)
        if row is None or row.body is None:
            return None
        return StoredRequest(row.method, row.path, row.query, row.body, row.answer or "")


# --- running -------------------------------------------------------------------------------------


def claim(db: Database, instance_id: str, limit: int, *, on_finished: OnFinished | None = None) -> list[JobView]:
    """Take up to ``limit`` queued async jobs, oldest first, for ``instance_id`` (a conditional update per
    job, so two replicas never take the same one). A job whose token was revoked meanwhile is cancelled
    instead: it was accepted for a caller who may no longer spend the consumer's credits (a replica that
    had not yet noticed the revocation may even have queued it after the revocation's own sweep)."""
    if limit <= 0:
        return []
    taken: list[JobView] = []
    with db.read() as session:
        candidates = session.execute(
            select(JobRecord.id, ApiToken.revoked_at)
            .outerjoin(ApiToken, ApiToken.id == JobRecord.token_id)
            .where(JobRecord.status == "queued", JobRecord.asynchronous)
            .order_by(JobRecord.created_at, JobRecord.id)
            .limit(limit)
        ).all()
    for job_id, revoked_at in candidates:
        if revoked_at is not None:
            with db.write() as session:
                row = session.get(JobRecord, job_id)
                if row is not None:
                    stop(session, row, REVOKED, on_finished)
            continue
        with db.write() as session:
            moved = session.execute(
                update(JobRecord)
                .where(JobRecord.id == job_id, JobRecord.status == "queued")
                .values(
                    status="running",
                    instance_id=instance_id,
                    attempts=JobRecord.attempts + 1,
                    started_at=utcnow(),
                    step=0,
                )
                .execution_options(synchronize_session=False)
            )
            if moved.rowcount == 1:  # type: ignore[attr-defined]
                row = session.get(JobRecord, job_id)
                if row is not None:
                    taken.append(view_of(session, row))
    return taken


def report(db: Database, instance_id: str, progress: dict[str, Progress]) -> set[str]:
    """Record the progress of this instance's running jobs; return those whose owner asked to cancel."""
    if not progress:
        return set()  # nothing runs here: no write transaction every poll
    with db.write() as session:
        for job_id, item in progress.items():
            session.execute(
                update(JobRecord)
                .where(JobRecord.id == job_id, JobRecord.instance_id == instance_id, JobRecord.status == "running")
                .values(model=item.model, step=item.step, total_steps=item.total_steps)
                .execution_options(synchronize_session=False)
            )
        cancelled = session.scalars(
            select(JobRecord.id).where(JobRecord.id.in_(list(progress)), JobRecord.cancel_requested)
        ).all()
        return set(cancelled)


def complete(
    db: Database,
    job_id: str,
    *,
    instance_id: str | None,
    status: JobStatus,
    response: StoredResponse | None,
    error_code: str | None,
    error_message: str | None,
    model: str | None,
    ttl_seconds: float,
    on_finished: OnFinished | None = None,
    charge: Callable[[Session], None] | None = None,
) -> bool:
    """End a job this instance runs, keeping its response; False if it is not this instance's any more
    (declared dead and taken over: the other run's result stands). ``charge`` commits the request's
    credits in the same transaction: a kept response is never left uncharged by a crash right after."""
    now = utcnow()
    with db.write() as session:
        row = session.get(JobRecord, job_id)
        if row is None or row.status != "running" or row.instance_id != instance_id:
            return False
        row.status = status
        row.finished_at = now
        row.expires_at = now + timedelta(seconds=ttl_seconds)
        row.body, row.answer = None, None
        row.error_code = error_code
        if error_message is not None or status != "cancelled":
            row.error_message = error_message  # a cancelled run keeps the reason its canceller wrote (``stop``)
        if model is not None:
            row.model = model
        if status == "done" and row.total_steps:
            row.step = row.total_steps
        if response is not None:
            row.response_status = response.status
            row.response_headers = json.dumps(response.headers)
            row.response_body = response.body
        session.flush()
        if charge is not None:
            charge(session)
        if on_finished is not None and row.asynchronous:
            on_finished(session, view_of(session, row))
        return True


def forget(db: Database, job_id: str) -> None:
    """Drop a synchronous key's row: its request failed in a way a retry may not (a 429, a 5xx, a 499)."""
    with db.write() as session:
        session.execute(delete(JobRecord).where(JobRecord.id == job_id, JobRecord.asynchronous.is_(False)))


def stop(session: Session, row: JobRecord, reason: CancelReason, on_finished: OnFinished | None) -> None:
    """Cancel one async job inside the caller's transaction: a queued one ends now (it holds no credits yet:
    a job reserves when it starts), a running one is flagged for its runner, which stops it like a client
    that left (its hold refunded) on whichever replica runs it. A finished job is left as it is."""
    if row.status == "queued":
        row.status, row.finished_at, row.body, row.answer = "cancelled", utcnow(), None, None
        row.error_code, row.error_message = "cancelled", reason.queued
        session.flush()
        if on_finished is not None:
            on_finished(session, view_of(session, row))
    elif row.status == "running" and not row.cancel_requested:
        row.cancel_requested = True
        row.error_message = reason.running
    session.flush()

"""Jobs whose server is gone, and jobs past their time: the job runner's sweeps (``limner.service.job_runner``).

A ``running`` async job whose instance died is queued again, or failed once it was interrupted
``max_attempts`` times (nothing charged: its hold is refunded by the accounts' own recovery); a flagged
one ends cancelled. A synchronous key whose server died is dropped, so the client's retry runs afresh.
A clean stop gives its jobs back (``requeue``) without counting an attempt. Blocking, like ``job_store``.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import case, delete, select, update

from limner.accounts.db import Database
from limner.accounts.models import Instance, JobRecord, utcnow
from limner.service.job_store import FINISHED, OWNER, OnFinished, view_of


@dataclass(frozen=True)
class Recovered:
    requeued: list[str]
    failed: list[str]
    dropped_keys: int


def recover(
    db: Database, dead_instances: Collection[str], *, max_attempts: int, on_finished: OnFinished | None = None
) -> Recovered:
    """Jobs left running by instances that are gone: async ones queued again (or failed after
    ``max_attempts`` runs), synchronous keys dropped (their client lost its connection with the server;
    a retry runs afresh). Their credit holds are refunded by the accounts' own recovery.

    Gone means listed in ``dead_instances`` (``leases.dead``) or without an ``instances`` row (forgotten
    once its holds were refunded), checked in this very statement: a list of live instances read
    earlier would miss a replica that registered since and already claimed a job, and take that job
    from under it."""
    requeued: list[str] = []
    failed: list[str] = []
    now = utcnow()
    registered = select(Instance.id).where(Instance.id == JobRecord.instance_id).exists()
    with db.write() as session:
        orphans = session.scalars(
            select(JobRecord).where(
                JobRecord.status == "running",
                JobRecord.instance_id.is_not(None),
                JobRecord.instance_id.in_(list(dead_instances)) | ~registered,
            )
        ).all()
        dropped = 0
        for row in orphans:
            if not row.asynchronous:
                session.delete(row)
                dropped += 1
            elif row.cancel_requested:
                row.status, row.finished_at, row.instance_id = "cancelled", now, None
                reason = (row.error_message or OWNER.running).removesuffix(".")
                row.error_code, row.error_message = "cancelled", f"{reason}; its server stopped."
                row.body, row.answer = None, None
                failed.append(row.id)
            elif row.attempts >= max_attempts:
                row.status, row.finished_at, row.instance_id = "failed", now, None
                row.error_code = "interrupted"
                row.error_message = (
                    f"The server running this job stopped {row.attempts} time(s); it was not retried again "
                    "and nothing was charged."
                )
                row.body, row.answer = None, None
                failed.append(row.id)
            else:
                row.status, row.instance_id, row.step = "queued", None, 0
                row.error_message = f"Attempt {row.attempts} was interrupted (its server stopped); queued again."
                requeued.append(row.id)
        session.flush()
        if on_finished is not None:
            for row in orphans:
                if row.id in failed:
                    on_finished(session, view_of(session, row))
    return Recovered(requeued, failed, dropped)


def purge_expired(db: Database, now: datetime | None = None) -> int:
    """Delete finished jobs and kept responses past their expiry (their webhook records go with them)."""
    with db.write() as session:
        gone = session.execute(
            delete(JobRecord).where(JobRecord.expires_at <= (now or utcnow()), JobRecord.status.in_(list(FINISHED)))
        )
        return int(gone.rowcount or 0)  # type: ignore[attr-defined]


def requeue(db: Database, job_ids: list[str], instance_id: str | None) -> None:
    """Give back jobs this instance stopped running because it is shutting down: queued again, and the
    interrupted run does not count as an attempt."""
    with db.write() as session:
        session.execute(
            update(JobRecord)
            .where(JobRecord.id.in_(job_ids), JobRecord.status == "running", JobRecord.instance_id == instance_id)
            .values(
                status="queued",
                instance_id=None,
                step=0,
                attempts=case((JobRecord.attempts > 0, JobRecord.attempts - 1), else_=0),
            )
            .execution_options(synchronize_session=False)
        )

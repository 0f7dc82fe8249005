"""``JobService``: durable jobs and idempotency keys, as the HTTP layer and the runner use them.

Every read and write of the ``jobs`` table goes through here (``limner.service.job_store`` holds the SQL,
``job_cancel`` and ``job_recovery`` the cancelling and the recovery), run off the event loop by the
accounts' ``Database.call``. Ending an async job queues its webhook event in the same transaction
(``limner.service.webhooks.queue_webhook``), whoever ends it: the runner, its owner, an operator, a
revocation. ``limner.http`` imports this module, never the SQL behind it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from limner.accounts import leases
from limner.accounts.db import Database
from limner.accounts.service import Accounts
from limner.accounts.tokens import TokenInfo
from limner.service import job_cancel, job_recovery, job_store, webhooks
from limner.service.job_shapes import JobStatus, JobView, Opened, Progress, StoredRequest, StoredResponse
from limner.service.webhooks import queue_webhook

Charge = Callable[[Session], None]
"""Commits a request's credits inside the transaction that keeps its result (``Delivery.settle_within``)."""


@dataclass(frozen=True)
class JobLimits:
    """How long kept answers live, and how many async jobs and attempts a job may have."""

    ttl_seconds: float
    """A kept answer (and its idempotency key) lives this long after it finished."""
    max_pending: int | None = None
    """Async jobs one consumer may have queued or running at once (``QueueFull`` past it)."""
    max_attempts: int = 3
    """Runs an async job may be interrupted by its server's death before it fails."""


class JobService:
    """The jobs table for this replica: open, keep, forget, read, list, cancel; claim, report, end, recover."""

    def __init__(self, accounts: Accounts, limits: JobLimits) -> None:
        self.accounts = accounts
        self.limits = limits

    @property
    def db(self) -> Database:
        return self.accounts.db

    @property
    def instance_id(self) -> str | None:
        """This process's lease id: the owner of the jobs it runs."""
        return self.accounts.instance_id

    # --- requests: open, keep, forget ----------------------------------------------------------------

    async def open(
        self,
        *,
        consumer: str,
        token_id: int | None,
        key: str | None,
        fingerprint: str,
        request: StoredRequest,
        asynchronous: bool,
        webhook_url: str | None,
    ) -> Opened:
        """The row for a new request (``new``), or the one that holds its idempotency key (see ``job_store``)."""
        return await self.db.call(
            job_store.open_job,
            self.db,
            consumer=consumer,
            token_id=token_id,
            key=key,
            fingerprint=fingerprint,
            request=request,
            asynchronous=asynchronous,
            ttl_seconds=self.limits.ttl_seconds,
            instance_id=self.instance_id,
            webhook_url=webhook_url,
            max_pending=self.limits.max_pending,
        )

    async def keep(self, job: JobView, response: StoredResponse, charge: Charge | None) -> None:
        """Keep a synchronous request's answer for replays, charged in the same transaction."""
        await self.db.call(
            job_store.complete,
            self.db,
            job.id,
            instance_id=job.instance_id,
            status="done" if response.status < 400 else "failed",
            response=response,
            error_code=None,
            error_message=None,
            model=None,
            ttl_seconds=self.limits.ttl_seconds,
            charge=charge,
        )

    async def forget(self, job_id: str) -> None:
        """Free a synchronous request's key: its answer is not worth replaying (a retry runs again)."""
        await self.db.call(job_store.forget, self.db, job_id)

    # --- reading -------------------------------------------------------------------------------------

    async def find(self, job_id: str) -> JobView | None:
        """Any job by id, whoever owns it (for its own request, its runner, an operator)."""
        return await self.db.call(job_store.find, self.db, job_id)

    async def get(self, consumer: str, job_id: str) -> JobView | None:
        """The consumer's job ``job_id`` (None for anyone else's)."""
        return await self.db.call(job_store.get, self.db, consumer, job_id)

    async def listing(
        self, consumer: str, *, statuses: Sequence[str], limit: int, after: str | None
    ) -> tuple[list[JobView], bool]:
        """The consumer's async jobs, newest first, and whether more exist."""
        return await self.db.call(job_store.listing, self.db, consumer, statuses=statuses, limit=limit, after=after)

    async def deliveries(self, job_id: str) -> tuple[str | None, list[dict[str, Any]]]:
        """Where the job's webhook goes, and its deliveries so far."""
        return await self.db.call(webhooks.job_deliveries, self.db, job_id)

    # --- cancelling ----------------------------------------------------------------------------------

    async def cancel(self, consumer: str, job_id: str) -> JobView | None:
        """Its owner cancels an async job (None: not the consumer's)."""
        return await self.db.call(job_cancel.cancel, self.db, consumer, job_id, on_finished=queue_webhook)

    async def cancel_jobs(self, *, consumer: str | None = None, job_ids: Sequence[str] = ()) -> list[JobView]:
        """An operator cancels a consumer's unfinished async jobs, or these."""
        return await self.db.call(
            job_cancel.cancel_jobs, self.db, consumer=consumer, job_ids=job_ids, on_finished=queue_webhook
        )

    async def revoke_token(self, ident: str) -> tuple[TokenInfo, list[JobView]]:
        """Revoke a token and cancel the unfinished async jobs it submitted."""
        return await self.db.call(job_cancel.revoke_token, self.db, ident, on_finished=queue_webhook)

    # --- running (``limner.service.job_runner``) ---------------------------------------------------------

    async def report(self, progress: dict[str, Progress]) -> set[str]:
        """Record the progress of this replica's running jobs; those whose cancellation was asked."""
        if self.instance_id is None:
            return set()
        return await self.db.call(job_store.report, self.db, self.instance_id, progress)

    async def claim(self, limit: int) -> list[JobView]:
        """Take up to ``limit`` queued async jobs for this replica."""
        if self.instance_id is None:
            return []
        return await self.db.call(job_store.claim, self.db, self.instance_id, limit, on_finished=queue_webhook)

    async def request_of(self, job_id: str) -> StoredRequest | None:
        return await self.db.call(job_store.request_of, self.db, job_id)

    async def end(
        self,
        job: JobView,
        status: JobStatus,
        response: StoredResponse | None,
        *,
        error_code: str | None,
        error_message: str | None,
        model: str | None,
        charge: Charge | None,
    ) -> bool:
        """End an async job this replica runs, its result and its charge in one transaction (and its webhook
        event queued); False when it is not this replica's any more (taken over: the other run's stands)."""
        return bool(
            await self.db.call(
                job_store.complete,
                self.db,
                job.id,
                instance_id=self.instance_id,
                status=status,
                response=response,
                error_code=error_code,
                error_message=error_message,
                model=model,
                ttl_seconds=self.limits.ttl_seconds,
                on_finished=queue_webhook,
                charge=charge,
            )
        )

    async def recover(self) -> job_recovery.Recovered:
        """Queue again (or fail) the jobs of dead replicas, after refunding their holds."""
        await self.accounts.recover()
        dead = await self.db.call(leases.dead, self.db, self.accounts.options.lease_seconds, own=self.instance_id)
        return await self.db.call(
            job_recovery.recover, self.db, dead, max_attempts=self.limits.max_attempts, on_finished=queue_webhook
        )

    async def purge_expired(self) -> int:
        """Drop finished jobs past their expiry."""
        return await self.db.call(job_recovery.purge_expired, self.db)

    async def requeue(self, job_ids: list[str]) -> None:
        """Queue this replica's running jobs again (it stops: not their fault, not an attempt)."""
        if job_ids:
            await self.db.call(job_recovery.requeue, self.db, job_ids, self.instance_id)

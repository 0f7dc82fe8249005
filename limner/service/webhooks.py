"""Webhooks for async jobs: queued with the job's end, POSTed signed the Standard Webhooks way, retried.

``enqueue`` adds a pending ``WebhookDelivery`` inside the transaction that stores a job's result, so an
event exists exactly when the result does. Every replica runs a ``WebhookSender``: it claims due deliveries
with a conditional UPDATE that moves ``next_attempt_at`` past the try (a lease), so two replicas never send
the same try at once; it POSTs each, records a ``WebhookAttempt``, then marks the delivery ``delivered``
(2xx), schedules the next try ``retry_seconds`` x 4^(n-1) after this one ended, or gives up (``failed``)
after ``max_attempts``. A replica that dies mid-try leaves its lease to expire and the try is made again:
delivery is at least once, and receivers drop duplicates by ``webhook-id``.

Each consumer's secret is its own, stored with it (``limner.service.webhook_secrets``): rotating the media
signing key leaves it alone, and after a rotation of the webhook secret itself events are signed with the
old one too for a grace period. Secrets are read at every try, so a retry carries the signatures of its time.

URLs are checked like image URLs, at submission and again at every try (``limner.service.webhook_post``).
Logs name scheme, host and path only: never a query string, never a secret.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets as random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from limner.accounts.db import Database
from limner.accounts.models import Consumer, WebhookAttempt, WebhookDelivery, utcnow
from limner.media.fetch import Resolver
from limner.service.job_object import job_body
from limner.service.job_shapes import JobView
from limner.service.webhook_post import Outcome, WebhookPoster, check_webhook_url, sign
from limner.service.webhook_secrets import WebhookSecrets, server_secret

__all__ = [
    "Outcome",
    "WebhookPoster",
    "WebhookSecrets",
    "WebhookSender",
    "check_webhook_url",
    "configure_consumer",
    "consumer_webhook",
    "delivery_log",
    "enqueue",
    "event_body",
    "new_event_id",
    "server_secret",
    "sign",
]

log = logging.getLogger(__name__)

MAX_RETRY_DELAY = 86_400.0
"""No wait between tries is longer than a day, whatever ``webhook_max_attempts`` says."""
LEASE_MARGIN = 60.0
"""Seconds past the send timeout a claimed try stays claimed: then a dead replica's try is made again."""
BATCH = 32


def new_event_id() -> str:
    return "msg_" + random.token_hex(16)


def event_body(event_type: str, data: dict[str, Any], now: datetime | None = None) -> bytes:
    """``{"type", "timestamp", "data"}`` as the exact bytes that are signed and sent on every try."""
    moment = (now or utcnow()).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return json.dumps({"type": event_type, "timestamp": moment, "data": data}, separators=(",", ":")).encode()


def enqueue(session: Session, *, job_id: str, consumer: str, url: str, event_type: str, data: dict[str, Any]) -> None:
    """Owe ``url`` an event (only ``session.add``: it commits or rolls back with the caller's transaction)."""
    now = utcnow()
    session.add(
        WebhookDelivery(
            job_id=job_id,
            consumer=consumer,
            event_id=new_event_id(),
            event_type=event_type,
            url=url,
            payload=event_body(event_type, data, now),
            state="pending",
            attempts=0,
            next_attempt_at=now,
            created_at=now,
        )
    )


def consumer_webhook(session: Session, consumer: str) -> str | None:
    """Where the consumer's async jobs report when a request names no URL."""
    return session.scalar(select(Consumer.webhook_url).where(Consumer.name == consumer))


def webhook_event(status: str) -> str:
    return f"job.{status}"


def queue_webhook(session: Session, view: JobView) -> None:
    """Inside the transaction that ends an async job: queue its webhook event, if it has a URL
    (its own, or its consumer's default). Every path that ends jobs passes this as ``on_finished``."""
    url = view.webhook_url or consumer_webhook(session, view.consumer)
    if url is None:
        return
    enqueue(
        session,
        job_id=view.id,
        consumer=view.consumer,
        url=url,
        event_type=webhook_event(view.status),
        data=job_body(view),
    )


def configure_consumer(session: Session, consumer: Consumer, *, url: str | None = None, clear: bool = False) -> None:
    """Set (an already checked ``url``) or clear the default URL (``WebhookSecrets.rotate`` replaces the secret)."""
    if clear:
        consumer.webhook_url = None
    elif url is not None:
        consumer.webhook_url = url


def job_deliveries(db: Database, job_id: str) -> tuple[str | None, list[dict[str, Any]]]:
    """Where the job's events went (None: nowhere) and each of them (``delivery_log`` entries carry no URL)."""
    with db.read() as session:
        url = session.scalar(
            select(WebhookDelivery.url).where(WebhookDelivery.job_id == job_id).order_by(WebhookDelivery.id).limit(1)
        )
        return url, delivery_log(session, job_id)


def delivery_log(session: Session, job_id: str) -> list[dict[str, Any]]:
    """The job's events, each with every try: what ``GET /v1/jobs/{id}`` shows as ``webhook.deliveries``."""
    deliveries = session.scalars(
        select(WebhookDelivery).where(WebhookDelivery.job_id == job_id).order_by(WebhookDelivery.id)
    ).all()
    tries: dict[int, list[dict[str, Any]]] = {delivery.id: [] for delivery in deliveries}
    if tries:
        attempts = session.scalars(
            select(WebhookAttempt).where(WebhookAttempt.delivery_id.in_(tries)).order_by(WebhookAttempt.id)
        ).all()
        for attempt in attempts:
            tries[attempt.delivery_id].append(
                {
                    "at": attempt.attempted_at.timestamp(),
                    "status_code": attempt.status_code,
                    "error": attempt.error,
                    "seconds": attempt.seconds,
                }
            )
    return [
        {"event_id": d.event_id, "type": d.event_type, "state": d.state, "attempts": tries[d.id]} for d in deliveries
    ]


@dataclass(frozen=True)
class _Claimed:
    id: int
    event_id: str
    url: str
    payload: bytes
    secrets: list[str]
    """What this try is signed with: the consumer's secret, and its previous one during a rotation's grace."""
    attempts: int
    """Tries made before this one."""


class WebhookSender:
    """Sends due deliveries from the database; run one per replica (``run_forever``), they share the work."""

    def __init__(
        self,
        db: Database,
        secrets: WebhookSecrets,
        *,
        timeout: float,
        retry_seconds: float,
        max_attempts: int,
        allow_private: bool,
        resolver: Resolver | None = None,
        batch: int = BATCH,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.db = db
        self.secrets = secrets
        self.timeout = timeout
        self.retry_seconds = retry_seconds
        self.max_attempts = max_attempts
        self.batch = batch
        self.clock = clock
        self.poster = WebhookPoster(timeout=timeout, allow_private=allow_private, resolver=resolver)

    def retry_delay(self, attempts: int) -> float:
        """Seconds between the end of failed try number ``attempts`` (1-based) and the next one."""
        return min(self.retry_seconds * 4.0 ** min(attempts - 1, 40), MAX_RETRY_DELAY)

    async def deliver_due(self) -> int:
        """Make one try of each due delivery (up to ``batch``, at once); how many were tried."""
        claimed = await self.db.call(self._claim)
        if not claimed:
            return 0
        outcomes = await asyncio.gather(*(self.poster.post(c.url, c.event_id, c.payload, c.secrets) for c in claimed))
        await self.db.call(self._record, list(zip(claimed, outcomes, strict=True)))
        return len(claimed)

    async def run_forever(self, interval: float) -> None:
        """Deliver until cancelled: at once again after a full batch, else after ``interval`` seconds."""
        while True:
            try:
                tried = await self.deliver_due()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("webhook delivery round failed; trying again in %g s", interval)
                tried = 0
            if tried < self.batch:
                await asyncio.sleep(interval)

    async def aclose(self) -> None:
        """Nothing pooled to release: each try has its own connection (``WebhookPoster``)."""
        return None

    def _claim(self) -> list[_Claimed]:
        """Lease the due deliveries: each UPDATE succeeds for one replica only (the row is no longer due after)."""
        now = self.clock()
        leased_until = now + timedelta(seconds=self.timeout + LEASE_MARGIN)
        pending = WebhookDelivery.state == "pending"
        with self.db.write() as session:
            due = session.execute(
                select(WebhookDelivery.id, WebhookDelivery.attempts)
                .where(pending, WebhookDelivery.next_attempt_at <= now)
                .order_by(WebhookDelivery.next_attempt_at, WebhookDelivery.id)
                .limit(self.batch)
            ).all()
            ids = []
            for row in due:
                moved = session.execute(
                    update(WebhookDelivery)
                    .where(
                        WebhookDelivery.id == row.id,
                        pending,
                        WebhookDelivery.next_attempt_at <= now,
                        WebhookDelivery.attempts == row.attempts,
                    )
                    .values(next_attempt_at=leased_until)
                    .execution_options(synchronize_session=False)
                )
                if moved.rowcount == 1:  # type: ignore[attr-defined]
                    ids.append(row.id)
            if not ids:
                return []
            deliveries = session.scalars(
                select(WebhookDelivery).where(WebhookDelivery.id.in_(ids)).order_by(WebhookDelivery.id)
            ).all()
            signing = {name: self.secrets.signing(session, name, now) for name in {d.consumer for d in deliveries}}
            return [_Claimed(d.id, d.event_id, d.url, d.payload, signing[d.consumer], d.attempts) for d in deliveries]

    def _record(self, results: list[tuple[_Claimed, Outcome]]) -> None:
        """Log each try and move its delivery on: delivered, due again later, or failed for good."""
        with self.db.write() as session:
            for claimed, outcome in results:
                attempts = claimed.attempts + 1
                values: dict[str, Any] = {"attempts": attempts}
                if outcome.ok:
                    values.update(state="delivered", delivered_at=outcome.ended)
                elif attempts >= self.max_attempts:
                    values.update(state="failed")
                else:
                    values.update(next_attempt_at=outcome.ended + timedelta(seconds=self.retry_delay(attempts)))
                session.execute(
                    update(WebhookDelivery)
                    .where(
                        WebhookDelivery.id == claimed.id,
                        WebhookDelivery.state == "pending",
                        WebhookDelivery.attempts == claimed.attempts,
                    )
                    .values(**values)
                    .execution_options(synchronize_session=False)
                )
                if session.get(WebhookDelivery, claimed.id) is None:
                    continue  # its job expired meanwhile (the delivery went with it): nothing to log
                session.add(
                    WebhookAttempt(
                        delivery_id=claimed.id,
                        attempted_at=outcome.started,
                        status_code=outcome.status_code,
                        error=outcome.error[:300] if outcome.error else None,
                        seconds=outcome.seconds,
                    )
                )

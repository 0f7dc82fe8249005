"""Each consumer's webhook signing secrets: stored with the consumer, independent of the media signing key.

A consumer gets a random ``whsec_`` secret when it is created (``limner.accounts.consumers.ensure``), and a
new random one when it is rotated; the one it replaces stays valid for ``grace`` (24 hours by default):
events are signed with both meanwhile (Standard Webhooks' ``webhook-signature`` holds several
space-separated signatures, and a receiver accepts any that matches), so receivers can move to the new
secret without dropping an event.

Before secrets were stored (migration 0005) they were derived from the server's secret,
HMAC-SHA256(server secret, ``limner-webhook:{consumer}:{version}``), so rotating the media signing key
changed every one of them. ``pin_all`` stores each such consumer's secret, unchanged, at the server's first
start after the upgrade (and ``pin`` any later on first use: the ``local`` consumer of an open server,
which may have no row): from then on the signing key can be rotated without touching a webhook secret.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from limner.accounts import consumers
from limner.accounts.db import Database
from limner.accounts.models import Consumer, utcnow
from limner.core.files import make_private
from limner.media.signing import load_or_create_secret
from limner.settings import Settings

DEFAULT_GRACE = timedelta(hours=24)


def server_secret(settings: Settings) -> bytes:
    """The server's signing secret, exactly as the app builds it (configured, or kept in ``data_dir``)."""
    if settings.signing_secret:
        return settings.signing_secret.encode()
    make_private(settings.data_dir, create="directory")
    return load_or_create_secret(settings.data_dir)


class WebhookSecrets:
    """Reads, pins and rotates consumers' secrets; holds the server secret only to derive those of
    consumers from before they were stored."""

    def __init__(self, server_secret: bytes, *, grace: timedelta = DEFAULT_GRACE) -> None:
        if not server_secret:
            raise ValueError("webhook secrets need a non-empty server secret")
        self._key = server_secret
        self.grace = grace

    @classmethod
    def from_settings(cls, settings: Settings) -> WebhookSecrets:
        return cls(server_secret(settings), grace=timedelta(hours=settings.webhook_secret_grace_hours))

    def __repr__(self) -> str:
        return f"WebhookSecrets(grace={self.grace})"

    def legacy_secret(self, consumer: str, version: int) -> str:
        """The secret a consumer had before secrets were stored."""
        derived = hmac.new(self._key, f"limner-webhook:{consumer}:{version}".encode(), hashlib.sha256).digest()
        return consumers.WEBHOOK_SECRET_PREFIX + base64.b64encode(derived).decode("ascii")

    def current(self, session: Session, consumer: str) -> str:
        """The secret events are signed with now (and receivers should verify with)."""
        row = _row(session, consumer)
        if row is not None and row.webhook_secret:
            return row.webhook_secret
        return self.legacy_secret(consumer, row.webhook_secret_version if row is not None else 1)

    def signing(self, session: Session, consumer: str, now: datetime | None = None) -> list[str]:
        """Every secret an event is signed with at ``now``: the current one, and the previous one during
        the grace period after a rotation. Pins the current one first (``session`` must be a write one)."""
        row = self.pin(session, consumer)
        assert row.webhook_secret is not None
        secrets = [row.webhook_secret]
        previous, rotated = row.webhook_previous_secret, row.webhook_secret_rotated_at
        if previous and rotated is not None and (now or utcnow()) < rotated + self.grace:
            secrets.append(previous)
        return secrets

    def previous_until(self, session: Session, consumer: str) -> tuple[str, datetime] | None:
        """The previous secret and when it stops being signed with; None outside a grace period."""
        row = _row(session, consumer)
        if row is None or not row.webhook_previous_secret or row.webhook_secret_rotated_at is None:
            return None
        until = row.webhook_secret_rotated_at + self.grace
        return (row.webhook_previous_secret, until) if utcnow() < until else None

    def pin(self, session: Session, consumer: str) -> Consumer:
        """The consumer's row with its secret stored: one from before keeps the secret it had (the ``local``
        consumer of an open server gets a row for it)."""
        row = _row(session, consumer)
        if row is None:
            row, _ = consumers.ensure(session, consumer)
            row.webhook_secret = self.legacy_secret(consumer, 1)
        elif not row.webhook_secret:
            row.webhook_secret = self.legacy_secret(consumer, row.webhook_secret_version or 1)
        return row

    def pin_all(self, db: Database) -> int:
        """Store the secret of every consumer from before secrets were stored; how many there were."""
        with db.write() as session:
            rows = session.scalars(select(Consumer).where(Consumer.webhook_secret.is_(None))).all()
            for row in rows:
                row.webhook_secret = self.legacy_secret(row.name, row.webhook_secret_version or 1)
            return len(rows)

    def rotate(self, session: Session, consumer: str, now: datetime | None = None) -> str:
        """A new random secret; the current one is still signed with for ``grace``. The new one."""
        row = self.pin(session, consumer)
        row.webhook_previous_secret = row.webhook_secret
        row.webhook_secret = consumers.new_webhook_secret()
        row.webhook_secret_rotated_at = now or utcnow()
        return row.webhook_secret


def _row(session: Session, consumer: str) -> Consumer | None:
    return session.scalar(select(Consumer).where(Consumer.name == consumer))

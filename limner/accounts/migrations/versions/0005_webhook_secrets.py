"""Webhook secrets stored per consumer, with the previous one kept for a grace period after a rotation.

Existing consumers get no secret here: the migration cannot know the server secret theirs were derived
from. The server stores each of them, unchanged, at its first start (``limner.service.webhook_secrets``).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-09
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from limner.accounts.models import UTCDateTime

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("consumers") as batch:
        batch.add_column(sa.Column("webhook_secret", sa.String(64), nullable=True))
        batch.add_column(sa.Column("webhook_previous_secret", sa.String(64), nullable=True))
        batch.add_column(sa.Column("webhook_secret_rotated_at", UTCDateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("consumers") as batch:
        batch.drop_column("webhook_secret_rotated_at")
        batch.drop_column("webhook_previous_secret")
        batch.drop_column("webhook_secret")

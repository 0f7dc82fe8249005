"""Server instances with heartbeats, and the instance holding each credit reservation.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from limner.accounts.models import UTCDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "instances",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("hostname", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("lock_path", sa.String(1024), nullable=False),
        sa.Column("started_at", UTCDateTime(), nullable=False),
        sa.Column("heartbeat_at", UTCDateTime(), nullable=False),
        sa.Column("stopped_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_instances")),
    )
    op.create_index(op.f("ix_instances_heartbeat_at"), "instances", ["heartbeat_at"])
    with op.batch_alter_table("reservations") as batch:
        batch.add_column(sa.Column("instance_id", sa.String(32), nullable=True))
        batch.create_index(batch.f("ix_reservations_instance_id"), ["instance_id"])


def downgrade() -> None:
    with op.batch_alter_table("reservations") as batch:
        batch.drop_index(batch.f("ix_reservations_instance_id"))
        batch.drop_column("instance_id")
    op.drop_index(op.f("ix_instances_heartbeat_at"), table_name="instances")
    op.drop_table("instances")

"""Per-consumer scheduling and access: the highest priority, a default start deadline, allowed models and LoRAs.

Every column is NULL for existing consumers, which keeps what they had: priority 0 at most, no start
deadline, every model and adapter.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-08
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("consumers") as batch:
        batch.add_column(sa.Column("max_priority", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("start_deadline", sa.Float(), nullable=True))
        batch.add_column(sa.Column("allowed_models", sa.Text(), nullable=True))
        batch.add_column(sa.Column("allowed_loras", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("consumers") as batch:
        batch.drop_column("allowed_loras")
        batch.drop_column("allowed_models")
        batch.drop_column("start_deadline")
        batch.drop_column("max_priority")

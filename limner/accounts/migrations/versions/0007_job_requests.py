"""An async job keeps its translated request, not the HTTP request it came as.

``body`` now holds the ``ImageRequest`` as JSON (``limner.service.job_requests``) and ``answer`` how its dialect
answers it; the request's headers are no longer kept. A job still queued from before the upgrade has no
``answer``: the runner fails it with a message (its client may submit it again).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-08
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("answer", sa.Text(), nullable=True))
        batch.drop_column("request_headers")


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("request_headers", sa.Text(), nullable=False, server_default="[]"))
        batch.drop_column("answer")

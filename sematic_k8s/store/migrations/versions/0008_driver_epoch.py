"""Fencing: a Resolution's driver epoch, bumped by each driver that takes it over (starts or resumes it), and when
that happened. A write carrying an older epoch than the current one is refused (``DriverReplaced``).

Revision ID: 0008_driver_epoch
Revises: 0007_cache_hits_index
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008_driver_epoch"
down_revision = "0007_cache_hits_index"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("resolutions", sa.Column("driver_epoch", sa.Integer(), nullable=False, server_default="0"))
    op.add_column("resolutions", sa.Column("driver_epoch_at", sa.DateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("resolutions") as batch:
        batch.drop_column("driver_epoch_at")
        batch.drop_column("driver_epoch")

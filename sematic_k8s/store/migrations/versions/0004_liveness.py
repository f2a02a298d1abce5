"""Liveness: when a Resolution's resolving process (local loop or driver) last said it was alive.

Revision ID: 0004_liveness
Revises: 0003_tags_notes
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_liveness"
down_revision = "0003_tags_notes"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("resolutions", sa.Column("heartbeat_at", sa.DateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("resolutions") as batch:
        batch.drop_column("heartbeat_at")

"""Conditional labels: how many changes a Resolution's tags and note have had. A change of them names the version
it was made to (``labels_version``); one made to an older version that is not already in effect is refused (a late
copy of an older change, or someone else's change landing first), so that nothing is undone unseen.

Revision ID: 0010_labels_version
Revises: 0009_driver_seq
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010_labels_version"
down_revision = "0009_driver_seq"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("resolutions", sa.Column("labels_version", sa.BigInteger(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("resolutions") as batch:
        batch.drop_column("labels_version")

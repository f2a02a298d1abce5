"""Ordered writes: the newest sequence number applied among the writes of a Resolution's current driver epoch
(``Batch.sequence``), reset to 0 by each takeover. A batch whose number is not above it was applied already (a
retried request whose first attempt landed late): it changes nothing.

Revision ID: 0009_driver_seq
Revises: 0008_driver_epoch
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009_driver_seq"
down_revision = "0008_driver_epoch"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("resolutions", sa.Column("driver_seq", sa.BigInteger(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("resolutions") as batch:
        batch.drop_column("driver_seq")

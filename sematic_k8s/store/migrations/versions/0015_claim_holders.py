"""Claim holders: a rerun's claim (a resolution the server's rerun action recorded ``created``) names the server
process launching its driver (``held_by``), which beats its ``heartbeat_at`` while the launch goes on, and clears it
once the driver is started; a claim whose holder went silent is marked failed in seconds
(:mod:`sematic_k8s.store.liveness`). Claims recorded before this revision hold none: they wait for their driver's
grace, as before. The downgrade drops the column.

Revision ID: 0015_claim_holders
Revises: 0014_read_only_keys
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015_claim_holders"
down_revision = "0014_read_only_keys"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("resolutions", sa.Column("held_by", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("resolutions") as batch:
        batch.drop_column("held_by")

"""Kept secrets: random secrets the database keeps for the processes that write it directly, made once on first
need (``kept_secrets``: a name, a hex value). A driver without a server derives its workers' outcome keys from one
(:mod:`sematic_k8s.executors.outcome_signing`), so a restarted driver verifies what its predecessor's workers signed.
The downgrade drops the table (a driver then keeps a random secret in its memory, as before).

Revision ID: 0016_kept_secrets
Revises: 0015_claim_holders
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016_kept_secrets"
down_revision = "0015_claim_holders"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "kept_secrets",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("value", sa.String(length=128), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )


def downgrade() -> None:
    op.drop_table("kept_secrets")

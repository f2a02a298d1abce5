"""Credentials that can be revoked: API keys gain ``admin`` and ``revoked_at``; per-resolution tokens for
drivers (sha256 hashes only).

Revision ID: 0005_credentials
Revises: 0004_liveness
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_credentials"
down_revision = "0004_liveness"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("admin", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column("revoked_at", sa.DateTime(), nullable=True))
    op.create_table(
        "resolution_tokens",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("resolution_id", sa.String(length=64), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("reads_from", sa.String(length=64), nullable=True),
        sa.Column("minted_by", sa.String(length=32), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.Column("revoked_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("token_hash"),
    )
    op.create_index("ix_resolution_tokens_resolution_id", "resolution_tokens", ["resolution_id"])


def downgrade() -> None:
    op.drop_index("ix_resolution_tokens_resolution_id", table_name="resolution_tokens")
    op.drop_table("resolution_tokens")
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("revoked_at")
        batch.drop_column("admin")

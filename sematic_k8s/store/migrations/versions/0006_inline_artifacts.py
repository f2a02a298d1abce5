"""Small artifacts inline: an artifact's bytes may be kept in its record (``inline``) instead of a file of their
own in artifact storage. Cache look-ups get an index of their own (key, state, end): with the key's alone,
SQLite chose the state's and scanned every resolved run.

Revision ID: 0006_inline_artifacts
Revises: 0005_credentials
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_inline_artifacts"
down_revision = "0005_credentials"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("artifacts", sa.Column("inline", sa.LargeBinary(), nullable=True))
    op.drop_index("ix_runs_cache_key", table_name="runs")
    op.create_index("ix_runs_cache_key_state", "runs", ["cache_key", "state", "ended_at"])


def downgrade() -> None:
    op.drop_index("ix_runs_cache_key_state", table_name="runs")
    op.create_index("ix_runs_cache_key", "runs", ["cache_key"])
    with op.batch_alter_table("artifacts") as batch:
        batch.drop_column("inline")

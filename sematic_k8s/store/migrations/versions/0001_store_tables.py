"""The store's tables (sematic_k8s/store/sql.py): resolutions, runs, artifacts.

An embedded SQLite database made by ``SqlStore(create=True)`` has exactly these tables; the server
stamps such a database at this revision instead of creating them again.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "artifacts",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("format", sa.String(length=16), nullable=False),
        sa.Column("type_name", sa.String(length=512), nullable=False),
        sa.Column("summary", sa.JSON(), nullable=True),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "resolutions",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("root_func_path", sa.String(length=512), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("settings", sa.JSON(), nullable=False),
        sa.Column("rerun_of", sa.String(length=64), nullable=True),
        sa.Column("image", sa.String(length=512), nullable=True),
        sa.Column("build_hash", sa.String(length=64), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("ended_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_resolutions_created_at"), "resolutions", ["created_at"], unique=False)
    op.create_index(op.f("ix_resolutions_state"), "resolutions", ["state"], unique=False)
    op.create_table(
        "runs",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("root_id", sa.String(length=64), nullable=False),
        sa.Column("parent_id", sa.String(length=64), nullable=True),
        sa.Column("func_path", sa.String(length=512), nullable=False),
        sa.Column("func_name", sa.String(length=256), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("input_refs", sa.JSON(), nullable=False),
        sa.Column("inputs", sa.JSON(), nullable=False),
        sa.Column("output_ref", sa.JSON(), nullable=True),
        sa.Column("output_id", sa.String(length=64), nullable=True),
        sa.Column("cache_key", sa.String(length=64), nullable=True),
        sa.Column("cached_from", sa.String(length=64), nullable=True),
        sa.Column("original_run_id", sa.String(length=64), nullable=True),
        sa.Column("source_hash", sa.String(length=64), nullable=True),
        sa.Column("source_file", sa.Text(), nullable=True),
        sa.Column("settings", sa.JSON(), nullable=False),
        sa.Column("error", sa.JSON(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("notes", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=True),
        sa.Column("ended_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_runs_cache_key"), "runs", ["cache_key"], unique=False)
    op.create_index(op.f("ix_runs_func_path"), "runs", ["func_path"], unique=False)
    op.create_index(op.f("ix_runs_root_id"), "runs", ["root_id"], unique=False)
    op.create_index(op.f("ix_runs_state"), "runs", ["state"], unique=False)


def downgrade() -> None:
    op.drop_table("runs")
    op.drop_table("resolutions")
    op.drop_table("artifacts")

"""Tags and a note per resolution (set by people); the func's source text per run (recorded by the loop).

All three columns are nullable. Each is added only where it is missing (a database made by a development build
may have some of them already).

Revision ID: 0003_tags_notes
Revises: 0002
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_tags_notes"
down_revision = "0002"
branch_labels = None
depends_on = None

COLUMNS = [
    ("resolutions", sa.Column("tags", sa.JSON(), nullable=True)),
    ("resolutions", sa.Column("note", sa.Text(), nullable=True)),
    ("runs", sa.Column("source_text", sa.Text(), nullable=True)),
]


def _existing(table: str) -> set[str]:
    return {c["name"] for c in sa.inspect(op.get_bind()).get_columns(table)}


def upgrade() -> None:
    for table, column in COLUMNS:
        if column.name not in _existing(table):
            op.add_column(table, column)


def downgrade() -> None:
    for table, column in reversed(COLUMNS):
        with op.batch_alter_table(table) as batch:
            batch.drop_column(column.name)

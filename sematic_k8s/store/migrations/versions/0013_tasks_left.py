"""Task copies left: a resolution marked dead (its end no driver recorded: ``liveness.expire_silent``) records that
the copies of its workers' tasks may be left in storage (``tasks_left``), until the server's sweeper deleted them
(``tasks/<resolution>/``). The resolutions marked dead before this revision are marked so too: their copies are
deleted by the next sweep of a server that may write their storage. The downgrade drops the column.

Revision ID: 0013_tasks_left
Revises: 0012_owners
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013_tasks_left"
down_revision = "0012_owners"
branch_labels = None
depends_on = None

DEAD = "the resolver stopped responding at %"  # the start of the error expire_silent records


def upgrade() -> None:
    op.add_column("resolutions", sa.Column("tasks_left", sa.Boolean(), nullable=True))
    op.create_index("ix_resolutions_tasks_left", "resolutions", ["tasks_left"])
    t = sa.table("resolutions", sa.column("state", sa.String), sa.column("error", sa.Text),
                 sa.column("tasks_left", sa.Boolean))
    op.execute(sa.update(t).where(t.c.state.in_(("failed", "canceled")), t.c.error.like(DEAD))
               .values(tasks_left=True))


def downgrade() -> None:
    op.drop_index("ix_resolutions_tasks_left", table_name="resolutions")
    with op.batch_alter_table("resolutions") as batch:
        batch.drop_column("tasks_left")

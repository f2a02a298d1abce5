"""Read-only API keys: ``api_keys`` gains ``read_only`` (false for every key made before, so each keeps exactly the
rights it had: admin or user). A read-only key may only read (the server's Guard refuses it anything but GET and
HEAD). The downgrade drops the column: a read-only key made since would become a user key, so it revokes those
first (a downgrade never widens a key's rights).

Revision ID: 0014_read_only_keys
Revises: 0013_tasks_left
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014_read_only_keys"
down_revision = "0013_tasks_left"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("read_only", sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    keys = sa.table("api_keys", sa.column("read_only", sa.Boolean), sa.column("revoked_at", sa.DateTime))
    op.execute(sa.update(keys).where(keys.c.read_only.is_(True), keys.c.revoked_at.is_(None))
               .values(revoked_at=sa.func.current_timestamp()))
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("read_only")

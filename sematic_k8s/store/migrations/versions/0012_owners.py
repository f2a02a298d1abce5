"""Owners: each run and resolution records the API key that wrote it (``owner``, its id), set by the server from the
writer's credentials (a resolution token's: the key that minted it). A cache look-up through the server hits only the
asker's own runs and those of the keys its operator trusts (``--cache-trusted-key``), so that no key can record an
output another key's pipeline then loads. The cache index takes the owner too: a look-up still reads the index alone.

Rows recorded before keep ``owner`` NULL: nobody's. They are hits only when the operator trusts ``(unowned)``, and a
resolution recorded before may be written only by its own token (a driver under way through the upgrade), never by a
key. Nothing else changes; the downgrade drops the columns and restores the index of 0007.

Revision ID: 0012_owners
Revises: 0011_api_key_names
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012_owners"
down_revision = "0011_api_key_names"
branch_labels = None
depends_on = None

# as in sematic_k8s.store.tables.RunRow (0007's, and the owner)
CACHE_HITS_WHERE = "cache_key IS NOT NULL AND state = 'resolved' AND cached_from IS NULL"
COLUMNS_0007 = ["cache_key", "state", "cached_from", "ended_at", "id", "output_id", "source_hash"]


def _cache_index(columns: list[str]) -> None:
    op.create_index("ix_runs_cache_hits", "runs", columns, sqlite_where=sa.text(CACHE_HITS_WHERE),
                    postgresql_where=sa.text(CACHE_HITS_WHERE))


def upgrade() -> None:
    op.add_column("runs", sa.Column("owner", sa.String(length=32), nullable=True))
    op.add_column("resolutions", sa.Column("owner", sa.String(length=32), nullable=True))
    op.drop_index("ix_runs_cache_hits", table_name="runs")
    _cache_index([*COLUMNS_0007, "owner"])


def downgrade() -> None:
    op.drop_index("ix_runs_cache_hits", table_name="runs")
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("owner")
    with op.batch_alter_table("resolutions") as batch:
        batch.drop_column("owner")
    _cache_index(COLUMNS_0007)

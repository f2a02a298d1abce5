"""Cache look-ups read one partial, covering index: the runs a look-up can hit (with a cache key, resolved, not
hits themselves), with what a hit takes of them (key, end, id, output, source hash). Hits, and runs of funcs that
are not cached, no longer go into it, so recording them updates one index fewer; a look-up reads the index alone.
(Its leading key and state columns keep SQLite's planner on it for a list of keys, where it chose the state's
index for a narrower one.)

Revision ID: 0007_cache_hits_index
Revises: 0006_inline_artifacts
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_cache_hits_index"
down_revision = "0006_inline_artifacts"
branch_labels = None
depends_on = None

# as in sematic_k8s.store.tables.RunRow
CACHE_HITS_WHERE = "cache_key IS NOT NULL AND state = 'resolved' AND cached_from IS NULL"


def upgrade() -> None:
    op.drop_index("ix_runs_cache_key_state", table_name="runs")
    op.create_index("ix_runs_cache_hits", "runs",
                    ["cache_key", "state", "cached_from", "ended_at", "id", "output_id", "source_hash"],
                    sqlite_where=sa.text(CACHE_HITS_WHERE), postgresql_where=sa.text(CACHE_HITS_WHERE))


def downgrade() -> None:
    op.drop_index("ix_runs_cache_hits", table_name="runs")
    op.create_index("ix_runs_cache_key_state", "runs", ["cache_key", "state", "ended_at"])

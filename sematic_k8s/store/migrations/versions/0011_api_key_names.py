"""No two active API keys share a name: a partial unique index on the names of the keys not revoked, so that of two
creates of one name at the same instant the database refuses one (a check before the insert let both in, and
``api-keys revoke NAME`` then revoked both).

A database made before holds such keys when a name was created twice. The oldest of them (created first; then by
id) keeps the name; each other one is renamed ``NAME~ID`` (its id, unique; the name cut to fit 128 characters), a
warning in the log naming them. Nothing else of a key changes: each still opens the API, and can be revoked by its
id or new name. (Refusing to migrate would leave the database unopenable, by ``api-keys revoke`` too.) The
downgrade drops the index; the new names stay.

Revision ID: 0011_api_key_names
Revises: 0010_labels_version
Create Date: 2026-12-04
"""

from __future__ import annotations

import logging
from collections import defaultdict

import sqlalchemy as sa
from alembic import op

revision = "0011_api_key_names"
down_revision = "0010_labels_version"
branch_labels = None
depends_on = None

ACTIVE = "revoked_at IS NULL"  # as in sematic_k8s_server.auth.api_keys
MAX_NAME = 128
log = logging.getLogger("sematic_k8s")


def upgrade() -> None:
    keys = sa.table("api_keys", sa.column("id", sa.String), sa.column("name", sa.String),
                    sa.column("created_at", sa.DateTime), sa.column("revoked_at", sa.DateTime))
    conn = op.get_bind()
    by_name: defaultdict[str, list[str]] = defaultdict(list)
    for key_id, name in conn.execute(sa.select(keys.c.id, keys.c.name).where(keys.c.revoked_at.is_(None))
                                     .order_by(keys.c.created_at, keys.c.id)):
        by_name[name].append(key_id)
    for name, (kept, *others) in by_name.items():
        if not others:
            continue
        renamed = {key_id: f"{name[:MAX_NAME - len(key_id) - 1]}~{key_id}" for key_id in others}
        for key_id, new in renamed.items():
            conn.execute(sa.update(keys).where(keys.c.id == key_id).values(name=new))
        log.warning("%d active API keys were named %r (API key names are unique now): the oldest (id %s) keeps the "
                    "name, the others are renamed %s; each still works: revoke those not needed with "
                    "`sematic-k8s api-keys revoke NAME_OR_ID`", len(others) + 1, name, kept,
                    ", ".join(f"{new!r} (id {key_id})" for key_id, new in renamed.items()))
    op.create_index("ix_api_keys_active_name", "api_keys", ["name"], unique=True,
                    sqlite_where=sa.text(ACTIVE), postgresql_where=sa.text(ACTIVE))


def downgrade() -> None:
    op.drop_index("ix_api_keys_active_name", table_name="api_keys")

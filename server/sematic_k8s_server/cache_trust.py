"""Whose cached runs a cache look-up through the server may hit (DESIGN.md "Caching", docs/FAULTS.md "Security").

A hit's output is loaded by the pipeline that asks (a pickle runs what it holds), so a look-up hits only the runs
recorded by the asker's own API key (a resolution token asks as the key that minted it) and by the keys the operator
trusts by name (``--cache-trusted-key NAME``: active keys only, so a revoked key's runs are trusted no more, and a
key made again under a name starts its own cache). :data:`~sematic_k8s_server.config.UNOWNED` trusts the runs
recorded before owners were. Admin keys are trusted for nothing more: managing keys vouches for no output. That a key
missed for a run it may not reuse is answered, so the asker can say why it missed, but never which run: an answer
names only runs the asker may reuse. A server without keys (local mode) looks up every run, as
the embedded store does.
"""

from __future__ import annotations

import sqlalchemy as sa

from sematic_k8s.store.cache_reads import Trust
from sematic_k8s_server import auth
from sematic_k8s_server.config import UNOWNED

_c = auth.api_keys.c
_NAMED = sa.select(_c.id).where(_c.name.in_(sa.bindparam("names", expanding=True)), _c.revoked_at.is_(None))


def trust_of(engine: sa.Engine, trusted: tuple[str, ...], principal: auth.Principal) -> Trust | None:
    """The runs ``principal``'s look-ups may hit, given the operator's ``trusted`` key names (None: every run, in
    local mode). One query for the trusted keys' ids, each time: a key revoked is trusted no more at once."""
    if principal.key_id is None and not principal.is_token:
        return None
    names = [name for name in trusted if name != UNOWNED]
    owners = {principal.key_id} if principal.key_id else set()
    if names:
        with engine.connect() as conn:
            owners.update(conn.scalars(_NAMED, {"names": names}))
    return Trust(frozenset(owners), unowned=UNOWNED in trusted)

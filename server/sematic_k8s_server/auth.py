"""API keys: random 32-byte secrets, stored as sha256 hashes in the ``api_keys`` table."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
import uuid

import sqlalchemy as sa

from sematic_k8s.store.records import utcnow

HEADER = "X-API-Key"
MESSAGE = f"missing or invalid API key: send it in the {HEADER} header"
PREFIX = "sk8s_"
CACHE_SECONDS = 30.0

metadata = sa.MetaData()
api_keys = sa.Table(
    "api_keys", metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("name", sa.String(128), nullable=False),
    sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("created_at", sa.DateTime, nullable=False),
)


def hash_key(key: str) -> str:
    """sha256 hex of a key: enough for random 256-bit secrets (no salt or slow hash needed)."""
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    return PREFIX + secrets.token_urlsafe(32)


def create_key(engine: sa.Engine, name: str) -> str:
    """Record a new key named ``name``; returns the key itself (only its hash is kept)."""
    if not name or len(name) > 128:
        raise ValueError("an API key name must have 1 to 128 characters")
    key = new_key()
    with engine.begin() as conn:
        conn.execute(sa.insert(api_keys).values(id=uuid.uuid4().hex, name=name, key_hash=hash_key(key),
                                                created_at=utcnow()))
    return key


def list_keys(engine: sa.Engine) -> list[dict]:
    with engine.connect() as conn:
        rows = conn.execute(sa.select(api_keys.c.id, api_keys.c.name, api_keys.c.created_at)
                            .order_by(api_keys.c.created_at)).mappings()
        return [dict(r) for r in rows]


def delete_key(engine: sa.Engine, name: str) -> int:
    with engine.begin() as conn:
        return conn.execute(sa.delete(api_keys).where(api_keys.c.name == name)).rowcount


class Authenticator:
    """Checks keys against the table (valid hashes cached for CACHE_SECONDS) and an in-memory
    ``internal_key`` the server gives to the rerun processes it starts."""

    def __init__(self, engine: sa.Engine, *, required: bool) -> None:
        self.engine = engine
        self.required = required
        self.internal_key = new_key()
        self._valid: dict[str, float] = {}
        self._lock = threading.Lock()

    def check_cached(self, key: str | None) -> bool | None:
        """The answer when it needs no database query (off, missing, internal, recently valid), else None."""
        if not self.required:
            return True
        if not key:
            return False
        if hmac.compare_digest(key.encode(), self.internal_key.encode()):
            return True
        with self._lock:
            if self._valid.get(hash_key(key), 0.0) > time.monotonic():
                return True
        return None

    def check(self, key: str | None) -> bool:
        cached = self.check_cached(key)
        if cached is not None:
            return cached
        digest = hash_key(key or "")
        now = time.monotonic()
        with self.engine.connect() as conn:
            found = conn.scalar(sa.select(api_keys.c.id).where(api_keys.c.key_hash == digest)) is not None
        if found:
            with self._lock:
                self._valid[digest] = now + CACHE_SECONDS
        return found

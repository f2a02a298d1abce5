"""Credentials: users' API keys and per-resolution tokens, kept as sha256 hashes and checked against the
database on every request (the requests waiting at the same moment share one query).

There is no cache: a revoked key or token is refused by the very next request, on every server replica, and by a
request already let in whose body was still on its way (the Guard checks it again once the body has come).

- An **API key** (``sk8s_...``) belongs to a person or a service, in one of three roles. A *user* key can read
  anything, record into the resolutions it started (:mod:`~sematic_k8s_server.scopes`: records have owners), and ask
  for reruns and cancels, label and note (any resolution; with ``--actions-by owner`` only its own:
  :func:`~sematic_k8s_server.scopes.action_refusal`); an *admin* key can also manage keys, and act on any resolution;
  a *read-only* key (``--read-only``: dashboards, monitoring, CI status checks) can only read: the Guard refuses it
  every request but GET and HEAD and the POST routes marked as reads (:data:`READ_BY_POST`), whatever the route
  (:func:`read_only_refusal`). Keys are made with ``sematic-k8s api-keys create`` and revoked with ``api-keys
  revoke`` (or the admin API); a revoked key stays listed, marked revoked.
- A **resolution token** (``sk8t_...``) is minted for one resolution's driver, by the server or at the request
  of the key holder that starts it. It may record only that resolution's runs, read it and the resolution
  it re-runs, and it stops working when the resolution ends, when it reaches its maximum lifetime, or when
  the key that minted it is revoked.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import secrets
import uuid
from dataclasses import dataclass

import sqlalchemy as sa

from sematic_k8s.errors import TableLocked
from sematic_k8s.graph import TERMINAL
from sematic_k8s.store.records import utcnow
from sematic_k8s.store.tables import Base, ResolutionRow
from sematic_k8s_server import dbfailures

HEADER = "X-API-Key"
MESSAGE = f"missing or invalid API key: send it in the {HEADER} header"
PREFIX = "sk8s_"  # API keys
TOKEN_PREFIX = "sk8t_"  # resolution tokens
ADMIN, USER, READ_ONLY, RESOLUTION, LOCAL = "admin", "user", "read-only", "resolution", "local"
READ_METHODS = frozenset({"GET", "HEAD"})  # all a read-only key may send, but the reads sent by POST:
# READ_BY_POST, the marker (an OpenAPI extension, ``openapi_extra``) of a POST route that only reads, its body carrying
# what a URL could not (many cache keys or ids); the app hands their paths to the Guard (read_only_refusal's ``reads``)
READ_BY_POST = "x-sematic-k8s-read"
ACTIVE_KEY = "revoked_at IS NULL"  # the keys whose names are unique (as in migration 0011)

metadata = sa.MetaData()
api_keys = sa.Table(
    "api_keys", metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("name", sa.String(128), nullable=False),
    sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("created_at", sa.DateTime, nullable=False),
    sa.Column("admin", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("revoked_at", sa.DateTime, nullable=True),
    # a read-only key (migration 0014_read_only_keys): never with admin (new_api_key refuses it; read as read-only)
    sa.Column("read_only", sa.Boolean, nullable=False, server_default=sa.false()),
    # no two active keys share a name (revoking by name revokes one): the database holds it for creates at once
    sa.Index("ix_api_keys_active_name", "name", unique=True, sqlite_where=sa.text(ACTIVE_KEY),
             postgresql_where=sa.text(ACTIVE_KEY)),
)
resolution_tokens = sa.Table(
    "resolution_tokens", metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("resolution_id", sa.String(64), nullable=False, index=True),
    sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("reads_from", sa.String(64), nullable=True),  # the resolution it re-runs: readable too
    sa.Column("minted_by", sa.String(32), nullable=True),  # the api_keys.id that asked for it (None: local mode)
    sa.Column("created_at", sa.DateTime, nullable=False),
    sa.Column("expires_at", sa.DateTime, nullable=False),
    sa.Column("revoked_at", sa.DateTime, nullable=True),
)
_resolutions = Base.metadata.tables[ResolutionRow.__tablename__]
# the credential checks, built once (each request's check runs one or both, with its keys' hashes)
_KEYS_QUERY = sa.select(api_keys.c.key_hash, api_keys.c.id, api_keys.c.name, api_keys.c.admin,
                        api_keys.c.read_only).where(
    api_keys.c.key_hash.in_(sa.bindparam("hashes", expanding=True)), api_keys.c.revoked_at.is_(None))
_TOKENS_QUERY = (
    sa.select(resolution_tokens.c.token_hash, resolution_tokens.c.resolution_id, resolution_tokens.c.reads_from,
              resolution_tokens.c.minted_by, resolution_tokens.c.expires_at, resolution_tokens.c.revoked_at,
              api_keys.c.id.label("key_id"), api_keys.c.revoked_at.label("key_revoked_at"), _resolutions.c.state)
    .select_from(resolution_tokens.outerjoin(api_keys, api_keys.c.id == resolution_tokens.c.minted_by)
                 .outerjoin(_resolutions, _resolutions.c.id == resolution_tokens.c.resolution_id))
    .where(resolution_tokens.c.token_hash.in_(sa.bindparam("hashes", expanding=True))))


class Unauthorized(Exception):
    """The credential is missing, unknown, revoked or expired (the message says which, in plain words).
    ``ended``: for a resolution's token refused only because its resolution ended, that resolution's id and end
    state (the refusal says them, X-Sematic-K8s-Ended: its holder could read them a moment before the end, and
    learns nothing of any other record)."""

    def __init__(self, message: str, ended: tuple[str, str] | None = None) -> None:
        super().__init__(message)
        self.ended = ended


def unchecked(e: Exception) -> str:
    """Why a credential could not be checked when checking it failed otherwise than by :class:`Unauthorized`: the
    metadata database is unavailable, has no connection to spare, or takes none now (its words are the server's
    log's, never a client's: :meth:`Authenticator.authenticate_many` has them logged)."""
    if dbfailures.no_connection_to_spare(e):
        return f"cannot check credentials: {dbfailures.no_connection_words(e)}"
    if dbfailures.not_taking_connections(e):
        return f"cannot check credentials: {dbfailures.NOT_TAKING_CONNECTIONS}"
    if isinstance(e, TableLocked):  # api_keys locked past the bound (store.lockwait): its words name no host
        return f"cannot check credentials: {e}"
    return f"cannot check credentials: the metadata database is unavailable: {type(e).__name__}"


@dataclass(frozen=True)
class Principal:
    """Who is asking: an admin or user key, a resolution's token, or anyone in local mode (no keys)."""

    role: str
    name: str
    key_id: str | None = None  # the API key; for a token, the key that minted it
    resolution_id: str | None = None  # a token's resolution
    reads_from: str | None = None  # the resolution a token's resolution re-runs

    @property
    def is_token(self) -> bool:
        return self.role == RESOLUTION

    @property
    def is_admin(self) -> bool:
        return self.role in (ADMIN, LOCAL)

    @property
    def is_read_only(self) -> bool:
        return self.role == READ_ONLY

    def may_read(self, resolution_id: str | None) -> bool:
        """Records of this resolution: anything for a key; a token's own and the one it re-runs."""
        return not self.is_token or (resolution_id is not None
                                     and resolution_id in (self.resolution_id, self.reads_from))

    def may_write(self, resolution_id: str | None) -> bool:
        return not self.is_token or (resolution_id is not None and resolution_id == self.resolution_id)


LOCAL_PRINCIPAL = Principal(LOCAL, "local mode")


def hash_key(key: str) -> str:
    """sha256 hex of a key: enough for random 256-bit secrets (no salt or slow hash needed)."""
    return hashlib.sha256(key.encode()).hexdigest()


def new_key(prefix: str = PREFIX) -> str:
    return prefix + secrets.token_urlsafe(32)


# -- API keys -----------------------------------------------------------------------------------------------

class KeyNameTaken(ValueError):
    """A new key named as an active key is: ``api-keys revoke NAME`` could no longer revoke one of them."""

    def __init__(self, name: str) -> None:
        super().__init__(f"an active API key is already named {name!r} (revoking by name would revoke both): "
                         "revoke it first, or choose another name (see `sematic-k8s api-keys list`)")


def create_key(engine: sa.Engine, name: str, *, admin: bool = False, read_only: bool = False) -> str:
    """Record a new key named ``name``; returns the key itself (only its hash is kept)."""
    return new_api_key(engine, name, admin=admin, read_only=read_only)[0]


def role_of(admin: bool, read_only: bool) -> str:
    """A key's role from its row's flags: read-only wins (a row with both, which no create makes, may only read)."""
    return READ_ONLY if read_only else ADMIN if admin else USER


ROLE_CONFLICT = "a key is admin, user or read-only, never both admin and read-only: choose one"


_ACTIONS = (  # (path pattern, what a refused read-only key was asked to do)
    (re.compile(r"/api/v1/resolutions/[^/]+/cancel"), "cancel a resolution"),
    (re.compile(r"/api/v1/resolutions/[^/]+/rerun"), "re-run a resolution"),
    (re.compile(r"/api/v1/resolutions/[^/]+/labels"), "label a resolution"),
    (re.compile(r"/api/v1/resolutions/[^/]+/token"), "mint or revoke a resolution token"),
    (re.compile(r"/api/v1/store/.*"), "record runs (resolve a pipeline)"),
)


def read_only_refusal(principal: Principal, method: str, path: str, reads: frozenset[str] = frozenset()) -> str | None:
    """Why ``principal`` may not send ``method`` ``path``, if it is a read-only key and that is no read: the one check
    of read-only keys, made by the Guard before any route runs (so a new route is covered too). ``reads``: the paths
    of the POST routes marked :data:`READ_BY_POST` (a cache look-up, artifacts' records by id), which write nothing.
    None if it may."""
    if not principal.is_read_only or method in READ_METHODS or (method == "POST" and path in reads):
        return None
    if path.startswith("/api/v1/api-keys"):
        holder, action = "an admin key", "manage API keys"
    else:
        holder = "a user key"
        action = next((what for pattern, what in _ACTIONS if pattern.fullmatch(path)), "change anything")
    return (f"key {principal.name!r} is read-only: use {holder} to {action} ({method} {path}); "
            "a read-only key may only read (GET)")


def check_key_name(name: str) -> None:
    """ValueError unless ``name`` is 1 to 128 printable characters with no space at either end: a name with a line
    break or a tab broke ``api-keys list`` across lines, and one of spaces alone listed as nothing."""
    if not 1 <= len(name) <= 128 or not name.isprintable() or name != name.strip():
        raise ValueError("an API key name must have 1 to 128 printable characters (no line breaks, tabs or other "
                         "control characters) and no space at either end")


def new_api_key(engine: sa.Engine, name: str, *, admin: bool = False, read_only: bool = False) -> tuple[str, dict]:
    """Record a new key named ``name``: the key itself, and its row as :func:`list_keys` shows it. ValueError for a
    name out of bounds (:func:`check_key_name`); :class:`KeyNameTaken` for the name of an active key, which the
    database's unique index on active names refuses (so that of two creates at once, one is refused: a check before
    the insert let both in). ValueError too for a key both ``admin`` and ``read_only``."""
    check_key_name(name)
    if admin and read_only:
        raise ValueError(ROLE_CONFLICT)
    key = new_key()
    row = {"id": uuid.uuid4().hex, "name": name, "admin": admin, "read_only": read_only, "created_at": utcnow(),
           "revoked_at": None}
    try:
        with engine.begin() as conn:
            conn.execute(sa.insert(api_keys).values(key_hash=hash_key(key), **row))
    except sa.exc.IntegrityError:
        c = api_keys.c
        with engine.connect() as conn:
            if conn.execute(sa.select(c.id).where(c.name == name, c.revoked_at.is_(None)).limit(1)).first() is None:
                raise  # not the name's index (a random id or key's hash again)
        raise KeyNameTaken(name) from None
    return key, row


def list_keys(engine: sa.Engine) -> list[dict]:
    """Every key ever made (never the keys themselves): id, name, admin, read_only, created_at, revoked_at."""
    c = api_keys.c
    with engine.connect() as conn:
        rows = conn.execute(sa.select(c.id, c.name, c.admin, c.read_only, c.created_at, c.revoked_at)
                            .order_by(c.created_at, c.id)).mappings()
        return [dict(r) for r in rows]


def revoke_key(engine: sa.Engine, name_or_id: str, *, by_id_only: bool = False) -> int:
    """Revoke the key with this id, or every key with this name; returns how many were revoked now.
    The tokens those keys minted stop working with them."""
    c = api_keys.c
    match = c.id == name_or_id if by_id_only else sa.or_(c.id == name_or_id, c.name == name_or_id)
    with engine.begin() as conn:
        return conn.execute(sa.update(api_keys).where(match, c.revoked_at.is_(None))
                            .values(revoked_at=utcnow())).rowcount


# -- resolution tokens --------------------------------------------------------------------------------------

def mint_token(engine: sa.Engine, resolution_id: str, *, minted_by: str | None, reads_from: str | None = None,
               lifetime: dt.timedelta) -> tuple[str, dt.datetime]:
    """A new token for ``resolution_id``'s driver and when it expires at the latest (only its hash is kept)."""
    token, now = new_key(TOKEN_PREFIX), utcnow()
    expires = now + lifetime
    with engine.begin() as conn:
        conn.execute(sa.insert(resolution_tokens).values(
            id=uuid.uuid4().hex, resolution_id=resolution_id, token_hash=hash_key(token), reads_from=reads_from,
            minted_by=minted_by, created_at=now, expires_at=expires))
    return token, expires


def revoke_tokens(engine: sa.Engine, resolution_id: str, *, mine: bool = False, minted_by: str | None = None) -> int:
    """Revoke every token of a resolution (e.g. its driver could not be started); ``mine``: only those ``minted_by``
    that key (None: minted in local mode). How many were revoked now."""
    t = resolution_tokens.c
    match = [t.resolution_id == resolution_id, t.revoked_at.is_(None)]
    if mine:
        match.append(t.minted_by.is_(None) if minted_by is None else t.minted_by == minted_by)
    with engine.begin() as conn:
        return conn.execute(sa.update(resolution_tokens).where(*match).values(revoked_at=utcnow())).rowcount


# -- checking -----------------------------------------------------------------------------------------------

class Authenticator:
    """Checks requests' credentials against the database, every time: one indexed query per call of
    :meth:`authenticate_many`, for every key of the requests waiting (see :mod:`~sematic_k8s_server.coalesce`)."""

    def __init__(self, engine: sa.Engine, *, required: bool) -> None:
        self.engine = engine
        self.required = required
        self.failures = dbfailures.of(engine)  # what the log says of the database's failures

    def authenticate(self, key: str | None) -> Principal:
        """Who sent ``key``; :class:`Unauthorized` when it does not open the API. Anyone, in local mode."""
        result = self.authenticate_many([key])[0]
        if isinstance(result, Unauthorized):
            raise result
        return result

    def authenticate_many(self, keys: list[str | None]) -> list[Principal | Unauthorized]:
        """:meth:`authenticate` for each of ``keys``, the result or the refusal, in two queries at most."""
        if not self.required:
            return [LOCAL_PRINCIPAL] * len(keys)
        hashes = {key: hash_key(key) for key in keys if key}
        api = [h for key, h in hashes.items() if not key.startswith(TOKEN_PREFIX)]
        tokens = [h for key, h in hashes.items() if key.startswith(TOKEN_PREFIX)]
        try:
            with self.engine.connect() as conn:
                found = {**self._keys(conn, api), **self._tokens(conn, tokens)}
        except Exception as e:
            self.failures.failed(e, "cannot check credentials")
            raise
        out: list[Principal | Unauthorized] = []
        for key in keys:
            if not key:
                out.append(Unauthorized(MESSAGE))
                continue
            result = found.get(hashes[key])
            if result is None:
                result = Unauthorized("invalid resolution token" if key.startswith(TOKEN_PREFIX) else
                                      f"invalid or revoked API key: send a valid one in the {HEADER} header")
            out.append(result)
        return out

    @staticmethod
    def _keys(conn: sa.Connection, hashes: list[str]) -> dict[str, Principal | Unauthorized]:
        if not hashes:
            return {}
        rows = conn.execute(_KEYS_QUERY, {"hashes": hashes})
        return {row.key_hash: Principal(role_of(row.admin, row.read_only), row.name, key_id=row.id) for row in rows}

    @staticmethod
    def _tokens(conn: sa.Connection, hashes: list[str]) -> dict[str, Principal | Unauthorized]:
        if not hashes:
            return {}
        return {row.token_hash: _token_principal(row) for row in conn.execute(_TOKENS_QUERY, {"hashes": hashes})}


def _token_principal(row: sa.Row) -> Principal | Unauthorized:
    """The principal of a token's row, or why the token no longer opens the API."""
    what = f"the token of resolution {row.resolution_id}"
    if row.revoked_at is not None:
        return Unauthorized(f"{what} was revoked")
    if row.expires_at <= utcnow():
        return Unauthorized(f"{what} expired (it reached its maximum lifetime)")
    if row.minted_by is not None and (row.key_id is None or row.key_revoked_at is not None):
        return Unauthorized(f"{what} was minted with an API key that has since been revoked")
    if row.state in TERMINAL:
        return Unauthorized(f"{what} expired: the resolution has ended ({row.state})", (row.resolution_id, row.state))
    return Principal(RESOLUTION, f"resolution {row.resolution_id}", key_id=row.minted_by,
                     resolution_id=row.resolution_id, reads_from=row.reads_from)

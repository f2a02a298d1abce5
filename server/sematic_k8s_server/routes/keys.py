"""``/api-keys``: list, create and revoke API keys; admin keys only. A revoked key is refused by the very next
request on every server replica (credentials are checked against the database on each request). ``/whoami``: the
caller's key and role, for any key (the dashboard disables what a read-only key may not do), and whose resolutions a
user key may act on (``--actions-by``)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException
from fastapi import Path as PathParam

from sematic_k8s_server import auth, schemas, scopes
from sematic_k8s_server.deps import API, NOT_FOUND, Caller, Srv, StrictJsonRoute, not_found

router = APIRouter(prefix=API, tags=["api-keys"], route_class=StrictJsonRoute)
KeyId = Annotated[str, PathParam(pattern=r"^[0-9a-f]{32}$", description="an API key's id (from the list)")]
ADMIN_ONLY: dict[int | str, dict[str, Any]] = {403: {"description": "not an admin key"}}


def _out(row: dict[str, Any]) -> dict[str, Any]:
    def iso(v: dt.datetime | None) -> str | None:
        return None if v is None else v.isoformat() + "Z"
    admin, read_only = bool(row["admin"]), bool(row["read_only"])
    return {"id": row["id"], "name": row["name"], "admin": admin, "read_only": read_only,
            "role": auth.role_of(admin, read_only), "created_at": iso(row["created_at"]),
            "revoked_at": iso(row["revoked_at"])}


@router.get("/whoami", response_model=schemas.WhoAmI, summary="The caller's API key: its name and role")
def whoami(srv: Srv, caller: Caller) -> dict:
    return {"name": caller.name, "role": caller.role, "actions_by": srv.config.actions_by}


@router.get("/api-keys", response_model=schemas.ApiKeyList, responses=ADMIN_ONLY,
            summary="Every API key (names, never the keys), revoked ones included")
def list_keys(srv: Srv, caller: Caller) -> dict:
    scopes.require_admin(caller, "listing API keys")
    return {"items": [_out(r) for r in auth.list_keys(srv.store.engine)]}


@router.post("/api-keys", status_code=201, response_model=schemas.ApiKeyCreated,
             responses={**ADMIN_ONLY, 409: {"description": "an active key has this name"},
                        422: {"description": "the name is out of bounds (1 to 128 printable characters), or the key "
                                              "both admin and read-only"}},
             summary="Create an API key; the key is in this answer only")
def create_key(srv: Srv, caller: Caller, body: schemas.ApiKeyIn) -> dict:
    scopes.require_admin(caller, "creating API keys")
    try:
        key, row = auth.new_api_key(srv.store.engine, body.name, admin=body.admin, read_only=body.read_only)
    except auth.KeyNameTaken as e:
        raise HTTPException(409, str(e)) from None
    except ValueError as e:  # the name out of bounds (auth.check_key_name), admin and read-only: as `api-keys create`
        raise HTTPException(422, str(e)) from None
    return {**_out(row), "key": key}


@router.post("/api-keys/{key_id}/revoke", response_model=schemas.Revoked, responses={**ADMIN_ONLY, **NOT_FOUND},
             summary="Revoke an API key (and the tokens it minted) at once, everywhere")
def revoke_key(srv: Srv, caller: Caller, key_id: KeyId) -> dict:
    scopes.require_admin(caller, "revoking API keys")
    n = auth.revoke_key(srv.store.engine, key_id, by_id_only=True)
    if n == 0:
        raise not_found("unrevoked API key", key_id)
    return {"revoked": n}

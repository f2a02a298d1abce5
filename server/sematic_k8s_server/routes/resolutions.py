"""``/resolutions``: list them, read one or its whole graph; the rerun and cancel actions; tokens for drivers."""

from __future__ import annotations

import logging
import uuid
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request

from sematic_k8s.errors import ContinuedAlready, ResolutionLive
from sematic_k8s.graph import CANCELED, TERMINAL
from sematic_k8s.store.lookup import refuse_live
from sematic_k8s.store.records import CLAIMED
from sematic_k8s.store.sql import CANCELING
from sematic_k8s_server import auth, dbfailures, edges, schemas, scopes, unminted
from sematic_k8s_server.deps import (
    API,
    NOT_FOUND,
    NOT_OWNER,
    Caller,
    Limit,
    Offset,
    ResolutionId,
    Srv,
    StateFilter,
    StrictJsonRoute,
    action,
    found,
    not_found,
)
from sematic_k8s_server.problems import ApiError

router = APIRouter(prefix=API, route_class=StrictJsonRoute)

log = logging.getLogger("sematic_k8s_server")


@router.get("/resolutions", response_model=schemas.ResolutionPage, tags=["resolutions"],
            summary="List resolutions, newest first (their errors clipped: GET /resolutions/{id} has one whole)")
def list_resolutions(srv: Srv, caller: Caller, state: StateFilter = None, limit: Limit = 100,
                     offset: Offset = 0,
                     id_prefix: Annotated[str | None, Query(pattern=schemas.HEX_ID, description="ids starting so")]
                     = None) -> dict:
    scopes.require_key(caller, "list resolutions")
    items = srv.store.list_resolutions(state=state, limit=limit, offset=offset, id_prefix=id_prefix)
    return {"items": [r.to_dict() for r in items], "limit": limit, "offset": offset}


@router.get("/resolutions/{resolution_id}", response_model=schemas.ResolutionOut, responses=NOT_FOUND,
            tags=["resolutions"], summary="One resolution")
def get_resolution(srv: Srv, caller: Caller, resolution_id: ResolutionId) -> dict:
    scopes.check_read(caller, resolution_id)
    res = found(srv.store.get_resolution(resolution_id), "resolution", resolution_id)
    return res.to_dict()


@router.get("/resolutions/{resolution_id}/graph", response_model=schemas.GraphOut, responses=NOT_FOUND,
            tags=["resolutions"], summary="A resolution with all its runs (listed: without their func's source, "
                                          "an excerpt of their error) and the edges between them")
def get_graph(srv: Srv, caller: Caller, resolution_id: ResolutionId) -> dict:
    scopes.check_read(caller, resolution_id)
    res = found(srv.store.get_resolution(resolution_id), "resolution", resolution_id)
    runs = srv.store.runs_of_root(resolution_id, listed=True)
    runs.sort(key=lambda r: (r.created_at is None, r.created_at, r.id))
    return {"resolution": res.to_dict(), "runs": [r.listed() for r in runs],
            "edges": edges.edges(runs, resolution_id)}


RERUN_REFUSALS: dict[int | str, dict] = {
    **NOT_FOUND, 403: {"description": "a token asked, the image's repository is not on the allow-list, or another key "
                                      "recorded the resolution (--actions-by owner)"},
    409: {"description": "the resolution is still running, or (mode continue) another resolution continues it"},
    422: {"description": "a local resolution (the body's `command` re-runs it on its machine), or no image by "
                         "digest"},
    429: {"description": "too many reruns starting at once: retry later"},
    501: {"description": "this server starts no reruns"}, 502: {"description": "the launcher failed"}}


@router.post("/resolutions/{resolution_id}/rerun", status_code=202, response_model=schemas.RerunOut,
             responses=RERUN_REFUSALS, tags=["actions"], openapi_extra=action("re-run or continue"),
             summary="Re-run a cloud resolution from its recorded image, whole or from one of its runs")
def rerun(srv: Srv, caller: Caller, request: Request, resolution_id: ResolutionId, body: schemas.RerunIn) -> dict:
    """Starts a new resolution that clones this one: ``rerun_from`` (default: the root, i.e. everything)
    and what depends on it execute again, every other run is reused. Only cloud resolutions whose image
    repository is on the server's allow-list; a local one answers 422 with the ``command`` that re-runs it
    on its own machine. The new resolution is recorded (``created``) before its driver is started, whatever the
    mode: a launch that fails records it failed, in the words of the answer. Returns the new id once its driver was
    started, or once its launch waits for the driver's image (its registry does not answer the Docker engine), or has
    gone on for 2 s (a large image's pull, a slow Kubernetes API): failing after that, it is recorded failed in the
    launcher's words; canceled meanwhile, its driver is never started."""
    scopes.require_key(caller, "start reruns")
    res = found(srv.store.get_resolution(resolution_id), "resolution", resolution_id)
    target = body.rerun_from or resolution_id
    run = found(srv.store.get_run(target), "run", target)
    if run.root_id != resolution_id:
        raise HTTPException(422, f"run {target} belongs to resolution {run.root_id}, not {resolution_id}")
    if body.mode == "continue" and target != resolution_id:
        raise HTTPException(422, "mode 'continue' re-runs a whole resolution: leave rerun_from null")
    try:
        refuse_live(res)  # read above: one whose resolver went silent was marked dead by that read
    except ResolutionLive as e:
        raise ApiError(409, str(e), reason="resolution-live", state=e.state) from None
    image = srv.reruns.check(res, target, body.mode)
    new_id = uuid.uuid4().hex
    root_run = run if target == resolution_id else srv.store.get_run(resolution_id)
    spec = srv.reruns.driver_spec(res, root_run, image, new_id=new_id, target=target, mode=body.mode)
    beats = srv.claim_beats  # this process holds the claim, beating it, until the launch ends
    beats.hold(new_id)
    try:  # recorded before its driver starts (a continue: in the transaction that refuses a second one)
        srv.claim(srv.reruns.claim(res, spec, caller.key_id, beats.holder))  # told live once committed
    except BaseException as e:
        beats.let_go(new_id)
        if isinstance(e, ContinuedAlready):
            raise ApiError(409, str(e), reason="continued-already", continued_by=e.by) from None
        raise
    try:  # in local mode too: its driver derives its workers' outcome keys from it, the same after its restart
        token, _ = auth.mint_token(srv.store.engine, new_id, minted_by=caller.key_id, reads_from=resolution_id,
                                   lifetime=srv.config.reruns.token_lifetime)
    except BaseException as e:  # no launch: recorded failed at once in true words, beaten no more
        answer = unminted.ended(srv, new_id, e)
        if answer is e:
            raise
        raise answer from e

    def failed(detail: str) -> None:  # nothing left claiming it: recorded failed, in the launcher's words
        srv.end_claim(new_id, detail, unpooled=True)  # as a failed mint's: the request pool may be used up
        try:  # then its token (refused already: its resolution ended), through the request pool
            auth.revoke_tokens(srv.store.engine, new_id)
        except Exception as e:  # noqa: BLE001 - the store: the token expires, refused meanwhile (its claim failed)
            log.warning("rerun %s: its driver's token could not be revoked: %s", new_id, dbfailures.words(e))

    def ended() -> bool:  # the claim no longer waits for its driver (canceled while the launch waits for its image)
        claimed = srv.store.get_resolution(new_id)
        return claimed is None or claimed.state != CLAIMED

    def noted(waiting: str | None) -> None:  # what its launch waits for (its driver's image), on the claim
        srv.note_claim(new_id, waiting)

    def let_go(started: bool) -> None:  # its launch ended: held no more (once its driver started, its grace counts)
        if started:
            beats.launched(new_id)
        else:
            beats.let_go(new_id)

    try:  # answered once the driver started, or once it waits for its image (failed later, in the background)
        srv.reruns.start(spec, srv.self_url or _own_url(request), token, (res.settings or {}).get("source_map"),
                         failed, ended, noted, let_go)
    except Exception as e:
        failed(e.detail if isinstance(e, ApiError) else f"{type(e).__name__}: {e}")
        raise
    return {"resolution_id": new_id, "rerun_of": resolution_id}


@router.post("/resolutions/{resolution_id}/token", status_code=201, response_model=schemas.TokenOut,
             responses={403: {"description": "a token asked, or another API key recorded the resolution"},
                        409: {"description": "the resolution has ended"}, **NOT_FOUND},
             tags=["actions"], summary="Mint the token a resolution's driver records with")
def mint_token(srv: Srv, caller: Caller, resolution_id: ResolutionId, body: schemas.TokenIn) -> dict:
    """A new credential for the driver of ``resolution_id`` (about to start, or running): it may record only
    that resolution, read it and the resolution it re-runs (``rerun_from``'s), and stops working when the
    resolution ends, after the server's maximum lifetime, or when the caller's key is revoked. Shown once. Only for a
    resolution not recorded yet or recorded by the caller's key (:func:`~sematic_k8s_server.scopes.check_owner`)."""
    scopes.require_key(caller, "mint tokens")
    scopes.check_owner(caller, srv.store, resolution_id, "mint a token for")
    res = srv.store.get_resolution(resolution_id)
    if res is not None and res.state in TERMINAL:
        raise HTTPException(409, f"resolution {resolution_id} has ended ({res.state}): it needs no token")
    reads_from = None
    if body.rerun_from:
        run = found(srv.store.get_run(body.rerun_from), "run", body.rerun_from)
        reads_from = run.root_id
    token, expires = auth.mint_token(srv.store.engine, resolution_id, minted_by=caller.key_id, reads_from=reads_from,
                                     lifetime=srv.config.reruns.token_lifetime)
    return {"token": token, "resolution_id": resolution_id, "reads_from": reads_from,
            "expires_at": expires.isoformat() + "Z"}


@router.delete("/resolutions/{resolution_id}/token", response_model=schemas.TokensRevokedOut,
               responses={403: {"description": "a token asked, or another API key recorded the resolution"},
                          409: {"description": "the resolution is recorded and has not ended"}, **NOT_FOUND},
               tags=["actions"], summary="Revoke the tokens minted for a resolution whose driver never started")
def revoke_tokens(srv: Srv, caller: Caller, resolution_id: ResolutionId) -> dict:
    """Revokes at once the tokens the caller's key minted for ``resolution_id``, whose driver was never started (its
    launch cut short: the CloudResolver's sweep of the driver containers left unstarted asks it): they would have
    worked until their lifetime ran out, the resolution never recorded to end them. One recorded and not ended (a
    driver holds its token, or the server is launching it) is refused: cancel it instead. Only for a resolution not
    recorded or recorded by the caller's key."""
    scopes.require_key(caller, "revoke tokens")
    scopes.check_owner(caller, srv.store, resolution_id, "revoke the tokens of")
    res = srv.store.get_resolution(resolution_id)
    if res is not None and res.state not in TERMINAL:
        raise HTTPException(409, f"resolution {resolution_id} is {res.state}: its driver's token may be in use; "
                                 f"cancel it instead (`sematic-k8s cancel {resolution_id}`)")
    revoked = auth.revoke_tokens(srv.store.engine, resolution_id, mine=True, minted_by=caller.key_id)
    return {"resolution_id": resolution_id, "revoked": revoked}


@router.post("/resolutions/{resolution_id}/cancel", status_code=202, response_model=schemas.CancelOut,
             responses={**NOT_FOUND, 403: NOT_OWNER, 409: {"description": "the resolution has already ended"}},
             tags=["actions"], openapi_extra=action("cancel"), summary="Ask a running resolution to cancel")
def cancel(srv: Srv, caller: Caller, resolution_id: ResolutionId) -> dict:
    """Marks it ``canceling``; its resolution loop notices within about a second, cancels its runs
    and records ``canceled``. One whose driver is still starting (``created``) is ``canceled`` at once."""
    scopes.require_key(caller, "cancel resolutions")
    before = srv.store.get_resolution(resolution_id)
    with srv.write_lock:
        state = srv.store.request_cancel(resolution_id)
    if state is None:
        raise not_found("resolution", resolution_id)
    if state != CANCELING and not (state == CANCELED and before is not None and before.state == CLAIMED):
        raise HTTPException(409, f"resolution {resolution_id} is already {state}")
    srv.resolution_changed(resolution_id, state)
    return {"resolution_id": resolution_id, "state": state}


def _own_url(request: Request) -> str:
    """This server's address as the connection arrived (the socket, never the client's Host header)."""
    host, port = request.scope["server"]
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

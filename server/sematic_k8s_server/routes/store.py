"""``/store/*``: the rest of the Store interface, for clients that record through the server (the HTTP store)."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Iterator, Mapping
from typing import Annotated, Any

import anyio.to_thread
import sqlalchemy.exc
from fastapi import APIRouter, HTTPException
from fastapi import Path as PathParam
from fastapi.responses import StreamingResponse

from sematic_k8s import limits
from sematic_k8s.errors import CancelRequested, ContinuedAlready, DriverReplaced, ResolutionEnded, RunResolved
from sematic_k8s.store.http import (
    CANCELING_HEADER,
    CONTINUED_HEADER,
    ENDED_AT_HEADER,
    ENDED_HEADER,
    REPLACED_HEADER,
)
from sematic_k8s.store.records import Batch
from sematic_k8s.store.texts import NulText
from sematic_k8s.store.wire import batch_from_json
from sematic_k8s_server import cache_trust, schemas, scopes, writes
from sematic_k8s_server.auth import READ_BY_POST, Principal
from sematic_k8s_server.deps import API, NOT_FOUND, Caller, ResolutionId, Srv, StrictJsonRoute, not_found, nul_refused
from sematic_k8s_server.schemas import UNTOLD
from sematic_k8s_server.state import Server

INLINE_ROWS = 200  # a batch this small is checked on the event loop (no thread hop) and merged with others
WRITTEN = {"ok": True}
READ = {READ_BY_POST: True}  # a POST that only reads (its body: many keys or ids): a read-only key may send it too
router = APIRouter(prefix=API + "/store", tags=["store"], route_class=StrictJsonRoute)


@router.post("/write", response_model=schemas.Written, response_model_exclude_none=True,
             responses={403: {"description": "a resolution token writing another resolution's records, a key writing "
                                             "another key's, or (--actions-by owner) a new resolution continuing "
                                             "one the key may not continue"},
                        409: {"description": "conflicts with recorded data: an ended resolution, a resolved run, "
                                             "a second continue of a resolution, the end of one being canceled"},
                        422: {"description": "an unknown field, a value of the wrong type or size, an update making "
                                              "a resolution continue another"}},
             summary="Apply a batch of inserts and updates in one transaction")
async def write(srv: Srv, caller: Caller, body: schemas.BatchIn) -> dict:
    """The HTTP store's ``write``: a ``Batch`` as JSON, datetimes as ISO 8601 strings. A resolution token may
    write only its own resolution's runs and resolution (and artifacts, which are content-addressed).
    Concurrent requests' batches are recorded together (:meth:`~sematic_k8s_server.state.Server.write_many`)."""
    return written(await record(srv, caller, body))


def written(canceled: set[str]) -> dict:
    """The answer of a write: ``{"ok": true}``, and ``canceled``, the ids of the resolutions whose failed end it
    holds and recorded canceled (a cancel accepted before it landed won), when there are any."""
    return {**WRITTEN, "canceled": sorted(canceled)} if canceled else WRITTEN


async def record(srv: Server, caller: Principal, body: schemas.BatchIn) -> set[str]:
    """What ``POST /store/write`` does (also answered by :mod:`~sematic_k8s_server.fastpath`): the ids of the
    resolutions whose failed end the batch holds and recorded canceled (``Server.write``); HTTPException for a
    batch refused (a record's text holding a NUL character: by the store, a 422 naming the body field); the
    database's errors when it is down."""
    rows = len(body.new_runs) + len(body.run_updates) + len(body.new_resolutions) + len(body.artifacts)
    if caller.is_token or rows > INLINE_ROWS or not _known(srv, caller, body):  # queries, or much work: off the loop
        batch = await anyio.to_thread.run_sync(_checked_batch, srv, caller, body)
    else:
        batch = _checked_batch(srv, caller, body)
    try:
        if rows > INLINE_ROWS:  # a big batch in a transaction of its own: small ones do not wait behind it
            return await anyio.to_thread.run_sync(srv.write, batch)
        return await srv.writes.submit(batch)
    except sqlalchemy.exc.IntegrityError as e:
        raise HTTPException(409, f"batch conflicts with recorded data: {e.orig}".splitlines()[0]) from None
    except ResolutionEnded as e:  # the HTTP store raises it again from the header
        raise _refused(e) from None
    except RunResolved as e:
        raise HTTPException(409, str(e)) from None
    except CancelRequested as e:  # raised again by the HTTP store from the header
        raise HTTPException(409, str(e), headers={CANCELING_HEADER: e.resolution_id}) from None
    except ContinuedAlready as e:  # raised again by the HTTP store from the header
        raise HTTPException(409, str(e), headers={CONTINUED_HEADER: f"{e.resolution_id} {e.by} {e.state}"}) from None
    except NulText as e:  # the store's one check of a record's text: nothing of the batch written
        raise nul_refused(e) from None
    except writes.OUTAGE:
        raise  # 503 (problems)
    except sqlalchemy.exc.StatementError as e:
        raise HTTPException(422, f"bad batch: {e.orig}".splitlines()[0]) from None  # PostgreSQL's DETAIL: the row


def _refused(e: ResolutionEnded) -> HTTPException:
    """The 409 of a write refused as stale, with the header the HTTP store raises it again from."""
    if isinstance(e, DriverReplaced):
        at = e.taken_at.isoformat() if e.taken_at is not None else "-"
        return HTTPException(409, str(e), headers={REPLACED_HEADER: f"{e.resolution_id} {at}"})
    headers = {ENDED_HEADER: f"{e.resolution_id} {e.state}"}
    if e.ended_at is not None:
        headers[ENDED_AT_HEADER] = e.ended_at.isoformat()
    return HTTPException(409, str(e), headers=headers)


@router.post("/take_over/{resolution_id}", response_model=schemas.TakenOver, responses=NOT_FOUND,
             summary="Become the resolution's only driver (fencing): its driver epoch, bumped")
def take_over(srv: Srv, caller: Caller, resolution_id: ResolutionId) -> dict:
    """A driver starting or resuming a resolution takes it over: the writes of the drivers before it (which carry
    older epochs in ``fence``) are refused from now on. A token may take over only its own resolution, a key only one
    it recorded (:func:`~sematic_k8s_server.scopes.check_owner`)."""
    if caller.is_token and caller.resolution_id != resolution_id:
        raise HTTPException(403, f"{caller.name}'s token may not take over resolution {resolution_id}: it records "
                                 "only its own resolution")
    if not caller.is_token:
        scopes.check_owner(caller, srv.store, resolution_id, "take over")
    try:
        with srv.write_lock:
            return {"driver_epoch": srv.store.take_over(resolution_id)}
    except LookupError:
        raise not_found("resolution", resolution_id) from None


def _known(srv: Server, caller: Principal, body: schemas.BatchIn) -> bool:
    """Whether a key's batch is checked without a query (:class:`~sematic_k8s_server.scopes.Known`)."""
    if scopes.continues_any(srv.config.actions_by, body.new_resolutions, body.resolution_updates):
        return False  # read by check_continues
    return caller.key_id is None or srv.known.knows(*scopes.touched(
        body.new_runs, body.run_updates, body.new_resolutions, body.resolution_updates, body.sequence, body.fence))


def _checked_batch(srv: Server, caller: Principal, body: schemas.BatchIn) -> Batch:
    """The request's Batch (its fields' types checked by :class:`~sematic_k8s_server.schemas.BatchIn`): 422 for a
    new record under another id than its own or a value the store refuses, 403 for writes outside the caller's
    resolutions (:func:`~sematic_k8s_server.scopes.check_batch`) or for a new one continuing a resolution the caller
    may not continue (``--actions-by owner``: :func:`~sematic_k8s_server.scopes.check_continues`). Its new runs and
    resolutions are the caller's: their ``owner`` is its API key (a token's: the key that minted it), which no record
    can set or change."""
    _check_keys("run", body.new_runs)
    _check_keys("artifact", body.artifacts)
    try:
        batch = batch_from_json(body.model_dump())
    except (TypeError, ValueError, OverflowError) as e:  # OverflowError: a time before year 1 or after 9999
        raise HTTPException(422, f"bad batch: {e}") from None
    scopes.check_batch(caller, srv.store, body.new_runs, body.run_updates, body.new_resolutions,
                       body.resolution_updates, body.sequence, body.fence, srv.known)
    scopes.check_continues(caller, srv.store, srv.config.actions_by, body.new_resolutions, body.resolution_updates)
    for row in [*batch.new_runs.values(), *batch.new_resolutions]:
        row["owner"] = caller.key_id
    return batch


@router.get("/runs_of_root/{root_id}", response_model=schemas.RunList, summary="Every run of a resolution")
def runs_of_root(srv: Srv, caller: Caller, root_id: ResolutionId) -> StreamingResponse:
    """``{"items": [...]}``, every run whole, streamed: written run by run as they are read a batch at a time
    (:meth:`~sematic_k8s.store.sql.SqlStore.iter_runs_of_root`), never built whole in the server's memory (a
    resolution of thousands of runs with megabyte errors). A read failing midway cuts the answer short (its chunked
    body unended), which the client takes as a connection lost."""
    scopes.check_read(caller, root_id)
    # returned as it is: documented as the response_model (FastAPI documents no model for a StreamingResponse class)
    return streamed(r.to_dict() for r in srv.store.iter_runs_of_root(root_id))


def streamed(docs: Iterable[dict[str, Any]]) -> StreamingResponse:
    """The answer ``{"items": [...]}`` of these documents, written as they come (:func:`json_items`)."""
    return StreamingResponse(json_items(docs), media_type="application/json")


def json_items(docs: Iterable[dict[str, Any]]) -> Iterator[bytes]:
    """``{"items": [...]}`` of these JSON documents (records' ``to_dict``), a document at a time (as JSONResponse
    writes JSON)."""
    yield b'{"items":['
    for i, doc in enumerate(docs):
        text = json.dumps(doc, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        yield (b"," if i else b"") + text.encode()
    yield b"]}"


@router.get("/cached/{cache_key}", response_model=schemas.RunOut, responses=NOT_FOUND,
            summary="The most recent resolved run with this cache key that the caller may reuse")
def cached(srv: Srv, caller: Caller, cache_key: Annotated[str, PathParam(pattern=schemas.SHA256)]) -> dict:
    """The most recent resolved run with this key recorded by the caller's API key or a key the server trusts
    (:mod:`~sematic_k8s_server.cache_trust`); 404 when there is none."""
    trust = cache_trust.trust_of(srv.store.engine, srv.config.cache_trusted_keys, caller)
    if trust is None:
        run = srv.store.find_cached(cache_key)
    else:
        hit = srv.store.find_trusted([cache_key], trust)[0].get(cache_key)
        run = srv.store.get_run(hit.id) if hit is not None else None
    if run is None:
        raise HTTPException(404, f"no resolved run with cache key {cache_key} that you may reuse")
    return run.to_dict()


@router.post("/cached", response_model=schemas.CachedRuns, openapi_extra=READ,
             summary="The most recent resolved run of each cache key that the caller may reuse")
def cached_many(srv: Srv, caller: Caller, body: schemas.CacheKeys) -> dict:
    """The HTTP store's ``find_cached_many``: one look-up for a planning wave's cache keys (those that hit), among the
    runs the caller may reuse (:mod:`~sematic_k8s_server.cache_trust`); ``skipped``: the keys that missed though they
    have a run another key recorded (the asker says why it missed), each as :data:`~sematic_k8s_server.schemas.UNTOLD`,
    never that run's id: the answer names no run the caller may not reuse. Was: the other key's run's id."""
    trust = cache_trust.trust_of(srv.store.engine, srv.config.cache_trusted_keys, caller)
    if trust is None:
        return {"items": {k: r.to_dict() for k, r in srv.store.find_cached_many(body.keys).items()}, "skipped": {}}
    hits, skipped = srv.store.find_trusted(body.keys, trust)
    return {"items": {k: r.to_dict() for k, r in hits.items()}, "skipped": dict.fromkeys(sorted(skipped), UNTOLD)}


@router.post("/artifacts", response_model=schemas.ArtifactList, openapi_extra=READ,
             summary="The artifacts with these ids")
def artifacts(srv: Srv, body: schemas.ArtifactIds) -> StreamingResponse:
    """``{"items": [...]}``, the records of those of these ids recorded, streamed as they are read a batch at a time
    (:meth:`~sematic_k8s.store.sql.SqlStore.iter_artifacts`): a record's summary and inline bytes are bounded only
    by its write's size, and any key may ask for 10,000 ids. Was: the answer built whole, several times its size."""
    return streamed(a.to_dict() for a in srv.store.iter_artifacts(body.ids))


@router.post("/artifact_formats", response_model=schemas.ArtifactFormats, openapi_extra=READ,
             summary="The formats and types of the artifacts with these ids (no summaries)")
def artifact_formats(srv: Srv, body: schemas.FormatIds) -> StreamingResponse:
    """``{"items": [...]}``, what reading the values of those of these ids recorded takes (a driver's rerun reusing
    thousands): each one's format, type and inline bytes, without its summary, read
    :data:`~sematic_k8s.store.reads.IDS_PER_QUERY` ids a query and streamed
    (:meth:`~sematic_k8s.store.sql.SqlStore.iter_artifact_formats`). Inline bytes over
    :data:`~sematic_k8s.limits.INLINE_BYTES` (a record of a client's making) are left out, flagged ``inline_large``:
    an item is never larger than that and its type name. The same callers as ``POST /store/artifacts``: any key (a
    read-only one too) or resolution token."""
    rows = srv.store.iter_artifact_formats(body.ids, limits.INLINE_BYTES)
    return streamed({"id": art, "format": fmt, "type_name": type_name, "inline_large": large, "size": size,
                     "inline": None if inline is None else base64.b64encode(inline).decode()}
                    for art, fmt, type_name, inline, large, size in rows)


@router.get("/cancel_requested/{resolution_id}", response_model=schemas.CancelRequested,
            summary="Whether a resolution was asked to cancel (polled by its resolution loop)")
def cancel_requested(srv: Srv, caller: Caller, resolution_id: ResolutionId) -> dict:
    scopes.check_read(caller, resolution_id)
    return {"cancel_requested": srv.store.cancel_requested(resolution_id)}


def _check_keys(kind: str, rows: Mapping[str, Mapping[str, Any]]) -> None:
    """422 for a new record whose key in the batch is not its id."""
    for key, row in rows.items():
        if row["id"] != key:
            raise HTTPException(422, f"new {kind} {key}: its id is {row['id']}; a batch keys each new {kind} by its id")

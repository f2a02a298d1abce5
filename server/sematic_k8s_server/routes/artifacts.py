"""``/artifacts/{artifact_id}``: an artifact's record, and its serialized bytes from artifact storage."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import Response

from sematic_k8s import serialization
from sematic_k8s.storage.base import ArtifactMissing, artifact_key, read_part
from sematic_k8s_server import schemas, scopes, verdicts
from sematic_k8s_server.deps import API, NOT_FOUND, ArtifactId, Caller, Srv, found
from sematic_k8s_server.storages import StorageNotAllowed

router = APIRouter(prefix=API, tags=["artifacts"])


@router.get("/artifacts/{artifact_id}", response_model=schemas.ArtifactOut, responses=NOT_FOUND,
            summary="An artifact's type and summary")
def get_artifact(srv: Srv, artifact_id: ArtifactId) -> dict:
    art = found(srv.store.get_artifact(artifact_id), "artifact", artifact_id)
    return art.to_dict()


@router.get("/artifacts/{artifact_id}/data", response_class=Response,
            responses={**NOT_FOUND, 200: {"content": {"application/octet-stream": {}}},
                       413: {"description": "larger than the server serves (256 MiB)"},
                       500: {"description": "the bytes in storage are corrupt (they do not hash to the id)"}},
            summary="An artifact's serialized bytes, verified against its id")
def get_artifact_data(srv: Srv, caller: Caller, artifact_id: ArtifactId,
                      resolution_id: Annotated[str | None, Query(
                          pattern=schemas.HEX_ID, description="read it from the storage this resolution recorded "
                          "(if this server reads that storage)")] = None) -> Response:
    if resolution_id:  # a resolution's recorded storage is of its records: a token reads only its own's
        scopes.check_read(caller, resolution_id)
    art = found(srv.store.get_artifact(artifact_id), "artifact", artifact_id)
    try:
        storage = (None if art.inline is not None  # a small artifact: its bytes are in its record
                   else srv.storages.of_resolution(srv.store, resolution_id) if resolution_id else srv.storage)
    except StorageNotAllowed as e:
        raise HTTPException(409, str(e)) from None
    if art.size > verdicts.WHOLE_READ_BYTES:  # read whole to be verified before any byte is sent
        raise too_large(artifact_id, art.size)
    try:
        if storage is None:
            data = art.inline or b""
        else:  # no more than the cap is read, whatever size its (client-written) record says
            part = read_part(storage, artifact_key(artifact_id), 0, verdicts.WHOLE_READ_BYTES + 1)
            if part.size > verdicts.WHOLE_READ_BYTES:
                raise too_large(artifact_id, part.size)
            data = part.data
        serialization.verify(artifact_id, art.format, data)
    except KeyError:
        raise HTTPException(404, str(ArtifactMissing(artifact_id))) from None  # with what repairs it
    except ValueError as e:  # never serve corrupt bytes
        raise HTTPException(500, str(e)) from None
    return Response(data, media_type="application/octet-stream",
                    headers={"Content-Disposition": f'attachment; filename="{artifact_id}"'})


def too_large(artifact_id: str, size: int) -> HTTPException:
    return HTTPException(413, f"artifact {artifact_id} is {size:,} bytes, more than this server serves "
                              f"({verdicts.WHOLE_READ_BYTES:,}): read it from its storage directly (its key: "
                              f"{artifact_key(artifact_id)})")

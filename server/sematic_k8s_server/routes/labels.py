"""``/resolutions/{id}/labels``: the tags and the note people put on a resolution."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException

from sematic_k8s import limits
from sematic_k8s.errors import LabelsChanged, TooManyTags
from sematic_k8s.store.texts import NulText
from sematic_k8s_server import schemas
from sematic_k8s_server.deps import (
    API,
    NOT_FOUND,
    NOT_OWNER,
    ResolutionId,
    Srv,
    StrictJsonRoute,
    action,
    not_found,
    nul_refused,
)

router = APIRouter(prefix=API, tags=["resolutions"], route_class=StrictJsonRoute)


@router.post("/resolutions/{resolution_id}/labels", response_model=schemas.ResolutionOut,
             openapi_extra=action("label or note"), responses={
    **NOT_FOUND, 403: NOT_OWNER,
    409: {"description": "the labels changed since the version the change was made to (labels_version)"},
    422: {"description": f"more tags than a resolution has ({limits.TAGS}), or a labels_version newer than "
                          "the resolution's"}},
             summary="Add or remove tags, set or clear the note")
def label(srv: Srv, resolution_id: ResolutionId, body: schemas.LabelsIn) -> dict:
    """Tags are kept sorted, each once; adding one already there or removing one not there is no error.
    ``note`` replaces the note (``""`` clears it); leave it out to keep the note. With ``labels_version`` (the
    resolution's, as read), a change made to labels changed since is refused unless it is already in effect: 409,
    and nothing changes. Returns the resolution."""
    try:
        with srv.write_lock:
            res = srv.store.label_resolution(resolution_id, add=body.add, remove=body.remove, note=body.note,
                                             set_note=body.note is not None, labels_version=body.labels_version)
    except LabelsChanged as e:
        raise HTTPException(409, str(e)) from None
    except NulText as e:  # a note holding a NUL character: refused by the store, naming the body field
        raise nul_refused(e) from None
    except (TooManyTags, ValueError) as e:  # ValueError: a labels_version the resolution never had
        raise HTTPException(422, str(e)) from None
    if res is None:
        raise not_found("resolution", resolution_id)
    srv.publish([{"type": "resolution", "id": resolution_id, "root_id": resolution_id, "state": res.state}])
    return res.to_dict()

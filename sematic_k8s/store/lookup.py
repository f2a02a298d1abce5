"""Runs and resolutions found by their id or a unique start of it (``3f2a``): the one look-up of the CLI and of the
resolvers' ``rerun_from``, over any store (SQL, or the server's ``GET /runs?id_prefix=`` and
``/resolutions?id_prefix=``); and whether a resolution found so may be re-run (:func:`refuse_live`)."""

from __future__ import annotations

import re

from sematic_k8s.errors import ResolutionLive
from sematic_k8s.store.base import Store
from sematic_k8s.store.records import ENDED_STATES, ResolutionRecord, RunRecord

ID = re.compile(r"^[0-9a-f]{1,64}$")
FULL_ID_LENGTH = 32  # uuid4 hex: a complete run id, looked up directly
CANDIDATES = 5  # ids named when a start is ambiguous
SHOWN = 40  # characters of what was given that a message repeats


def find_run(store: Store, given: str) -> RunRecord:
    """The run whose id is ``given`` or starts with it (when only one does), whole. LookupError in one line when
    ``given`` is not an id, when no run has it, or when several start with it (naming a few of them)."""
    run_id = given.strip().lower()
    if not ID.match(run_id):
        raise LookupError(f"{quoted(given)} is not a run id: ids are hexadecimal, as `sematic-k8s resolutions list` "
                          "and `sematic-k8s runs list` show them")
    if len(run_id) >= FULL_ID_LENGTH:
        run = store.get_run(run_id)
        if run is not None:
            return run
    matches = store.list_runs(id_prefix=run_id, limit=CANDIDATES + 1)
    found = store.get_run(matches[0].id) if len(matches) == 1 else None  # whole: a listing leaves out its source
    if found is not None:
        return found
    if len(matches) <= 1:
        raise LookupError(f"no run with id {quoted(given)}: list them with `sematic-k8s resolutions list` or "
                          "`sematic-k8s runs list`")
    raise ambiguous("run", given, [(r.id, r.func_name) for r in matches])


def find_resolution(store: Store, given: str) -> ResolutionRecord | None:
    """The resolution whose id is ``given`` or starts with it (when only one does), whole: a claim the server made
    for a rerun too, which has no root run until its driver records it. None when no resolution's id starts so (a
    run's may); LookupError in one line when ``given`` is not an id, or when several start with it."""
    res_id = given.strip().lower()
    if not ID.match(res_id):
        raise LookupError(f"{quoted(given)} is not a resolution id: ids are hexadecimal, as "
                          "`sematic-k8s resolutions list` shows them")
    if len(res_id) >= FULL_ID_LENGTH:
        res = store.get_resolution(res_id)
        if res is not None:
            return res
    matches = [r for r in store.list_resolutions(id_prefix=res_id, limit=CANDIDATES + 1)
               if r.id.startswith(res_id)]  # a server older than id_prefix lists them all
    if len(matches) <= 1:
        return store.get_resolution(matches[0].id) if matches else None  # whole: a listing clips its error
    raise ambiguous("resolution", given, [(r.id, r.root_func_path.rpartition(":")[2]) for r in matches])


def refuse_live(res: ResolutionRecord | None) -> None:
    """Raise :class:`ResolutionLive` when ``res``, the resolution a rerun would re-run, has not ended: the one check
    of every way a rerun starts (the resolvers, so the CLI too; the server's rerun action). ``res`` must come from a
    store's read, which marks a silent resolution dead first (:mod:`~sematic_k8s.store.liveness`). One recorded
    without heartbeats (by an older version) does not count, as for a second ``continue``
    (:func:`~sematic_k8s.store.guards.refuse_second_continue`): whether it still runs cannot be told, and refused it
    could never be re-run. Ended is final, so nothing can make it live again between this check and the rerun."""
    if res is not None and res.state not in ENDED_STATES and res.heartbeat_at is not None:
        raise ResolutionLive(res.id, res.state)


def ambiguous(kind: str, given: str, matches: list[tuple[str, str]]) -> LookupError:
    """The one line for an id start that several ``kind`` ids have: a few of them (id, func name) named."""
    shown = ", ".join(f"{id_} ({name})" for id_, name in matches[:CANDIDATES])
    more = " and more" if len(matches) > CANDIDATES else ""
    return LookupError(f"{kind} id prefix {quoted(given)} is ambiguous: it starts {shown}{more}; give more of the id")


def quoted(given: str) -> str:
    """``given`` as a message repeats it: quoted, its control characters escaped, and past :data:`SHOWN`
    characters (a file pasted for an id) its start and its length."""
    if len(given) <= SHOWN:
        return repr(given)
    return f"{given[:SHOWN]!r}... ({len(given):,} characters)"

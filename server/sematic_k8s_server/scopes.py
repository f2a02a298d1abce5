"""What a resolution token may do (user API keys may do everything but manage keys, which takes an admin key, and write
into the resolutions of other keys, or, with ``--actions-by owner``, act on them; read-only keys only read, refused by
the Guard: ``auth.read_only_refusal``).

A token may read its own resolution and the one it re-runs, record only its own resolution's runs, look up
the cache and read artifacts by their content id (knowing a sha256 is what makes it readable: cache hits
reuse other resolutions' outputs), from the default storage or the one a resolution it may read recorded.
Everything else (listing, live events, reruns, cancels, minting tokens, keys) needs an API key. Each refusal
is a 403 that says which.

Records have owners (the API key that wrote them; a token's: the key that minted it). A key, and its tokens, record
runs only into the resolutions that key recorded: none into another key's, whose reruns would reuse them, nor into one
recorded before owners were (only the token its driver holds may). Cache look-ups are scoped in
:mod:`~sematic_k8s_server.cache_trust`. On a server started with ``--actions-by owner`` a user key also cancels,
re-runs, continues, labels and notes only the resolutions it recorded (:func:`action_refusal`), and records no
resolution continuing another key's (:func:`check_continues`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Mapping, Sequence

import sqlalchemy as sa

from sematic_k8s.store.guards import continued
from sematic_k8s.store.records import CLAIMED, Batch
from sematic_k8s.store.sql import SqlStore
from sematic_k8s.store.tables import Base, ResolutionRow, RunRow
from sematic_k8s_server.auth import USER, Principal, api_keys, role_of
from sematic_k8s_server.config import OWNER
from sematic_k8s_server.problems import ApiError

log = logging.getLogger("sematic_k8s")
_runs = Base.metadata.tables[RunRow.__tablename__]
_res = Base.metadata.tables[ResolutionRow.__tablename__]
CHUNK = 500
_ID = r"[0-9a-f]{1,64}"
TOKEN_ROUTES = tuple((method, re.compile(path)) for method, path in (  # all a driver calls; default: refused
    ("GET", rf"/api/v1/resolutions/{_ID}(/graph)?"),
    ("GET", r"/api/v1/runs"),
    ("GET", rf"/api/v1/runs/{_ID}(/logs)?"),
    ("GET", rf"/api/v1/artifacts/{_ID}(/data)?"),
    ("POST", r"/api/v1/store/(write|artifacts|artifact_formats|cached)"),
    ("GET", rf"/api/v1/store/(runs_of_root|cached|cancel_requested)/{_ID}"),
    ("POST", rf"/api/v1/store/take_over/{_ID}"),
))


def token_may_call(method: str, path: str) -> bool:
    """Whether a resolution's token may call this endpoint at all (the routes then check which records)."""
    return any(method == m and pattern.fullmatch(path) for m, pattern in TOKEN_ROUTES)


def require_key(principal: Principal, action: str) -> None:
    """403 for a resolution token: ``action`` needs an API key."""
    if principal.is_token:
        raise ApiError(403, f"{principal.name}'s token cannot {action}: that needs an API key")


def require_admin(principal: Principal, action: str) -> None:
    if not principal.is_admin:
        raise ApiError(403, f"{action} needs an admin API key (sematic-k8s api-keys create NAME --admin)")


def check_read(principal: Principal, resolution_id: str | None) -> None:
    """403 unless ``principal`` may read the records of ``resolution_id``."""
    if not principal.may_read(resolution_id):
        raise ApiError(403, f"{principal.name}'s token may not read resolution {resolution_id}")


def check_run(principal: Principal, run_id: str, root_id: str) -> None:
    """403 unless ``principal`` may read the records of run ``run_id`` (of resolution ``root_id``): the refusal names
    the run the caller asked for, never its resolution."""
    if not principal.may_read(root_id):
        raise ApiError(403, f"{principal.name}'s token may not read run {run_id}: it reads only its own "
                            "resolution's runs")


def roots_of(store: SqlStore, run_ids: Iterable[str]) -> dict[str, str]:
    """run id -> its resolution (root) id, for the runs recorded."""
    ids, out = list(run_ids), dict[str, str]()
    with store.engine.connect() as conn:
        for i in range(0, len(ids), CHUNK):
            chunk = ids[i:i + CHUNK]
            for row in conn.execute(sa.select(_runs.c.id, _runs.c.root_id).where(_runs.c.id.in_(chunk))):
                out[row.id] = row.root_id
    return out


Records = Mapping[str, Mapping[str, object]]  # id -> a record's fields
NOT_YOURS = ("records only the resolutions its key started: start one of your own, or re-run this one "
             "(sematic-k8s rerun RUN_ID) to build on its runs")


def whose(owner: str | None, what: str) -> str:
    """Why a key may not write into ``what`` (a resolution: "it", "its resolution") recorded by ``owner``, in the words
    of a 403: another key's, or one recorded before owners were (None)."""
    if owner is None:
        return f"{what} was recorded before the server recorded owners (only its driver's token may write into it)"
    return f"another API key recorded {what}"


def acts_on_any(principal: Principal, actions_by: str) -> bool:
    """Whether ``principal`` may act on any resolution, which :func:`action_refusal` answers with no read: under
    ``actions_by`` "team" any key that reaches the route, under "owner" an admin key (and anyone in local mode)."""
    return actions_by != OWNER or principal.is_admin


def action_refusal(principal: Principal, store: SqlStore, actions_by: str, resolution_id: str,
                   action: str) -> str | None:
    """Why ``principal`` may not ``action`` (cancel, re-run, ...) resolution ``resolution_id``, in one line; None if
    it may. Under ``actions_by`` "owner" a user key acts only on the resolutions it recorded; an admin key (and anyone
    in local mode) on any, and alone on one recorded with no owner (before owners were, or straight into the
    database). One not recorded: None (the route answers 404). Under "team": any key that reaches the route. Reads
    the resolution's owner only when :func:`acts_on_any` does not answer."""
    if acts_on_any(principal, actions_by):
        return None
    k = api_keys.c
    with store.engine.connect() as conn:
        row = conn.execute(sa.select(_res.c.owner, k.name, k.revoked_at)
                           .select_from(_res.outerjoin(api_keys, k.id == _res.c.owner))
                           .where(_res.c.id == resolution_id)).first()
    if row is None or (row.owner is not None and row.owner == principal.key_id):
        return None
    refused = f"key {principal.name!r} may not {action} resolution {resolution_id}"
    if row.owner is None:
        return (f"{refused} (it has no owner: recorded before the server recorded owners, or straight into the "
                "database): ask an admin")
    owner = f"{row.name!r}{', revoked' if row.revoked_at is not None else ''}" if row.name is not None \
        else f"key id {row.owner}, not among this server's keys"
    return f"{refused} (owned by {owner}): ask its owner or an admin"


def continues_any(actions_by: str, new_resolutions: Sequence[Mapping[str, object]],
                  resolution_updates: Records) -> bool:
    """Whether :func:`check_continues` reads the store for a batch: an update sets a resolution's ``rerun_of`` or
    ``settings``, or (under "owner") a new resolution continues another."""
    return (any("rerun_of" in fields or "settings" in fields for fields in resolution_updates.values())
            or (actions_by == OWNER and any(continued(dict(res)) is not None for res in new_resolutions)))


def check_continues(principal: Principal, store: SqlStore, actions_by: str,
                    new_resolutions: Sequence[Mapping[str, object]], resolution_updates: Records) -> None:
    """The writes of a batch that make a resolution continue another (``rerun_mode`` continue:
    :func:`~sematic_k8s.store.guards.continued`). A resolution has one continuation at a time (a second is refused
    while the first runs), which is recorded with it: an update changing what a resolution continues (which that check
    never sees), or saying it continues one of a resolution not recorded before the batch, is a 422. Under
    ``actions_by`` "owner" a key that may not continue a resolution (:func:`action_refusal`) records no resolution
    continuing it either, a 403: recorded, it would keep the owner from continuing it (409, continued already) for as
    long as it beats, and the owner may not cancel it. A token asks as the key that minted it. A record in the place
    of the server's claim of the same continue (its rerun route checked the key that asked) is let through, and so is
    one under a recorded id that is no claim (its insert changes nothing)."""
    if not continues_any(actions_by, new_resolutions, resolution_updates):
        return
    wanted = {} if acts_on_any(principal, actions_by) else {
        str(res.get("id")): of for res in new_resolutions if (of := continued(dict(res))) is not None}
    updated = {r: f for r, f in resolution_updates.items() if "rerun_of" in f or "settings" in f}
    with store.engine.connect() as conn:
        recorded = {row.id: row._asdict() for row in conn.execute(
            sa.select(_res.c.id, _res.c.state, _res.c.rerun_of, _res.c.settings)
            .where(_res.c.id.in_([*wanted, *updated])))}
        asker = principal
        if principal.is_token and wanted:  # as the key that minted it (an admin's continues any)
            key = conn.execute(sa.select(api_keys.c.name, api_keys.c.admin, api_keys.c.read_only)
                               .where(api_keys.c.id == principal.key_id)).first() if principal.key_id else None
            asker = Principal(role_of(key.admin, key.read_only) if key else USER,
                              key.name if key else principal.name, key_id=principal.key_id)
    for res_id, fields in updated.items():
        settings, row = fields.get("settings"), recorded.get(res_id)
        touches = "rerun_of" in fields or (isinstance(settings, dict) and settings.get("rerun_mode") == "continue")
        if touches and (row is None or continued({**row, **fields}) != continued(row)):  # None: not recorded, or
            # recorded by this batch or one at the same time (a race the store's check would not see)
            raise ApiError(422, f"resolution {res_id}: an update may not change what it continues (rerun_of, "
                                "settings.rerun_mode 'continue'); a continue is a new resolution, recorded as one "
                                "(sematic-k8s rerun RUN_ID --mode continue)")
    for res_id, of in wanted.items():
        row = recorded.get(res_id)
        if row is not None and (row["state"] != CLAIMED or continued(row) == of):
            continue
        if (refusal := action_refusal(asker, store, actions_by, of, "continue")) is not None:
            whose = f"{principal.name}'s token: " if principal.is_token else ""
            raise ApiError(403, f"{whose}{refusal} (resolution {res_id} records that it continues it)",
                           reason="not-owner")


def owners_of(store: SqlStore, resolution_ids: Iterable[str]) -> dict[str, str | None]:
    """resolution id -> the API key that recorded it (None: recorded before owners were), for those recorded."""
    ids, out = list(resolution_ids), dict[str, str | None]()
    with store.engine.connect() as conn:
        for i in range(0, len(ids), CHUNK):
            for row in conn.execute(sa.select(_res.c.id, _res.c.owner).where(_res.c.id.in_(ids[i:i + CHUNK]))):
                out[row.id] = row.owner
    return out


class Known:
    """What the write checks read of the database, kept for the next ones (one process's): a recorded run's
    resolution and a resolution's owner never change (a claim's driver records it in its place as the same key's),
    so a driver's steady writes are checked without a query, on the event loop (learned as they are read, and read
    back once the batches the checks let through landed: :meth:`written`). A resolution recorded before owners is
    read each time (its claim's driver records it as its own key's). Cleared past :data:`LIMIT` entries."""

    LIMIT = 500_000

    def __init__(self) -> None:
        self.roots: dict[str, str] = {}
        self.owners: dict[str, str] = {}

    def knows(self, run_ids: Iterable[str], resolution_ids: Iterable[str]) -> bool:
        """Whether a check of these runs and resolutions needs no query: each run's resolution and each owner known."""
        roots = [self.roots.get(r) for r in run_ids]
        return None not in roots and all(r in self.owners for r in [*resolution_ids, *roots])

    def roots_of(self, store: SqlStore, run_ids: list[str]) -> dict[str, str]:
        """:func:`roots_of`, the runs learned before not read again."""
        out = {r: root for r in run_ids if (root := self.roots.get(r)) is not None}
        if len(out) < len(set(run_ids)):
            found = roots_of(store, [r for r in run_ids if r not in out])
            self._learn(self.roots, found)
            out.update(found)
        return out

    def owners_of(self, store: SqlStore, resolution_ids: Iterable[str]) -> dict[str, str | None]:
        """:func:`owners_of`, the resolutions learned before not read again."""
        ids = list(resolution_ids)
        out: dict[str, str | None] = {r: owner for r in ids if (owner := self.owners.get(r)) is not None}
        if len(out) < len(set(ids)):
            found = owners_of(store, [r for r in ids if r not in out])
            self._learn(self.owners, {r: owner for r, owner in found.items() if owner is not None})
            out.update(found)
        return out

    def written(self, store: SqlStore, batches: Sequence[Batch]) -> None:
        """Learn what the batches the checks let through recorded, as the database holds it: their new runs'
        resolutions, their new resolutions' owners, read back in one query each (two writers recording one new id
        at once both pass their checks, and only the first insert lands: the other batch's own fields were not
        recorded). A failed read learns nothing: the next check reads them."""
        runs = [r for b in batches for r in b.new_runs]
        resolutions = [str(r["id"]) for b in batches for r in b.new_resolutions]
        try:
            if runs:
                self._learn(self.roots, roots_of(store, runs))
            if resolutions:
                found = owners_of(store, resolutions)
                self._learn(self.owners, {r: owner for r, owner in found.items() if owner is not None})
        except sa.exc.SQLAlchemyError as e:  # the batches are written: their answers stand
            log.warning("could not read back the owners of what was just written (read at the next check): %s",
                        str(e).splitlines()[0])

    def _learn(self, known: dict[str, str], found: dict[str, str]) -> None:
        if len(known) + len(found) > self.LIMIT:
            known.clear()
        known.update(found)


def touched(new_runs: Records, run_updates: Records, new_resolutions: Sequence[Mapping[str, object]],
            resolution_updates: Records, sequence: Iterable[str], fence: Iterable[str]) -> tuple[list[str], list[str]]:
    """The runs a batch records or changes, and the resolutions it records into (a new run's as it declares it)."""
    resolutions = [str(res.get("id")) for res in new_resolutions]
    resolutions += [*resolution_updates, *sequence, *fence, *(str(f.get("root_id")) for f in new_runs.values())]
    return [*new_runs, *run_updates], list(dict.fromkeys(resolutions))


def may_own(principal: Principal, owner: str | None) -> bool:
    """Whether ``principal`` may record into a resolution recorded by ``owner``: its own key's (a token: the key that
    minted it). One recorded before owners were (None) only by a token (its driver under way through the upgrade:
    a key may mint none for it, :func:`check_owner`)."""
    return owner == principal.key_id if owner is not None else principal.is_token


def check_owner(principal: Principal, store: SqlStore, resolution_id: str, action: str) -> None:
    """403 unless ``principal`` (an API key, in a server with keys) may ``action`` resolution ``resolution_id``
    (mint its token, take it over): not recorded yet, or recorded by its own key."""
    if principal.key_id is None and not principal.is_token:
        return  # local mode: no keys, no owners
    owners = owners_of(store, [resolution_id])
    if resolution_id in owners and owners[resolution_id] != principal.key_id:
        raise ApiError(403, f"API key {principal.name!r} may not {action} resolution {resolution_id}: "
                            f"{whose(owners[resolution_id], 'it')}, and a key {NOT_YOURS}")


def check_batch(principal: Principal, store: SqlStore, new_runs: Records, run_updates: Records,
                new_resolutions: Sequence[Mapping[str, object]], resolution_updates: Records,
                sequence: Iterable[str] = (), fence: Iterable[str] = (), known: Known | None = None) -> None:
    """403 unless every run and resolution a batch creates or changes (its write sequence and fence included: a
    fence's refusal names its resolution's driver and when it took over) belongs to a token's resolution, and to a
    resolution its key recorded (:func:`may_own`; a new run's, recorded or in the batch). A run's refusal names the
    run, never the resolution it is recorded in. ``known``: what earlier checks read (:class:`Known`). Local mode
    (no keys) writes anything."""
    if principal.key_id is None and not principal.is_token:
        return
    known = known if known is not None else Known()
    own = principal.resolution_id
    who = f"{principal.name}'s token" if principal.is_token else f"API key {principal.name!r}"

    def refuse(what: str) -> ApiError:
        return ApiError(403, f"{who} may not write {what}: it records only its own resolution")

    def not_owned(what: str, owner: str | None) -> ApiError:
        return ApiError(403, f"{who} may not write {what}: {whose(owner, 'its resolution')}, and a key {NOT_YOURS}")

    recorded = known.roots_of(store, list(dict.fromkeys([*new_runs, *run_updates])))  # run id -> its resolution
    if principal.is_token:
        _check_token(refuse, own, recorded, new_runs, run_updates, new_resolutions, resolution_updates, sequence, fence)
    naming: dict[str, str] = {}  # resolution id -> what a refusal names
    for res in new_resolutions:
        naming.setdefault(str(res.get("id")), f"resolution {res.get('id')}")
    for res_id in [*resolution_updates, *sequence, *fence]:
        naming.setdefault(res_id, f"resolution {res_id}")
    for run_id, fields in new_runs.items():
        naming.setdefault(str(fields.get("root_id")), f"run {run_id}")
    for run_id in run_updates:
        if run_id not in recorded and run_id not in new_runs:
            raise ApiError(403, f"{who} may not update run {run_id}, which is not recorded (record it first, in the "
                                "same batch or before)")
    for run_id, root in recorded.items():  # a new run under a recorded run's id: checked as that run
        naming.setdefault(root, f"run {run_id}")
    owners = known.owners_of(store, naming)
    created = {res.get("id") for res in new_resolutions}
    for res_id, what in naming.items():
        if res_id in owners:
            if not may_own(principal, owners[res_id]):
                raise not_owned(what, owners[res_id])
        elif res_id not in created:
            raise ApiError(403, f"{who} may not write {what}: its resolution {res_id} is not recorded (record the "
                                "resolution first, in the same batch or before)")


def _check_token(refuse: Callable[[str], ApiError], own: str | None, recorded: Mapping[str, str], new_runs: Records,
                 run_updates: Records, new_resolutions: Sequence[Mapping[str, object]], resolution_updates: Records,
                 sequence: Iterable[str], fence: Iterable[str]) -> None:
    """A token's batch: every record it creates or changes is its own resolution's (a run's as ``recorded``: run id
    -> its resolution, for the runs recorded)."""
    for res in new_resolutions:
        if res.get("id") != own:
            raise refuse(f"resolution {res.get('id')}")
    for res_id in [*resolution_updates, *sequence, *fence]:
        if res_id != own:
            raise refuse(f"resolution {res_id}")
    for run_id, fields in new_runs.items():
        if fields.get("root_id") != own:
            raise refuse(f"run {run_id}")
    for run_id in [*new_runs, *run_updates]:
        root = recorded.get(run_id) or (new_runs.get(run_id) or {}).get("root_id")
        if root != own:
            raise refuse(f"run {run_id}" if root else f"run {run_id}, which is not recorded")

"""A resolution's graph at a glance, however many runs it has: sibling runs of one func (a fan-out) become one
group node with counts by state, shown a page at a time on request; edges are drawn between what is shown;
runs of one func side by side are told apart by the input that differs between them (``lr=0.1``).

Pure: it works on run rows and artifact summaries, and never touches the database.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sematic_k8s.graph import json_refs
from sematic_k8s.store.records import NEVER_STARTED_KIND, never_started

GROUP_MIN = 12  # siblings of one func from this many on are shown as one group
PAGE = 50  # runs of an expanded group shown at a time
LABEL_CHARS = 28


@dataclass(frozen=True)
class RunRow:
    """The columns of a run the overview needs."""

    id: str
    parent_id: str | None
    func_path: str
    func_name: str
    state: str
    input_refs: dict[str, Any]
    inputs: dict[str, str]
    cached_from: str | None
    notes: dict[str, Any]
    attempts: int
    created_at: Any
    started_at: Any
    ended_at: Any
    unstarted: bool = False  # its error names WorkerNeverStarted among its classes (the error is not read)

    def never_started(self) -> bool:
        """Whether its code never began (:func:`sematic_k8s.store.records.never_started`)."""
        return never_started(self.started_at, self.attempts, self.notes,
                             (NEVER_STARTED_KIND,) if self.unstarted else ())


def group_id(parent_id: str | None, func_path: str) -> str:
    return f"g/{parent_id or ''}/{func_path}"


def _iso(v: Any) -> str | None:
    return v.isoformat() + "Z" if v is not None and hasattr(v, "isoformat") else v


def _run_node(r: RunRow, parent: str | None, has_children: bool) -> dict[str, Any]:
    return {"kind": "run", "id": r.id, "parent_id": parent, "func_name": r.func_name, "func_path": r.func_path,
            "state": r.state, "created_at": _iso(r.created_at), "started_at": _iso(r.started_at),
            "ended_at": _iso(r.ended_at), "cached": bool(r.cached_from),
            "reused": bool((r.notes or {}).get("reused_from")), "attempts": r.attempts, "composite": has_children,
            "label": None, **_start_facts(r)}


def _start_facts(r: RunRow) -> dict[str, Any]:
    """What the rule of whether a run started reads of its record, as a pruned copy of it (so the dashboard's
    ``neverStarted`` reads a node as it reads a run), and only when it has it: ``notes.waiting`` (what its worker
    waits, or waited, for) and an ``error`` whose ``mro`` names WorkerNeverStarted."""
    out: dict[str, Any] = {}
    waiting = (r.notes or {}).get("waiting")
    if isinstance(waiting, str) and waiting:
        out["notes"] = {"waiting": waiting}
    if r.unstarted:
        out["error"] = {"mro": [NEVER_STARTED_KIND]}
    return out


def _group_node(gid: str, members: Sequence[RunRow], parent: str | None, total: int, offset: int,
                shown: int) -> dict[str, Any]:
    ends = [m.ended_at for m in members]
    starts = [m.started_at for m in members if not m.never_started()]
    return {"kind": "group", "id": gid, "parent_id": parent, "func_name": members[0].func_name,
            "func_path": members[0].func_path, "count": len(members), "total": total, "offset": offset,
            "shown": shown, "states": dict(Counter(m.state for m in members)),
            "created_at": _iso(min(m.created_at for m in members)), "started_at": _iso(min(starts)) if starts else None,
            "ended_at": _iso(max(ends)) if all(e is not None for e in ends) else None}


def overview(runs: Sequence[RunRow], root_id: str, expand: Mapping[str, int] | None = None,
             page: int = PAGE) -> dict[str, Any]:
    """``{"nodes": [...], "edges": [{"source", "destination", "params"}], "counts": {state: n}, "total_runs"}``.

    Nodes are runs (``kind: "run"``) and groups (``kind: "group"``: ``count`` runs of one func in one parent
    not shown one by one); ``parent_id`` is the node's enclosing composition. ``expand`` maps a group id to the
    offset of the page of its runs to show: those runs become nodes, the rest of the group stays a group
    (``total`` runs in all; ``offset`` and ``shown`` say which page is out)."""
    expand = expand or {}
    kids: dict[str | None, list[RunRow]] = defaultdict(list)
    ids = {r.id for r in runs}
    for r in runs:
        kids[r.parent_id if r.parent_id in ids and r.parent_id != r.id else None].append(r)
    for siblings in kids.values():
        siblings.sort(key=lambda r: (r.created_at is None, r.created_at, r.id))

    node_of: dict[str, str] = {}  # run id -> the node it is shown as
    nodes: list[dict[str, Any]] = []
    stack: list[tuple[str | None, str | None]] = [(None, None)]  # (parent run id, its node)
    seen: set[str] = set()
    while stack:
        parent, parent_node = stack.pop()
        by_func: dict[str, list[RunRow]] = defaultdict(list)
        for r in kids.get(parent, []):
            by_func[r.func_path].append(r)
        for func_path, members in by_func.items():
            shown: Sequence[RunRow] = members
            if len(members) >= GROUP_MIN:
                gid = group_id(parent, func_path)
                offset = expand.get(gid)
                if offset is None:
                    shown, rest, offset = [], members, 0
                else:
                    offset = max(0, min(int(offset), max(0, len(members) - 1)))
                    shown = members[offset:offset + page]
                    rest = members[:offset] + members[offset + page:]
                if rest:
                    nodes.append(_group_node(gid, rest, parent_node, len(members), offset, len(shown)))
                    for m in rest:
                        _hide(m, gid, kids, node_of)
            for r in shown:
                if r.id in seen:
                    continue
                seen.add(r.id)
                node_of[r.id] = r.id
                nodes.append(_run_node(r, parent_node, bool(kids.get(r.id))))
                if kids.get(r.id):
                    stack.append((r.id, r.id))

    edges: dict[tuple[str, str], list[str]] = {}
    for r in runs:
        dst = node_of.get(r.id)
        for param, template in (r.input_refs or {}).items():
            for ref in json_refs(template):
                src = node_of.get(ref)
                if src and dst and src != dst:
                    params = edges.setdefault((src, dst), [])
                    if param not in params and len(params) < 5:
                        params.append(param)
    nodes.sort(key=lambda n: (n["created_at"] is None, n["created_at"] or "", n["id"]))
    return {"nodes": nodes, "edges": [{"source": s, "destination": d, "params": p} for (s, d), p in edges.items()],
            "counts": dict(Counter(r.state for r in runs)), "total_runs": len(runs)}


def _hide(run: RunRow, gid: str, kids: Mapping[str | None, list[RunRow]], node_of: dict[str, str]) -> None:
    """Show ``run`` and everything nested in it as the group ``gid``."""
    todo = [run]
    while todo:
        r = todo.pop()
        if r.id in node_of:
            continue
        node_of[r.id] = gid
        todo.extend(kids.get(r.id, []))


# -- telling runs of one func apart -------------------------------------------------------------------------

def label_inputs(nodes: list[dict[str, Any]], runs: Mapping[str, RunRow]) -> set[str]:
    """The artifact ids whose summaries :func:`add_labels` needs: inputs of runs shown beside a run of the
    same func."""
    out: set[str] = set()
    for members in _same_func_siblings(nodes):
        for n in members:
            out.update((runs[n["id"]].inputs or {}).values())
    return out


def add_labels(nodes: list[dict[str, Any]], runs: Mapping[str, RunRow],
               summary: Callable[[str], Any]) -> None:
    """Give each run shown beside runs of the same func a ``label``: ``param=value`` for the first input
    whose value differs between them (a short scalar). ``summary(artifact_id)`` is the artifact's summary
    (KeyError when unknown)."""
    for members in _same_func_siblings(nodes):
        inputs = [runs[n["id"]].inputs or {} for n in members]
        params = list(dict.fromkeys(p for ins in inputs for p in ins))
        for p in params:
            ids = [ins.get(p) for ins in inputs]
            if len(set(ids)) < 2:
                continue
            texts = [_scalar(summary, i) for i in ids]
            if any(t is None for t in texts):
                continue
            for n, t in zip(members, texts, strict=True):
                n["label"] = _clip(f"{p}={t}")
            break


def _same_func_siblings(nodes: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    by: dict[tuple[Any, str], list[dict[str, Any]]] = defaultdict(list)
    for n in nodes:
        if n["kind"] == "run":
            by[(n["parent_id"], n["func_path"])].append(n)
    return [m for m in by.values() if len(m) > 1]


def _scalar(summary: Callable[[str], Any], artifact_id: str | None) -> str | None:
    if artifact_id is None:
        return None
    try:
        v = summary(artifact_id)
    except KeyError:
        return None
    if v is None or isinstance(v, (bool, int, float)):
        return json.dumps(v)
    if isinstance(v, str):
        return repr(v)
    return None


def _clip(s: str) -> str:
    return s if len(s) <= LABEL_CHARS else s[:LABEL_CHARS - 1] + "…"

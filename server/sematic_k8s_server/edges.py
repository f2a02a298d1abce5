"""A Resolution's edges: values flowing between its Runs, derived from their recorded templates."""

from __future__ import annotations

from typing import Any

from sematic_k8s.graph import json_refs
from sematic_k8s.store.records import RunRecord


def edges(runs: list[RunRecord], root_id: str) -> list[dict[str, Any]]:
    """``{"source", "destination", "param", "artifact_id"}`` for each flow of a value:

    - an input fed by another Run's output (source = that Run; artifact = its output);
    - an input given from outside, a literal (source null; artifact = the input's artifact);
    - a composition's output fed by a nested Run (destination = the composition, param null);
    - the root's output leaving the pipeline (destination null).
    """
    by_id = {r.id: r for r in runs}
    out: list[dict[str, Any]] = []

    def output_of(run_id: str) -> str | None:
        r = by_id.get(run_id)
        return r.output_id if r is not None else None

    for run in runs:
        for param, template in (run.input_refs or {}).items():
            refs = list(dict.fromkeys(json_refs(template)))
            if not refs:
                out.append({"source": None, "destination": run.id, "param": param,
                            "artifact_id": (run.inputs or {}).get(param)})
            for ref in refs:
                out.append({"source": ref, "destination": run.id, "param": param, "artifact_id": output_of(ref)})
        for ref in dict.fromkeys(json_refs(run.output_ref)):
            out.append({"source": ref, "destination": run.id, "param": None, "artifact_id": output_of(ref)})
    if root_id in by_id:
        out.append({"source": root_id, "destination": None, "param": None, "artifact_id": by_id[root_id].output_id})
    return out

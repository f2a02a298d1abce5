"""``sematic-k8s runs``: executions of single funcs, in one resolution or across all of them."""

from __future__ import annotations

import json
from typing import Any

import click

from sematic_k8s import graph
from sematic_k8s.cli import records
from sematic_k8s.cli.options import limit_option, run_state_option
from sematic_k8s.cli.output import emit, origin, output_option, run_duration, run_json
from sematic_k8s.store.records import RunRecord


@click.group()
def runs() -> None:
    """Executions of single funcs."""


@runs.command("list")
@click.option("--root-id", help="Only the runs of this resolution (its root run id, or a unique start of it), in "
                                "creation order. Without it: runs of every resolution, newest first.")
@run_state_option
@click.option("--func", "func_name", callback=lambda ctx, param, value: _not_blank(value, param),
              help="Only runs of this func (name or module:qualname).")
@limit_option
@output_option
@click.pass_context
def runs_list(ctx: click.Context, root_id: str | None, state: str | None, func_name: str | None, limit: int,
              output: str) -> None:
    """List runs: of one resolution, or across resolutions by func and state (`-o json` gives an excerpt of each
    one's error; `runs show` has a run's source and its whole error)."""
    try:
        store = records.store(ctx)
    except records.NothingRecorded as e:
        if root_id is not None:  # one resolution asked for: it is not there
            raise
        emit(output, [], why_none=e.message)  # a new user's first look: an empty list, not an error
        return
    if root_id is not None:
        root = records.find_run(store, root_id)
        if root.root_id != root.id:
            raise click.ClickException(f"run {root.id} is not a root run; its resolution is {root.root_id}")
        found = store.list_runs(root_id=root.id, state=state, func=func_name, limit=limit)
    else:
        found = store.list_runs(state=state, func=func_name, limit=limit, newest_first=True)
    if output == "json":
        emit(output, [run_json(r, listed=True) for r in found])
    elif root_id is not None:
        emit(output, [{"ID": r.id, "FUNC": r.func_name, "STATE": r.state, "PARENT": r.parent_id,
                       "ORIGIN": origin(r), "DURATION": run_duration(r)} for r in found])
    else:
        emit(output, [{"ID": r.id, "FUNC": r.func_name, "STATE": r.state, "RESOLUTION": r.root_id,
                       "CREATED": r.created_at, "DURATION": run_duration(r)}
                      for r in found])


def _not_blank(value: str | None, param: click.Parameter) -> str | None:
    """An option's value, refused when given empty (an unset variable in ``--func "$F"``: it matched no run, and the
    listing said there were none)."""
    if value is not None and not value.strip():
        raise click.BadParameter("it is empty: give a func's name or module:qualname, or leave the option out",
                                 param=param)
    return value


@runs.command("show")
@click.argument("run_id")
@output_option
@click.pass_context
def runs_show(ctx: click.Context, run_id: str, output: str) -> None:
    """Show every recorded field of one run (RUN_ID or a unique start of it), with its input and output
    artifacts."""
    store = records.store(ctx)
    run = records.find_run(store, run_id)
    ids = {*run.inputs.values(), *([run.output_id] if run.output_id else [])}
    artifacts = {a.id: a for a in store.artifacts(ids)}

    def summary(artifact_id: str) -> Any:
        a = artifacts.get(artifact_id)
        return None if a is None else {"type": a.type_name, "summary": a.summary}

    obj = {**run_json(run), "origin": origin(run),
           "input_artifacts": {k: summary(v) for k, v in run.inputs.items()},
           "output_artifact": summary(run.output_id) if run.output_id else None}
    if output == "json":
        emit(output, [], obj)
        return
    emit(output, [{"FIELD": k, "VALUE": v} for k, v in _show_rows(run, obj, summary)])


def _show_rows(run: RunRecord, obj: dict[str, Any], summary: Any) -> list[tuple[str, Any]]:
    rows: list[tuple[str, Any]] = []
    for key, value in run_json(run).items():
        if key == "inputs":
            rows += [(f"input.{k}", _artifact_line(v, summary(v))) for k, v in value.items()]
        elif key == "output_id" and value:
            rows.append(("output", _artifact_line(value, summary(value))))
        elif key == "error" and value:
            rows.append(("error", f"{value.get('type')}: {value.get('message')}"))
            if value.get("traceback"):
                rows.append(("traceback", value["traceback"].rstrip()))
        elif key == "duration_seconds":
            rows.append(("duration", run_duration(run)))
        elif key == "started_at" and run.state != graph.RESOLVED and run.never_started():  # handed over, never began
            rows.append(("started_at", run_duration(run)))
            if run.started_at is not None:
                rows.append(("submitted_at", run.started_at))
        elif key in ("created_at", "started_at", "ended_at"):
            rows.append((key, getattr(run, key)))  # a datetime: shown in the local zone, named
        elif key == "notes" and isinstance(value, dict) and isinstance(value.get("cache"), dict) \
                and value["cache"].get("skipped"):
            rows.append(("cache", value["cache"]["skipped"]))
            rows.append((key, value))
        else:
            rows.append((key, value))
        if key == "original_run_id":
            rows.append(("origin", obj["origin"]))
    return rows


def _artifact_line(artifact_id: str, summary: dict[str, Any] | None) -> str:
    if summary is None:
        return f"{artifact_id} (artifact not recorded)"
    return f"{artifact_id} {summary['type']} {json.dumps(summary['summary'], default=str)}"

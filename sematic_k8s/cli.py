"""``sematic-k8s``: inspect recorded resolutions and runs, read their logs, and re-run them."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import re
import sys
from itertools import zip_longest
from pathlib import Path
from typing import Any

import click
import sqlalchemy.exc

from sematic_k8s import graph, settings
from sematic_k8s.func import FuncError, load_func
from sematic_k8s.future import Future
from sematic_k8s.resolvers.local import LocalResolver
from sematic_k8s.resolvers.loop import ResolutionFailed
from sematic_k8s.storage.base import Storage, log_key
from sematic_k8s.storage.local import LocalStorage
from sematic_k8s.storage.urls import storage_from_url
from sematic_k8s.store import open_store
from sematic_k8s.store.base import Store
from sematic_k8s.store.records import ResolutionRecord, RunRecord

STATES = (graph.CREATED, graph.SCHEDULED, graph.RUNNING, graph.RESOLVED, graph.FAILED, graph.CANCELED)
NONE = "-"

output_option = click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table",
                             show_default=True, help="Aligned columns, or JSON for scripts.")
state_option = click.option("--state", type=click.Choice(STATES), help="Only this state.")
limit_option = click.option("--limit", type=click.IntRange(min=1), default=100, show_default=True,
                            help="At most this many.")


# -- output -----------------------------------------------------------------------------------------

def emit(output: str, rows: list[dict[str, Any]], obj: Any = None) -> None:
    """Print ``rows`` as an aligned table, or as JSON: ``obj`` if given, else ``{"items": rows}``.

    Table headers are the keys of the first row; a cell may span several lines.
    """
    if output == "json":
        click.echo(json.dumps({"items": rows} if obj is None else obj, indent=2, default=str))
        return
    if not rows:
        click.echo("No resources found.", err=True)
        return
    header = list(rows[0])
    cells = [[[h] for h in header]]
    cells += [[_cell(row.get(k)).splitlines() or [""] for k in header] for row in rows]
    widths = [max(len(line) for row in cells for line in row[i]) for i in range(len(header))]
    for row in cells:
        for parts in zip_longest(*row, fillvalue=""):
            click.echo("   ".join(p.ljust(w) for p, w in zip(parts, widths, strict=True)).rstrip())


def _cell(value: Any) -> str:
    if value is None:
        return NONE
    if isinstance(value, dt.datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"), default=str)
    return str(value)


def _seconds(start: dt.datetime | None, end: dt.datetime | None) -> float | None:
    return None if start is None or end is None else round((end - start).total_seconds(), 3)


def _duration(seconds: float | None) -> str | None:
    """``4ms``, ``2.50s``, ``42.0s``, ``3m04s``, ``2h05m``."""
    if seconds is None:
        return None
    if round(seconds * 1000) < 1000:
        return f"{round(seconds * 1000)}ms"
    if seconds < 60:
        return f"{seconds:.2f}s" if seconds < 10 else f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes < 60 else f"{minutes // 60}h{minutes % 60:02d}m"


def _origin(run: RunRecord) -> str | None:
    """Where a run's output came from when it was not computed here."""
    if run.notes.get("reused_from"):
        return f"reused:{run.notes['reused_from']}"
    if run.cached_from:
        return f"cached:{run.cached_from}"
    if run.original_run_id:
        return f"rerun:{run.original_run_id}"
    return None


def _resolution_json(res: ResolutionRecord) -> dict[str, Any]:
    return {**res.to_dict(), "duration_seconds": _seconds(res.created_at, res.ended_at)}


def _resolution_row(res: ResolutionRecord) -> dict[str, Any]:
    return {"ID": res.id, "FUNC": res.root_func_path.rpartition(":")[2], "STATE": res.state,
            "CREATED": res.created_at, "DURATION": _duration(_seconds(res.created_at, res.ended_at)),
            "RERUN_OF": res.rerun_of}


def _run_json(run: RunRecord) -> dict[str, Any]:
    return {**run.to_dict(), "duration_seconds": _seconds(run.started_at, run.ended_at)}


# -- shared state -----------------------------------------------------------------------------------

def _home(ctx: click.Context) -> Path:
    return settings.home(ctx.find_root().params.get("home"))


def _store(ctx: click.Context) -> Store:
    """The server's records when $SEMATIC_K8S_SERVER is set, else the embedded database."""
    home = _home(ctx)
    try:
        return open_store(home)
    except sqlalchemy.exc.SQLAlchemyError as e:
        raise click.ClickException(f"cannot open the metadata store {settings.db_url(home)}: {e}") from None


def _storage(ctx: click.Context, store: Store, run: RunRecord) -> Storage:
    """Where a run's logs are: its resolution's recorded storage (S3 for cloud runs), else HOME/storage."""
    res = store.get_resolution(run.root_id)
    url = (res.settings or {}).get("storage_url") if res is not None else None
    return storage_from_url(url) if url else LocalStorage(_home(ctx) / "storage")


def _get_run(store: Store, run_id: str) -> RunRecord:
    run = store.get_run(run_id)
    if run is None:
        raise click.ClickException(f"no run with id {run_id!r}")
    return run


# -- commands ---------------------------------------------------------------------------------------

@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--home", type=click.Path(file_okay=False, path_type=Path),
              help=f"Data directory (default: ${settings.HOME_ENV}, else ~/.sematic_k8s).")
def cli(home: Path | None) -> None:
    """Inspect and re-run sematic-k8s pipelines recorded in the embedded store."""


@cli.group()
def resolutions() -> None:
    """Whole-pipeline executions."""


@resolutions.command("list")
@state_option
@limit_option
@output_option
@click.pass_context
def resolutions_list(ctx: click.Context, state: str | None, limit: int, output: str) -> None:
    """List resolutions, newest first."""
    records = _store(ctx).list_resolutions(state=state, limit=limit)
    if output == "json":
        emit(output, [_resolution_json(r) for r in records])
    else:
        emit(output, [_resolution_row(r) for r in records])


TAG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:=/-]{0,63}$")  # as the server accepts them


def _label(ctx: click.Context, resolution_id: str, output: str, **change: Any) -> None:
    """Apply a tag or note change to a resolution and print its tags and note."""
    res = _store(ctx).label_resolution(resolution_id, **change)  # type: ignore[attr-defined]
    if res is None:
        raise click.ClickException(f"no resolution with id {resolution_id!r}")
    if output == "json":
        emit(output, [], obj=_resolution_json(res))
    else:
        emit(output, [{"ID": res.id, "TAGS": ", ".join(res.tags or []), "NOTE": res.note}])


@resolutions.command("tag")
@click.argument("resolution_id")
@click.argument("tags", nargs=-1, required=True)
@click.option("--remove", is_flag=True, help="Remove these tags instead of adding them.")
@output_option
@click.pass_context
def resolutions_tag(ctx: click.Context, resolution_id: str, tags: tuple[str, ...], remove: bool,
                    output: str) -> None:
    """Add tags to a resolution (or remove them with --remove)."""
    for tag in tags:
        if not TAG.match(tag):
            raise click.BadParameter(f"{tag!r}: a tag is 1-64 letters, digits and _ . : = / - (starting with a "
                                     "letter or digit)", param_hint="TAGS")
    _label(ctx, resolution_id, output, **({"remove": tags} if remove else {"add": tags}))


@resolutions.command("note")
@click.argument("resolution_id")
@click.argument("text")
@output_option
@click.pass_context
def resolutions_note(ctx: click.Context, resolution_id: str, text: str, output: str) -> None:
    """Set a resolution's note ("" clears it)."""
    if len(text) > 10_000:
        raise click.BadParameter("a note is at most 10000 characters", param_hint="TEXT")
    _label(ctx, resolution_id, output, note=text, set_note=True)


@cli.group()
def runs() -> None:
    """Executions of single funcs."""


@runs.command("list")
@click.option("--root-id", required=True, help="The resolution (root run) whose runs to list.")
@state_option
@click.option("--func", "func_name", help="Only runs of this func (name or module:qualname).")
@limit_option
@output_option
@click.pass_context
def runs_list(ctx: click.Context, root_id: str, state: str | None, func_name: str | None, limit: int,
              output: str) -> None:
    """List the runs of one resolution, in creation order."""
    store = _store(ctx)
    root = _get_run(store, root_id)
    if root.root_id != root_id:
        raise click.ClickException(f"run {root_id!r} is not a root run; its resolution is {root.root_id}")
    records = store.list_runs(root_id=root_id, state=state, func=func_name, limit=limit)
    if output == "json":
        emit(output, [_run_json(r) for r in records])
    else:
        emit(output, [{"ID": r.id, "FUNC": r.func_name, "STATE": r.state, "PARENT": r.parent_id,
                       "ORIGIN": _origin(r), "DURATION": _duration(_seconds(r.started_at, r.ended_at))}
                      for r in records])


@runs.command("show")
@click.argument("run_id")
@output_option
@click.pass_context
def runs_show(ctx: click.Context, run_id: str, output: str) -> None:
    """Show every recorded field of one run, with its input and output artifacts."""
    store = _store(ctx)
    run = _get_run(store, run_id)
    ids = {*run.inputs.values(), *([run.output_id] if run.output_id else [])}
    artifacts = {a.id: a for a in store.artifacts(ids)}

    def summary(artifact_id: str) -> Any:
        a = artifacts.get(artifact_id)
        return None if a is None else {"type": a.type_name, "summary": a.summary}

    obj = {**_run_json(run), "origin": _origin(run),
           "input_artifacts": {k: summary(v) for k, v in run.inputs.items()},
           "output_artifact": summary(run.output_id) if run.output_id else None}
    if output == "json":
        emit(output, [], obj)
        return
    rows: list[tuple[str, Any]] = []
    for key, value in _run_json(run).items():
        if key == "inputs":
            rows += [(f"input.{k}", _artifact_line(v, summary(v))) for k, v in value.items()]
        elif key == "output_id" and value:
            rows.append(("output", _artifact_line(value, summary(value))))
        elif key == "error" and value:
            rows.append(("error", f"{value.get('type')}: {value.get('message')}"))
            if value.get("traceback"):
                rows.append(("traceback", value["traceback"].rstrip()))
        elif key == "duration_seconds":
            rows.append(("duration", _duration(value)))
        else:
            rows.append((key, value))
        if key == "original_run_id":
            rows.append(("origin", obj["origin"]))
    emit(output, [{"FIELD": k, "VALUE": v} for k, v in rows])


def _artifact_line(artifact_id: str, summary: dict[str, Any] | None) -> str:
    if summary is None:
        return f"{artifact_id} (artifact not recorded)"
    return f"{artifact_id} {summary['type']} {json.dumps(summary['summary'], default=str)}"


@cli.command()
@click.argument("run_id")
@output_option
@click.pass_context
def logs(ctx: click.Context, run_id: str, output: str) -> None:
    """Print the captured stdout and stderr of a run."""
    store = _store(ctx)
    run = _get_run(store, run_id)
    try:
        text = _storage(ctx, store, run).get(log_key(run_id)).decode(errors="replace")
    except KeyError:
        text = None
    if output == "json":
        emit(output, [], {"run_id": run_id, "logs": text})
    elif text is not None:
        click.echo(text, nl=not text.endswith("\n"))
    else:
        click.echo(f"run {run_id} ({run.func_name}, {run.state}) has no logs{_no_logs_reason(run)}", err=True)


def _no_logs_reason(run: RunRecord) -> str:
    if run.notes.get("reused_from"):
        return f": its output was reused from run {run.notes['reused_from']}"
    if run.cached_from:
        return f": its output came from the cache (run {run.cached_from})"
    if run.state in (graph.CREATED, graph.SCHEDULED, graph.CANCELED):
        return ": it never ran"
    return ": it printed nothing"


@cli.command()
@click.argument("run_id")
@click.option("--mode", type=click.Choice(["from", "continue"]), default="from", show_default=True,
              help="from: re-execute RUN_ID and what depends on it; continue: RUN_ID is a root, re-execute "
                   "only what did not succeed.")
@click.option("--cache-namespace", help="Reuse cached outputs of cache=True funcs from this namespace.")
@click.option("--max-parallelism", type=click.IntRange(min=1), default=1, show_default=True,
              help="Independent funcs run on this many threads.")
@output_option
@click.pass_context
def rerun(ctx: click.Context, run_id: str, mode: str, cache_namespace: str | None, max_parallelism: int,
          output: str) -> None:
    """Re-run a recorded pipeline from RUN_ID, reusing every result not affected by it.

    The funcs' output goes to stderr; stdout gets the new resolution only.
    """
    store = _store(ctx)
    root = _get_run(store, _get_run(store, run_id).root_id)
    resolver = LocalResolver(home=_home(ctx), rerun_from=run_id, rerun_mode=mode,
                             cache_namespace=cache_namespace, max_parallelism=max_parallelism)
    failure: ResolutionFailed | None = None
    try:
        future = Future(load_func(root.func_path, root.source_file), {})  # the planner reads only its func
        with contextlib.redirect_stdout(sys.stderr):
            resolver.resolve(future)
        new_id = future.id
    except ResolutionFailed as e:
        failure, new_id = e, e.resolution_id
    except (ImportError, LookupError, ValueError, FuncError) as e:
        raise click.ClickException(f"cannot rerun {run_id}: {e}") from None
    res = store.get_resolution(new_id)
    if res is None:  # not expected: the loop records the resolution before running anything
        raise click.ClickException(f"rerun of {run_id} did not record resolution {new_id}")
    emit(output, [_resolution_row(res)], _resolution_json(res))
    if failure is not None:
        first_line = str(failure).split("\n", 1)[0]
        raise click.ClickException(f"{first_line}\n(see `sematic-k8s runs show {failure.run_id}`)")


def _register_server_commands() -> None:
    """``server`` and ``api-keys`` come with the server extra (``pip install 'sematic-k8s[server]'``); without it
    they still exist and say which extra to install."""
    try:
        from sematic_k8s_server.cli import register
    except ImportError as e:
        for name in ("server", "api-keys"):
            cli.add_command(_needs_server_extra(name, e))
        return
    register(cli)


def _needs_server_extra(name: str, error: ImportError) -> click.Command:
    """A stand-in for the command ``name`` that fails, whatever its arguments, with one line naming the extra."""
    message = f"`sematic-k8s {name}` needs the server extra: pip install 'sematic-k8s[server]' ({error})"

    @click.command(name, help=f"Needs the server extra: pip install 'sematic-k8s[server]' ({error}).",
                   context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
    def command() -> None:
        raise click.ClickException(message)

    return command


_register_server_commands()


def main() -> None:
    """Console entry point."""
    cli(prog_name="sematic-k8s")


if __name__ == "__main__":
    main()

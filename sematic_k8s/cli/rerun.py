"""``sematic-k8s rerun``: re-run a recorded pipeline here, reusing every result not affected."""

from __future__ import annotations

import contextlib
import sys

import click

from sematic_k8s.cli import records
from sematic_k8s.cli.options import IntRange
from sematic_k8s.cli.output import emit, output_option, resolution_json, resolution_row
from sematic_k8s.error_records import one_line
from sematic_k8s.errors import FuncError, ResolutionFailed
from sematic_k8s.func import load_func
from sematic_k8s.future import Future
from sematic_k8s.resolvers.local import LocalResolver


@click.command()
@click.argument("run_id")
@click.option("--mode", type=click.Choice(["from", "continue"]), default="from", show_default=True,
              help="from: re-execute RUN_ID and what depends on it; continue: RUN_ID is a root, re-execute "
                   "only what did not succeed.")
@click.option("--cache-namespace", help="Reuse cached outputs of cache=True funcs from this namespace.")
@click.option("--max-parallelism", type=IntRange(min=1, max=1024), default=1, show_default=True,
              help="Independent funcs run on this many threads.")
@output_option
@click.pass_context
def rerun(ctx: click.Context, run_id: str, mode: str, cache_namespace: str | None, max_parallelism: int,
          output: str) -> None:
    """Re-run a recorded pipeline from RUN_ID (or a unique start of it), reusing every result not affected.

    The pipeline's code is loaded from where it was recorded (a script's top-level resolve is not run again). A
    cloud resolution is re-run with CloudResolver(rerun_from=...) or by a server that starts reruns, not here.
    Everything the code prints goes to stderr; stdout gets the new resolution only.
    """
    store = records.store(ctx)
    target = records.find_run(store, run_id)
    root = records.find_root(store, target.id)
    res = store.get_resolution(root.id)
    if res is not None and isinstance(res.settings, dict) and res.settings.get("kind") == "cloud":
        raise click.ClickException(
            f"cannot rerun {target.id}: resolution {root.id} ran with the CloudResolver (its code is in its image, its "
            f"artifacts in its storage) and this command re-runs here, on the LocalResolver; re-run it with "
            f'CloudResolver(rerun_from="{target.id}") from its project, or through a server that starts reruns (the '
            f"dashboard's Actions, POST /api/v1/resolutions/{root.id}/rerun)")
    resolver = LocalResolver(home=records.home(ctx), rerun_from=target.id, rerun_mode=mode,
                             cache_namespace=cache_namespace, max_parallelism=max_parallelism)
    failure: ResolutionFailed | None = None
    try:
        with contextlib.redirect_stdout(sys.stderr):
            future = Future(load_func(root.func_path, root.source_file), {})  # the planner reads only its func
            resolver.resolve(future)
        new_id = future.id
    except ResolutionFailed as e:
        failure, new_id = e, e.resolution_id
    except (ImportError, LookupError, ValueError, FuncError) as e:
        raise click.ClickException(f"cannot rerun {target.id}: {one_line(str(e))}") from None
    res = store.get_resolution(new_id)
    if res is None:  # not expected: the loop records the resolution before running anything
        raise click.ClickException(f"rerun of {target.id} did not record resolution {new_id}")
    emit(output, [resolution_row(res)], resolution_json(res))
    if failure is not None:
        where = f"; see `sematic-k8s runs show {failure.run_id}`" if failure.run_id else ""
        raise click.ClickException(f"{one_line(str(failure))}{where}")

"""``sematic-k8s cancel``: ask a running resolution to stop."""

from __future__ import annotations

import time

import click

from sematic_k8s import graph
from sematic_k8s.cli import records
from sematic_k8s.cli.output import emit, output_option, resolution_json, resolution_row

WAIT_INTERVAL = 0.5  # seconds between looks while waiting for the cancel to land


@click.command()
@click.argument("run_id")
@click.option("--wait", is_flag=True, help="Return once the resolution has stopped, not as soon as it was asked.")
@output_option
@click.pass_context
def cancel(ctx: click.Context, run_id: str, wait: bool, output: str) -> None:
    """Cancel the resolution of RUN_ID (its root run id, any of its runs' ids, or a unique start of one).

    Its resolution loop notices within about a second, stops its runs and records them canceled. A func that a
    LocalResolver runs in its process (on its own thread, max_parallelism=1, the default; or on its threads) is
    interrupted (RunInterrupted).
    """
    store = records.store(ctx)
    root = records.find_root(store, run_id)
    state = store.request_cancel(root.id)
    if state is None:
        raise click.ClickException(f"run {root.id} has no resolution recorded: nothing to cancel")
    if state in graph.TERMINAL:
        raise click.ClickException(f"resolution {root.id} already ended ({state}): nothing to cancel; re-run it "
                                   f"with `sematic-k8s rerun {root.id}`")
    res = store.get_resolution(root.id)
    while wait and res is not None and res.state not in graph.TERMINAL:
        time.sleep(WAIT_INTERVAL)
        res = store.get_resolution(root.id)
    if res is None:  # not expected: it was there a moment ago
        raise click.ClickException(f"resolution {root.id} disappeared while canceling")
    emit(output, [resolution_row(res)], resolution_json(res))

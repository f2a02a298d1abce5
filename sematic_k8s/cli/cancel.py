"""``sematic-k8s cancel``: ask a running resolution to stop."""

from __future__ import annotations

import time

import click

from sematic_k8s import graph
from sematic_k8s.cli import records
from sematic_k8s.cli.output import emit, local_time, output_option, resolution_json, resolution_row
from sematic_k8s.store.records import ResolutionRecord

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
    if wait and res is not None and res.state not in graph.TERMINAL:
        _say_what_is_awaited(res)
    while wait and res is not None and res.state not in graph.TERMINAL:
        time.sleep(WAIT_INTERVAL)
        res = store.get_resolution(root.id)  # marks it canceled once silent past the timeout (store.liveness)
    if res is None:  # not expected: it was there a moment ago
        raise click.ClickException(f"resolution {root.id} disappeared while canceling")
    emit(output, [resolution_row(res)], resolution_json(res))


def _say_what_is_awaited(res: ResolutionRecord) -> None:
    """Say once (on stderr) what ``--wait`` waits for: the resolver to stop it, or, when the resolver stays silent,
    every read of it (:mod:`sematic_k8s.store.liveness`, the sweeper's rule) to mark it canceled. A resolution that
    records no heartbeat is never judged silent, so nothing could end the wait but its resolver: refused in one
    line (was: waited until Ctrl-C, saying nothing)."""
    if res.heartbeat_at is None:
        raise click.ClickException(
            f"resolution {res.id} is {res.state} but records no heartbeat, so whether its resolver still runs cannot "
            "be told: its cancel was asked, and is not waited for (see `sematic-k8s resolutions show "
            f"{res.id}`)")
    click.echo(f"Waiting for resolution {res.id} to stop: its resolver stops it within about a second; if it has "
               f"been silent since its last heartbeat ({local_time(res.heartbeat_at)}) for the heartbeat timeout, it "
               "is marked canceled instead.", err=True)

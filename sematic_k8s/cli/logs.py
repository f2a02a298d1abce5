"""``sematic-k8s logs``: a run's captured stdout and stderr, once or followed until the run ends."""

from __future__ import annotations

import time

import click

from sematic_k8s import graph
from sematic_k8s.cli import records
from sematic_k8s.cli.output import LogOut, emit, output_option
from sematic_k8s.error_records import one_line
from sematic_k8s.storage.base import log_key
from sematic_k8s.store.records import ResolutionRecord, RunRecord, in_resolver_home
from sematic_k8s.terminal_safe import visible

FOLLOW_INTERVAL = 1.0  # seconds between looks at a followed run


@click.command()
@click.argument("run_id")
@click.option("-f", "--follow", is_flag=True,
              help="Keep printing what the run records (each attempt's output when it ends) until the run ends.")
@click.option("--raw", is_flag=True,
              help="Print the output as the run wrote it on a terminal too (its escape sequences drive the terminal).")
@output_option
@click.pass_context
def logs(ctx: click.Context, run_id: str, follow: bool, raw: bool, output: str) -> None:
    """Print the captured stdout and stderr of a run (RUN_ID or a unique start of it).

    With $SEMATIC_K8S_SERVER set they are read through the server: no storage credentials are needed here.
    Piped or redirected, the output is printed as the run wrote it (as `kubectl logs` does). On a terminal, text,
    line breaks, tabs, carriage returns (progress bars) and colours are kept, and every other control character or
    escape sequence (which could write the clipboard, clear the screen or hide lines) and bidirectional-text control
    is shown escaped (\x1b, \u202e); --raw prints it as written there too.
    """
    if follow and output == "json":
        raise click.UsageError("--follow prints text as it comes: use it without -o json")
    store = records.store(ctx)
    run = records.find_run(store, run_id)
    if follow:
        _follow(ctx, store, run, raw)
        return
    data = records.read_logs(ctx, store, run)
    if output == "json":  # text: bytes that are not UTF-8 as U+FFFD
        emit(output, [], {"run_id": run.id, "logs": None if data is None else data.decode(errors="replace")})
    elif data is not None:
        printer = LogOut(raw=raw)
        printer.part(data, last=True)
        printer.end()
    else:
        why = _no_logs_reason(run, store.get_resolution(run.root_id))
        click.echo(visible(f"run {run.id} ({run.func_name}, {run.state}) has no logs{why}"), err=True)


def _follow(ctx: click.Context, store: records.Store, run: RunRecord, raw: bool) -> None:
    shown, printer, said = 0, LogOut(raw=raw), False  # bytes printed; whether the wait was said
    while True:
        ended = run.state in graph.TERMINAL
        data = records.read_logs(ctx, store, run) or b""
        if len(data) > shown:  # the bytes stored since, as stored
            printer.part(data[shown:])
            shown = len(data)
        if ended:  # read once more after it ended: its last output is recorded by then
            break
        if not shown and not said:  # nothing to show until an attempt ends: say what it waits for, once
            click.echo(visible(f"run {run.id} ({run.func_name}) is {run.state}: its output is recorded as each "
                               "attempt ends; waiting for it (Ctrl-C to stop)"), err=True)
            said = True
        time.sleep(FOLLOW_INTERVAL)
        run = store.get_run(run.id) or run
    printer.end()
    end = f"run {run.id} ({run.func_name}) {run.state}"
    if run.state == graph.CANCELED:  # not its own doing: its resolution's end says why (a cancel, its resolver gone)
        res = store.get_resolution(run.root_id)
        if res is not None and res.error:
            end += f": its resolution {res.state}: {one_line(res.error)}"
    click.echo(visible(end), err=True)


def _no_logs_reason(run: RunRecord, res: ResolutionRecord | None = None) -> str:
    if run.notes.get("reused_from"):
        return f": its output was reused from run {run.notes['reused_from']}"
    if run.cached_from:
        return f": its output came from the cache (run {run.cached_from})"
    waiting = run.notes.get("waiting") if run.attempts <= 1 else None  # its first attempt's worker never started
    if run.state == graph.FAILED and run.never_started():
        return ": it never started (see its error)"
    if run.state == graph.CANCELED:
        if run.never_started():
            return ": it never started" + (f" (it was {waiting})" if waiting else "")
        return ": it was stopped before its attempt ended (output is recorded as each attempt ends)"
    if run.state in (graph.CREATED, graph.SCHEDULED):
        return ": it never ran"
    if run.state == graph.RUNNING:
        return (f": it has not started ({waiting})" if waiting else ": nothing recorded yet") + (
            " (output is recorded as each attempt ends; follow it with --follow)")
    if in_resolver_home(res):  # its log is where it ran, if it printed anything: not "printed nothing"
        return (" here: its resolution's LocalResolver recorded through a server and keeps its runs' logs in its own "
                f"home, where it ran (there: storage/{log_key(run.id)} under that home)")
    return ": it printed nothing"

"""How the CLI prints: aligned tables or JSON, durations, times in the local zone with its name."""

from __future__ import annotations

import datetime as dt
import errno
import json
import os
import sys
from itertools import zip_longest
from typing import Any

import click

from sematic_k8s.graph import RESOLVED, TERMINAL
from sematic_k8s.store.records import ResolutionRecord, RunRecord, claim_waiting
from sematic_k8s.terminal_safe import RESET, coloured, decoder, terminal_text, visible

NONE = "-"
WAITING_CHARS = 40  # of what a claimed rerun waits for, in a table's state column

output_option = click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table",
                             show_default=True, help="Aligned columns, or JSON for scripts (times in UTC).")


class OutputFailed(click.ClickException):
    """Standard output cannot take what a command prints: closed, or its disk full. (A reader gone, ``| head``, is
    BrokenPipeError, which click ends quietly.)"""


def out(text: str | bytes, nl: bool = True) -> None:
    """Print ``text`` on standard output (``bytes`` as they are, to its binary stream): the one way commands print
    their results. OutputFailed, in one line, when it cannot be written (was exit 0 with nothing printed on a closed
    one; an "unexpected OSError" on a full disk)."""
    if sys.stdout is None:  # closed before the command started
        raise OutputFailed("standard output is closed, so nothing can be printed: run the command with it open "
                           "(redirect it to a file, or to /dev/null to print nothing)")
    try:
        click.echo(text, nl=nl, color=True)  # as given: click would strip escapes it takes for colours off a pipe
    except BrokenPipeError:
        raise
    except OSError as e:
        _drop_stdout()  # what is left in its buffer is not written again, failing again, at exit
        full = " (free space on its disk, or redirect it elsewhere)" if e.errno in (errno.ENOSPC, errno.EDQUOT) else ""
        raise OutputFailed(f"cannot write to standard output: {e.strerror or e}{full}") from None


class LogOut:
    """A run's log (client-written) printed part by part as it is read (whole, or followed), as stored: byte for byte,
    to the binary standard output, when ``raw`` or when standard output is not a terminal (a pipe, a file: as
    ``kubectl logs``); else as :func:`terminal_text` makes it safe to show (bytes that are not UTF-8 as ``\\xff``; a
    character cut between two parts shown whole), the terminal's colours reset after a part that set one, and at
    :meth:`end` its last line ended (not left for what follows)."""

    def __init__(self, *, raw: bool) -> None:
        self.raw = raw or sys.stdout is None or not sys.stdout.isatty()
        self._decoder = decoder()
        self._line_open = False

    def part(self, data: bytes, *, last: bool = False) -> None:
        """Print the next ``data`` of the log (``last``: its end, where a cut character is shown as escapes)."""
        if self.raw:
            out(data, nl=False)
            return
        text = self._decoder.decode(data, final=last)
        if text:
            safe = terminal_text(text)
            out(safe + (RESET if coloured(safe) else ""), nl=False)
            self._line_open = not text.endswith("\n")

    def end(self) -> None:
        """The log printed: what is left of it, and on a terminal a line break if its last line has none."""
        self.part(b"", last=True)
        if self._line_open:
            out("")


def _drop_stdout() -> None:
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def emit(output: str, rows: list[dict[str, Any]], obj: Any = None, *, why_none: str | None = None) -> None:
    """Print ``rows`` as an aligned table, or as JSON: ``obj`` if given, else ``{"items": rows}``.

    Table headers are the keys of the first row; a cell may span several lines. No rows: a line on stderr saying so
    (and ``why_none``).
    """
    if output == "json":
        out(json.dumps({"items": rows} if obj is None else obj, indent=2, default=str))
        return
    if not rows:
        click.echo(f"No resources found: {visible(why_none)}" if why_none else "No resources found.", err=True)
        return
    header = list(rows[0])
    cells = [[[h] for h in header]]
    cells += [[cell(row.get(k)).splitlines() or [""] for k in header] for row in rows]
    widths = [max(len(line) for row in cells for line in row[i]) for i in range(len(header))]
    for row in cells:
        for parts in zip_longest(*row, fillvalue=""):
            out("   ".join(p.ljust(w) for p, w in zip(parts, widths, strict=True)).rstrip())


def cell(value: Any) -> str:
    if value is None:
        return NONE
    if isinstance(value, dt.datetime):
        return local_time(value)
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"), default=str)
    return visible(str(value))


def local_time(value: dt.datetime) -> str:
    """A recorded time (naive UTC, or aware) in this machine's zone, with the zone's name: ``2026-01-02 10:00:00
    CET``."""
    aware = value if value.tzinfo is not None else value.replace(tzinfo=dt.timezone.utc)
    return aware.astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")


def seconds(start: dt.datetime | None, end: dt.datetime | None) -> float | None:
    return None if start is None or end is None else round((end - start).total_seconds(), 3)


def duration(secs: float | None) -> str | None:
    """``4ms``, ``2.50s``, ``42.0s``, ``3m04s``, ``2h05m``."""
    if secs is None:
        return None
    if round(secs * 1000) < 1000:
        return f"{round(secs * 1000)}ms"
    if secs < 60:
        return f"{secs:.2f}s" if secs < 10 else f"{secs:.1f}s"
    minutes, rest = divmod(int(secs), 60)
    return f"{minutes}m{rest:02d}s" if minutes < 60 else f"{minutes // 60}h{minutes % 60:02d}m"


def run_seconds(run: RunRecord) -> float | None:
    """How long a run ran: None for one whose code never began (:meth:`RunRecord.never_started`: its
    ``started_at`` is when it was handed to its executor, and it waited, or failed, from then on)."""
    return None if run.never_started() else seconds(run.started_at, run.ended_at)


def run_duration(run: RunRecord) -> str | None:
    """A run's duration as tables show it: ``never`` (ended without starting) or ``not started`` (still waiting)
    for one whose code never began, as the dashboard says it (a resolved one ran, or took a cached output)."""
    if run.state != RESOLVED and run.never_started():
        return "never" if run.state in TERMINAL else "not started"
    return duration(seconds(run.started_at, run.ended_at))


def origin(run: RunRecord) -> str | None:
    """Where a run's output came from when it was not computed here."""
    if run.notes.get("reused_from"):
        return f"reused:{run.notes['reused_from']}"
    if run.cached_from:
        return f"cached:{run.cached_from}"
    if run.original_run_id:
        return f"rerun:{run.original_run_id}"
    return None


def resolution_json(res: ResolutionRecord) -> dict[str, Any]:
    return {**res.to_dict(), "duration_seconds": seconds(res.created_at, res.ended_at)}


def resolution_state(res: ResolutionRecord) -> str:
    """A resolution's state as tables show it: a rerun the server claimed whose driver has not started says what it
    waits for, on one line cut to :data:`WAITING_CHARS` (``created (not started yet: ...)``, as ``resolutions show``
    says it whole)."""
    waiting = claim_waiting(res)
    if waiting is None:
        return res.state
    line = " ".join(waiting.split())
    return f"{res.state} (not started yet: {line if len(line) <= WAITING_CHARS else line[:WAITING_CHARS - 1] + '…'})"


def resolution_row(res: ResolutionRecord) -> dict[str, Any]:
    return {"ID": res.id, "FUNC": res.root_func_path.rpartition(":")[2], "STATE": resolution_state(res),
            "CREATED": res.created_at, "DURATION": duration(seconds(res.created_at, res.ended_at)),
            "RERUN_OF": res.rerun_of}


def run_json(run: RunRecord, *, listed: bool = False) -> dict[str, Any]:
    """A run as ``-o json`` prints it: whole, or ``listed`` as listings give it (without its func's source)."""
    return {**(run.listed() if listed else run.to_dict()), "duration_seconds": run_seconds(run)}

"""What the CloudResolver and image builds show people: on a terminal a live display (build steps, layers
pushed, the driver's image's pull, runs by state) that ends in a one-line summary; elsewhere (a pipe, a CI log)
plain lines, one per step, per layer pushed, per change of the pull's words and per change of the run counts, and
the same summary. Never the raw build output: it is kept in the :class:`~sematic_k8s.errors.BuildError` when a
build fails.

Packaging reports progress as lines (``Progress = Callable[[str], None]``); :class:`Display` reads the ones it
knows (``Step N/M : ...`` from docker, ``push LAYER: STATUS``, ``context:``, ``image:``, ``build:``, ``wheels:``,
``registry:`` (a registry's trouble, and what is done about it) from :mod:`sematic_k8s.packaging.build` and
:mod:`sematic_k8s.packaging.push`; "pulling the driver's image ..." and "waiting for the driver's image ..." from
the Docker launcher, :mod:`sematic_k8s.launchers.docker`), and is told run counts with :meth:`Display.runs`.
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TextIO

from sematic_k8s.terminal_safe import visible

STATES = ("created", "scheduled", "running", "resolved", "failed", "canceled")
_STEP = re.compile(r"^Step (\d+)/(\d+) : (.*)$")
_PUSH = re.compile(r"^push ([0-9a-f]{6,}): (.*?)(?: \([\d.]+ MB\))?$")
_PUSHED = ("Pushed", "Layer already exists", "Mounted from")
_SAID = ("context:", "image:", "build:", "wheels:", "registry:", "driver ")  # lines worth keeping, as they are
_PULL = ("pulling the driver's image", "waiting for the driver's image")  # the Docker launcher's pull of it
_COLORS = {"created": "white", "scheduled": "cyan", "running": "yellow", "resolved": "green", "failed": "red",
           "canceled": "magenta"}


@dataclass
class Seen:
    """What a display knows so far."""

    started: float = field(default_factory=time.monotonic)
    step: tuple[int, int, str] | None = None  # (n, of, instruction)
    cached_steps: int = 0
    last_output: str = ""
    layers: dict[str, str] = field(default_factory=dict)  # layer id -> push status
    image: str | None = None
    built: bool = False
    build_seconds: float | None = None
    build_started: float | None = None
    resolution: str | None = None
    state: str | None = None
    counts: dict[str, int] = field(default_factory=dict)
    waiting: str = ""  # what a run not started yet waits for (capacity, quota)
    pull: str = ""  # the driver's image's pull, while its launch waits for it (its progress, or its failure)

    @property
    def pushed(self) -> int:
        return sum(status.startswith(_PUSHED) for status in self.layers.values())

    def summary(self) -> str:
        """One line: the resolution's outcome, its runs, and the image."""
        parts = []
        elapsed = _seconds(time.monotonic() - self.started)
        if self.resolution:
            parts.append(f"resolution {self.resolution} {self.state or 'started'} in {elapsed}")
            if self.counts:
                parts.append(f"{sum(self.counts.values())} runs ({counts_text(self.counts)})")
        if self.image:
            how = f"built in {_seconds(self.build_seconds or 0)}" if self.built else "reused"
            steps = f", {self.step[1]} steps ({self.cached_steps} cached)" if self.step and self.built else ""
            layers = f", {self.pushed} layers pushed" if self.layers else ""
            parts.append(f"image {how}{steps}{layers}: {self.image}")
        elif not self.resolution:
            parts.append(f"done in {elapsed}")
        return "; ".join(parts)


def counts_text(counts: Mapping[str, int]) -> str:
    """``2 running, 5 resolved``: in the order runs move through states."""
    order = {s: i for i, s in enumerate(STATES)}
    return ", ".join(f"{n} {state}" for state, n in sorted(counts.items(), key=lambda kv: order.get(kv[0], 99)) if n)


def _seconds(s: float) -> str:
    return f"{s:.1f}s" if s < 60 else f"{int(s // 60)}m{int(s % 60):02d}s"


class Display:
    """Progress for people: call it with packaging's lines; :meth:`runs` with run counts; :meth:`done` at the
    end. This base class prints plain lines to ``stream`` (default stderr)."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.seen = Seen()
        self._last_counts = ""

    # -- input ------------------------------------------------------------------------------------------------

    def __call__(self, line: str) -> None:
        seen = self.seen
        if m := _STEP.match(line):
            if seen.build_started is None:
                seen.build_started, seen.built = time.monotonic(), True
            seen.step = (int(m.group(1)), int(m.group(2)), m.group(3))
            seen.last_output = ""
            self.changed(f"build: step {m.group(1)}/{m.group(2)} {m.group(3)}", "step")
        elif line.strip() == "---> Using cache":
            seen.cached_steps += 1
        elif m := _PUSH.match(line):
            layer, status = m.group(1), m.group(2)
            was_done = seen.layers.get(layer, "").startswith(_PUSHED)
            seen.layers[layer] = status
            if status.startswith(_PUSHED) and not was_done:
                self.changed(f"push: layer {layer} {status.lower()} ({seen.pushed}/{len(seen.layers)})", "push")
        elif line.startswith("Successfully built") and seen.build_started is not None:
            seen.build_seconds = time.monotonic() - seen.build_started
        elif line.startswith(_PULL):
            seen.pull = line
            self.changed(line, "pull")
        elif line.startswith(_SAID):
            self._milestone(line)
            self.changed(line, "said")
        elif seen.step is not None and not line.startswith(("push", " ---> ", "Removing intermediate", "Successfully")):
            seen.last_output = line.strip()[:200]  # a build step's own output: shown live, never as lines

    def _milestone(self, line: str) -> None:
        seen = self.seen
        if line.startswith("image: "):
            seen.image = line.rsplit(" ", 1)[-1]
        elif line.startswith("driver started for resolution "):
            seen.resolution, seen.pull = line.rsplit(" ", 1)[-1], ""

    def runs(self, resolution_id: str, state: str, counts: Mapping[str, int],
             waiting: Mapping[str, str] | None = None) -> None:
        """The resolution's state, its runs counted by state, and what runs not started yet wait for (run id ->
        why: capacity, quota), said when the first of them changes."""
        self.seen.resolution, self.seen.state, self.seen.counts = resolution_id, state, dict(counts)
        text = counts_text(counts)
        if text and text != self._last_counts:
            self._last_counts = text
            self.changed(f"resolution {resolution_id}: {text}", "runs")
        why = next(iter(waiting.values()), "") if waiting else ""
        if why != self.seen.waiting:
            self.seen.waiting = why
            if why:
                n = len(waiting or {})
                self.changed(f"resolution {resolution_id}: {n} run{'s' if n > 1 else ''} not started: {why}", "runs")

    def done(self, state: str | None = None) -> str:
        """End the display with its one-line summary (``state``: how the resolution ended); returns the line."""
        if state is not None:
            self.seen.state = state
        line = self.seen.summary()
        self.close()
        self.stream.write(line + "\n")
        self.stream.flush()
        return line

    # -- output ---------------------------------------------------------------------------------------------

    def changed(self, line: str, kind: str) -> None:
        """Something worth a line happened: ``kind`` is "said" (a milestone packaging or the resolver said),
        "step", "push", "pull" (the driver's image's, each change of its words) or "runs"."""
        self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        """Stop any live output (nothing to stop here)."""


class LiveDisplay(Display):
    """The same, drawn in place on a terminal with rich: the current build step and its latest output, a bar of
    layers pushed, the driver's image's pull while its launch waits, the runs by state, the time so far. Milestones
    (image reused or pushed, driver started) stay above it as lines. What it is told may quote others' words (a
    build's output, a registry's or the Docker engine's error, what a run waits for, from the cluster's events):
    their control characters and bidi controls are shown escaped (:func:`~sematic_k8s.terminal_safe.visible`), as
    the CLI shows records; plain lines (not a terminal) and a caller's sink get them as they are."""

    def __init__(self, stream: TextIO | None = None) -> None:
        super().__init__(stream)
        from rich.console import Console
        from rich.live import Live

        self.console = Console(file=self.stream, force_terminal=True)
        self.live = Live(console=self.console, refresh_per_second=8, transient=True,
                         get_renderable=self._render)
        self.live.start()

    def __call__(self, line: str) -> None:
        super().__call__(visible(line))

    def runs(self, resolution_id: str, state: str, counts: Mapping[str, int],
             waiting: Mapping[str, str] | None = None) -> None:
        super().runs(visible(resolution_id), visible(state), counts,
                     {run: visible(why) for run, why in (waiting or {}).items()})

    def changed(self, line: str, kind: str) -> None:
        if kind == "said":  # milestones stay above the live part; the rest is drawn in it
            self.console.print(line, highlight=False, markup=False)
        self.live.refresh()

    def close(self) -> None:
        if self.live.is_started:
            self.live.stop()

    def _render(self) -> Any:
        from rich.progress_bar import ProgressBar
        from rich.table import Table
        from rich.text import Text

        seen = self.seen
        grid = Table.grid(padding=(0, 1))
        grid.add_column(justify="right", style="bold")
        grid.add_column()
        if seen.step is not None:
            n, of, instruction = seen.step
            grid.add_row("build", Text.assemble(f"step {n}/{of} ", (instruction[:80], "cyan"),
                                                f"  ({seen.cached_steps} cached)"))
            grid.add_row("", ProgressBar(total=of, completed=n - 1 if seen.build_seconds is None else of, width=40))
            if seen.last_output and seen.build_seconds is None:
                grid.add_row("", Text(seen.last_output[:100], style="dim"))
        if seen.layers:
            grid.add_row("push", f"{seen.pushed}/{len(seen.layers)} layers")
            grid.add_row("", ProgressBar(total=len(seen.layers), completed=seen.pushed, width=40))
        if seen.pull:
            grid.add_row("driver", Text(seen.pull[:160], style="yellow"))
        if seen.counts:
            parts: list[Any] = []
            for state in STATES:
                if seen.counts.get(state):
                    parts += [(f"■ {seen.counts[state]} {state}", _COLORS[state]), "  "]
            grid.add_row("runs", Text.assemble(*parts))
        if seen.waiting:
            grid.add_row("", Text(f"not started: {seen.waiting}"[:120], style="yellow"))
        grid.add_row("", Text(f"{_seconds(time.monotonic() - seen.started)} elapsed", style="dim"))
        return grid


class Lines(Display):
    """Every line passed on unchanged to a caller's ``sink``, run counts as ``resolution ID: N state`` lines, and
    the summary: what ``progress=callable`` gets."""

    def __init__(self, sink: Callable[[str], None]) -> None:
        super().__init__()
        self.sink = sink

    def __call__(self, line: str) -> None:
        super().__call__(line)
        self.sink(line)

    def changed(self, line: str, kind: str) -> None:
        if kind == "runs":  # the other lines reached the sink as they were
            self.sink(line)

    def done(self, state: str | None = None) -> str:
        if state is not None:
            self.seen.state = state
        line = self.seen.summary()
        self.sink(line)
        return line


def display(progress: Callable[[str], None] | None = None, stream: TextIO | None = None) -> Display:
    """The display for ``progress``: the caller's own sink, else a live display when ``stream`` (default stderr)
    is a terminal, else plain lines."""
    if isinstance(progress, Display):
        return progress
    if progress is not None:
        return Lines(progress)
    stream = stream or sys.stderr
    isatty = getattr(stream, "isatty", None)
    return LiveDisplay(stream) if isatty is not None and isatty() else Display(stream)

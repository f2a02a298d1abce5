"""Options several commands share."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import click

from sematic_k8s import graph, settings
from sematic_k8s.store.sql import CANCELING

RUN_STATES = (graph.CREATED, graph.SCHEDULED, graph.RUNNING, graph.RESOLVED, graph.FAILED, graph.CANCELED)
RESOLUTION_STATES = (graph.RUNNING, CANCELING, graph.RESOLVED, graph.FAILED, graph.CANCELED)


class IntRange(click.IntRange):
    """click's IntRange, named as what it takes: "'abc' is not a valid integer" (click's: "... integer range")."""

    name = "integer"


state_option = click.option("--state", type=click.Choice(RESOLUTION_STATES), help="Only this state.")
run_state_option = click.option("--state", type=click.Choice(RUN_STATES), help="Only runs in this state.")
limit_option = click.option("--limit", type=IntRange(min=1, max=10_000), default=100, show_default=True,
                            help="At most this many.")


class HomeDir(click.Path):
    """``--home``: a directory. An empty one (an unset variable in ``--home "$DIR"``) is refused, not taken as the
    current directory, where a resolution would then be recorded."""

    def __init__(self) -> None:
        super().__init__(file_okay=False, path_type=Path)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:  # noqa: ANN401
        if isinstance(value, str) and not value.strip():
            self.fail(f"it is empty: give a directory, or leave --home out for ${settings.HOME_ENV} or ~/.sematic_k8s",
                      param, ctx)
        return super().convert(value, param, ctx)


class FloatRange(click.FloatRange):
    """click's FloatRange that also refuses nan, which its bounds let through (nan compares false with both):
    ``--header-timeout nan`` started a server whose clients were never timed out. Named as what it takes: "'abc' is
    not a valid number" (click's: "... float range")."""

    name = "number"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:  # noqa: ANN401
        number = super().convert(value, param, ctx)
        if math.isnan(number):
            self.fail(f"{value!r} is not a number: give one in the range {self._describe_range()}", param, ctx)
        return number

"""Options several commands share."""

from __future__ import annotations

import click

from sematic_k8s import graph
from sematic_k8s.store.sql import CANCELING

RUN_STATES = (graph.CREATED, graph.SCHEDULED, graph.RUNNING, graph.RESOLVED, graph.FAILED, graph.CANCELED)
RESOLUTION_STATES = (graph.RUNNING, CANCELING, graph.RESOLVED, graph.FAILED, graph.CANCELED)

state_option = click.option("--state", type=click.Choice(RESOLUTION_STATES), help="Only this state.")
run_state_option = click.option("--state", type=click.Choice(RUN_STATES), help="Only runs in this state.")
limit_option = click.option("--limit", type=click.IntRange(min=1, max=10_000), default=100, show_default=True,
                            help="At most this many.")

"""``sematic-k8s resolutions``: whole-pipeline executions."""

from __future__ import annotations

import click

from sematic_k8s.cli import records
from sematic_k8s.cli.options import limit_option, state_option
from sematic_k8s.cli.output import emit, output_option, resolution_json, resolution_row


@click.group()
def resolutions() -> None:
    """Whole-pipeline executions."""


@resolutions.command("list")
@state_option
@limit_option
@output_option
@click.pass_context
def resolutions_list(ctx: click.Context, state: str | None, limit: int, output: str) -> None:
    """List resolutions, newest first."""
    found = records.store(ctx).list_resolutions(state=state, limit=limit)
    if output == "json":
        emit(output, [resolution_json(r) for r in found])
    else:
        emit(output, [resolution_row(r) for r in found])

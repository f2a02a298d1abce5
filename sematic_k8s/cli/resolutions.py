"""``sematic-k8s resolutions``: whole-pipeline executions."""

from __future__ import annotations

import re
from typing import Any

import click

from sematic_k8s.cli import records
from sematic_k8s.cli.options import limit_option, state_option
from sematic_k8s.cli.output import emit, output_option, resolution_json, resolution_row
from sematic_k8s.errors import NoteChanged, TooManyTags


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


TAG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:=/-]{0,63}$")  # as the server accepts them
MAX_NOTE = 10_000


def _label(ctx: click.Context, given: str, output: str, **change: Any) -> None:
    """Apply a tag or note change to the resolution ``given`` names (an id or a unique start of one) and print
    its tags and note."""
    found = records.store(ctx)
    root = records.find_root(found, given)
    if change.get("set_note") and (read := found.get_resolution(root.id)) is not None:
        change["note_was"] = read.note or ""  # made to the note as read now: a late copy overwrites no newer one
    try:
        res = found.label_resolution(root.id, **change)
    except (NoteChanged, TooManyTags) as e:
        raise click.ClickException(str(e)) from None
    if res is None:
        raise click.ClickException(f"no resolution with id {root.id!r}: list them with `sematic-k8s resolutions list`")
    if output == "json":
        emit(output, [], obj=resolution_json(res))
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
    if len(text) > MAX_NOTE:
        raise click.BadParameter(f"a note is at most {MAX_NOTE} characters", param_hint="TEXT")
    _label(ctx, resolution_id, output, note=text, set_note=True)

"""``sematic-k8s resolutions``: whole-pipeline executions."""

from __future__ import annotations

import re
from typing import Any

import click

from sematic_k8s import graph, limits
from sematic_k8s.cli import records
from sematic_k8s.cli.options import limit_option, state_option
from sematic_k8s.cli.output import emit, local_time, out, output_option, resolution_json, resolution_row
from sematic_k8s.errors import LabelsChanged, TooManyTags
from sematic_k8s.store.base import Store
from sematic_k8s.store.records import ResolutionRecord, canceled_notice, claim_waiting
from sematic_k8s.terminal_safe import visible


@click.group()
def resolutions() -> None:
    """Whole-pipeline executions."""


@resolutions.command("list")
@state_option
@limit_option
@output_option
@click.pass_context
def resolutions_list(ctx: click.Context, state: str | None, limit: int, output: str) -> None:
    """List resolutions, newest first (`-o json` clips each one's error; `resolutions show` has it whole)."""
    try:
        found = records.store(ctx).list_resolutions(state=state, limit=limit)
    except records.NothingRecorded as e:
        emit(output, [], why_none=e.message)  # a new user's first look: an empty list, not an error
        return
    if output == "json":
        emit(output, [resolution_json(r) for r in found])
    else:
        emit(output, [resolution_row(r) for r in found])


@resolutions.command("show")
@click.argument("resolution_id")
@output_option
@click.pass_context
def resolutions_show(ctx: click.Context, resolution_id: str, output: str) -> None:
    """Show every recorded field of one resolution (RESOLUTION_ID or a unique start of it), its error whole.

    A canceled one's end is a line below the fields saying when and how, as the dashboard says it, not an error
    (`-o json` has the record as it is); a rerun whose driver waits for its image says so there too."""
    res = records.find_resolution(records.store(ctx), resolution_id)
    obj = resolution_json(res)
    if output == "json":
        emit(output, [], obj)
        return
    canceled = res.state == graph.CANCELED  # a cancel is not an error: a notice of when and how
    emit(output, [{"FIELD": k, "VALUE": getattr(res, k) if k.endswith("_at") else v} for k, v in obj.items()
                  if not (canceled and k == "error")])
    if canceled:
        out(visible(canceled_notice(res.error, local_time(res.ended_at) if res.ended_at else None)))
    if (waiting := claim_waiting(res)) is not None:
        out(visible(f"Not started yet: {waiting}"))


TAG = re.compile(limits.TAG_PATTERN)  # as the server accepts them


def _label(ctx: click.Context, given: str, output: str, **change: Any) -> None:
    """Apply a tag or note change to the resolution ``given`` names (an id or a unique start of one) and print
    its tags and note."""
    found = records.store(ctx)
    res_id = records.find_resolution(found, given).id
    try:
        res = _change_labels(found, res_id, change)
    except TooManyTags as e:
        raise click.ClickException(str(e)) from None
    if res is None:
        raise click.ClickException(f"no resolution with id {res_id!r}: list them with `sematic-k8s resolutions list`")
    if output == "json":
        emit(output, [], obj=resolution_json(res))
    else:
        emit(output, [{"ID": res.id, "TAGS": ", ".join(res.tags or []), "NOTE": res.note}])


def _change_labels(store: Store, resolution_id: str, change: dict[str, Any]) -> ResolutionRecord | None:
    """Make ``change`` to the labels as read just before (``labels_version``: a late copy of it changes nothing
    newer). When someone else's change lands between that read and the write, read them again and make it once
    more, unless theirs replaced the note this one replaces (not overwritten unseen)."""
    read = store.get_resolution(resolution_id)
    if read is None:
        return None
    try:
        return store.label_resolution(resolution_id, labels_version=read.labels_version, **change)
    except LabelsChanged as e:
        again = store.get_resolution(resolution_id)
        if again is None or (change.get("set_note") and again.note != read.note):
            raise click.ClickException(str(e)) from None
    try:
        return store.label_resolution(resolution_id, labels_version=again.labels_version, **change)
    except LabelsChanged as e:
        raise click.ClickException(str(e)) from None


@resolutions.command("tag")
@click.argument("resolution_id")
@click.argument("tags", nargs=-1, required=True)
@click.option("--remove", is_flag=True, help="Remove these tags instead of adding them.")
@output_option
@click.pass_context
def resolutions_tag(ctx: click.Context, resolution_id: str, tags: tuple[str, ...], remove: bool,
                    output: str) -> None:
    """Add tags to a resolution (or remove them with --remove).

    The change is made to the labels as read just before it (so a late copy of it undoes nothing newer); when
    someone else's change lands in between, they are read again and it is made once more."""
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
    """Set a resolution's note ("" clears it).

    Refused, with the note as it now is, when someone else replaced the note between this command's read of it and
    its write; a change of the tags alone meanwhile is no obstacle."""
    if len(text) > limits.NOTE_CHARS:
        raise click.BadParameter(f"a note is at most {limits.NOTE_CHARS:,} characters", param_hint="TEXT")
    _label(ctx, resolution_id, output, note=text, set_note=True)

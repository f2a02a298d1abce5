"""``/runs/{run_id}/logs``: a run's captured stdout and stderr, read from the storage its resolution recorded
(when this server reads that storage: see :mod:`sematic_k8s_server.storages`), a part at a time: a log of
gigabytes is never read whole (its storage reads the part alone: a file's bytes, an S3 range)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import PlainTextResponse

from sematic_k8s.storage.base import Part, log_key, read_part
from sematic_k8s.store.records import in_resolver_home
from sematic_k8s_server import scopes
from sematic_k8s_server.deps import API, NOT_FOUND, Caller, RunId, Srv, found
from sematic_k8s_server.storages import StorageNotAllowed

router = APIRouter(prefix=API, tags=["runs"])
SIZE_HEADER, START_HEADER, NEXT_HEADER = "X-Log-Size", "X-Log-Start", "X-Log-Next"
# on an empty answer: the log is not in this server's storage but kept where the run ran ("resolver-home": its
# LocalResolver's home, recorded through this server; the record names no path, none is opened)
KEPT_HEADER = "X-Log-Kept"
PART_BYTES, MAX_PART_BYTES = 4 << 20, 16 << 20  # what one answer holds by default, and at most
LEAD_IN = 3  # bytes before a part read with it: a UTF-8 character cut at its start began in them


@router.get("/runs/{run_id}/logs", response_class=PlainTextResponse,
            responses={**NOT_FOUND, 409: {"description": "recorded in a storage this server does not read"}},
            summary="A part of a run's captured stdout and stderr (empty if none)")
def get_logs(srv: Srv, caller: Caller, run_id: RunId,
             offset: Annotated[int, Query(ge=0, description="from this byte on (to follow a growing log)")] = 0,
             limit: Annotated[int, Query(ge=1, le=MAX_PART_BYTES, description="at most this many bytes")] = PART_BYTES,
             tail: Annotated[int | None, Query(ge=1, le=MAX_PART_BYTES, description=(
                 "instead of offset and limit: the last this many bytes (from the start of a line)"))] = None,
             ) -> PlainTextResponse:
    """The log from byte ``offset`` on, at most ``limit`` bytes (or its last ``tail`` bytes), cut at whole UTF-8
    characters, as stored (bytes that are not UTF-8 too: the CLI prints them as they are), ``text/plain`` with
    ``charset=utf-8`` only when they are UTF-8. Headers: ``X-Log-Size``
    the whole log's size in bytes, ``X-Log-Start`` where the text starts, ``X-Log-Next`` the offset to ask for next
    (the size once all is read); ``X-Log-Kept: resolver-home`` when no log is here because its resolution's
    LocalResolver keeps its logs in its own home (it recorded through a server)."""
    run = found(srv.store.get_run(run_id), "run", run_id)
    scopes.check_run(caller, run_id, run.root_id)
    try:
        storage = srv.storages.of_resolution(srv.store, run.root_id)
    except StorageNotAllowed as e:
        raise HTTPException(409, str(e)) from None
    headers = {}
    back = 0 if tail else min(LEAD_IN, offset)  # the bytes before offset, read too: does it cut a character?
    try:
        part = read_part(storage, log_key(run_id), -tail if tail else offset - back, tail or limit + back)
    except KeyError:
        part = Part(0, b"", 0)
        if in_resolver_home(srv.store.get_resolution(run.root_id)):  # not here: nothing said of what it printed
            headers[KEPT_HEADER] = "resolver-home"
    before = part.data[:max(0, min(back, offset - part.start))]
    part = Part(part.start + len(before), part.data[len(before):], part.size)
    start, data = whole_characters(part, from_a_line=tail is not None, before=None if tail else before)
    return PlainTextResponse(data, headers={  # its Content-Type as given: Starlette would add a charset to any text/
        "Content-Type": media_type(data), SIZE_HEADER: str(part.size), START_HEADER: str(start),
        NEXT_HEADER: str(start + len(data)), **headers})


def media_type(data: bytes) -> str:
    """``text/plain; charset=utf-8`` for bytes that are UTF-8, else ``text/plain`` naming no charset (a log is the
    bytes its run wrote: the CLI writes them as they are, the dashboard's fetch decodes them as UTF-8, each bad byte
    as U+FFFD, whatever the header says)."""
    try:
        data.decode()
    except UnicodeDecodeError:
        return "text/plain"
    return "text/plain; charset=utf-8"


def whole_characters(part: Part, *, from_a_line: bool, before: bytes | None = None) -> tuple[int, bytes]:
    """The part's bytes without a UTF-8 character cut at either end (the rest of one cut at its end comes with
    the next part), and where they start; ``from_a_line``: a part that starts inside the log starts at its next
    line, if it has one. ``before``: the (up to :data:`LEAD_IN`) bytes before the part, when read: then only the
    rest of a character they begin is skipped, never bytes that are not UTF-8 (a part from where the last one ended
    starts there: every byte of the log is in one part, once); without them, any continuation bytes it starts
    with."""
    data, start = part.data, part.start
    if start > 0:
        skip = 0
        while skip < min(3, len(data)) and data[skip] & 0xC0 == 0x80:  # continuation bytes of a cut character
            skip += 1
        if before is not None:
            skip = min(skip, _cut_rest(before))
        if from_a_line and (newline := data.find(b"\n", skip)) != -1:
            skip = newline + 1
        data, start = data[skip:], start + skip
    if start + len(data) < part.size:  # more follows: end at a whole character
        lead = len(data) - 1
        while lead > 0 and len(data) - lead < 4 and data[lead] & 0xC0 == 0x80:
            lead -= 1
        if lead >= 0 and data[lead] >= 0xC0 and len(data) - lead < _utf8_length(data[lead]):
            data = data[:lead]
    return start, data


def _cut_rest(before: bytes) -> int:
    """How many bytes of a character that ``before`` (the bytes before a part) begins are in the part."""
    lead = len(before) - 1
    while lead >= 0 and before[lead] & 0xC0 == 0x80:
        lead -= 1
    if lead < 0 or before[lead] < 0xC0:
        return 0
    return max(0, lead + _utf8_length(before[lead]) - len(before))


def _utf8_length(lead: int) -> int:
    """Bytes of the UTF-8 character whose first byte is ``lead``."""
    return 4 if lead >= 0xF0 else 3 if lead >= 0xE0 else 2

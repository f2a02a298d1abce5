"""How large the free-form fields of a run's and a resolution's records may be. Records are client-written and
listings carry many at once, so the server refuses a write over a bound (422 naming the field, the bound and what
to do), and the library keeps what it records within them: a func's source clipped to its start and end
(:func:`source_excerpt`), the settings it is given checked where they are given (:func:`check_json`). An error's
bounds are :data:`sematic_k8s.error_records.ERROR_MESSAGE_LIMIT`'s."""

from __future__ import annotations

import json
import sys
from typing import Any

from sematic_k8s.error_records import clipped

SOURCE_TEXT_CHARS = 100_000  # a run's source_text: its func's source (listings leave it out: GET /runs/{id})
PATH_CHARS = 4096  # a run's source_file: a path (Linux's PATH_MAX)
JSON_BYTES = 65_536  # a run's settings and notes, a resolution's settings: their JSON text, in UTF-8
TAGS = 100  # tags on one resolution
TAG_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:=/-]{0,63}$"  # one tag: a letter or digit first, at most 64 characters
NOTE_CHARS = 10_000  # a resolution's note (the server's 422, the CLI's usage error; the dashboard's box: maxlength)
INLINE_BYTES = 4096  # an artifact's bytes the embedded resolver keeps in its record, at most (Recorder); the most the
# server sends of them with an artifact's format (POST /store/artifact_formats: a record holding more, of another
# client's making, is flagged, and read whole by the HTTP store through POST /store/artifacts)
FORMAT_IDS = 5000  # artifact ids in one POST /store/artifact_formats (the HTTP store asks in pages of this many)


def json_size(value: Any) -> int:
    """The length in bytes of ``value``'s compact JSON text (UTF-8), as the server measures it: with orjson (ten
    times as fast; the server measures every run's settings and notes in every batch) when the process has it loaded
    already, as the server does. Never imported here: it imports ``uuid``, which the library keeps out of the start-up
    of its drivers and workers."""
    orjson = sys.modules.get("orjson")
    if orjson is not None:
        try:
            return len(orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS))
        except TypeError:  # orjson's JSONEncodeError: an integer past 64 bits
            pass
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str).encode())


def check_json(what: str, value: Any, fix: str) -> None:
    """ValueError, saying ``fix``, when ``value``'s JSON is larger than :data:`JSON_BYTES`."""
    size = json_size(value)
    if size > JSON_BYTES:
        raise ValueError(f"{what} come to {size:,} bytes of JSON, more than the {JSON_BYTES:,} a record keeps: {fix}")


# a record's text holding a NUL character, refused naming its field (sematic_k8s.store.texts: the one rule, on every
# database, an embedded store's writes and the server's alike): PostgreSQL refuses a NUL in text (the whole write,
# naming no field) where SQLite kept it (its length() stops at it). A resolution's error is kept instead, escaped
# (text_field).
NUL_HELD = "holds a NUL character (\\u0000), which no database keeps in text: remove it"


def text_field(text: str) -> str:
    """``text`` as every database keeps it in a text column: a NUL character, which PostgreSQL refuses there (the
    whole write with it) and SQLite's ``length()`` stops at, written as the four characters ``\\x00`` (a func's
    error message may hold one, and a resolution's error is kept, never refused: refusing it would lose the
    failure; the run's error, JSON, keeps it as it is)."""
    return text.replace("\x00", "\\x00")


def source_excerpt(text: str | None) -> str | None:
    """A func's source as recorded: whole up to :data:`SOURCE_TEXT_CHARS` characters, else its start and end with
    how much was cut between them (its hash, the cache's, is of the whole source)."""
    return None if text is None else clipped(text, SOURCE_TEXT_CHARS)

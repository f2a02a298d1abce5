"""An error as Runs record it and listings show it: :func:`error_info` (its type, message, traceback from the
user's code, and the class names ``retry_on`` is matched against), clipped to its start and end
(:func:`clipped`, :func:`clipped_error`), cut to an excerpt for listings (:func:`error_excerpt`), and its first line
for one-line messages (:func:`one_line`). The errors themselves are :mod:`sematic_k8s.errors`'."""

from __future__ import annotations

import os
import site
import sysconfig
import traceback
from types import TracebackType
from typing import Any

_LIBRARY = os.path.dirname(os.path.abspath(__file__)) + os.sep  # this package's files
DEBIAN_LIBRARIES = "/usr/lib/python3/dist-packages"  # Debian's python3-* packages (its python's site has it too)


def _installed() -> list[str]:
    """The folders of Python's own modules and of installed libraries, each ending in a separator: this interpreter's
    (sysconfig), the site-packages it reads (a venv's, and with --system-site-packages the base interpreter's),
    ``pip install --user``'s (whether or not this interpreter reads it) and Debian's."""
    paths = [sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib", "purelib", "platlib")]
    paths += [*site.getsitepackages(), site.getusersitepackages(), DEBIAN_LIBRARIES]
    return sorted({os.path.join(os.path.abspath(p), "") for p in paths if p})


# files no user wrote: this package's, Python's own and installed libraries' (pickle, cloudpickle), frozen modules'
_NOT_USERS = (_LIBRARY, "<", *_installed())


def kinds(cls: type[BaseException]) -> list[str]:
    """The class names an error is recorded with (``mro``): what ``retry_on`` is matched against."""
    return [c.__qualname__ for c in cls.__mro__]


def user_frames(tb: TracebackType | None) -> TracebackType | None:
    """``tb`` without its leading frames in sematic_k8s (the executor calling the func), so it starts at the
    user's code; unchanged when every frame is the library's (an error of sematic_k8s itself)."""
    first = tb
    while first is not None and first.tb_frame.f_code.co_filename.startswith(_LIBRARY):
        first = first.tb_next
    return first or tb


def verdict(exc: BaseException) -> bool:
    """Whether ``exc`` is this package's verdict on the user's code raised by this package alone (a FuncError with
    no frame of the user's: a value returned that its hint does not allow, an argument that cannot be serialized):
    its message says it whole, so it is recorded and shown without a traceback or chained cause (this package's
    frames and its own tries, which point at no line of the user's)."""
    if "FuncError" not in kinds(type(exc)):  # by name: errors is a layer of its own
        return False
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:  # its chained causes too: a user's __setstate__ that raised
        seen.add(id(cause))
        tb = cause.__traceback__
        while tb is not None and tb.tb_frame.f_code.co_filename.startswith(_NOT_USERS):
            tb = tb.tb_next
        if tb is not None:
            return False
        cause = cause.__cause__ or (None if cause.__suppress_context__ else cause.__context__)
    return True


def said_whole(exc: BaseException) -> BaseException:
    """``exc`` itself, shown without its traceback and chained causes when it is a :func:`verdict`."""
    if verdict(exc):
        exc.__traceback__, exc.__cause__, exc.__suppress_context__ = None, None, True
    return exc


def user_line(exc: BaseException) -> str | None:
    """``FILE:LINE`` where ``exc`` was raised in the user's code (a syntax error: where it is), not this package's nor
    Python's import machinery; None when no frame is the user's. The line that called Python's own code or an
    installed library that raised (a socket's, httpx's), where one did; else the last frame in an installed library
    (a pipeline installed in site-packages)."""
    if isinstance(exc, SyntaxError) and exc.filename:
        return f"{exc.filename}:{exc.lineno}"
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if not f.filename.startswith(("<", _LIBRARY))]
    users = [f for f in frames if not f.filename.startswith(_NOT_USERS)] or frames
    return f"{users[-1].filename}:{users[-1].lineno}" if users else None


def raised_by_user(exc: BaseException) -> bool:
    """Whether ``exc`` was raised by a line of the user's: its innermost frame (where it was raised, or the line that
    called code of C that raised it) is not this package's, Python's own nor an installed library's (as
    :func:`user_line` tells them); False for one never raised."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and not tb.tb_frame.f_code.co_filename.startswith(_NOT_USERS)


def caught_by_user(exc: BaseException) -> bool:
    """Whether ``exc`` was caught by a line of the user's (an ``except`` of theirs, whose error then raised another
    from it or while handling it): its outermost frame, the one it reached last, is the user's; False for one never
    raised."""
    tb = exc.__traceback__
    return tb is not None and not tb.tb_frame.f_code.co_filename.startswith(_NOT_USERS)


# characters of an error's message recorded (its traceback: five times as many); a longer one keeps its start and end
ERROR_MESSAGE_LIMIT = 20_000


def one_line(text: str) -> str:
    """The first non-blank line of ``text`` (messages may carry details below it), stripped; "" when none."""
    for line in text.strip().splitlines():
        if line.strip():
            return line.strip()
    return ""


def clipped(text: str, limit: int) -> str:
    """``text``, or when longer than ``limit`` its start and its end with how much was cut between them, in
    ``limit`` characters (clipped again, it stays as it is): an error is recorded, sent, shown and raised again
    (a message holding a whole table or file is no rarity)."""
    if len(text) <= limit:
        return text
    return clipped_ends(text[:limit] + text[-limit:], len(text), limit)


def clipped_ends(ends: str, length: int, limit: int) -> str:
    """:func:`clipped` of a text of ``length`` characters, given only ``ends``: the text itself when it is at most
    ``limit`` long, else its first ``limit`` characters followed by its last ``limit`` (what a listing reads of
    it, see ``sematic_k8s.store.reads``)."""
    if length <= limit:
        return ends
    kept = limit
    for _ in range(3):  # the marker's length is taken from what is kept, and says how much that leaves out
        marker = f"\n... [{length - kept:,} characters cut] ...\n"
        kept = max(0, limit - len(marker))
    head = kept // 2
    return f"{ends[:head]}{marker}{ends[len(ends) - (kept - head):]}"


def error_info(exc: BaseException) -> dict[str, Any]:
    """The recordable form of an exception; its traceback starts at the user's code. A very long message (and
    traceback) is clipped: its start and end are kept (:func:`clipped_error`). An exception whose ``__str__`` raises
    (a func's own class) is recorded as itself, the message saying so: never the error its ``__str__`` raised."""
    try:
        tb = "".join(traceback.format_exception(type(exc), exc, user_frames(exc.__traceback__))
                     if not verdict(exc) else traceback.format_exception_only(type(exc), exc))
    except Exception as e:  # noqa: BLE001 - a chained exception's own __str__ or __repr__ (the others are caught)
        tb = f"(its traceback could not be formatted: {type(e).__name__})"
    return clipped_error({"type": type(exc).__qualname__, "message": message_of(exc), "traceback": tb,
                          "mro": kinds(type(exc))})


def message_of(exc: BaseException) -> str:
    """``str(exc)``; when that raises, what happened instead (a func's exception class whose ``__str__`` fails)."""
    try:
        return str(exc)
    except Exception as e:  # noqa: BLE001 - whatever it raised: the error is recorded, with these words
        return f"(its message could not be made: its __str__ raised {type(e).__qualname__})"


def clipped_error(info: dict[str, Any]) -> dict[str, Any]:
    """A recorded error (:func:`error_info`'s form, made wherever: a worker's outcome, a dead worker's last log
    lines) with its message and traceback :func:`clipped` to :data:`ERROR_MESSAGE_LIMIT` characters (five times
    that for the traceback)."""
    return {**info, "message": clipped(str(info.get("message") or ""), ERROR_MESSAGE_LIMIT),
            "traceback": clipped(str(info.get("traceback") or ""), 5 * ERROR_MESSAGE_LIMIT)}


# characters of a run's error message that listings carry: a page of 100 runs, or a resolution's graph of thousands,
# that failed with long errors stays small; the run's own read has it whole
LISTED_ERROR_CHARS = 1_000
LISTED_TYPE_CHARS = 256  # of its type (a class's qualified name)
LISTED_KINDS = 8  # of its mro's classes: enough to tell WorkerNeverStarted (and WorkerDied) endings apart
# of a resolution's error (the failed run's type and message after its name, or an infrastructure failure with what
# to do: 850 characters for a driver's missing Kubernetes permission), in listings of at most a few hundred
LISTED_RESOLUTION_ERROR_CHARS = 2_000


def error_excerpt(info: dict[str, Any] | None) -> dict[str, Any] | None:
    """A recorded error as listings of runs carry it: its type, its message :func:`clipped` to
    :data:`LISTED_ERROR_CHARS`, its mro's first :data:`LISTED_KINDS` classes (whether it never started), no traceback
    nor anything else, marked ``excerpt`` with the whole message's and traceback's lengths (``GET /runs/{id}``,
    ``sematic-k8s runs show`` give it whole)."""
    if info is None:
        return None
    message, tb = str(info.get("message") or ""), str(info.get("traceback") or "")
    kinds = info.get("mro")
    mro: list[Any] = kinds if isinstance(kinds, list) else []
    return {"type": clipped(str(info.get("type") or ""), LISTED_TYPE_CHARS),
            "message": clipped(message, LISTED_ERROR_CHARS), "excerpt": True, "message_chars": len(message),
            "traceback_chars": len(tb),
            "mro": [clipped(str(k), LISTED_TYPE_CHARS) for k in mro[:LISTED_KINDS]]}

"""Client-written text made safe to show on a reader's terminal.

Records and logs are written by clients: another user's func may print escape sequences that drive the terminal of
whoever reads them (OSC 52 writes the clipboard, OSC 8 makes links, a title change, cursor moves or ``\\x1b[2J``
hiding lines, DCS), and bidirectional-text controls (U+202E) reorder what is shown. Here each such character is
shown as its escape (``\\x1b``, ``\\u202e``), so the rest of its sequence reads as plain text:

- :func:`visible`, for a table's cell or a one-line message: every C0 and C1 control character but newline and tab
  (so no colour either, and no carriage return, which would let a cell rewrite its row's other columns);
- :func:`terminal_text`, for a run's log (and the errors quoting its lines): text, newlines, tabs, carriage returns
  (progress bars; a ``\\r`` rewrites only the rest of its own line, the run's own output, as ``kubectl logs`` shows
  it) and SGR colour sequences (``\\x1b[...m``) are kept; every other control character is escaped;
- :func:`log_words`, for others' words in a log line (:mod:`sematic_k8s.log_lines`): on a terminal as
  :func:`visible` and its line breaks escaped too (``\\n``, ``\\r``); elsewhere (a pod's log, a file, a pipe) only its
  line breaks, so that they cannot begin a line that reads as the log's own.

Bidirectional-text controls (U+202A-U+202E, U+2066-U+2069) are escaped by all three on a terminal. A log is stored
as the bytes its run wrote: :func:`decoder` and :func:`text_of` turn them into text to show, bytes that are not UTF-8
as their escapes (``\\xff``), not as U+FFFD.
"""

from __future__ import annotations

import codecs
import re

BIDI = (*range(0x202A, 0x202F), *range(0x2066, 0x206A))
# C0 (but \t \n), DEL and C1 controls, and the bidi controls, as their escapes
_VISIBLE = {c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0)) if chr(c) not in "\n\t"} | {
    c: f"\\u{c:04x}" for c in BIDI}
_LINE_BREAKS = {ord("\n"): "\\n", ord("\r"): "\\r"}
_LOG_TERMINAL = _VISIBLE | _LINE_BREAKS
_SGR = r"\x1b\[[0-9;:]*m"
_UNSAFE = re.compile(f"({_SGR})|[\\x00-\\x08\\x0b\\x0c\\x0e-\\x1f\\x7f-\\x9f{''.join(map(chr, BIDI))}]")
RESET = "\x1b[0m"


def visible(text: str) -> str:
    """``text`` with its control characters (but newlines and tabs) and bidi controls shown as escapes (``\\x1b``,
    ``\\u202e``)."""
    return text.translate(_VISIBLE)


def terminal_text(text: str) -> str:
    """``text`` (a log) as a terminal may show it: SGR colours, ``\\r``, newlines and tabs kept, every other control
    character and the bidi controls shown as escapes (``\\x1b]52;...`` reads as text)."""
    return _UNSAFE.sub(lambda m: m.group(1) or _VISIBLE[ord(m.group())], text)


def log_words(text: str, terminal: bool) -> str:
    """Others' words (a record's name, a request's header, an error quoted) in one line of a log: on a ``terminal``
    every control character and bidi control as its escape, line breaks too (``\\n``, ``\\r``); elsewhere only the
    line breaks, the rest as written."""
    return text.translate(_LOG_TERMINAL if terminal else _LINE_BREAKS)


def coloured(text: str) -> bool:
    """Whether ``text`` (as :func:`terminal_text` leaves it) sets a colour, so that the terminal is to be reset
    after it (:data:`RESET`), not left coloured for what follows."""
    return re.search(_SGR, text) is not None


def decoder() -> codecs.IncrementalDecoder:
    """A UTF-8 decoder of a log's bytes, given in parts (a followed log), for :func:`terminal_text`: a character
    cut between two parts is kept for the next; a byte that is not UTF-8 (or, at ``final``, a character left cut)
    becomes its escape (``\\xff``)."""
    return codecs.getincrementaldecoder("utf-8")(errors="backslashreplace")


def text_of(data: bytes) -> str:
    """Bytes of a log (whole, or its last lines) as text to show: UTF-8, a byte that is not as its escape
    (``\\xff``), for :func:`terminal_text`."""
    return decoder().decode(data, final=True)

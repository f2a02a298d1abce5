"""log_lines.SafeStreamHandler's records as a pseudo-terminal and a file get them: the forms a log call takes (``%d``
of a Decimal, ``%r``, a mapping's ``%(name)s``, an exception as the message, a traceback) each keep their meaning,
others' words escaped on the terminal, their line breaks escaped on both; and the last resort (no handler) is one."""

from __future__ import annotations

import decimal
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from sematic_k8s.log_lines import SafeStreamHandler

WORDS = "a \x1b]52;c;ZXZpbA==\x07 \x9b2J \u202eb\r\nWARNING: forged"


@pytest.fixture
def logger() -> Iterator[logging.Logger]:
    log = logging.getLogger("sematic_k8s.test_safe_log_handler")
    log.propagate = False
    yield log
    log.handlers.clear()


def _logged(log: logging.Logger, stream: object) -> None:
    handler = SafeStreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    log.addHandler(handler)
    log.warning("n=%d x=%x f=%.1f %s %r", decimal.Decimal(3), 255, decimal.Decimal("1.25"), WORDS, "r\u202e")
    log.warning("%(who)s said it", {"who": WORDS})
    log.warning(ValueError(WORDS))
    try:
        raise ValueError("tb \x1b[2J \u202e")
    except ValueError:
        log.exception("failed: %s", "z")
    handler.flush()


def test_on_a_terminal_others_words_are_escaped_and_numbers_kept(logger: logging.Logger) -> None:
    master, slave = os.openpty()
    with open(slave, "w", encoding="utf-8") as terminal:  # its side closed after: what it wrote is all there is
        _logged(logger, terminal)
    chunks = []
    try:
        while chunk := os.read(master, 65536):
            chunks.append(chunk)
    except OSError:  # EIO: all read, the other side closed
        pass
    finally:
        os.close(master)
    shown = b"".join(chunks).decode().replace("\r\n", "\n")
    escaped = "a \\x1b]52;c;ZXZpbA==\\x07 \\x9b2J \\u202eb\\r\\nWARNING: forged"
    lines = shown.splitlines()
    assert lines[0] == f"WARNING n=3 x=ff f=1.2 {escaped} 'r\\u202e'", lines
    assert lines[1:3] == [f"WARNING {escaped} said it", f"WARNING {escaped}"], lines
    assert lines[3] == "ERROR failed: z" and lines[4] == "Traceback (most recent call last):", lines
    assert lines[-1] == "ValueError: tb \\x1b[2J \\u202e", lines
    assert "\x1b]" not in shown and "\x1b[2J" not in shown and "\x9b" not in shown and "\u202e" not in shown


def test_elsewhere_only_their_line_breaks_are_escaped(logger: logging.Logger, tmp_path: Path) -> None:
    with open(tmp_path / "log", "w", encoding="utf-8") as file:
        _logged(logger, file)
    lines = (tmp_path / "log").read_text(encoding="utf-8").split("\n")
    kept = "a \x1b]52;c;ZXZpbA==\x07 \x9b2J \u202eb\\r\\nWARNING: forged"
    assert lines[:3] == [f"WARNING n=3 x=ff f=1.2 {kept} 'r\\u202e'", f"WARNING {kept} said it", f"WARNING {kept}"]
    assert not any(line.startswith("WARNING: forged") for line in lines[:4])


def test_a_program_without_handlers_gets_its_warnings_safe() -> None:
    """The last resort, once sematic_k8s is imported: a line break in an argument does not begin a line."""
    code = f"import logging, sematic_k8s; logging.getLogger('x').warning('said %s', {WORDS!r})"
    said = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True,
                          env={**os.environ, "PYTHONPATH": os.getcwd()}).stderr
    assert said == "said a \x1b]52;c;ZXZpbA==\x07 \x9b2J \u202eb\\r\\nWARNING: forged\n", repr(said)


@pytest.mark.parametrize("stderr", ["a pipe no one reads", "closed"])
def test_a_program_whose_stderr_is_gone_does_its_work_and_exits_as_before(tmp_path: Path, stderr: str) -> None:
    """A program (sematic_k8s imported: the last resort its handler) whose stderr is a pipe whose reader closed (a CLI
    piped into ``head``) or no file at all: its 2,000 warnings and a traceback are dropped, and it does its work and
    exits 0, as with Python's own last resort. (Held: caused and kept as a test.)"""
    done = tmp_path / "done"
    code = (f"import logging, sys, sematic_k8s\nlog = logging.getLogger('x')\n"
            f"for i in range(2000): log.warning('said %s', {WORDS!r})\n"
            f"try:\n 1 / 0\nexcept ZeroDivisionError:\n log.exception('boom %s', {WORDS!r})\n"
            f"open(sys.argv[1], 'w').write('done')\n")
    read, write = os.pipe()
    os.close(read)
    try:
        proc = subprocess.run([sys.executable, "-c", code, str(done)], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=write if stderr != "closed" else None, timeout=60,
                              preexec_fn=(lambda: os.close(2)) if stderr == "closed" else None,  # noqa: PLW1509
                              env={**os.environ, "PYTHONPATH": os.getcwd()})
    finally:
        os.close(write)
    assert proc.returncode == 0 and done.read_text() == "done", proc
    assert proc.stdout == b""

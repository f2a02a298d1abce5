"""What a run wrote reaches the reader's terminal unable to drive it: the real console script in a pseudo-terminal
(``os.openpty``) reading a home where a func printed, and failed with, escape sequences (OSC 52 clipboard write,
OSC 8 link, a screen clear, DCS, an 8-bit CSI), colours, a progress bar and a right-to-left override. On the
terminal they are shown escaped (colours, ``\\r`` and line breaks kept); piped, a log is the bytes the run wrote."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

import sematic_k8s as sk
from sematic_k8s import settings
from sematic_k8s.storage.base import log_key
from sematic_k8s.storage.local import LocalStorage
from test_cli_errors import CLI

CLIPBOARD = "\x1b]52;c;ZXZpbA==\x07"  # OSC 52: writes "evil" to the reader's clipboard
LINK = "\x1b]8;;http://evil.example/\x1b\\click\x1b]8;;\x1b\\"
CLEAR = "\x1b[2J"
DCS = "\x1bP+q544e\x1b\\"
CSI8 = "\x9b2J"  # the 8-bit CSI: a clear too, on terminals that take C1 controls
RED = "\x1b[31mred\x1b[0m"
RLO = "\u202e"  # right-to-left override: reorders what follows on its line
HOSTILE = f"start {CLIPBOARD}{LINK}{CLEAR}{DCS}{CSI8} {RED} {RLO}txt.exe\n50%\r100%\n\tdone\n"


@sk.func
def printer() -> int:
    print(HOSTILE, end="")
    return 1


@sk.func
def unended() -> int:
    print("no line break at the end", end="")
    return 2


@sk.func
def failer() -> int:
    raise RuntimeError(f"bad {CLIPBOARD}{CLEAR}{RED}{RLO}gpj.exe")


def on_terminal(home: Path, *args: str) -> bytes:
    """What the CLI wrote to a pseudo-terminal (its stdout and stderr), line ends as the terminal sends them
    (``\\r\\n``) turned back into ``\\n``."""
    master, slave = os.openpty()
    try:
        proc = subprocess.Popen([str(CLI), *args], stdin=subprocess.DEVNULL, stdout=slave, stderr=slave,
                                env=_environ(home))
    finally:
        os.close(slave)
    chunks = []
    try:
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the CLI ended, and its side of the terminal closed
                break
            if not data:
                break
            chunks.append(data)
    finally:
        os.close(master)
    assert proc.wait(60) == 0, b"".join(chunks)
    return b"".join(chunks).replace(b"\r\n", b"\n")


def _environ(home: Path) -> dict[str, str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(settings.PREFIX)}
    return {**environ, settings.HOME_ENV: str(home), "TERM": "xterm"}


def _escapes_shown(shown: str) -> None:
    """Every control sequence but colours is there as text, not as the characters that drive a terminal."""
    assert "\x1b]" not in shown and "\x07" not in shown and "\x1b[2J" not in shown and "\x1bP" not in shown
    assert "\x9b" not in shown and RLO not in shown
    assert "\\x1b]52;c;ZXZpbA==\\x07" in shown and "\\x1b[2J" in shown and "\\u202e" in shown


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("terminal") / "home"
    assert printer().resolve(sk.LocalResolver(home=home)) == 1
    assert unended().resolve(sk.LocalResolver(home=home)) == 2
    with pytest.raises(sk.ResolutionFailed):
        failer().resolve(sk.LocalResolver(home=home))
    return home


def _run_id(home: Path, func: str) -> str:
    out = subprocess.run([str(CLI), "runs", "list", "--func", func, "-o", "json"], env=_environ(home),
                         capture_output=True, text=True, timeout=60, check=True).stdout
    return str(json.loads(out)["items"][0]["id"])


@pytest.mark.parametrize("follow", [False, True], ids=["logs", "logs-follow"])
def test_a_log_on_a_terminal_shows_its_escapes_and_keeps_colours(home: Path, follow: bool) -> None:
    """`logs` (and `--follow`) on a terminal: OSC 52, OSC 8, the clear, DCS, the 8-bit CSI and the RLO are shown
    escaped; colours, the progress bar's ``\\r``, tabs and line breaks reach it as written, and the colours are reset
    after (was: every byte as written, the clipboard set to "evil")."""
    run_id = _run_id(home, "printer")
    shown = on_terminal(home, "logs", run_id, *(["--follow"] if follow else [])).decode()
    _escapes_shown(shown)
    assert "\\x1b]8;;http://evil.example/\\x1b\\click" in shown and "\\x1bP+q544e" in shown and "\\x9b2J" in shown
    assert "start \\x1b]52;c;ZXZpbA==\\x07" in shown
    assert f" {RED} \\u202etxt.exe\n50%\r100%\n\tdone\n\x1b[0m" in shown


def test_a_log_piped_or_raw_is_the_bytes_the_run_wrote(home: Path) -> None:
    """Piped, `logs` prints the stored log byte for byte (as `kubectl logs`; was: click took the colours and the
    clear out of it, and a line break was added to a log without one); `--raw` prints it so on a terminal too."""
    run_id = _run_id(home, "printer")
    stored = LocalStorage(home / "storage").get(log_key(run_id))
    assert stored == HOSTILE.encode()
    for args in (["logs", run_id], ["logs", run_id, "--follow"], ["logs", run_id, "--raw"]):
        piped = subprocess.run([str(CLI), *args], env=_environ(home), capture_output=True, timeout=60, check=True)
        assert piped.stdout == stored, args
    raw = on_terminal(home, "logs", run_id, "--raw")
    assert raw == stored
    unended_id = _run_id(home, "unended")
    piped = subprocess.run([str(CLI), "logs", unended_id], env=_environ(home), capture_output=True, timeout=60)
    assert piped.stdout == b"no line break at the end"  # was: a line break added
    assert on_terminal(home, "logs", unended_id) == b"no line break at the end\n"  # the prompt on a line of its own


@pytest.mark.parametrize("command", ["resolutions", "runs"])
def test_a_recorded_error_in_a_table_is_shown_escaped(home: Path, command: str) -> None:
    """A failed run's error in `resolutions show` and `runs show`: its escape sequences and its RLO (was: shown as
    written, reordering the row) as escapes, its colours too (a table's cell is text)."""
    shown = on_terminal(home, command, "show", _run_id(home, "failer")).decode()
    _escapes_shown(shown)
    assert "\x1b" not in shown and "bad \\x1b]52;c;ZXZpbA==\\x07\\x1b[2J\\x1b[31mred\\x1b[0m\\u202egpj.exe" in shown


def test_a_note_in_a_table_is_shown_escaped(home: Path) -> None:
    """A note holding a right-to-left override and a screen clear, as `resolutions note` prints it back."""
    shown = on_terminal(home, "resolutions", "note", _run_id(home, "failer"), f"see {RLO}{CLEAR}fdp.exe").decode()
    assert "\x1b" not in shown and RLO not in shown and "see \\u202e\\x1b[2Jfdp.exe" in shown

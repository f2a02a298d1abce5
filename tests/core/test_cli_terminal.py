"""What a run wrote reaches the reader's terminal unable to drive it: the real console script in a pseudo-terminal
(``os.openpty``) reading a home where a func printed, and failed with, escape sequences (OSC 52 clipboard write,
OSC 8 link, a screen clear, DCS, an 8-bit CSI), colours, a progress bar and a right-to-left override, and a log
holding bytes that are not UTF-8. On the terminal they are shown escaped (colours, ``\\r`` and line breaks kept;
bytes not UTF-8 as ``\\xff``); piped, a log is the bytes the run wrote, read here or through a server."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
from pathlib import Path

import pytest

import sematic_k8s as sk
from sematic_k8s import settings
from sematic_k8s.storage.base import log_key
from sematic_k8s.storage.local import LocalStorage
from serving import serve
from test_cli_errors import CLI

CLIPBOARD = "\x1b]52;c;ZXZpbA==\x07"  # OSC 52: writes "evil" to the reader's clipboard
LINK = "\x1b]8;;http://evil.example/\x1b\\click\x1b]8;;\x1b\\"
CLEAR = "\x1b[2J"
DCS = "\x1bP+q544e\x1b\\"
CSI8 = "\x9b2J"  # the 8-bit CSI: a clear too, on terminals that take C1 controls
RED = "\x1b[31mred\x1b[0m"
RLO = "\u202e"  # right-to-left override: reorders what follows on its line
HOSTILE = f"start {CLIPBOARD}{LINK}{CLEAR}{DCS}{CSI8} {RED} {RLO}txt.exe\n50%\r100%\n\tdone\n"
# a log not UTF-8 (as a client may store it): stray bytes, a lead without its rest, continuation bytes alone, an
# 8-bit CSI as a byte, and a character cut at the end; between them escapes and an RLO, and characters of 2 to 4 bytes
NOT_UTF8 = (f"{CLIPBOARD} ".encode() + b"\xff\xfe bad " + RED.encode() + b" \xc3( \x80\x80 stray \x9b2J "
            + f"{RLO}\né € 𝄞\n".encode() + b"cut \xe2\x82")
NOT_UTF8_SHOWN = ("\\x1b]52;c;ZXZpbA==\\x07 \\xff\\xfe bad \x1b[31mred\x1b[0m \\xc3( \\x80\\x80 stray \\x9b2J "
                  "\\u202e\né € 𝄞\ncut \\xe2\\x82\x1b[0m\n")


@sk.func
def printer() -> int:
    print(HOSTILE, end="")
    return 1


@sk.func
def unended() -> int:
    print("no line break at the end", end="")
    return 2


@sk.func
def silent() -> int:
    return 3


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
    silent_run = silent()
    assert silent_run.resolve(sk.LocalResolver(home=home)) == 3
    LocalStorage(home / "storage").append(log_key(silent_run.id), NOT_UTF8)  # as a client may write its log
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


@pytest.mark.parametrize("follow", [False, True], ids=["logs", "logs-follow"])
def test_a_log_not_utf8_is_its_bytes_piped_and_escaped_on_a_terminal(home: Path, follow: bool) -> None:
    """A stored log that is not UTF-8: piped or `--raw`, `logs` (and `--follow`) prints its bytes as stored (was:
    decoded, each bad byte printed as U+FFFD); on a terminal each byte not UTF-8 is shown as its escape (``\\xff``,
    the 8-bit CSI byte too), as control characters are, the character cut at its end too (was: U+FFFD)."""
    run_id = _run_id(home, "silent")
    assert LocalStorage(home / "storage").get(log_key(run_id)) == NOT_UTF8
    args = ["logs", run_id, *(["--follow"] if follow else [])]
    for extra in ([], ["--raw"]):
        piped = subprocess.run([str(CLI), *args, *extra], env=_environ(home), capture_output=True, timeout=60,
                               check=True)
        assert piped.stdout == NOT_UTF8, extra
    assert on_terminal(home, *args, "--raw").startswith(NOT_UTF8)
    shown = on_terminal(home, *args).decode()
    if follow:  # the character cut at its end is held for what may follow, then shown as it is, after the reset
        shown = shown.replace("cut \x1b[0m\\xe2\\x82\n", "cut \\xe2\\x82\x1b[0m\n")
    assert "\ufffd" not in shown and shown.startswith(NOT_UTF8_SHOWN), shown


def test_a_log_not_utf8_read_through_a_server_is_its_bytes(tmp_path: Path) -> None:
    """Through a server, the CLI's `logs` piped is the stored bytes too (was: the server sent them decoded, U+FFFD
    for each bad byte), and the server's parts, each asked from where the last one ended, are every byte once: a
    part starting with continuation bytes that are not the rest of a character starts with them (was: up to three
    of them dropped, taken for the rest of a character cut)."""
    with serve(tmp_path) as s, s.client() as c:
        f = silent()
        f.resolve(sk.LocalResolver(home=tmp_path, server=s.url, api_key=s.key))
        stored = NOT_UTF8 * 3 + b"\x80\x80\x80\x80 end \xf0\x9d\x84\x9e"
        LocalStorage(tmp_path / "storage").append(log_key(f.id), stored)
        environ = {**_environ(tmp_path / "elsewhere"), settings.SERVER_ENV: s.url, settings.API_KEY_ENV: str(s.key)}
        piped = subprocess.run([str(CLI), "logs", f.id], env=environ, capture_output=True, timeout=60, check=True)
        assert piped.stdout == stored
        for limit in (4, 5, 7):  # parts ending and starting inside characters, and at bytes not UTF-8
            got, offset = b"", 0
            while offset < len(stored):
                r = c.get(f"/api/v1/runs/{f.id}/logs", params={"offset": offset, "limit": limit})
                assert r.status_code == 200 and int(r.headers["x-log-start"]) == offset, (limit, offset)
                utf8 = _is_utf8(r.content)  # charset=utf-8 only for bytes that are (was: for any)
                assert r.headers["content-type"] == ("text/plain; charset=utf-8" if utf8 else "text/plain"), r.content
                got, offset = got + r.content, int(r.headers["x-log-next"])
            assert got == stored, limit
        whole = c.get(f"/api/v1/runs/{f.id}/logs")
        assert whole.content == stored and whole.headers["content-type"] == "text/plain"
        utf8 = silent()
        utf8.resolve(sk.LocalResolver(home=tmp_path, server=s.url, api_key=s.key))
        LocalStorage(tmp_path / "storage").append(log_key(utf8.id), "caf\u00e9 \u2713\n".encode())
        assert c.get(f"/api/v1/runs/{utf8.id}/logs").headers["content-type"] == "text/plain; charset=utf-8"


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode()
    except UnicodeDecodeError:
        return False
    return True


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


def test_an_api_key_name_on_a_terminal_is_shown_escaped(tmp_path: Path) -> None:
    """A key's name holding escape sequences, an RLO and an 8-bit CSI (written before names were checked, or in the
    database by hand: the API refuses them now): `api-keys list` and `revoke` on a terminal show it escaped, as the
    CLI shows records (held already: its table's cells and its lines' quoted names; no change)."""
    created = subprocess.run([str(CLI), "api-keys", "create", "plain", "--home", str(tmp_path)], env=_environ(tmp_path),
                             capture_output=True, timeout=60, check=True)
    assert created.stdout.strip()
    name = f"ci{CLIPBOARD}{CLEAR}{RLO}txt.exe{CSI8}"
    with sqlite3.connect(tmp_path / "db.sqlite3") as conn:
        conn.execute("UPDATE api_keys SET name = ?", (name,))
    conn.close()
    for args in (["api-keys", "list"], ["api-keys", "revoke", name]):
        shown = on_terminal(tmp_path, *args).decode()
        assert "\x1b" not in shown and RLO not in shown and "\x9b" not in shown and "\x07" not in shown, args
        assert "ci\\x1b]52;c;ZXZpbA==\\x07\\x1b[2J\\u202etxt.exe\\x9b" in shown, (args, shown)

"""The progress display in its own process: live (rich) on a terminal (a pty), plain lines through a pipe; both
end in the same one-line summary and never show a build's raw output as lines."""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys
import textwrap
from pathlib import Path

from sematic_k8s.progress import Lines, counts_text

REPO = Path(__file__).resolve().parents[2]
DIGEST = "127.0.0.1:5000/p@sha256:" + "a" * 64
SHORT = "127.0.0.1:5000/p@sha256:" + "a" * 12
# the Docker launcher's words for the driver's image's pull (launchers.docker: its start, its first try's progress)
PULLING = [f"pulling the driver's image: {SHORT}", f"pulling the driver's image (2 of 5 layers, 15 of 40 MB): {SHORT}"]
# what packaging and the CloudResolver report during a build, a push and a resolution (their line vocabulary)
FEED = textwrap.dedent(f'''
    import time
    from sematic_k8s.progress import display

    shown = display()
    for line in ["context: 12 files, hash 0123456789abcdef", "build: 127.0.0.1:5000/p:abc from /proj",
                 "Step 1/3 : FROM local/python-base:bookworm", " ---> Using cache", " ---> 1a2b3c",
                 "Step 2/3 : RUN pip install --no-index /wheels/*.whl", "Collecting tomli-w", "Installing tomli-w",
                 "Removing intermediate container 99", "Step 3/3 : COPY . /app", " ---> 4d5e6f",
                 "Successfully built 4d5e6f", "Successfully tagged 127.0.0.1:5000/p:abc", "build: done in 0.1s",
                 "push: The push refers to repository [127.0.0.1:5000/p]", "push aaaaaaaaaaaa: Preparing",
                 "push bbbbbbbbbbbb: Preparing", "push aaaaaaaaaaaa: Pushing (3.2 MB)", "push aaaaaaaaaaaa: Pushed",
                 "push bbbbbbbbbbbb: Layer already exists", "image: {DIGEST}", *{PULLING!r},
                 "driver started for resolution r1"]:
        shown(line)
        time.sleep(0.02)
    for counts in [{{"created": 1}}, {{"running": 2}}, {{"running": 2}}, {{"running": 1, "resolved": 1}},
                   {{"resolved": 2}}]:
        shown.runs("r1", "running", counts)
        time.sleep(0.15)
    shown.done("resolved")
''')
SUMMARY = re.compile(r"resolution r1 resolved in [\d.]+s; 2 runs \(2 resolved\); image built in [\d.]+s, 3 steps "
                     rf"\(1 cached\), 2 layers pushed: {re.escape(DIGEST)}")
RAW = ("Collecting tomli-w", "Installing tomli-w", "Successfully", "Removing intermediate", "---> ")


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "TERM": "xterm-256color", "COLUMNS": "120"}


def on_terminal(feed: str) -> str:
    """What ``feed`` (a script, run by a Python of its own on a pseudo-terminal, which must succeed) wrote there."""
    controller, terminal = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-c", feed], env=env(), stdin=terminal, stdout=terminal,
                            stderr=terminal, close_fds=True)
    os.close(terminal)
    chunks = []
    while select.select([controller], [], [], 60)[0]:
        try:
            data = os.read(controller, 65536)
        except OSError:  # the terminal closed: the process ended
            break
        if not data:
            break
        chunks.append(data)
    assert proc.wait(60) == 0
    os.close(controller)
    return b"".join(chunks).decode(errors="replace")


def test_plain_lines_when_not_a_terminal() -> None:
    proc = subprocess.run([sys.executable, "-c", FEED], env=env(), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    assert lines[:-1] == [
        "context: 12 files, hash 0123456789abcdef",
        "build: 127.0.0.1:5000/p:abc from /proj",
        "build: step 1/3 FROM local/python-base:bookworm",
        "build: step 2/3 RUN pip install --no-index /wheels/*.whl",
        "build: step 3/3 COPY . /app",
        "build: done in 0.1s",
        "push: layer aaaaaaaaaaaa pushed (1/2)",
        "push: layer bbbbbbbbbbbb layer already exists (2/2)",
        f"image: {DIGEST}",
        *PULLING,  # the driver's image's pull, each change of its words
        "driver started for resolution r1",
        "resolution r1: 1 created",
        "resolution r1: 2 running",  # once: the same counts again are not a new line
        "resolution r1: 1 running, 1 resolved",
        "resolution r1: 2 resolved",
    ]
    assert SUMMARY.fullmatch(lines[-1])
    assert "\x1b[" not in proc.stderr and not any(raw in proc.stderr for raw in RAW)


def test_live_display_on_a_terminal() -> None:
    out = on_terminal(FEED)
    screen = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out).replace("\r", "")
    assert "\x1b[" in out  # drawn in place
    assert "step 2/3" in screen and "1/2 layers" in screen and "2/2 layers" in screen
    assert "■ 2 running" in screen and "■ 2 resolved" in screen
    assert "image: " + DIGEST in screen and "driver started for resolution r1" in screen  # milestones stay
    assert "build: step" not in screen  # steps are drawn, not printed as lines
    assert PULLING[1] in screen  # the driver's image's pull, drawn while its launch waits
    last = [line for line in screen.splitlines() if line.strip()][-1]
    assert SUMMARY.fullmatch(last.strip())


def test_a_callers_own_sink_gets_every_line_and_the_summary() -> None:
    got: list[str] = []
    shown = Lines(got.append)
    shown("Step 1/1 : FROM x")
    shown("output of the step")
    shown.runs("r2", "running", {"running": 3})
    shown.runs("r2", "running", {"running": 3})
    assert shown.done("resolved").startswith("resolution r2 resolved in ")
    assert got[:3] == ["Step 1/1 : FROM x", "output of the step", "resolution r2: 3 running"]
    assert len(got) == 4 and got[3].startswith("resolution r2 resolved")
    assert counts_text({"resolved": 2, "failed": 0, "created": 1, "running": 4}) == "1 created, 4 running, 2 resolved"


# others' words the display is told: a registry's error in the Docker engine's pull failure, a registry line, a
# build step's output, what a run waits for (the cluster's events); each holding escape sequences and an RLO
CLIPBOARD, RLO = "\x1b]52;c;ZXZpbA==\x07", "\u202e"  # OSC 52 writes "evil" to the clipboard; a right-to-left override
HOSTILE_LINES = [f"registry: 127.0.0.1:5000 said {CLIPBOARD} {RLO}gpj.exe", "Step 1/1 : FROM base",
                 "output \x1b[2J\x9b2J \x1b]8;;http://evil.example/\x1b\\click",
                 f"waiting for the driver's image: the Docker engine could not pull it ({CLIPBOARD} {RLO}fdp.exe)",
                 "driver started for resolution r1"]
HOSTILE_FEED = textwrap.dedent(f'''
    import time
    from sematic_k8s.progress import display

    shown = display()
    for line in {HOSTILE_LINES!r}:
        shown(line)
        time.sleep(0.2)
    shown.runs("r1", "running", {{"running": 1}}, {{"r2": {f"quota {CLIPBOARD}{RLO}exceeded"!r}}})
    time.sleep(0.3)
    shown.done("resolved")
''')


def test_others_words_on_a_terminal_are_shown_escaped_and_piped_as_they_are() -> None:
    """A registry's error, a build's output, what a run waits for, on the live display: their escape sequences (an
    OSC 52 clipboard write, an OSC 8 link, a screen clear, an 8-bit CSI) and RLO are shown escaped (was: sent to
    the terminal as they were, rich taking out only the bell); as plain lines (not a terminal) they are as told."""
    out = on_terminal(HOSTILE_FEED)
    assert "\x1b]" not in out and "\x07" not in out and "\x1b[2J" not in out and "\x9b" not in out
    assert RLO not in out
    assert "said \\x1b]52;c;ZXZpbA==\\x07 \\u202egpj.exe" in out  # the registry's line, printed whole
    assert "\\x1b]52;c;ZXZpbA==\\x07 \\u202efdp.exe" in out and "quota \\x1b]52;c;ZXZpbA==\\x07\\u202eexceeded" in out
    assert "output \\x1b[2J\\x9b2J \\x1b]8;;http://evil.example/" in out
    piped = subprocess.run([sys.executable, "-c", HOSTILE_FEED], env=env(), capture_output=True, text=True,
                           timeout=60)
    assert piped.returncode == 0, piped.stderr
    assert f"registry: 127.0.0.1:5000 said {CLIPBOARD} {RLO}gpj.exe\n" in piped.stderr
    assert f"not started: quota {CLIPBOARD}{RLO}exceeded\n" in piped.stderr

"""A process whose wall clock is off, for real: libfaketime's preload library (Debian's ``faketime`` package), as the
``faketime`` command sets it, in the environment the process is started with (so that kill -9 reaches the process
itself, not the ``faketime`` command waiting for it). Its monotonic clock stays real
(``FAKETIME_DONT_FAKE_MONOTONIC``): intervals, timeouts and waits are not skewed."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

FAKETIME = shutil.which("faketime")
SITE = Path(__file__).parent / "faketime_site"  # its sitecustomize works around libfaketime 0.9.10's time.sleep


def skewed(offset: str | None) -> dict[str, str]:
    """The environment variables that set a process's wall clock ``offset`` ("-5m": 5 minutes behind, "+5m") off
    (children inherit them; PYTHONPATH is :data:`SITE`, to put before the rest); None: none, the process keeps its
    clock."""
    if offset is None:
        return {}
    if FAKETIME is None:
        raise RuntimeError("libfaketime is not installed: apt-get install faketime")
    shown = subprocess.run([FAKETIME, "-m", "-f", offset, "env"], capture_output=True, text=True, check=True).stdout
    found = dict(line.split("=", 1) for line in shown.splitlines() if line.startswith(("LD_PRELOAD=", "FAKETIME=")))
    if found.get("FAKETIME") != offset or "faketime" not in found.get("LD_PRELOAD", ""):
        raise RuntimeError(f"faketime set no preload library for {offset!r}: {shown!r}")
    return {**found, "FAKETIME_DONT_FAKE_MONOTONIC": "1", "PYTHONPATH": str(SITE)}

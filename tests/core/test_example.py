"""The example pipeline `make run` resolves (README, "Two commands"), run as the Makefile runs it, and the command it
suggests next, run as printed: in a shell whose PATH has not the venv's bin (the venv not activated)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from sematic_k8s import settings

REPO = Path(__file__).resolve().parents[2]


def test_the_examples_suggested_command_runs_as_printed(tmp_path: Path) -> None:
    """Was "(try: sematic-k8s runs list ...)", which a shell without the venv activated does not find (127)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(settings.PREFIX)}
    env.update({settings.HOME_ENV: str(tmp_path / "home"), "PATH": "/usr/bin:/bin",
                "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "server")])})
    example = subprocess.run([sys.executable, "-m", "examples.pipeline"], cwd=REPO, env=env, capture_output=True,
                             text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert example.returncode == 0, example.stderr
    tried = re.search(r"\(try: (.+ runs list --root-id ([0-9a-f]{32}))\)", example.stdout)
    assert tried, example.stdout
    listed = subprocess.run(["/bin/sh", "-c", tried[1]], cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=60, stdin=subprocess.DEVNULL)
    assert listed.returncode == 0, (tried[1], listed.stderr)
    assert tried[2] in listed.stdout and "report" in listed.stdout

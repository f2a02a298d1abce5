""":data:`~sematic_k8s.specs.DOCKER_DRIVER_COMMAND` in an image whose relay is older than the command's signal block
(the server's Docker rerun of a resolution recorded before it, its image by digest): that relay never unblocks, so
the command does, as the image's relay ran before (its startup's race open, as then). Was: the relay and its driver
ran with every signal blocked: ``docker stop``'s SIGTERM never reached a pipeline's own handler, nor an INT the
driver (the container waited for SIGKILL). Run as a process, the image's package stood in for by a directory (on
PYTHONPATH, the working directory): a relay as before the block, and a driver saying which signals it has blocked."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from sematic_k8s.specs import DOCKER_DRIVER_COMMAND

OLDER_RELAY = '''
import subprocess, sys

def main() -> int:  # as the relays before the block: its handlers and its driver, no mask touched
    return subprocess.call([sys.executable, "-m", "sematic_k8s.driver"])
'''
DRIVER = '''
for line in open("/proc/self/status"):
    if line.startswith("SigBlk:"):
        print(line.split()[1])
'''


def test_a_driver_under_a_relay_older_than_the_block_has_no_signal_blocked(tmp_path: Path) -> None:
    package = tmp_path / "sematic_k8s"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "driver_relay.py").write_text(OLDER_RELAY)
    (package / "driver.py").write_text(DRIVER)
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    done = subprocess.run([sys.executable, *DOCKER_DRIVER_COMMAND[1:]], env=env, cwd=tmp_path,
                          capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    assert int(done.stdout.decode().strip(), 16) == 0, f"the driver's blocked signals: {done.stdout.decode().strip()}"

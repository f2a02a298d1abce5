"""A ``--workers`` server whose processes are slow to start (a loaded node: each takes seconds to import)."""

from __future__ import annotations

import os
from pathlib import Path

from outages import ServerProcess
from serving import wait_for

SLOW_START = 6  # seconds each of the server's processes sleeps before anything else: more than uvicorn's 5 s ping

SITECUSTOMIZE = f"""import sys, time
if "--multiprocessing-fork" in sys.argv:  # a process the server's parent starts (multiprocessing's spawn)
    time.sleep({SLOW_START})
"""


def test_processes_slow_to_start_are_waited_for_not_killed(tmp_path: Path, postgres_url: str) -> None:
    """``--workers 2``, each process taking 6 s to start (a sitecustomize sleeping in it): both start and serve,
    none killed. Was: uvicorn's parent killed a process not answering its ping within 5 s as hung and started
    another, over and over ("Child process [...] died"): under load a server took a minute to start."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    server = ServerProcess(tmp_path / "server", db_url=postgres_url, args=("--workers", "2"),
                           env={"PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))})
    server.home.mkdir()
    try:
        server.start()
        wait_for(lambda: server.log.read_text().count("Application startup complete") >= 2, 90,
                 what="both processes")
        assert "died" not in server.log.read_text(), server.log.read_text()[-3000:]
    finally:
        server.stop()

"""A CloudResolver's record that the driver it follows died is fenced with the driver epoch it saw die: however late
it lands (held up in the network past its client's timeout and retried while the path to the server stays down), it
never ends the resolution a newer driver took over meanwhile (a Job's next pod, a driver started by hand), and the
CloudResolver then follows the resolution, leaving that driver's workers alone (docs/FAULTS.md, "Several writers at
once").

The drivers are real processes (``python -m sematic_k8s.driver``, process executor) recording straight to a server
process (in a cluster, by its in-cluster address); the CloudResolver's follower reads and writes through a proxy on
loopback (its port-forward) that holds its record back; the first driver is killed with SIGKILL, as a pod dies."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import fault_pipelines as fp
from outages import HoldingProxy, ServerProcess
from sematic_k8s.launchers import DriverEnd
from sematic_k8s.progress import display
from sematic_k8s.resolvers.cloud import CloudResolver
from sematic_k8s.settings import DRIVER_ENV
from sematic_k8s.storage.local import LocalStorage
from sematic_k8s.storage.urls import storage_url
from sematic_k8s.store.http import HttpStore
from test_driver_fence import _spec
from waiting import wait_for

HERE = Path(__file__).parent
MARK = b"before the resolution ended"  # in the follower's record of the driver's death


class DriverProcess:
    """Follows a driver process as the launchers' watches follow a container or a Job: ended once it exited."""

    def __init__(self, proc: subprocess.Popen, log: Path) -> None:
        self.proc, self.log = proc, log
        self.cleaned = False

    def ended(self) -> DriverEnd | None:
        code = self.proc.poll()
        return None if code is None else DriverEnd(f"exited with code {code}", code, self.log.read_text()[-2000:])

    def cleanup(self) -> None:
        self.cleaned = True  # the Docker watch removes the resolution's workers here; the Kubernetes one, its Job

    def close(self) -> None:
        pass


def test_a_late_record_of_a_dead_driver_leaves_the_newer_driver_running(tmp_path):
    """The first driver is killed (-9) while its gated step runs. The follower sees it ended and records the
    resolution failed; that record is held back by the proxy, and its retries time out too. Meanwhile the Job's next
    driver takes the resolution over and launches the gated step again. Then the held record reaches the server:
    refused (409, another driver took over), as is the retry that follows; the newer driver finishes the resolution
    to its value, which the follower returns, its cleanup never called (before: the record landed, the resolution
    failed under the running driver, whose next write was refused, and the follower raised ResolutionFailed)."""
    server = ServerProcess(tmp_path)
    server.start()
    proxy = HoldingProxy(server.port, until_release=True,
                         hold=lambda req: req.startswith(b"POST /api/v1/store/write") and MARK in req)
    storage = LocalStorage(tmp_path / "storage")
    gate = str(tmp_path / "gate")
    started = Path(gate + ".started")  # the gated worker writes its pid there
    f = fp.remote_gated(4, gate)
    env = {**os.environ, DRIVER_ENV: _spec(f, storage, f.id).to_json(), "SEMATIC_K8S_HEARTBEAT_INTERVAL": "0.5",
           "SEMATIC_K8S_SERVER": server.url,
           "PYTHONPATH": os.pathsep.join([os.getcwd(), str(HERE), str(HERE.parent / "support")])}
    for name in ("SEMATIC_K8S_API_KEY", "SEMATIC_K8S_DB_URL"):
        env.pop(name, None)
    procs: list[subprocess.Popen] = []
    workers: list[str] = []

    def driver(name: str) -> DriverProcess:
        log = tmp_path / f"{name}.log"
        with open(log, "w") as out:
            procs.append(subprocess.Popen([sys.executable, "-m", "sematic_k8s.driver"], env=env, stdout=out,
                                          stderr=subprocess.STDOUT))
        return DriverProcess(procs[-1], log)

    follower_store = HttpStore(proxy.url, timeout=2.0, retry_window=120)
    reader = HttpStore(server.url)
    outcome: list[Any] = []
    try:
        first = driver("first")
        workers.append(wait_for(lambda: (started.exists() and started.read_text()) or first.ended(), 120,
                                what="the first driver's gated worker"))
        assert first.ended() is None, first.log.read_text()
        resolver = CloudResolver(server=proxy.url, storage=storage_url(storage), registry="127.0.0.1:5000/x",
                                 poll_interval=0.1)

        def follow() -> None:
            try:
                outcome.append(resolver._follow(follower_store, storage, f.id, display(lambda line: None), first))
            except Exception as e:  # noqa: BLE001 - what the caller of resolve() would get
                outcome.append(e)

        following = threading.Thread(target=follow, daemon=True)
        following.start()
        first.proc.send_signal(signal.SIGKILL)  # the driver pod dies
        wait_for(lambda: proxy.held is not None, 60, what="the follower's record of the death, held back")

        second = driver("second")  # the Job's next pod: it takes the resolution over and resumes it
        workers.append(wait_for(lambda: started.read_text() not in ("", workers[0]) and started.read_text()
                                or second.ended(), 120, what="the second driver's gated worker"))
        assert second.ended() is None, second.log.read_text()

        status, body = proxy.release()  # the record of the first driver's death arrives now
        assert status == 409, body
        assert f"another driver took over resolution {f.id}" in json.loads(body)["detail"]
        assert reader.get_resolution(f.id).state == "running"
        Path(gate).touch()
        assert second.proc.wait(180) == 0, second.log.read_text()
        following.join(180)
        assert outcome == [7], outcome  # (4 + 1) + (1 + 1), followed to its end
        assert not first.cleaned  # the newer driver's workers were left alone
        res = reader.get_resolution(f.id)
        assert (res.state, res.error) == ("resolved", None)
        assert {r.state for r in reader.runs_of_root(f.id)} == {"resolved"}
    finally:
        Path(gate).touch()
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        follower_store.close()
        reader.close()
        proxy.close()
        server.stop()

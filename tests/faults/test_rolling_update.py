"""A server stopped the way Kubernetes stops it (SIGTERM: a rolling update, a drain, `helm upgrade`) while clients
are mid-request: real server processes on one PostgreSQL behind a real load-balancing proxy (the Service), a
LocalResolver writing through it, a live event stream following it."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

import fault_pipelines as fp
import sematic_k8s as sk
from outages import BalancingProxy, ServerProcess
from sematic_k8s import serialization
from sematic_k8s.settings import DRIVER_ENV
from sematic_k8s.specs import DriverSpec, ResolutionSettings
from sematic_k8s.storage.base import artifact_key
from sematic_k8s.storage.local import LocalStorage
from sematic_k8s.storage.urls import storage_url
from sematic_k8s.store.sql import SqlStore
from serving import wait_for

HERE = Path(__file__).parent
GRACE = 30  # the chart's terminationGracePeriodSeconds: Kubernetes kills (-9) a container still running then
STEPS = 40


@pytest.fixture
def postgres():
    from pgcluster import create_database, own_cluster

    with own_cluster() as cluster:
        yield create_database(cluster.url, "rolling")


class Follower:
    """A client of ``/api/v1/events`` that connects again whenever its stream ends, as the dashboard does; ``ends``
    lists how each stream ended ("end" when the server finished it, else the error)."""

    def __init__(self, url: str) -> None:
        self.url, self.ends, self.connected, self.events = url, list[str](), 0, list[str]()
        self.stopped = False
        threading.Thread(target=self._follow, daemon=True).start()

    def _follow(self) -> None:
        while not self.stopped:
            try:
                with httpx.stream("GET", f"{self.url}/api/v1/events", timeout=60) as r:
                    r.raise_for_status()
                    for line in r.iter_lines():
                        if line == ": connected":
                            self.connected += 1
                        elif line.startswith("data: "):
                            self.events.append(line)
                self.ends.append("end")
            except httpx.HTTPError as e:
                self.ends.append(f"{type(e).__name__}: {e}")
                time.sleep(0.2)


def sigterm(server: ServerProcess) -> tuple[int, float]:
    """SIGTERM, as the kubelet sends it; the exit code and the seconds it took (killed after GRACE, as there)."""
    assert server.proc is not None
    start = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    try:
        code = server.proc.wait(GRACE)
    except subprocess.TimeoutExpired:
        server.kill()
        code = -9
    return code, time.monotonic() - start


@pytest.mark.parametrize("workers", [1, 2])
def test_a_rolling_update_under_a_resolution_loses_nothing(tmp_path: Path, postgres: str, monkeypatch, caplog,
                                                           workers: int) -> None:
    """Two replicas on one PostgreSQL behind a proxy; the older one (one process, or two: ``--workers 2``) SIGTERMed
    while a resolution writes through the proxy, the CLI follows its logs and followers stream its events: it exits 0
    well within the grace period, its streams end (not cut), its log says nothing alarming; the resolution finishes
    with every step recorded; the followers are live on the other."""
    monkeypatch.delenv("SEMATIC_K8S_SERVER", raising=False)
    old = ServerProcess(tmp_path / "old", db_url=postgres, args=("--workers", str(workers)))
    new = ServerProcess(tmp_path / "new", db_url=postgres)
    for server in (old, new):
        server.home.mkdir()
        server.start()
    proxy = BalancingProxy(old.port, new.port)
    followers = [Follower(proxy.url) for _ in range(4)]
    try:
        wait_for(lambda: sum(f.connected for f in followers) == 4, 30, what="the followers")
        gate = tmp_path / "gate"
        f = fp.long_chain(STEPS, str(gate))
        outcome: dict = {}

        def resolve() -> None:
            try:
                outcome["value"] = f.resolve(sk.LocalResolver(home=tmp_path, server=proxy.url, max_parallelism=2))
            except BaseException as e:  # noqa: BLE001
                outcome["error"] = e
        thread = threading.Thread(target=resolve, daemon=True)
        thread.start()
        wait_for(lambda: Path(f"{gate}.started").exists() or outcome, 60, what="the gated step")
        logs = subprocess.Popen([sys.executable, "-m", "sematic_k8s.cli", "logs", "--follow", f.id],
                                env={**os.environ, "SEMATIC_K8S_SERVER": proxy.url}, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)  # `logs --follow` of the root, running till the end
        gate.touch()  # the chain's writes flow while the old replica stops
        wait_for(lambda: len([e for e in sum((x.events for x in followers), []) if '"resolved"' in e]) > 20, 60,
                 what="steps resolving")
        code, took = sigterm(old)
        proxy.remove(old.port)  # its endpoint goes (the proxy skips it meanwhile: its listener is closed)
        thread.join(120)
        assert outcome.get("value") == STEPS, outcome
        assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]  # not even a retry
        assert proxy.connections[old.port] > 0 and proxy.connections[new.port] > 0  # both served it
        store = SqlStore(postgres, create=False)
        res, runs = store.get_resolution(f.id), store.runs_of_root(f.id)
        store.close()
        assert res.state == "resolved" and len(runs) == STEPS + 2 and {r.state for r in runs} == {"resolved"}
        out, err = logs.communicate(timeout=60)
        assert logs.returncode == 0 and err.strip().splitlines()[-1] == f"run {f.id} (long_chain) resolved", (out, err)
        assert len(err.strip().splitlines()) <= 2 and "waiting for it" in err.splitlines()[0]  # said once, then the end
        assert code == 0, (code, old.log.read_text()[-3000:])
        assert took < GRACE / 2, took
        log = old.log.read_text()
        assert "Traceback" not in log and "ERROR" not in log, log[-3000:]
        wait_for(lambda: all(x.connected >= 2 or not any(e for e in x.ends) for x in followers), 30,
                 what="the followers connected again")
        assert not [e for x in followers for e in x.ends if e != "end"], [x.ends for x in followers]
    finally:
        for x in followers:
            x.stopped = True
        proxy.close()
        old.stop()
        new.stop()


def _followed_then_reconnected(url: str, outcomes: list[str], connected: threading.Semaphore) -> None:
    """Stream ``url``'s events (``connected`` released once connected) till the stream ends, then connect again at
    once, as a follower does: the outcomes of both ("end", else the error; "refused", else what the new connection
    got)."""
    with httpx.Client(timeout=10, limits=httpx.Limits(max_keepalive_connections=0)) as client:  # made before: its
        # connecting again costs a connection only (a new one: the ended stream's is not kept)
        try:
            with client.stream("GET", f"{url}/api/v1/events") as r:
                r.raise_for_status()
                for line in r.iter_lines():
                    if line == ": connected":
                        connected.release()
            outcomes.append("end")
        except httpx.HTTPError as e:
            outcomes.append(f"{type(e).__name__}: {e}")
            return
        try:
            outcomes.append(f"answered {client.get(f'{url}/api/v1/events').status_code}")
        except httpx.ConnectError:
            outcomes.append("refused")
        except httpx.HTTPError as e:
            outcomes.append(f"{type(e).__name__}: {e}")


def test_a_server_of_several_processes_takes_no_follower_again_once_it_ended_its_stream(tmp_path: Path,
                                                                                        postgres_url: str) -> None:
    """``--workers 2``, eight clients streaming its events (the system shares them between its processes), SIGTERM:
    as each stream ends its client connects to it again at once, and is refused (nothing listens any more). Was: a
    process ended its streams once it had closed its own listener, the other one still listening took the new
    connection, and answered it (to end it in turn) or, shutting down meanwhile, cut it unanswered: the rolling
    update's follower "Server disconnected without sending a response". It exits 0, its log plain."""
    server = ServerProcess(tmp_path / "server", db_url=postgres_url, args=("--workers", "2"))
    server.home.mkdir()
    server.start()
    wait_for(lambda: server.log.read_text().count("Application startup complete") >= 2, 60, what="both processes")
    outcomes, connected = [list[str]() for _ in range(8)], threading.Semaphore(0)
    threads = [threading.Thread(target=_followed_then_reconnected, args=(server.url, o, connected), daemon=True)
               for o in outcomes]
    try:
        for t in threads:
            t.start()
        for _ in outcomes:
            assert connected.acquire(timeout=30), outcomes
        code, _ = sigterm(server)
        for t in threads:
            t.join(30)
        assert outcomes == [["end", "refused"]] * 8, outcomes
        log = server.log.read_text()
        assert code == 0 and "Traceback" not in log and "ERROR" not in log, log[-3000:]
    finally:
        server.stop()


def test_a_rolling_update_under_a_driver_loses_nothing(tmp_path: Path, postgres: str) -> None:
    """A driver process (worker processes, numbered writes, a heartbeat every 0.2 s) recording through the proxy
    while the older replica is SIGTERMed as its gated step ends: it resolves, exit 0, every step recorded once."""
    old, new = ServerProcess(tmp_path / "old", db_url=postgres), ServerProcess(tmp_path / "new", db_url=postgres)
    for server in (old, new):
        server.home.mkdir()
        server.start()
    proxy = BalancingProxy(old.port, new.port)
    storage = LocalStorage(tmp_path / "storage")
    gate = tmp_path / "gate"
    f = fp.remote_gated(4, str(gate))
    root = serialization.serialize(f)
    storage.put(artifact_key(root.id), root.payload)
    spec = DriverSpec(root={"id": root.id, "format": root.format}, storage_url=storage_url(storage),
                      image="127.0.0.1:5000/none@sha256:" + "0" * 64, build_hash="h" * 64, executor="process",
                      resolution=ResolutionSettings(root_id=f.id, max_parallelism=8))
    env = {k: v for k, v in os.environ.items() if k not in ("SEMATIC_K8S_API_KEY", "SEMATIC_K8S_DB_URL")}
    env.update({DRIVER_ENV: spec.to_json(), "SEMATIC_K8S_SERVER": proxy.url, "SEMATIC_K8S_HEARTBEAT_INTERVAL": "0.2",
                "PYTHONPATH": os.pathsep.join([os.getcwd(), str(HERE), str(HERE.parent / "support")])})
    log = tmp_path / "driver.log"
    with open(log, "w") as out:
        driver = subprocess.Popen([sys.executable, "-m", "sematic_k8s.driver"], env=env, stdout=out,
                                  stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: Path(f"{gate}.started").exists() or driver.poll() is not None, 120, what="the gated worker")
        assert driver.poll() is None, log.read_text()
        gate.touch()
        code, took = sigterm(old)
        proxy.remove(old.port)
        assert driver.wait(120) == 0, log.read_text()
        assert code == 0 and took < GRACE / 2, (code, took)
        store = SqlStore(postgres, create=False)
        res, runs = store.get_resolution(f.id), store.runs_of_root(f.id)
        assert res.state == "resolved" and len(runs) == 5 and {r.state for r in runs} == {"resolved"}, runs
        assert store.get_artifact(store.get_run(f.id).output_id).summary == (4 + 1) + (1 + 1)
        store.close()
        assert proxy.connections[old.port] > 0 and proxy.connections[new.port] > 0  # both served it
        assert "Traceback" not in old.log.read_text() and "retrying" not in log.read_text(), log.read_text()
    finally:
        if driver.poll() is None:
            driver.kill()
        proxy.close()
        old.stop()
        new.stop()

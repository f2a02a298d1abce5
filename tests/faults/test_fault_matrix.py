"""The fault matrix (docs/FAULTS.md): each part a resolution depends on is killed (or stopped) at a chosen point
and, where it would come back in production, started again; after each, the database is intact, no artifact is
lost or corrupt, nothing is left running, and the resolution either finished or is continued to the same value.

Parts: the resolver (a LocalResolver process), the driver (``python -m sematic_k8s.driver``, as in a container
or pod, with worker processes), a worker, the server (a real ``sematic-k8s server`` process, SQLite), the S3
server (moto, private). Points, in ``two_gates``: ``start`` (the resolution is recorded, nothing has waited
yet), ``mid`` (one step resolved, the first gated step running), ``late`` (four steps resolved, the second
gated step running). Every part records through the server.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

import fault_pipelines as fp
import sematic_k8s as sk
from outages import S3Server, ServerProcess
from sematic_k8s import serialization
from sematic_k8s.future import new_id
from sematic_k8s.settings import DRIVER_ENV
from sematic_k8s.specs import DriverSpec, ResolutionSettings
from sematic_k8s.storage.base import artifact_key, put_artifact
from sematic_k8s.storage.local import LocalStorage
from sematic_k8s.storage.urls import storage_from_url
from sematic_k8s.store.sql import SqlStore
from serving import wait_for

HERE = Path(__file__).parent
OUTAGE = 3.0  # seconds the server or S3 stays down
TIMEOUT = "10"  # seconds without a heartbeat after which a resolution is dead (server and readers here)
N = 4
VALUE = (N + 1) + (1 + 1) + 10

# (part, point) -> what becomes of the resolution: "finished" by itself (after the part came back), or
# "continued" (it was marked failed; rerun_mode="continue" finished it). Worker deaths at "start" are absent:
# the only worker running then is an addition, done before it can be killed.
MATRIX = {
    ("resolver", "start"): "continued", ("resolver", "mid"): "continued", ("resolver", "late"): "continued",
    ("driver", "start"): "finished", ("driver", "mid"): "finished", ("driver", "late"): "finished",
    ("worker", "mid"): "continued", ("worker", "late"): "continued",
    ("server", "start"): "finished", ("server", "mid"): "finished", ("server", "late"): "finished",
    ("s3", "start"): "finished", ("s3", "mid"): "finished", ("s3", "late"): "finished",
}


@pytest.fixture(scope="module")
def services(tmp_path_factory) -> Iterator[tuple[ServerProcess, S3Server]]:
    """One server process and one S3 server for the matrix (cases kill and restart them)."""
    home = tmp_path_factory.mktemp("matrix-server")
    s3 = S3Server()
    s3.start()
    server = ServerProcess(home, env={"SEMATIC_K8S_HEARTBEAT_TIMEOUT": TIMEOUT})
    server.start()
    yield server, s3
    server.stop()
    s3.stop()


class Case:
    """One run of the matrix: the processes it started, its gates, and what it checks."""

    def __init__(self, tmp_path: Path, server: ServerProcess, s3: S3Server, part: str) -> None:
        self.tmp, self.server, self.s3, self.part = tmp_path, server, s3, part
        self.gates = [tmp_path / "first", tmp_path / "second"]
        self.procs: list[subprocess.Popen] = []
        self.root_id = new_id()
        self.db = SqlStore(f"sqlite:///{server.home / 'db.sqlite3'}", create=False, stale_after=float(TIMEOUT))
        bucket = f"m{self.root_id[:12]}"
        s3.client().create_bucket(Bucket=bucket)
        self.storage_url = f"s3://{bucket}/artifacts?endpoint={s3.endpoint}&region=us-east-1"
        self.env = {**os.environ, "AWS_ENDPOINT_URL_S3": s3.endpoint, "AWS_ACCESS_KEY_ID": "test",
                    "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1",
                    "SEMATIC_K8S_SERVER": server.url, "SEMATIC_K8S_HOME": str(tmp_path),
                    "SEMATIC_K8S_HEARTBEAT_INTERVAL": "0.5",
                    "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
        self.env.pop("SEMATIC_K8S_API_KEY", None)

    @property
    def storage(self) -> Any:
        if self.part == "resolver":
            return LocalStorage(self.tmp / "storage")
        return storage_from_url(self.storage_url)

    # -- starting things --------------------------------------------------------------------------

    def _spawn(self, args: list[str], env: dict[str, str]) -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, *args], env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=open(self.tmp / f"proc-{len(self.procs)}.log", "w"))
        self.procs.append(proc)
        return proc

    def start(self) -> subprocess.Popen:
        """The resolving process: a LocalResolver, or a driver with worker processes."""
        future = fp.two_gates(N, str(self.gates[0]), str(self.gates[1]))
        future.id = self.root_id
        if self.part == "resolver":
            code = (f"import fault_pipelines as fp, sematic_k8s as sk; f = fp.two_gates({N}, {str(self.gates[0])!r}, "
                    f"{str(self.gates[1])!r}); f.resolve(sk.LocalResolver(root_id={self.root_id!r}))")
            return self._spawn(["-c", code], self.env)
        s = serialization.serialize(future)
        put_artifact(storage_from_url(self.storage_url), s)
        self.spec = DriverSpec(root={"id": s.id, "format": s.format}, storage_url=self.storage_url, image="none",
                               executor="process",
                               resolution=ResolutionSettings(root_id=self.root_id, max_parallelism=8))
        return self.driver(self.spec)

    def driver(self, spec: DriverSpec) -> subprocess.Popen:
        return self._spawn(["-m", "sematic_k8s.driver"], {**self.env, DRIVER_ENV: spec.to_json()})

    def reach(self, point: str, proc: subprocess.Popen) -> None:
        def alive(done: Any) -> Any:
            assert proc.poll() is None, f"the resolving process ended early ({proc.returncode})"
            return done
        if point == "start":
            wait_for(lambda: alive(self.db.get_resolution(self.root_id)), 60, what="the resolution to be recorded")
            return
        wait_for(lambda: alive(Path(f"{self.gates[0]}.started").exists()), 60, what="the first gated step")
        if point == "late":
            self.gates[0].touch()
            wait_for(lambda: alive(Path(f"{self.gates[1]}.started").exists()), 60, what="the second gated step")

    def open_gates(self) -> None:
        for gate in self.gates:
            gate.touch()

    def finish(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(30)

    # -- what must hold afterwards ----------------------------------------------------------------

    def check(self, root_ids: list[str]) -> None:
        with self.db.engine.connect() as conn:
            assert conn.scalar(sa.text("PRAGMA integrity_check")) == "ok"
        storage = self.storage
        for root_id in root_ids:
            res = self.db.get_resolution(root_id)
            runs = self.db.runs_of_root(root_id)
            assert res.state in ("resolved", "failed", "canceled"), res
            assert all(r.state in ("resolved", "failed", "canceled") for r in runs), "a run left running"
            ids = {x for r in runs for x in [r.output_id, *r.inputs.values()] if x}
            recorded = {a.id: a for a in self.db.artifacts(ids)}
            assert set(recorded) == ids, "an artifact is not recorded"
            for artifact_id, art in recorded.items():  # small ones of a LocalResolver: inline in their records
                data = art.inline if art.inline is not None else storage.get(artifact_key(artifact_id))
                serialization.verify(artifact_id, art.format, data)

    def value(self, root_id: str) -> Any:
        art = self.db.get_artifact(self.db.get_run(root_id).output_id)
        data = art.inline if art.inline is not None else self.storage.get(artifact_key(art.id))
        return serialization.Value(art.id, art.format, art.type_name,
                                   load=lambda v: serialization.deserialize(v.format, data)).value


@pytest.mark.parametrize(("part", "point"), list(MATRIX))
def test_fault_matrix(services, tmp_path, monkeypatch, part: str, point: str) -> None:
    server, s3 = services
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    case = Case(tmp_path, server, s3, part)
    try:
        proc = case.start()
        case.reach(point, proc)
        continued: str | None = None
        if part in ("server", "s3"):
            service = server if part == "server" else s3
            service.kill() if part == "server" else s3.stop()  # type: ignore[union-attr]
            case.open_gates()  # steps end while it is down
            time.sleep(OUTAGE)
            service.start()
            assert proc.wait(180) == 0
        elif part == "driver":
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
            case.open_gates()
            assert case.driver(case.spec).wait(180) == 0  # started again (a Job's next pod): it resumes
        elif part == "worker":
            gate = case.gates[0 if point == "mid" else 1]
            os.kill(int(Path(f"{gate}.started").read_text()), signal.SIGKILL)
            assert proc.wait(180) == 1  # the run failed: the worker died without a result
            case.open_gates()
            continued = new_id()
            spec = DriverSpec(root=None, storage_url=case.storage_url, image="none", executor="process",
                              resolution=ResolutionSettings(rerun_from=case.root_id, rerun_mode="continue",
                                                            root_id=continued, max_parallelism=8),
                              root_func=fp.two_gates.path, root_source_file=fp.two_gates.source_file)
            assert case.driver(spec).wait(180) == 0
        elif part == "resolver":
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
            res = wait_for(lambda: (r := case.db.get_resolution(case.root_id)).state != "running" and r,
                           60, what="the dead resolution to be marked")
            assert res.state == "failed" and res.error.startswith("the resolver stopped responding at ")
            case.open_gates()
            again = fp.two_gates(N, str(case.gates[0]), str(case.gates[1]))
            assert again.resolve(sk.LocalResolver(home=tmp_path, server=server.url, rerun_from=case.root_id,
                                                  rerun_mode="continue")) == VALUE
            continued = again.id
        outcome = "continued" if continued else "finished"
        assert outcome == MATRIX[(part, point)]
        case.check([case.root_id] + ([continued] if continued else []))
        final = continued or case.root_id
        assert case.db.get_resolution(final).state == "resolved" and case.value(final) == VALUE
        if continued:
            assert case.db.get_resolution(case.root_id).state == "failed"
    finally:
        case.open_gates()
        case.finish()

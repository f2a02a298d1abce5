"""The driver entrypoint: a pickled root Future in storage, resolved with worker processes."""

from __future__ import annotations

import os
import subprocess
import sys

import sematic_k8s as sk
from sematic_k8s import serialization
from sematic_k8s.driver import DRIVER_ENV, DriverSpec, drive
from sematic_k8s.func import map_source
from sematic_k8s.resolvers.local import sql_store
from sematic_k8s.storage.base import artifact_key
from sematic_k8s.storage.local import LocalStorage
from sematic_k8s.storage.urls import storage_url


@sk.func(inline=False)
def square(x: int) -> int:
    return x * x


@sk.func
def squares(n: int) -> int:
    return sum_all([square(i) for i in range(n)])


@sk.func
def sum_all(xs: list[int]) -> int:
    return sum(xs)


def spec_for(future: sk.Future, storage: LocalStorage) -> DriverSpec:
    s = serialization.serialize(future)
    storage.put(artifact_key(s.id), s.payload)
    return DriverSpec(root={"id": s.id, "format": s.format}, storage_url=storage_url(storage),
                      image="127.0.0.1:5000/none@sha256:" + "0" * 64, build_hash="h" * 64, executor="process")


def test_drive_resolves_a_pickled_root_with_worker_processes(tmp_path):
    storage = LocalStorage(tmp_path / "storage")
    store = sql_store(f"sqlite:///{tmp_path / 'db.sqlite3'}")
    f = squares(4)
    assert drive(spec_for(f, storage), store) == 0 + 1 + 4 + 9
    res = store.get_resolution(f.id)
    assert res.state == "resolved" and res.image.endswith("0" * 64) and res.build_hash == "h" * 64
    assert res.settings["kind"] == "cloud"


def test_driver_process_exit_codes(tmp_path):
    storage = LocalStorage(tmp_path / "storage")
    env = {**os.environ, "SEMATIC_K8S_DB_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
           "PYTHONPATH": os.pathsep.join([os.getcwd(), os.path.dirname(__file__)])}
    env.pop("SEMATIC_K8S_SERVER", None)
    f = squares(3)
    done = subprocess.run([sys.executable, "-m", "sematic_k8s.driver"], capture_output=True, text=True,
                          env={**env, DRIVER_ENV: spec_for(f, storage).to_json()}, timeout=120)
    assert done.returncode == 0, done.stderr
    assert sql_store(env["SEMATIC_K8S_DB_URL"]).get_resolution(f.id).state == "resolved"
    bad = sum_all("nope")  # type: ignore[arg-type]
    done = subprocess.run([sys.executable, "-m", "sematic_k8s.driver"], capture_output=True, text=True,
                          env={**env, DRIVER_ENV: spec_for(bad, storage).to_json()}, timeout=120)
    assert done.returncode == 1 and "input 'xs' should be list[int]" in done.stderr


def test_source_map(monkeypatch):
    monkeypatch.setenv("SEMATIC_K8S_SOURCE_MAP", "/home/me/proj=/app")
    assert map_source("/home/me/proj/pkg/mod.py") == "/app/pkg/mod.py"
    assert map_source("/home/me/project2/mod.py") == "/home/me/project2/mod.py"
    assert map_source(None) is None


def test_drive_a_rerun_from_the_recorded_root_func(tmp_path):
    storage = LocalStorage(tmp_path / "storage")
    store = sql_store(f"sqlite:///{tmp_path / 'db.sqlite3'}")
    f = squares(3)
    drive(spec_for(f, storage), store)
    target = next(r for r in store.runs_of_root(f.id) if r.func_name == "sum_all")
    spec = DriverSpec(root=None, storage_url=storage_url(storage), image="img", executor="process",
                      rerun_from=target.id, root_id="b" * 32, root_func=squares.path,
                      root_source_file=squares.source_file)
    assert drive(spec, store) == 5
    assert store.get_resolution("b" * 32).rerun_of == f.id

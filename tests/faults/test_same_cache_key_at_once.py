"""Resolutions computing one cache key at once (DESIGN.md "Caching"): three processes started together resolve the
same ``cache=True`` call in one namespace, all missing the cache (the func waits until the three run it: a barrier
in pipeline code) and each computing another value. All resolve, each run recording its own output; the cache then
answers one of them, the same to every later resolution. On one SQLite home, and through two server processes
(replicas) on one PostgreSQL database. (Audited: this held before; kept so that it keeps holding.)"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import fault_pipelines as fp
import sematic_k8s as sk
from outages import ServerProcess, running
from sematic_k8s.store import open_store
from waiting import wait_for

HERE = Path(__file__).parent
N = 3
RESOLVE = ("import os, pathlib, time, fault_pipelines as fp\n"
           "from sematic_k8s.resolvers.local import LocalResolver\n"
           "pathlib.Path(os.environ['RACE_GO'] + f'.ready.{os.getpid()}').touch()\n"
           "while not os.path.exists(os.environ['RACE_GO']): time.sleep(0.001)\n"
           "print(repr(fp.draw(7).resolve(LocalResolver(cache_namespace='nightly'))))")


def _at_once(home: Path, servers: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    draws = home / "draws"
    draws.mkdir()
    env = {**os.environ, "SEMATIC_K8S_HOME": str(home), "RACE_DRAWS": str(draws), "RACE_DRAWERS": str(N),
           "RACE_GO": str(home / "go"), "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    env.pop("SEMATIC_K8S_DB_URL", None)
    procs = [subprocess.Popen([sys.executable, "-c", RESOLVE], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env={**env, **({"SEMATIC_K8S_SERVER": servers[k % 2]} if servers else {})})
             for k in range(N)]
    try:
        wait_for(lambda: len(list(home.glob("go.ready.*"))) == N, 60, what="the resolvers ready")
        (home / "go").touch()
        said = [p.communicate(timeout=120) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert [p.returncode for p in procs] == [0] * N, said
    values = [float(out) for out, _ in said]
    assert len(set(values)) == N, values  # each computed its own: none hit another's
    store = open_store(home, servers[0] if servers else None)
    computed = {}
    for res in store.list_resolutions(limit=10):
        run = next(r for r in store.runs_of_root(res.id) if r.func_name == "drawn")
        assert res.state == "resolved" and run.state == "resolved" and run.cached_from is None
        computed[run.id] = store.get_artifact(run.output_id).summary  # its own output: one of the values
    assert sorted(computed.values()) == sorted(values)
    monkeypatch.setenv("RACE_DRAWS", str(draws))  # were it to run, it would note it and not wait
    monkeypatch.setenv("RACE_DRAWERS", "0")
    later = []
    for k in (0, 1):  # later resolutions, through either replica: hits, the same one
        later.append(fp.draw(7).resolve(sk.LocalResolver(home=home, server=servers[k] if servers else None,
                                                         cache_namespace="nightly")))
        hit = next(r for r in store.runs_of_root(store.list_resolutions(limit=1)[0].id) if r.func_name == "drawn")
        assert hit.cached_from in computed and later[-1] == computed[hit.cached_from]
    assert later[0] == later[1]
    assert len(list(draws.iterdir())) == N  # the hits ran nothing


def test_one_cache_key_computed_at_once_on_sqlite(tmp_path, monkeypatch):
    monkeypatch.delenv("SEMATIC_K8S_SERVER", raising=False)
    monkeypatch.delenv("SEMATIC_K8S_DB_URL", raising=False)
    _at_once(tmp_path, [], monkeypatch)


def test_one_cache_key_computed_at_once_through_two_servers_on_postgres(tmp_path, postgres_url, monkeypatch):
    servers = [ServerProcess(tmp_path, db_url=postgres_url) for _ in range(2)]
    with running(*servers):
        _at_once(tmp_path, [s.url for s in servers], monkeypatch)

"""The driver entrypoint: a pickled root Future in storage, resolved with worker processes."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time
from typing import Any

import pytest

import sematic_k8s as sk
from sematic_k8s import serialization
from sematic_k8s.func import map_source
from sematic_k8s.packaged import PackagedCode, manifest_json
from sematic_k8s.packaged import only as packaged_only
from sematic_k8s.resolvers.driven import drive
from sematic_k8s.settings import (
    API_KEY_ENV,
    API_KEY_FILE_ENV,
    DRIVER_ENV,
    SECRET_FILE_ENVS,
    SERVER_AUTH_ENV,
    SERVER_AUTH_FILE_ENV,
    STORAGE_KEY_ENVS,
)
from sematic_k8s.specs import DriverSpec, ResolutionSettings, outcome_key
from sematic_k8s.storage.base import artifact_key
from sematic_k8s.storage.local import LocalStorage
from sematic_k8s.storage.urls import storage_url
from sematic_k8s.store import sql_store
from sematic_k8s.store.tables import RunRow


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
    bad = sum_all([1, "nope"])  # type: ignore[list-item]  # not a plain value: checked when its run executes
    done = subprocess.run([sys.executable, "-m", "sematic_k8s.driver"], capture_output=True, text=True,
                          env={**env, DRIVER_ENV: spec_for(bad, storage).to_json()}, timeout=120)
    assert done.returncode == 1 and "input 'xs' should be list[int]" in done.stderr


SECRETS_SEEN = sorted({*SECRET_FILE_ENVS, *SECRET_FILE_ENVS.values()})


@sk.func(inline=False)
def secrets_seen() -> list[str]:
    """The driver's secret variables (settings.SECRET_FILE_ENVS: values and files) this worker process was given."""
    return [name for name in SECRETS_SEEN if name in os.environ]


def test_a_worker_process_gets_none_of_the_servers_secrets_from_its_driver(tmp_path):
    """A driver process given every secret variable (the server's API key and URL user info, S3 keys, each also
    as a file): its worker processes inherit none of the server's (was: all but the API key), and keep the S3 keys
    and their files' names (a worker process stores through the storage itself; a user's func may use them)."""
    storage = LocalStorage(tmp_path / "storage")
    env = {k: v for k, v in os.environ.items() if k not in SECRETS_SEEN and not k.startswith("SEMATIC_K8S_SERVER")}
    env.update({"SEMATIC_K8S_DB_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
                "PYTHONPATH": os.pathsep.join([os.getcwd(), os.path.dirname(__file__)])})
    for name, file_env in SECRET_FILE_ENVS.items():
        env[name] = f"{name.lower()}-value"
        env[file_env] = str(tmp_path / f"{name.lower()}-file")
        (tmp_path / f"{name.lower()}-file").write_text(env[name])
    f = secrets_seen()
    done = subprocess.run([sys.executable, "-m", "sematic_k8s.driver"], capture_output=True, text=True,
                          env={**env, DRIVER_ENV: spec_for(f, storage).to_json()}, timeout=120)
    assert done.returncode == 0, done.stderr
    store = sql_store(env["SEMATIC_K8S_DB_URL"])
    seen = store.get_artifact(store.get_run(f.id).output_id).summary
    storage_keys = sorted({*STORAGE_KEY_ENVS, *(SECRET_FILE_ENVS[k] for k in STORAGE_KEY_ENVS)})
    assert seen == storage_keys, seen
    assert not {API_KEY_ENV, API_KEY_FILE_ENV, SERVER_AUTH_ENV, SERVER_AUTH_FILE_ENV} & set(seen)


def test_a_driver_does_not_ask_for_a_cancel_once_it_recorded_the_end(tmp_path, monkeypatch):
    """A driver recording its resolution's end with its token (through a real server) asks nothing more: the token
    stops working when the resolution ends. Before, when a second had passed since its last look at a cancel (one
    every CANCEL_POLL; a CI run's busy cluster model), the write of the end was followed by that look, refused (401):
    the driver exited 75 after its resolution resolved, was started again and exited 1, its Job failed. Every flush
    looks here (CANCEL_POLL 0), as that one did then."""
    from sematic_k8s.resolvers import loop
    from sematic_k8s.store.http import HttpStore
    from serving import serve

    monkeypatch.setattr(loop, "CANCEL_POLL", 0.0)
    storage = LocalStorage(tmp_path / "storage")
    f = squares(2)
    spec = dataclasses.replace(spec_for(f, storage), resolution=ResolutionSettings(root_id=f.id, max_parallelism=8))
    with serve(tmp_path, storage=storage) as served:
        token = HttpStore(served.url, served.key).mint_token(f.id)
        store = HttpStore(served.url, token)
        try:
            assert drive(spec, store) == 0 + 1
        finally:
            store.close()
        assert served.store.get_resolution(f.id).state == "resolved"


@pytest.mark.parametrize(("pipeline", "state", "code"), [("squares", "resolved", 0), ("bad_sum", "failed", 1)])
def test_a_driver_started_again_after_its_resolution_ended_says_so_and_exits_as_the_end_says(
        tmp_path, pipeline, state, code):
    """A driver process (a real server process, its resolution's token) killed (kill -9) after the server recorded
    its resolution's end, before it heard the answer (held by a proxy until then) and so before it exited; then
    started again, as the Job's next pod is. The server refuses the token (it ended with the resolution), saying in
    the refusal (X-Sematic-K8s-Ended) which resolution ended and how: the driver says so in one line and exits as
    the driver that recorded the end would have (0 resolved: the Job Completes; 1 failed: the podFailurePolicy fails
    it). Was: 1 whatever the end, "the server refuses this driver's token ... set $SEMATIC_K8S_API_KEY", so the Job
    of a pipeline that resolved Failed."""
    from outages import HoldingProxy
    from sematic_k8s.store.http import HttpStore
    from sematic_k8s_server import auth
    from serving import server_process
    from waiting import wait_for

    store = sql_store(f"sqlite:///{tmp_path / 'db.sqlite3'}")
    key = auth.create_key(store.engine, "tests")
    storage = LocalStorage(tmp_path / "storage")
    f = squares(2) if pipeline == "squares" else sum_all([1, "nope"])  # type: ignore[list-item]
    spec = dataclasses.replace(spec_for(f, storage), resolution=ResolutionSettings(root_id=f.id, max_parallelism=8))
    end = f'"resolution_updates":{{"{f.id}":{{"state":"{state}"'.encode()
    with server_process(tmp_path) as (_, url):
        proxy = HoldingProxy(int(url.rsplit(":", 1)[1]),
                             hold=lambda req: req.startswith(b"POST /api/v1/store/write") and end in req)
        env = {**os.environ, DRIVER_ENV: spec.to_json(), "SEMATIC_K8S_SERVER": proxy.url,
               "SEMATIC_K8S_API_KEY": HttpStore(url, key).mint_token(f.id),
               "PYTHONPATH": os.pathsep.join([os.getcwd(), os.path.dirname(__file__)])}
        env.pop("SEMATIC_K8S_DB_URL", None)
        try:
            first = subprocess.Popen([sys.executable, "-m", "sematic_k8s.driver"], env=env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                wait_for(lambda: proxy.held is not None or first.poll() is not None, 120, what="the end's write")
            finally:
                first.kill()
                first.wait(30)
            assert proxy.held is not None and first.returncode == -9
            assert proxy.release()[0] == 200  # the end recorded; its driver never heard it
            assert store.get_resolution(f.id).state == state
            again = subprocess.run([sys.executable, "-m", "sematic_k8s.driver"], capture_output=True, text=True,
                                   env=env, timeout=120)
        finally:
            proxy.close()
    said = [line for line in again.stderr.splitlines() if " driver INFO " not in line]
    assert said == [f"resolution {f.id} already ended: {state}; nothing to do"], again.stderr
    assert again.returncode == code
    assert store.get_resolution(f.id).state == state


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
                      resolution=ResolutionSettings(rerun_from=target.id, root_id="b" * 32, max_parallelism=8),
                      root_func=squares.path,
                      root_source_file=squares.source_file)
    assert drive(spec, store) == 5
    assert store.get_resolution("b" * 32).rerun_of == f.id


@sk.func(inline=False)
def counted(marker: str, x: int) -> int:
    with open(marker, "a") as f:
        f.write("ran\n")
    return x


@sk.func(inline=False)
def gated(gate: str, x: int) -> int:
    with open(f"{gate}.pid", "w") as f:  # the worker process running it
        f.write(str(os.getpid()))
    while not os.path.exists(gate):
        time.sleep(0.05)
    return x * 10


@sk.func
def gated_pipeline(marker: str, gate: str) -> int:
    return sum_all([counted(marker, 1), gated(gate, counted(marker, 2))])


@dataclasses.dataclass
class _GatedDriver:
    """A driver process resolving ``gated_pipeline`` on SQLite (worker processes): the pipeline's future, the
    driver's environment (to start it again), the store, storage, the process, the marker and gate files."""

    f: Any
    env: dict[str, str]
    store: Any
    storage: LocalStorage
    first: subprocess.Popen[bytes]
    marker: str
    gate: str


def _driver_at_the_gate(tmp_path) -> _GatedDriver:
    """:class:`_GatedDriver` once its gated step runs (the process killed if that never happens)."""
    storage = LocalStorage(tmp_path / "storage")
    db = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    env = {**os.environ, "SEMATIC_K8S_DB_URL": db,
           "PYTHONPATH": os.pathsep.join([os.getcwd(), os.path.dirname(__file__)])}
    env.pop("SEMATIC_K8S_SERVER", None)
    # as a driver's resolution token (its Secret): the secret its workers' outcome keys derive from, which a restarted
    # driver has too, so it adopts an outcome stored before it was killed (a driver with none keeps a random secret in
    # its memory only: a restarted one runs such an attempt again, executors/outcome_signing.py)
    env[API_KEY_ENV] = "the resolution's token"
    marker, gate = str(tmp_path / "marker"), str(tmp_path / "gate")
    f = gated_pipeline(marker, gate)
    spec = dataclasses.replace(spec_for(f, storage), resolution=ResolutionSettings(root_id=f.id, max_parallelism=8))
    env[DRIVER_ENV] = spec.to_json()
    store = sql_store(db)
    first = subprocess.Popen([sys.executable, "-m", "sematic_k8s.driver"], env=env)
    try:
        deadline = time.monotonic() + 60
        while not any(r.func_name == "gated" and r.state == "running" for r in store.runs_of_root(f.id)):
            assert time.monotonic() < deadline and first.poll() is None, "the gated run never started"
            time.sleep(0.05)
    except BaseException:
        first.kill()
        first.wait()
        raise
    return _GatedDriver(f, env, store, storage, first, marker, gate)


def test_a_restarted_driver_resumes_its_resolution_with_the_same_ids(tmp_path):
    d = _driver_at_the_gate(tmp_path)
    f, env, store, storage, first, marker, gate = d.f, d.env, d.store, d.storage, d.first, d.marker, d.gate
    try:
        deadline = time.monotonic() + 60
        counted_ids = [r.id for r in store.runs_of_root(f.id) if r.func_name == "counted"]
        while not all(storage.exists(outcome_key(run_id, 1)) for run_id in counted_ids):  # both have ended
            assert time.monotonic() < deadline, "the counted runs never ended"
            time.sleep(0.05)
    finally:
        first.kill()  # the driver's pod dies mid-resolution
        first.wait()
    before = {r.id: r.state for r in store.runs_of_root(f.id)}
    open(gate, "w").close()
    done = subprocess.run([sys.executable, "-m", "sematic_k8s.driver"], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert "resuming after a restart" in done.stderr
    assert store.get_resolution(f.id).state == "resolved"
    after = {r.id: r.state for r in store.runs_of_root(f.id)}
    assert set(after) == set(before) and set(after.values()) == {"resolved"}  # same runs, no duplicates
    assert open(marker).read().count("ran") == 2  # the counted runs that had resolved were not run again
    assert store.get_artifact(store.get_run(f.id).output_id).summary == 1 + 20



def test_a_worker_process_ends_when_its_driver_is_killed(tmp_path):
    """The driver is killed (kill -9) while its worker process runs a step waiting at a gate: the worker ends itself
    at once, never finishing the step (before: it ran on, adopted by another process, and finished the step when the
    gate opened, beside the attempt a restarted driver runs again: the step's side effects twice)."""
    from waiting import alive

    d = _driver_at_the_gate(tmp_path)
    pid_file = f"{d.gate}.pid"
    deadline = time.monotonic() + 60
    while not os.path.exists(pid_file) or not open(pid_file).read():
        assert time.monotonic() < deadline, "the gated step never started"
        time.sleep(0.05)
    worker = int(open(pid_file).read())
    assert alive(worker)
    d.first.kill()
    d.first.wait()
    deadline = time.monotonic() + 60
    while alive(worker):
        if time.monotonic() > deadline:
            os.kill(worker, 9)
            pytest.fail(f"the worker process {worker} of a killed driver still runs")
        time.sleep(0.05)
    [step] = [r for r in d.store.runs_of_root(d.f.id) if r.func_name == "gated"]
    assert not d.storage.exists(outcome_key(step.id, 1))  # it never finished


def test_a_cancel_asked_while_the_driver_was_down_is_kept_by_the_restarted_driver(tmp_path):
    """The driver is killed (its pod died) while a step waits at a gate, and someone cancels the resolution before
    the driver is started again (within the heartbeat timeout: the resolution is still live, now canceling). The
    restarted driver cancels it: the resolution and the waiting step end canceled without the gate ever opening
    (before: it resumed the resolution as running, the cancel forgotten, and waited for the gate to finish it)."""
    d = _driver_at_the_gate(tmp_path)
    f, env, store, first, gate = d.f, d.env, d.store, d.first, d.gate
    first.kill()  # the driver's pod dies mid-resolution
    first.wait()
    assert store.request_cancel(f.id) == "canceling"
    try:
        done = subprocess.run([sys.executable, "-m", "sematic_k8s.driver"], env=env, capture_output=True, text=True,
                              timeout=120)  # the gate stays closed: a driver that resumed as running would wait here
    finally:
        open(gate, "w").close()  # the killed driver's worker (processes are not re-attached to) may end now
    assert done.returncode == 1 and "resolution " + f.id + " was canceled" in done.stderr, done.stderr
    assert store.get_resolution(f.id).state == "canceled"
    assert {r.state for r in store.runs_of_root(f.id) if r.func_name in ("gated", "gated_pipeline")} == {"canceled"}

@sk.func
def sleeps_inline(marks: str) -> int:
    open(os.path.join(marks, "before"), "w").close()
    time.sleep(600)
    open(os.path.join(marks, "after"), "w").close()
    return 1


@sk.func
def sleeping_pipeline(marks: str) -> int:
    return sleeps_inline(marks)


def test_a_cancel_interrupts_an_inline_func_the_driver_runs(tmp_path):
    """A driver process runs an inline func on its own thread (time.sleep(600)); the resolution is canceled meanwhile
    (the server's cancel action, here on its store): the func is interrupted, the driver exits 1 saying so, and the
    resolution and its runs are recorded canceled; the func never went on (was: the driver slept its 600 s first)."""
    storage = LocalStorage(tmp_path / "storage")
    db = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    env = {**os.environ, "SEMATIC_K8S_DB_URL": db,
           "PYTHONPATH": os.pathsep.join([os.getcwd(), os.path.dirname(__file__)])}
    env.pop("SEMATIC_K8S_SERVER", None)
    marks = tmp_path / "marks"
    marks.mkdir()
    f = sleeping_pipeline(str(marks))
    env[DRIVER_ENV] = dataclasses.replace(spec_for(f, storage), resolution=ResolutionSettings(root_id=f.id)).to_json()
    store = sql_store(db)
    driver = subprocess.Popen([sys.executable, "-m", "sematic_k8s.driver"], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not (marks / "before").exists():
            assert time.monotonic() < deadline and driver.poll() is None, "the inline func never started"
            time.sleep(0.05)
        assert store.request_cancel(f.id) == "canceling"
        _, err = driver.communicate(timeout=120)  # the func would sleep 600 s
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.communicate()
    [run] = [r for r in store.runs_of_root(f.id) if r.func_name == "sleeps_inline"]
    said = f"resolution {f.id} was canceled: sleeps_inline (run {run.id}) was interrupted"
    assert driver.returncode == 1 and said in err, err
    assert not (marks / "after").exists()
    assert store.get_resolution(f.id).state == "canceled"
    assert {r.state for r in store.runs_of_root(f.id)} == {"canceled"}


PACKAGED_PIPELINE = '''
    import sematic_k8s as sk

    @sk.func
    def double(x: int) -> int:
        return 2 * x

    @sk.func
    def pipeline(n: int) -> int:
        return double(n)
'''


def test_a_packaged_only_rerun_never_imports_a_func_its_run_records_name_elsewhere(tmp_path, monkeypatch):
    """The funcs of a rerun's re-executed runs, named by their records, come only from the packaged code too:
    a run record naming a module on sys.path but not packaged fails the rerun, recorded, without importing it."""
    import sqlalchemy as sa

    from projects import user_project

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    marker = tmp_path / "imported"
    (elsewhere / "sk_planner_marker.py").write_text(f"open({str(marker)!r}, 'w').write('imported')\n")
    monkeypatch.syspath_prepend(str(elsewhere))
    storage = LocalStorage(tmp_path / "storage")
    store = sql_store(f"sqlite:///{tmp_path / 'db.sqlite3'}")
    with user_project(tmp_path / "app", "packagedpipe", PACKAGED_PIPELINE) as module:
        mod = __import__(module)
        f = mod.pipeline(3)
        assert drive(spec_for(f, storage), store) == 6
        [child] = [r for r in store.runs_of_root(f.id) if r.func_name == "double"]
        with store.engine.begin() as conn:  # as a client holding the resolution could have recorded it
            conn.execute(sa.update(RunRow).where(RunRow.id == child.id).values(func_path="sk_planner_marker:double"))
        code = PackagedCode.from_json(manifest_json(str(tmp_path / "app"), [f"{module}.py"]))
        spec = DriverSpec(root=None, storage_url=storage_url(storage), image="img", executor="process",
                          resolution=ResolutionSettings(rerun_from=child.id, root_id="c" * 32, max_parallelism=2),
                          root_func=mod.pipeline.path, root_source_file=mod.pipeline.source_file)
        with packaged_only(code), pytest.raises(sk.ResolutionFailed) as failed:
            drive(spec, store)
    assert not marker.exists()
    res = store.get_resolution("c" * 32)
    assert res.state == "failed" and res.rerun_of == f.id and res.error == str(failed.value)
    assert res.error == (f"func sk_planner_marker:double is not in this image's packaged code ({tmp_path / 'app'}): "
                         "module sk_planner_marker is not among its files; a rerun runs only the pipeline's own funcs")

"""A ``--local`` server's rerun driver (API keys off) killed (kill -9) after its worker signed and stored its outcome,
before the driver adopted it, and started again as a Job's next pod is (the same environment and token file): the
restarted driver verifies that outcome and adopts it, so the step runs once (docs/FAULTS.md, "a driver process ...
killed ... started again").

The server is real (uvicorn over HTTP, local mode, as ``sematic-k8s server --local`` runs it); its rerun launcher
is the test's, which does what the Docker and Kubernetes launchers do with a driver's secrets (its token a 0600 file
named by ``$SEMATIC_K8S_API_KEY_FILE``, never a plain variable) and starts ``python -m sematic_k8s.driver`` as a
process, with the process executor and without the packaged-code restriction (the driver runs outside an image here;
the restriction is not under test). Workers are real processes; the func counts its runs with files."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Mapping
from pathlib import Path

import httpx
import pytest

from sematic_k8s import serialization
from sematic_k8s.settings import API_KEY_ENV, API_KEY_FILE_ENV, DB_URL_ENV, DRIVER_ENV, SERVER_ENV
from sematic_k8s.specs import DriverSpec, ResolutionSettings
from sematic_k8s.storage.base import artifact_key
from sematic_k8s.storage.local import LocalStorage
from sematic_k8s.storage.urls import storage_url
from sematic_k8s_server.config import RerunConfig, ServerConfig
from serving import serve
from waiting import wait_for

REPO = "127.0.0.1:5000/pipelines"
IMAGE = f"{REPO}@sha256:" + "ab" * 32
# the step notes each run (a file named after its worker's pid); the first run that finds ``hold`` removes it and
# stays, once its outcome is stored, until its driver dies (its worker dies with it)
PIPELINE = textwrap.dedent('''
    import atexit
    import os
    import time
    from pathlib import Path

    import sematic_k8s as sk


    @sk.func(inline=False)
    def counted(x: int, where: str) -> int:
        (Path(where) / f"ran.{os.getpid()}").touch()
        hold = Path(where) / "hold"
        if hold.exists():
            hold.unlink()
            atexit.register(time.sleep, 600)  # after its outcome is stored: the driver adopts nothing meanwhile
        return x + 1


    @sk.func
    def pipe(x: int, where: str) -> int:
        return counted(x, where)
''')


def test_a_local_servers_restarted_rerun_driver_adopts_what_its_worker_signed_before_it_died(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A resolution is resolved through the server (its step run once), then re-run by the server; its rerun's
    driver is killed once its worker stored its signed outcome, and started again: it adopts that outcome (the
    step ran twice in all, not three times) and resolves the rerun to its value. Fails without the fix: the local
    server gave its rerun drivers no credential, so each derived its workers' keys from a random secret of its own
    memory; the restarted one refused the outcome (OutcomeUnverified) and ran the step again."""
    code = tmp_path / "code"
    code.mkdir()
    (code / "localkeys_pipe.py").write_text(PIPELINE)
    monkeypatch.syspath_prepend(str(code))
    import localkeys_pipe

    where = tmp_path / "notes"
    where.mkdir()
    storage = LocalStorage(tmp_path / "storage")
    base = {k: v for k, v in os.environ.items() if k not in (API_KEY_ENV, API_KEY_FILE_ENV, DB_URL_ENV, SERVER_ENV)}
    base["PYTHONPATH"] = os.pathsep.join([str(code), os.getcwd(), *sys.path])
    base["SEMATIC_K8S_HEARTBEAT_INTERVAL"] = "0.5"
    procs: list[subprocess.Popen] = []
    launched: list[dict[str, str]] = []  # each rerun driver's environment, as its launcher gave it

    def start(env: Mapping[str, str], name: str) -> subprocess.Popen:
        with open(tmp_path / f"{name}.log", "w") as out:
            procs.append(subprocess.Popen([sys.executable, "-m", "sematic_k8s.driver"], env=dict(env), stdout=out,
                                          stderr=subprocess.STDOUT))
        return procs[-1]

    def launch(spec: DriverSpec, env: Mapping[str, str]) -> None:  # as a launcher does with its secrets
        env = {**base, **env}
        token = env.pop(API_KEY_ENV, None)
        if token:
            secret = tmp_path / "token"
            secret.write_text(token)
            secret.chmod(0o600)
            env[API_KEY_FILE_ENV] = str(secret)
        env[DRIVER_ENV] = dataclasses.replace(spec, executor="process", packaged_only=False).to_json()
        launched.append(env)
        start(env, "rerun-first")

    def ran() -> int:
        return len(list(where.glob("ran.*")))

    config = ServerConfig(reruns=RerunConfig(image_repositories=(REPO,), storage_url=storage_url(storage)))
    try:
        with serve(tmp_path, api_keys_required=False, config=config, storage=storage, rerun_launcher=launch) as s:
            f = localkeys_pipe.pipe(1, str(where))
            root = serialization.serialize(f)
            storage.put(artifact_key(root.id), root.payload)
            spec = DriverSpec(root={"id": root.id, "format": root.format}, storage_url=storage_url(storage),
                              image=IMAGE, build_hash="h" * 64, executor="process",
                              resolution=ResolutionSettings(root_id=f.id))
            first = start({**base, SERVER_ENV: s.url, DRIVER_ENV: spec.to_json()}, "first")
            assert first.wait(120) == 0, (tmp_path / "first.log").read_text()
            assert ran() == 1
            outcomes = len(storage.keys("outcomes/"))

            (where / "hold").touch()
            answer = httpx.post(f"{s.url}/api/v1/resolutions/{f.id}/rerun", json={}, timeout=30)
            assert answer.status_code == 202, answer.text
            rerun = answer.json()["resolution_id"]
            [env] = launched
            token = Path(env[API_KEY_FILE_ENV]).read_text()  # minted by the server, for its driver alone:
            assert API_KEY_ENV not in env and token not in answer.text  # a file, never a variable nor an answer
            wait_for(lambda: len(storage.keys("outcomes/")) > outcomes or procs[-1].poll() is not None, 120,
                     what="the rerun's worker to store its outcome")
            driver = procs[-1]
            assert driver.poll() is None, (tmp_path / "rerun-first.log").read_text()
            assert ran() == 2 and s.store.get_resolution(rerun).state == "running"  # stored, not adopted
            driver.send_signal(signal.SIGKILL)  # the driver pod dies; its worker with it
            driver.wait(30)

            again = start(env, "rerun-second")  # the Job's next pod: the same environment and token file
            said = (tmp_path / "rerun-second.log")
            assert again.wait(120) == 0, said.read_text()
            assert ran() == 2, said.read_text()  # adopted: the step was not run a third time
            assert "OutcomeUnverified" not in said.read_text() and "not adopted" not in said.read_text()
            res = s.store.get_resolution(rerun)
            assert (res.state, res.error) == ("resolved", None)
            assert s.store.get_artifact(s.store.get_run(rerun).output_id).summary == 2
    finally:
        (where / "hold").unlink(missing_ok=True)
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()

"""infra/up.sh and infra/down.sh: reuse what answers, start only what is missing, stop only what they started.

Each test gives the scripts its own state directory (``INFRA``), so the services other people use are only
ever pinged, never started over or stopped.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

import pytest

try:
    import infra
except ImportError:  # pragma: no cover - run from the repository root without pytest's path insertion
    from tests import infra

UP = infra.INFRA_SCRIPTS / "up.sh"
DOWN = infra.INFRA_SCRIPTS / "down.sh"


@pytest.fixture(scope="module")
def services() -> str:
    """The Docker engine, registry and S3 server the tests use (reused or started by up.sh)."""
    infra.require_docker()
    if not infra.s3_available():
        pytest.fail(f"no S3 server answers on {infra.S3_ENDPOINT} after up.sh")
    return infra.S3_ENDPOINT


def run(script: Path, state: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``script`` with its own INFRA directory and the tests' addresses, plus ``env``."""
    return subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=120,
                          env={**infra.script_env(), "INFRA": str(state), **env})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pids(state: Path) -> list[str]:
    run_dir = state / "run"
    return sorted(p.name for p in run_dir.glob("*.pid")) if run_dir.is_dir() else []


def test_up_reuses_the_running_engine_registry_and_s3(services, tmp_path):
    proc = run(UP, tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    for name in ("dockerd", "registry", "moto"):  # reused, or already up when these very scripts started it
        assert any(line.split()[:2] in ([name, "reusing"], [name, "already"]) for line in lines), proc.stdout
    assert pids(tmp_path) == [] and not (tmp_path / "docker-data").exists()  # started nothing
    env = (tmp_path / "env.sh").read_text()
    assert f"export REGISTRY={infra.REGISTRY}\n" in env and f"AWS_ENDPOINT_URL_S3={services}\n" in env
    docker_host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    assert f"export DOCKER_HOST={docker_host}\n" in env


def test_up_starts_only_the_missing_s3_server_and_down_stops_exactly_it(services, tmp_path):
    port = free_port()
    venv = Path(sys.executable).parent.parent  # the test venv has moto[server]
    proc = run(UP, tmp_path, S3_PORT=str(port), MOTO_VENV=str(venv))
    try:
        assert proc.returncode == 0, proc.stderr
        assert "moto      started" in proc.stdout and "registry  " in proc.stdout
        assert pids(tmp_path) == ["moto.pid"]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/moto-api/", timeout=5) as resp:
            assert resp.status == 200
        again = run(UP, tmp_path, S3_PORT=str(port), MOTO_VENV=str(venv))
        assert again.returncode == 0 and "moto      already up" in again.stdout
    finally:
        down = run(DOWN, tmp_path)
    assert down.returncode == 0, down.stderr
    assert "moto: stopped pid" in down.stdout and "dockerd: no pidfile, nothing to stop" in down.stdout
    assert not infra.s3_available(f"http://127.0.0.1:{port}")
    assert infra.docker_available() and infra.registry_available() and infra.s3_available()  # untouched


def test_up_refuses_a_docker_host_that_does_not_answer(services, tmp_path):
    proc = run(UP, tmp_path, DOCKER_HOST=f"tcp://127.0.0.1:{free_port()}")
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines() == [
        f"up.sh: DOCKER_HOST=tcp://127.0.0.1:{proc.stderr.split('127.0.0.1:')[1].split()[0]} does not answer: "
        "start that engine, or unset DOCKER_HOST to use a local one"]
    assert pids(tmp_path) == []


def test_up_never_starts_a_daemon_over_a_socket_it_does_not_own(services, tmp_path):
    """A socket that exists but does not answer may belong to an engine that is starting or hung: up.sh waits
    for it, then says so; it never starts its own dockerd on that socket."""
    sock_path = tmp_path / "engine.sock"
    with socket.socket(socket.AF_UNIX) as silent:
        silent.bind(str(sock_path))
        silent.listen()  # accepts connections, never answers /_ping
        env = {k: v for k, v in infra.script_env().items() if k != "DOCKER_HOST"}
        proc = subprocess.run(["bash", str(UP)], capture_output=True, text=True, timeout=120,
                              env={**env, "INFRA": str(tmp_path), "DOCKER_SOCK": str(sock_path),
                                   "DOCKER_SOCK_WAIT": "1"})
    try:
        assert proc.returncode != 0
        assert proc.stderr.strip().splitlines() == [
            f"up.sh: {sock_path} exists but does not answer /_ping: a Docker engine may be starting or hung. "
            "Start or fix it, or remove the socket if no daemon runs, then run this again"]
        assert pids(tmp_path) == [] and not (tmp_path / "docker-data").exists()
    finally:
        pidfile = tmp_path / "run" / "dockerd.pid"
        if pidfile.exists():  # only if the test fails: stop exactly what it started
            os.kill(int(pidfile.read_text()), signal.SIGTERM)


@pytest.mark.skipif(os.geteuid() != 0, reason="starting dockerd needs root")
def test_up_replaces_a_stale_socket_and_exec_root_left_by_a_killed_engine(services):
    """A machine whose engine was killed (kill -9, a session that ended) keeps the socket file and the exec root
    with a dead containerd's pid: up.sh removes both and starts its own engine, instead of waiting forever."""
    # a short state path: containerd's sockets under it must fit a unix socket address (108 bytes)
    tmp_path = Path(tempfile.mkdtemp(prefix="si-", dir="/tmp"))
    sock_path = tmp_path / "engine.sock"
    with socket.socket(socket.AF_UNIX) as dead:
        dead.bind(str(sock_path))  # the file stays after close: nothing listens on it any more
    stale_state = tmp_path / "docker-exec" / "containerd"
    stale_state.mkdir(parents=True)
    (stale_state / "containerd.pid").write_text("999999")
    env = {k: v for k, v in infra.script_env().items() if k != "DOCKER_HOST"}
    env.update(INFRA=str(tmp_path), DOCKER_SOCK=str(sock_path), DOCKER_SOCK_WAIT="1")
    try:
        proc = subprocess.run(["bash", str(UP)], capture_output=True, text=True, timeout=120, env=env)
        assert proc.returncode == 0, proc.stderr + (tmp_path / "logs" / "dockerd.log").read_text()[-2000:]
        assert f"{sock_path} is stale (no process listens on it): removing it" in proc.stdout
        assert "dockerd   started" in proc.stdout
        ping = subprocess.run(["curl", "-sf", "--max-time", "5", "--unix-socket", str(sock_path),
                               "http://localhost/_ping"], capture_output=True, text=True)
        assert ping.stdout == "OK"
    finally:
        down = subprocess.run(["bash", str(DOWN)], capture_output=True, text=True, timeout=120, env=env)
    assert down.returncode == 0, down.stderr
    assert infra.docker_available()  # the engine everyone else uses is untouched
    shutil.rmtree(tmp_path, ignore_errors=True)


def test_down_leaves_a_recorded_pid_alone_when_it_is_another_program(tmp_path):
    (tmp_path / "run").mkdir()
    other = subprocess.Popen(["sleep", "60"])
    try:
        (tmp_path / "run" / "moto.pid").write_text(str(other.pid))
        down = run(DOWN, tmp_path)
        assert down.returncode == 0
        assert f"moto: pid {other.pid} is 'sleep 60 ', not moto_server: left alone" in down.stdout
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()

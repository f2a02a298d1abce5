"""A rerun of a resolution that has not ended (its resolving process still running it, or asked to cancel) is
refused in one line naming it, its state and what to do, by every way a rerun starts: the Python API embedded and
through the server, the CloudResolver, the CLI, the server's rerun action (409); nothing of it is recorded, and its
unfinished runs are not run beside the original's. A resolution whose resolver was killed is marked dead by the
rerun's own read of it, and the rerun goes ahead."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

import fault_pipelines as fp
import sematic_k8s as sk
from sematic_k8s.cli import cli
from sematic_k8s.errors import ResolutionLive
from sematic_k8s.future import new_id
from sematic_k8s.store.sql import SqlStore
from serving import Served, serve
from waiting import wait_for

HERE = Path(__file__).parent
FAST_BEATS = {"SEMATIC_K8S_HEARTBEAT_INTERVAL": "0.2"}


@contextlib.contextmanager
def live_resolver(tmp_path: Path, root_id: str, gate: Path, env: dict[str, str]) -> Iterator[subprocess.Popen]:
    """A process resolving ``gated(3, gate)`` as ``root_id``, held at its gated step (its two steps before it
    recorded) while the block runs; killed at the end if it still runs."""
    code = (f"import fault_pipelines as fp, sematic_k8s as sk; "
            f"fp.gated(3, {str(gate)!r}).resolve(sk.LocalResolver(root_id={root_id!r}, max_parallelism=2))")
    path = os.pathsep.join(p for p in (str(HERE), os.environ.get("PYTHONPATH")) if p)
    proc = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **env, **FAST_BEATS, "SEMATIC_K8S_HOME": str(tmp_path),
                                 "PYTHONPATH": path})
    try:
        wait_for(lambda: (tmp_path / "db.sqlite3").exists() or proc.poll() is not None, 60, what="the database")
        store = SqlStore(f"sqlite:///{tmp_path / 'db.sqlite3'}")
        wait_for(lambda: proc.poll() is not None or (Path(f"{gate}.started").exists() and sum(
            r.state == "resolved" for r in store.runs_of_root(root_id)) >= 2), 60, what="the gated step")
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGCONT)
            proc.kill()
        proc.communicate(timeout=30)


def _env(monkeypatch: pytest.MonkeyPatch, timeout: str) -> None:
    monkeypatch.delenv("SEMATIC_K8S_SERVER", raising=False)
    monkeypatch.delenv("SEMATIC_K8S_DB_URL", raising=False)
    monkeypatch.setenv("SEMATIC_K8S_HEARTBEAT_TIMEOUT", timeout)  # the readers' and the server's (this process)


def _refusals(s: Served, tmp_path: Path, target: str, root_id: str, state: str) -> list[str]:
    """The words of a rerun of ``target`` (a run of resolution ``root_id``, in ``state``) by each way one starts,
    each refused as ResolutionLive (the server's action: 409)."""
    said = []
    gate = str(tmp_path / "gate")
    for resolver in (sk.LocalResolver(home=tmp_path, rerun_from=target),
                     sk.LocalResolver(home=tmp_path, rerun_from=root_id, rerun_mode="continue"),
                     sk.LocalResolver(home=tmp_path, rerun_from=target, server=s.url, api_key=s.key),
                     sk.CloudResolver(server=s.url, api_key=s.key, storage="s3://bucket/prefix",
                                      registry="127.0.0.1:5000", rerun_from=target)):
        with pytest.raises(ResolutionLive) as e:
            fp.gated(3, gate).resolve(resolver)
        assert (e.value.resolution_id, e.value.state) == (root_id, state)
        said.append(str(e.value))
    result = CliRunner().invoke(cli, ["--home", str(tmp_path), "rerun", target[:12]])
    assert result.exit_code == 1 and result.output.count("\n") == 1, result.output
    said.append(result.output)
    with s.client() as c:
        for body in ({}, {"mode": "continue"}):
            r = c.post(f"/api/v1/resolutions/{root_id}/rerun", json=body)
            assert r.status_code == 409 and r.json()["reason"] == "resolution-live", r.text
            said.append(r.json()["detail"])
    return said


def test_a_rerun_of_a_live_resolution_is_refused_by_every_way_one_starts(tmp_path, monkeypatch):
    """Running, then canceling (the resolver stopped meanwhile, SIGSTOP, so that the cancel is not yet done): each
    refused, nothing recorded; once it ended (canceled), a continue of it runs and resolves."""
    _env(monkeypatch, "60")
    with serve(tmp_path) as s:
        root_id, gate = new_id(), tmp_path / "gate"
        env = {"SEMATIC_K8S_SERVER": s.url, "SEMATIC_K8S_API_KEY": s.key}
        with live_resolver(tmp_path, root_id, gate, env) as proc:
            step = next(r.id for r in s.store.runs_of_root(root_id) if r.func_name == "add")
            for target in (root_id, step):
                for words in _refusals(s, tmp_path, target, root_id, "running"):
                    assert (f"resolution {root_id} is running: a rerun of it would run its unfinished runs beside "
                            f"its own, and nothing was started; wait for it to end or cancel it: sematic-k8s "
                            f"cancel {root_id}") in words, words
            proc.send_signal(signal.SIGSTOP)  # its loop would see the cancel at once: held, it stays canceling
            with s.client() as c:
                assert c.post(f"/api/v1/resolutions/{root_id}/cancel").json()["state"] == "canceling"
            for words in _refusals(s, tmp_path, root_id, root_id, "canceling"):
                assert f"resolution {root_id} is canceling: " in words, words
            assert [r.id for r in s.store.list_resolutions()] == [root_id]  # no rerun recorded
            proc.send_signal(signal.SIGCONT)
            gate.touch()
            proc.communicate(timeout=60)
        assert s.store.get_resolution(root_id).state == "canceled"
        again = fp.gated(3, str(gate))
        assert again.resolve(sk.LocalResolver(home=tmp_path, rerun_from=root_id, rerun_mode="continue")) == 6


@pytest.mark.parametrize("through", ["embedded", "server", "cli", "action"])
def test_a_rerun_of_a_resolution_whose_resolver_was_killed_is_accepted(tmp_path, monkeypatch, through):
    """kill -9 of the resolving process, then nothing reads its resolution until the rerun: the rerun's own read
    finds it silent and marks it dead, and the rerun goes ahead (the server's action: to its refusal of a local
    resolution, which comes after the check)."""
    _env(monkeypatch, "2")
    with serve(tmp_path) as s:
        root_id, gate = new_id(), tmp_path / "gate"
        with live_resolver(tmp_path, root_id, gate, {}) as proc:
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
        time.sleep(3)  # past the heartbeat timeout, unread
        gate.touch()
        again = fp.gated(3, str(gate))
        if through == "action":
            with s.client() as c:
                r = c.post(f"/api/v1/resolutions/{root_id}/rerun", json={"mode": "continue"})
            assert r.status_code == 422 and r.json()["reason"] == "local-resolution", r.text
        elif through == "cli":
            result = CliRunner().invoke(cli, ["--home", str(tmp_path), "rerun", root_id, "--mode", "continue"])
            assert result.exit_code == 0, result.output
        else:
            server = {"server": s.url, "api_key": s.key} if through == "server" else {}
            resolver = sk.LocalResolver(home=tmp_path, rerun_from=root_id, rerun_mode="continue", **server)
            assert again.resolve(resolver) == 6
        res = s.store.get_resolution(root_id)
        assert res.state == "failed" and res.error.startswith("the resolver stopped responding at ")
        if through != "action":
            rerun = [r for r in s.store.list_resolutions() if r.id != root_id]
            assert [r.state for r in rerun] == ["resolved"]

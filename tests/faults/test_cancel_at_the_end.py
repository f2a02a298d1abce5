"""A cancel landing in the instant a resolution ends: after its loop last looked for one, before the write that
records it resolved reaches the store. The cancel was accepted (the resolution was running: `sematic-k8s cancel`
says "canceling"), so it wins: the end is refused and the loop records the resolution canceled, as the CLI then says
(its runs stay as they resolved). Was: the end landed over the accepted cancel, recorded resolved.

The resolver is a real process (a LocalResolver) recording through a server process, SQLite or PostgreSQL, by a
proxy on loopback that holds its write of the end back (past its client's 2 s timeout, its retries too) until the
cancel, sent straight to the server by the CLI, landed; then it lets the write through."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from outages import HoldingProxy
from sematic_k8s.store.http import HttpStore
from waiting import wait_for

HERE = Path(__file__).parent
# the resolver's process: its HTTP store's client times out after 2 s (as in test_write_order.py), not 60 s
RESOLVE = ("import sys, fault_pipelines as fp, sematic_k8s as sk\n"
           "from sematic_k8s.store import http\n"
           "http.HttpStore.__init__.__kwdefaults__['timeout'] = 2.0\n"
           "print(fp.gated(5, sys.argv[1]).resolve(sk.LocalResolver(root_id=sys.argv[2])))")


def _ends_resolved(root: str) -> Callable[[bytes], bool]:
    """Whether a request is a batch recording resolution ``root`` resolved."""
    def pick(request: bytes) -> bool:
        if not request.startswith(b"POST /api/v1/store/write"):
            return False
        try:
            body = json.loads(request.split(b"\r\n\r\n", 1)[1])
        except ValueError:
            return False
        return (body.get("resolution_updates") or {}).get(root, {}).get("state") == "resolved"
    return pick


@pytest.mark.parametrize("db", ["sqlite", "postgresql"])
def test_a_cancel_landing_just_before_the_end_wins(tmp_path, db_server, db) -> None:
    server = db_server
    root, gate = uuid.uuid4().hex, str(tmp_path / "gate")
    proxy = HoldingProxy(server.port, hold=_ends_resolved(root), until_release=True)
    env = {**os.environ, "SEMATIC_K8S_HOME": str(tmp_path), "SEMATIC_K8S_SERVER": proxy.url,
           "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    for name in ("SEMATIC_K8S_API_KEY", "SEMATIC_K8S_DB_URL"):
        env.pop(name, None)
    resolver = subprocess.Popen([sys.executable, "-c", RESOLVE, gate, root], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    cancel = None
    reader = HttpStore(server.url)
    try:
        wait_for(lambda: Path(gate + ".started").exists() or resolver.poll() is not None, 60, what="the gated step")
        Path(gate).touch()
        wait_for(lambda: proxy.held is not None or resolver.poll() is not None, 60, what="the write of the end")
        assert reader.get_resolution(root).state == "running"
        cancel = subprocess.Popen([sys.executable, "-m", "sematic_k8s.cli", "cancel", root, "--wait", "-o", "json"],
                                  env={**env, "SEMATIC_K8S_SERVER": server.url}, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
        wait_for(lambda: reader.get_resolution(root).state != "running", 60, what="the cancel to land")
        status, _ = proxy.release()  # the end arrives just after the cancel
        assert status == 409, "the end landed over the accepted cancel"
        out, err = resolver.communicate(timeout=120)
        assert resolver.returncode == 1, (out, err)
        assert f"ResolutionCanceled: resolution {root} was canceled" in err.strip().splitlines()[-1], err
        said, cli_err = cancel.communicate(timeout=60)
        assert cancel.returncode == 0 and json.loads(said)["state"] == "canceled", (said, cli_err)
        res = reader.get_resolution(root)
        assert res.state == "canceled" and "ResolutionCanceled" in (res.error or ""), res
        assert {r.state for r in reader.runs_of_root(root)} == {"resolved"}  # what resolved stays so
    finally:
        for p in (resolver, cancel):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
        reader.close()
        proxy.close()

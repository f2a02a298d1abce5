"""A cancel landing in the instant a resolution ends: after its loop last looked for one, before the write that
records its end reaches the store. The cancel was accepted (the resolution was running: `sematic-k8s cancel` says
"canceling"), so it wins, and `sematic-k8s cancel --wait` says canceled:
- over a resolved end: the end is refused and the loop records the resolution canceled (its runs stay as they
  resolved). Was: the end landed over the accepted cancel, recorded resolved.
- over a failed end: the resolution is recorded canceled, its failure's words kept ("resolution <id> failed: ...
  raised ValueError: ...; canceled as asked"). Was: recorded failed, the accepted cancel nowhere in the record.
  The write's answer says so (``Store.write``'s ``canceled``; through the server, its answer's ``canceled``, to the
  retry of a write whose first attempt landed too), and the resolving process raises ResolutionCanceled ("resolution
  <id> was canceled (asked before its end was recorded); it had failed: fail_at ... raised ValueError: ..."). Was:
  ResolutionFailed in the func's words, as if nobody had asked. So too a failed end written by the loop's abort on an
  infrastructure failure: ResolutionCanceled naming that failure (was: the failure's own error raised).

The resolver is a real process (a LocalResolver) whose gated step returns (or raises) once its gate opens. Through a
server process (SQLite or PostgreSQL) a proxy on loopback holds its write of the end back (past its client's 2 s
timeout, its retries too) until the cancel, sent straight to the server by the CLI, landed; then it lets the write
through. On PostgreSQL without a server, another session holds the resolution's row: the cancel's process queues
for it first, then the resolver's write of the end. On SQLite without a server (one lock for the whole file, taken
in no set order) the resolver's process holds its own write of the failed end back, as the proxy does, until the
cancel landed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa

from outages import HoldingProxy, writes_end
from sematic_k8s import settings
from sematic_k8s.store.http import HttpStore
from sematic_k8s.store.sql import SqlStore
from waiting import wait_for

HERE = Path(__file__).parent
# the resolver's process: its HTTP store's client times out after 2 s (as in test_write_order.py), not 60 s
RESOLVE = ("import sys, fault_pipelines as fp, sematic_k8s as sk\n"
           "from sematic_k8s.store import http\n"
           "http.HttpStore.__init__.__kwdefaults__['timeout'] = 2.0\n"
           "pipeline = getattr(fp, sys.argv[3] if len(sys.argv) > 3 else 'gated_failure')\n"
           "print(pipeline(5, sys.argv[1]).resolve(sk.LocalResolver(root_id=sys.argv[2])))")


def _held(module: str, store: str) -> str:
    """The start of a resolver's process whose writes of the failed end (its store's own, ``module.store``'s,
    unchanged) are held back until the file ``<gate>.go`` exists, ``<gate>.ending`` telling that one is."""
    return ("import os, sys, time\n"
            "from pathlib import Path\n"
            f"from sematic_k8s.store.{module} import {store}\n"
            f"write = {store}.write\n"
            "def held(self, batch, *args, **kw):\n"
            "    if any(f.get('state') == 'failed' for f in batch.resolution_updates.values()):\n"
            "        Path(sys.argv[1] + '.ending').touch()\n"
            "        while not os.path.exists(sys.argv[1] + '.go'):\n"
            "            time.sleep(0.05)\n"
            "    return write(self, batch, *args, **kw)\n"
            f"{store}.write = held\n")


HELD = _held("sql", "SqlStore")  # the resolver's process on SQLite without a server
PIPELINES = {"resolved": "gated", "failed": "gated_failure"}
CAUSE = "raised ValueError: failed as told, with 6"


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(settings.PREFIX)}
    env.update({"SEMATIC_K8S_HOME": str(tmp_path), **extra,
                "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])})
    return env


def _process(args: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, *args], env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _check_ended(resolver: subprocess.Popen, cancel: subprocess.Popen, root: str, res_error: str | None,
                 res_state: str) -> None:
    """The resolver raised ResolutionCanceled, naming its func's failure; the cancel said canceled; the record is
    canceled with the failure's words and the cancel's."""
    out, err = resolver.communicate(timeout=120)
    assert resolver.returncode == 1, (out, err)
    said = f"ResolutionCanceled: resolution {root} was canceled (asked before its end was recorded); it had failed: "
    last = err.strip().splitlines()[-1]
    assert said + "fail_at (run " in last and last.endswith(CAUSE), err
    said, cli_err = cancel.communicate(timeout=60)
    assert cancel.returncode == 0 and json.loads(said)["state"] == "canceled", (said, cli_err)
    assert res_state == "canceled", (res_state, res_error)
    assert res_error is not None and res_error.startswith(f"resolution {root} failed: fail_at"), res_error
    assert CAUSE in res_error and res_error.endswith("; canceled as asked"), res_error


@pytest.mark.parametrize("end", ["resolved", "failed"])
@pytest.mark.parametrize("db", ["sqlite", "postgresql"])
def test_a_cancel_landing_just_before_the_end_wins(tmp_path, db_server, db, end) -> None:
    server = db_server
    root, gate = uuid.uuid4().hex, str(tmp_path / "gate")
    proxy = HoldingProxy(server.port, hold=writes_end(root, end), until_release=True)
    env = _env(tmp_path, SEMATIC_K8S_SERVER=proxy.url)
    resolver = _process(["-c", RESOLVE, gate, root, PIPELINES[end]], env)
    cancel = None
    reader = HttpStore(server.url)
    try:
        wait_for(lambda: Path(gate + ".started").exists() or resolver.poll() is not None, 60, what="the gated step")
        Path(gate).touch()
        wait_for(lambda: proxy.held is not None or resolver.poll() is not None, 60, what="the write of the end")
        assert reader.get_resolution(root).state == "running"
        cancel = _process(["-m", "sematic_k8s.cli", "cancel", root, "--wait", "-o", "json"],
                          {**env, "SEMATIC_K8S_SERVER": server.url})
        wait_for(lambda: reader.get_resolution(root).state != "running", 60, what="the cancel to land")
        status, body = proxy.release()  # the end arrives just after the cancel
        res = reader.get_resolution(root)
        if end == "failed":
            assert status == 200, body
            _check_ended(resolver, cancel, root, res.error, res.state)
            assert {r.func_name: r.state for r in reader.runs_of_root(root)}["fail_at"] == "failed"
            return
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


def test_a_cancel_committing_before_a_failing_end_on_postgresql_wins(tmp_path, postgres_url) -> None:
    """No server: the resolver and the cancel record on the database. Another session holds the resolution's row
    (a writer's transaction in flight); ``sematic-k8s cancel`` queues for it, then the gate opens and the resolver's
    write of the end queues behind it (its loop's last look for a cancel found none). The row let go, the cancel
    commits ``canceling``, then the end lands on it. No beats meanwhile: the heartbeat interval is long."""
    store = SqlStore(postgres_url, stale_after=10 ** 6)
    res = store._res
    root, gate = uuid.uuid4().hex, str(tmp_path / "gate")
    env = _env(tmp_path, **{settings.DB_URL_ENV: postgres_url, "SEMATIC_K8S_HEARTBEAT_INTERVAL": "3600",
                            "SEMATIC_K8S_HEARTBEAT_TIMEOUT": "7200"})
    resolver = _process(["-c", RESOLVE, gate, root], {**env, "PGAPPNAME": "resolver"})
    cancel = None

    def waiting(app: str) -> int:  # sessions of ``app`` waiting for a lock
        with store.engine.connect() as c:
            return c.scalar(sa.text("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                                    "AND wait_event_type = 'Lock' AND application_name = :app"), {"app": app})
    try:
        wait_for(lambda: Path(gate + ".started").exists() or resolver.poll() is not None, 60, what="the gated step")
        wait_for(lambda: any(r.func_name == "fail_at" and r.state == "running" for r in store.runs_of_root(root))
                 or resolver.poll() is not None, 60, what="the gated step recorded running")  # its busy flush
        assert resolver.poll() is None, resolver.communicate()
        with store.engine.connect() as holder:
            holder.execute(sa.select(res.c.id).where(res.c.id == root).with_for_update()).all()
            cancel = _process(["-m", "sematic_k8s.cli", "cancel", root, "--wait", "-o", "json"],
                              {**env, "PGAPPNAME": "cancel"})
            wait_for(lambda: waiting("cancel") >= 1 or cancel.poll() is not None, 60,
                     what="the cancel to wait for the row")
            assert cancel.poll() is None, cancel.communicate()
            Path(gate).touch()
            wait_for(lambda: waiting("resolver") >= 1 or resolver.poll() is not None, 60,
                     what="the write of the end to wait for the row")
            assert resolver.poll() is None, resolver.communicate()
            holder.rollback()
        wait_for(lambda: resolver.poll() is not None, 120, what="the resolver to end")
        ended = store.get_resolution(root)
        assert ended is not None
        _check_ended(resolver, cancel, root, ended.error, ended.state)
    finally:
        for p in (resolver, cancel):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait(30)
        store.close()


def test_a_cancel_landing_before_a_failing_end_on_sqlite_wins(tmp_path) -> None:
    """No server, SQLite: the resolver's process holds its write of the failed end back (its loop's last look for a
    cancel found none) until ``sematic-k8s cancel`` landed; then the end lands on the canceling record: recorded
    canceled, and the resolver raises ResolutionCanceled naming the failure (was: ResolutionFailed in its words)."""
    root, gate = uuid.uuid4().hex, str(tmp_path / "gate")
    env = _env(tmp_path)
    resolver = _process(["-c", HELD + RESOLVE, gate, root], env)
    cancel = None
    store = SqlStore(settings.db_url(tmp_path), stale_after=10 ** 6)
    try:
        wait_for(lambda: Path(gate + ".started").exists() or resolver.poll() is not None, 60, what="the gated step")
        Path(gate).touch()
        wait_for(lambda: Path(gate + ".ending").exists() or resolver.poll() is not None, 60,
                 what="the write of the end")
        assert resolver.poll() is None, resolver.communicate()
        assert store.get_resolution(root).state == "running"
        cancel = _process(["-m", "sematic_k8s.cli", "cancel", root, "--wait", "-o", "json"], env)
        wait_for(lambda: store.get_resolution(root).state != "running" or cancel.poll() is not None, 60,
                 what="the cancel to land")
        assert store.get_resolution(root).state == "canceling", store.get_resolution(root)
        Path(gate + ".go").touch()
        wait_for(lambda: resolver.poll() is not None, 120, what="the resolver to end")
        ended = store.get_resolution(root)
        assert ended is not None
        _check_ended(resolver, cancel, root, ended.error, ended.state)
        assert {r.func_name: r.state for r in store.runs_of_root(root)}["fail_at"] == "failed"
    finally:
        for p in (resolver, cancel):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait(30)
        store.close()


def _asks_cancel(root: str, held: threading.Event) -> Callable[[bytes], bool]:
    """Whether a request is the resolver's question whether resolution ``root`` was asked to cancel, once ``held``."""
    def pick(request: bytes) -> bool:
        return held.is_set() and request.startswith(f"GET /api/v1/store/cancel_requested/{root} ".encode())
    return pick


@pytest.mark.parametrize("db", ["sqlite"])
def test_an_infrastructure_failure_recorded_canceled_raises_resolution_canceled(tmp_path, db_server, db) -> None:
    """The resolver's path to the server drops its questions whether the resolution was asked to cancel (a proxy
    leaves them unanswered past its client's retry window, 4 s), from before ``sematic-k8s cancel`` lands straight on
    the server: its heartbeat's looks meanwhile fail (logged), and once the gated step returned, the loop's last look
    fails (ServerError: cannot reach the server), an infrastructure failure. The loop records the resolution failed
    in those words (the write passes); the accepted cancel wins (recorded canceled, "...; canceled as asked"), and
    the write's answer says so: the resolver raises ResolutionCanceled ("resolution <id> was canceled (asked before
    its end was recorded); it had failed: infrastructure failure, not the pipeline's: ServerError: ..."), as for a
    failing func. Was: it raised ServerError, as if nobody had asked."""
    server = db_server
    root, gate = uuid.uuid4().hex, str(tmp_path / "gate")
    held = threading.Event()
    proxy = HoldingProxy(server.port, hold=_asks_cancel(root, held), until_release=True)
    env = _env(tmp_path, SEMATIC_K8S_SERVER=proxy.url, SEMATIC_K8S_RETRY_WINDOW="4")
    resolver = _process(["-c", RESOLVE, gate, root, "gated"], env)
    cancel = None
    reader = HttpStore(server.url)
    try:
        wait_for(lambda: Path(gate + ".started").exists() or resolver.poll() is not None, 60, what="the gated step")
        held.set()
        cancel = _process(["-m", "sematic_k8s.cli", "cancel", root, "--wait", "-o", "json"],
                          {**env, "SEMATIC_K8S_SERVER": server.url})
        wait_for(lambda: reader.get_resolution(root).state != "running" or cancel.poll() is not None, 60,
                 what="the cancel to land")
        assert reader.get_resolution(root).state == "canceling", reader.get_resolution(root)
        Path(gate).touch()
        out, err = resolver.communicate(timeout=120)
        assert resolver.returncode == 1, (out, err)
        last = err.strip().splitlines()[-1]
        said = (f"ResolutionCanceled: resolution {root} was canceled (asked before its end was recorded); it had "
                f"failed: infrastructure failure, not the pipeline's: ServerError: cannot reach the sematic-k8s server "
                f"at {proxy.url}")
        assert said in last, err
        said, cli_err = cancel.communicate(timeout=60)
        assert cancel.returncode == 0 and json.loads(said)["state"] == "canceled", (said, cli_err)
        res = reader.get_resolution(root)
        assert res.state == "canceled", res
        assert res.error.startswith("infrastructure failure, not the pipeline's: ServerError: cannot reach"), res.error
        assert res.error.endswith("; canceled as asked"), res.error
    finally:
        for p in (resolver, cancel):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
        reader.close()
        proxy.close()


def _stopped(pid: int) -> bool:
    """Whether process ``pid`` is stopped (SIGSTOP): its state in /proc, "T"."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rindex(")") + 2] == "T"


@pytest.mark.parametrize("end", ["resolved", "failed"])
@pytest.mark.parametrize("db", ["sqlite"])
def test_a_resolver_frozen_while_a_cancel_was_accepted_and_marked_dead_raises_resolution_canceled(
        tmp_path, db_server, db, end) -> None:
    """A LocalResolver recording through a server process is stopped (SIGSTOP): in its gated step (``resolved``: the
    step returns once resumed), or right before writing its failed end (``failed``: its process holds that write
    until told). ``sematic-k8s cancel`` is accepted (``canceling``: its default heartbeat timeout finds nothing
    silent); then a reader whose timeout is 2 s finds the resolution silent and marks it dead, recorded canceled
    ("the resolver stopped responding at ...; canceled as asked"). Resumed (SIGCONT), the resolver's next write is
    refused: it raises ResolutionCanceled, "resolution <id> was canceled" (``resolved``: the write refused was not an
    end), "... (asked before its end was recorded); it had failed: fail_at ... raised ValueError: ..." (``failed``).
    Was: ResolutionEnded, "has already ended as canceled ... Continue it with rerun_from=...", as for a dead one."""
    server = db_server
    root, gate = uuid.uuid4().hex, str(tmp_path / "gate")
    env = _env(tmp_path, SEMATIC_K8S_SERVER=server.url)
    start = _held("http", "HttpStore") if end == "failed" else ""
    resolver = _process(["-c", start + RESOLVE, gate, root, PIPELINES[end]], env)
    reader = HttpStore(server.url)
    marker = SqlStore(f"sqlite:///{tmp_path / 'db.sqlite3'}", stale_after=2)  # the server's database
    try:
        wait_for(lambda: Path(gate + ".started").exists() or resolver.poll() is not None, 60, what="the gated step")
        if end == "failed":
            Path(gate).touch()
            wait_for(lambda: Path(gate + ".ending").exists() or resolver.poll() is not None, 60,
                     what="the write of the end")
        assert resolver.poll() is None, resolver.communicate()
        resolver.send_signal(signal.SIGSTOP)
        wait_for(lambda: _stopped(resolver.pid), 30, what="the resolver to stop")
        said = subprocess.run([sys.executable, "-m", "sematic_k8s.cli", "cancel", root, "-o", "json"], env=env,
                              capture_output=True, text=True, timeout=120)
        assert said.returncode == 0 and json.loads(said.stdout)["state"] == "canceling", (said.stdout, said.stderr)
        wait_for(lambda: marker.get_resolution(root).state != "canceling", 60, what="the silent resolution's mark")
        res = reader.get_resolution(root)
        assert res.state == "canceled", res
        assert res.error.startswith("the resolver stopped responding at "), res.error
        assert res.error.endswith("; canceled as asked"), res.error
        Path(gate).touch()
        Path(gate + ".go").touch()
        resolver.send_signal(signal.SIGCONT)
        out, err = resolver.communicate(timeout=120)
        assert resolver.returncode == 1, (out, err)
        last = err.strip().splitlines()[-1]
        if end == "failed":
            words = f"ResolutionCanceled: resolution {root} was canceled (asked before its end was recorded); it had "
            assert words + "failed: fail_at (run " in last and last.endswith(CAUSE), err
        else:
            assert last.endswith(f"ResolutionCanceled: resolution {root} was canceled"), err
        assert reader.get_resolution(root).error == res.error  # what was recorded stands
    finally:
        if resolver.poll() is None:
            resolver.send_signal(signal.SIGCONT)
            resolver.kill()
            resolver.wait(30)
        reader.close()
        marker.close()

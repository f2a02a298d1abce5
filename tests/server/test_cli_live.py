"""The CLI on resolutions as they run, each side in its own process: cancel, logs --follow, and reading through
the server (no access to the artifact storage needed on the CLI's machine)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

import sematic_k8s as sk
from sematic_k8s import settings
from sematic_k8s.store import sql_store
from serving import serve, wait_for

try:
    import server_pipeline as sp
except ImportError:  # pragma: no cover
    from tests import server_pipeline as sp

CLI = str(Path(sys.executable).with_name("sematic-k8s"))
REPO = Path(__file__).resolve().parents[2]
SLOW = textwrap.dedent('''
    import sys
    import time
    from pathlib import Path

    import sematic_k8s as sk


    @sk.func
    def slow(flag: str) -> int:
        print("started", flush=True)
        while not Path(flag).exists():
            time.sleep(0.05)
        print("finishing")
        return 1


    @sk.func
    def pipeline(flag: str) -> int:
        return slow(flag)


    if __name__ == "__main__":
        pipeline(sys.argv[1]).resolve(sk.LocalResolver(max_parallelism=int(sys.argv[2])))
''')


def environ(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(settings.PREFIX)}
    return {**env, settings.HOME_ENV: str(home), "PYTHONPATH": str(REPO), **extra}


@pytest.fixture
def slow_pipeline(tmp_path: Path):
    """Start the slow pipeline in its own process (its func on a thread of the loop's: the loop keeps polling
    meanwhile); yields (home, flag, process, id of the running `slow` run)."""
    yield from _slow_pipeline(tmp_path, max_parallelism=2)


@pytest.fixture
def slow_pipeline_on_the_loops_thread(tmp_path: Path):
    """The same with the LocalResolver's default max_parallelism=1: `slow` runs on the resolving thread itself."""
    yield from _slow_pipeline(tmp_path, max_parallelism=1)


def _slow_pipeline(tmp_path: Path, max_parallelism: int):
    script, flag, home = tmp_path / "slow_pipeline.py", tmp_path / "flag", tmp_path / "home"
    script.write_text(SLOW)
    proc = subprocess.Popen([sys.executable, str(script), str(flag), str(max_parallelism)], env=environ(home),
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        def running() -> str | None:
            if not (home / "db.sqlite3").exists():
                return None
            runs = sql_store(settings.db_url(home)).list_runs(func="slow", state="running")
            return runs[0].id if runs else None
        yield home, flag, proc, wait_for(running, 60, what="the slow run to start")
    finally:
        flag.touch()  # let its thread end, so the process can exit
        proc.communicate(timeout=60)


def test_cancel_a_running_resolution(slow_pipeline) -> None:
    home, flag, proc, slow_id = slow_pipeline
    root_id = sql_store(settings.db_url(home)).get_run(slow_id).root_id
    done = subprocess.run([CLI, "cancel", slow_id[:12], "--wait", "-o", "json"], env=environ(home),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    res = json.loads(done.stdout)
    assert (res["id"], res["state"]) == (root_id, "canceled")
    flag.touch()
    _, err = proc.communicate(timeout=60)
    assert proc.returncode != 0 and "ResolutionCanceled" in err
    again = subprocess.run([CLI, "cancel", root_id], env=environ(home), capture_output=True, text=True, timeout=60)
    assert again.returncode == 1 and "already ended (canceled)" in again.stderr


def test_cancel_through_a_local_mode_server(slow_pipeline) -> None:
    """`server --local` takes only JSON state-changing requests: the CLI's cancel through it is one of them."""
    home, flag, proc, slow_id = slow_pipeline
    with serve(home, api_keys_required=False) as served:
        env = environ(home, **{settings.SERVER_ENV: served.url})
        done = subprocess.run([CLI, "cancel", slow_id[:12], "--wait", "-o", "json"], env=env,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["state"] == "canceled"
    flag.touch()
    _, err = proc.communicate(timeout=60)
    assert proc.returncode != 0 and "ResolutionCanceled" in err


def test_logs_follow_until_the_run_ends(slow_pipeline) -> None:
    home, flag, proc, slow_id = slow_pipeline
    follow = subprocess.Popen([CLI, "logs", slow_id, "--follow"], env=environ(home), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    flag.touch()
    out, err = follow.communicate(timeout=60)
    assert follow.returncode == 0, err
    assert out == "started\nfinishing\n"
    assert err.splitlines()[-1] == f"run {slow_id} (slow) resolved"


def test_logs_follow_says_what_it_waits_for(slow_pipeline) -> None:
    """A run's output is recorded as its attempt ends: while nothing is, --follow says so once, then waits (was:
    nothing at all until the run ended, a minute and more for a long step, or for a run whose resolver was killed
    until the resolution was marked dead)."""
    home, flag, proc, slow_id = slow_pipeline
    follow = subprocess.Popen([CLI, "logs", slow_id, "--follow"], env=environ(home), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        said: list[str] = []
        reader = threading.Thread(target=lambda: said.append(follow.stderr.readline()), daemon=True)  # type: ignore[union-attr]
        reader.start()
        reader.join(60)  # while the run waits for the flag: it cannot end before this line or its absence
    finally:
        flag.touch()
    assert follow.wait(timeout=60) == 0
    assert said == [f"run {slow_id} (slow) is running: its output is recorded as each attempt ends; waiting for it "
                    "(Ctrl-C to stop)\n"], said
    assert follow.stdout.read() == "started\nfinishing\n"  # type: ignore[union-attr]
    assert follow.stderr.read().splitlines() == [f"run {slow_id} (slow) resolved"]  # type: ignore[union-attr]


def test_logs_follow_of_a_killed_resolvers_run_ends_saying_why(slow_pipeline) -> None:
    """The resolving process killed (-9) while its run ran: --follow ends once the resolution is marked dead (its
    heartbeat timeout here 2 s), naming the resolution's end, not only that the run was canceled (was "run X (slow)
    canceled", by no one's cancel)."""
    home, flag, proc, slow_id = slow_pipeline
    proc.kill()
    proc.wait(timeout=60)
    follow = subprocess.run([CLI, "logs", slow_id, "--follow"], capture_output=True, text=True, timeout=120,
                            env=environ(home, **{settings.HEARTBEAT_TIMEOUT_ENV: "2"}))
    assert follow.returncode == 0, follow.stderr
    end = follow.stderr.splitlines()[-1]
    assert end.startswith(f"run {slow_id} (slow) canceled: its resolution failed: the resolver stopped responding at "
                          ), follow.stderr


def test_a_long_func_on_the_resolving_thread_is_seen_running(slow_pipeline_on_the_loops_thread) -> None:
    """With max_parallelism=1 the loop runs a body itself and writes nothing meanwhile: its heartbeat thread writes
    the records for it (they showed the root `created` and no `slow` run until the body returned)."""
    home, flag, proc, slow_id = slow_pipeline_on_the_loops_thread  # found running while the body waits
    root_id = sql_store(settings.db_url(home)).get_run(slow_id).root_id
    listed = subprocess.run([CLI, "runs", "list", "--root-id", root_id, "-o", "json"], env=environ(home),
                            capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr
    assert [(r["func_name"], r["state"]) for r in json.loads(listed.stdout)["items"]] == [
        ("pipeline", "running"), ("slow", "running")]
    follow = subprocess.Popen([CLI, "logs", slow_id[:12], "--follow"], env=environ(home), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    flag.touch()
    out, err = follow.communicate(timeout=60)
    assert follow.returncode == 0 and out == "started\nfinishing\n", err
    proc.communicate(timeout=60)
    assert proc.returncode == 0


def test_reads_through_the_server_without_the_storage(tmp_path: Path) -> None:
    with serve(tmp_path) as served:
        f = sp.pipeline(1, 2, str(tmp_path / "no-flag"))
        f.resolve(sk.LocalResolver(home=served.home, server=served.url, api_key=served.key))
        add = next(r for r in served.store.runs_of_root(f.id) if r.func_name == "add")
        elsewhere = tmp_path / "elsewhere"  # an empty home: the logs can only come from the server
        env = environ(elsewhere, **{settings.SERVER_ENV: served.url, settings.API_KEY_ENV: served.key})
        logs = subprocess.run([CLI, "logs", add.id[:8]], env=env, capture_output=True, text=True, timeout=60)
        assert logs.returncode == 0, logs.stderr
        assert logs.stdout == "adding 1 + 2\n"
        listed = subprocess.run([CLI, "runs", "list", "--func", "add", "-o", "json"], env=env, capture_output=True,
                                text=True, timeout=60)
        assert [i["id"] for i in json.loads(listed.stdout)["items"]] == [add.id]
        with served.client() as client:
            counts = client.get(f"/api/v1/resolutions/{f.id}/counts").json()
            runs = len(served.store.runs_of_root(f.id))
            assert counts == {"resolution_id": f.id, "state": "resolved", "counts": {"resolved": runs}, "total": runs,
                              "waiting": {}, "driver_epoch": 1}  # one driver (the resolver) recorded it
            assert client.get(f"/api/v1/resolutions/{'0' * 32}/counts").status_code == 404
            by_prefix = client.get("/api/v1/runs", params={"id_prefix": add.id[:6]}).json()["items"]
            assert add.id in [r["id"] for r in by_prefix]

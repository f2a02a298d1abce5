"""Baseline: per-run overhead of upstream Sematic 0.41.0 on a fan-out pipeline.

The pipeline is ``pipeline(n) -> total([inc(i) for i in range(n)])``: n + 2 user func runs
(Sematic adds one internal ``_make_list`` future on top). Runners measured:

* ``silent``: ``sematic.SilentRunner``, in memory, nothing recorded.
* ``local``:  ``sematic.LocalRunner``, records every run through Sematic's local API server
  (SQLite). The server is started headless on 127.0.0.1 with a throw-away config dir.

Run it with the interpreter of the venv made by ``bench/sematic_venv.sh``::

    PY=$(bash bench/sematic_venv.sh)
    "$PY" bench/sematic_baseline.py --runner all --sizes 100,1000 --timeout 60

Prints one JSON object per measurement on stdout; logs go to stderr. Every measurement runs in
a fresh subprocess (which first does a warm-up run with n=1), killed after ``--timeout``.
"""

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

try:
    TOOL = f"sematic-{version('sematic')}"
except PackageNotFoundError:  # pragma: no cover - depends on the interpreter used
    sys.exit("sematic is not installed here: run this with the python of bench/sematic_venv.sh")
DEFAULT_SIZES = {"silent": [100, 1000, 2000, 5000], "local": [100, 200]}


def _build_pipeline() -> tuple[Any, Any]:
    """Define the Sematic funcs; return (pipeline, sematic module).

    Sematic is imported only in worker processes: importing it creates its config dir, which
    must be the temp dir chosen by the parent, never ``~/.sematic``.
    """
    import sematic

    @sematic.func
    def inc(i: int) -> int:
        return i + 1

    @sematic.func
    def total(xs: list[int]) -> int:
        return sum(xs)

    @sematic.func
    def pipeline(n: int) -> int:
        return total([inc(i) for i in range(n)])

    return pipeline, sematic


def _worker(runner_name: str, n: int) -> None:
    """Time one pipeline execution in this process and print the raw result as JSON."""
    pipeline, sematic = _build_pipeline()
    runner_cls = sematic.SilentRunner if runner_name == "silent" else sematic.LocalRunner
    runner_cls().run(pipeline(1))  # warm-up: imports, first DB/socket.io connection
    runner = runner_cls()
    start = time.perf_counter()
    result = runner.run(pipeline(n))
    seconds = time.perf_counter() - start
    if result != n * (n + 1) // 2:
        raise RuntimeError(f"wrong result {result!r}")
    futures = getattr(runner, "_futures", None)
    print(json.dumps({"seconds": seconds, "futures": len(futures) if futures is not None else None}))


def _free_port() -> int:
    """Return a currently unused TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _make_env(config_dir: str, port: int) -> dict[str, str]:
    """Environment that keeps Sematic in ``config_dir`` and its traffic on 127.0.0.1."""
    env = dict(os.environ)
    local = f"http://127.0.0.1:{port}"
    env.update(
        SEMATIC_CONFIG_DIR=config_dir,
        DATABASE_URL=f"sqlite:///{config_dir}/db.sqlite3",
        SEMATIC_SERVER_ADDRESS="127.0.0.1",
        SEMATIC_API_ADDRESS=local,
        PORT=str(port),
        # Anything not aimed at loopback goes to a dead local proxy instead of the network.
        http_proxy="http://127.0.0.1:9",
        https_proxy="http://127.0.0.1:9",
        HTTP_PROXY="http://127.0.0.1:9",
        HTTPS_PROXY="http://127.0.0.1:9",
        no_proxy="127.0.0.1,localhost",
        NO_PROXY="127.0.0.1,localhost",
        PYTHONUNBUFFERED="1",
    )
    return env


def _start_server(env: dict[str, str], config_dir: str, timeout: float) -> subprocess.Popen[bytes]:
    """Migrate the SQLite DB and start Sematic's API server in the foreground (no browser)."""
    subprocess.run(
        [sys.executable, "-m", "sematic.cli.main", "migrate"],
        env=env,
        stdout=sys.stderr,
        stderr=sys.stderr,
        timeout=timeout,
        check=True,
    )
    log = open(Path(config_dir) / "server.out", "wb")  # closed when the process exits
    server = subprocess.Popen(
        [sys.executable, "-m", "sematic.api.server", "--debug"], env=env, stdout=log, stderr=log
    )
    url = f"http://127.0.0.1:{env['PORT']}/api/v1/meta/versions"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"server exited with {server.returncode}, see {log.name}")
        try:
            with opener.open(url, timeout=2) as resp:
                print(f"sematic server up: {resp.read().decode()}", file=sys.stderr)
                return server
        except OSError:
            time.sleep(0.2)
    _stop(server)
    raise RuntimeError(f"server not answering on {url} after {timeout} s")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Terminate a child process started here, killing it if it does not stop."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _measure(runner: str, n: int, env: dict[str, str], timeout: float) -> dict[str, object]:
    """Run one measurement in a subprocess and return its JSON record."""
    record: dict[str, object] = {"tool": TOOL, "runner": runner, "fanout": n, "runs": n + 2}
    cmd = [sys.executable, __file__, "--worker", runner, str(n)]
    try:
        proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=sys.stderr, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {**record, "error": f"timeout after {timeout} s"}
    if proc.returncode != 0:
        return {**record, "error": f"worker exited with {proc.returncode} (traceback on stderr)"}
    raw = json.loads(proc.stdout.decode().strip().splitlines()[-1])
    seconds = float(raw["seconds"])
    ms = round(seconds * 1000 / (n + 2), 4)
    return {**record, "seconds": round(seconds, 4), "ms_per_run": ms, "futures": raw["futures"]}


def main() -> None:
    """Parse arguments, run the requested measurements, print JSON lines."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runner", choices=["silent", "local", "all"], default="all")
    parser.add_argument("--sizes", help="comma-separated fan-out sizes (default: per runner)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per measurement")
    parser.add_argument("--keep", action="store_true", help="keep the temp Sematic config dir")
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        _worker(args.worker[0], int(args.worker[1]))
        return

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # still stop the server and clean up
    runners = ["silent", "local"] if args.runner == "all" else [args.runner]
    config_dir = tempfile.mkdtemp(prefix="sematic-bench-")
    env = _make_env(config_dir, _free_port())
    try:
        for runner in runners:
            sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else DEFAULT_SIZES[runner]
            server = None
            error = None
            if runner == "local":
                try:
                    server = _start_server(env, config_dir, args.timeout)
                except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
                    error = f"local server failed: {exc}"
            try:
                for n in sorted(sizes):
                    if error:
                        rec: dict[str, object] = {
                            "tool": TOOL,
                            "runner": runner,
                            "fanout": n,
                            "runs": n + 2,
                            "error": error,
                        }
                    else:
                        rec = _measure(runner, n, env, args.timeout)
                        if "error" in rec:  # larger sizes would fail too
                            error = f"skipped after failure at fanout {n}: {rec['error']}"
                    print(json.dumps(rec), flush=True)
            finally:
                if server is not None:
                    _stop(server)
    finally:
        if args.keep:
            print(f"sematic config dir kept: {config_dir}", file=sys.stderr)
        else:
            shutil.rmtree(config_dir, ignore_errors=True)


if __name__ == "__main__":
    main()

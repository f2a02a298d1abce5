"""Run-state updates per second through the sematic-k8s server, from many concurrent clients.

A driver dispatching 1,000 concurrent runs sends, per run, state updates (scheduled -> running ->
resolved). Here 1,000 runs' worth of updates arrive from many concurrent clients at once, as single-run
writes (one ``POST /api/v1/store/write`` per update) and as batches (what the resolution loop's flushes
send). The server runs in its own process (uvicorn, API keys on) over SQLite, and over PostgreSQL when
its binaries are installed. Run with ``make bench`` or ``python -m bench.server_load``.
"""

from __future__ import annotations

import argparse
import itertools
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from contextlib import ExitStack
from pathlib import Path

import httpx

from sematic_k8s.store.http import batch_to_json, dumps
from sematic_k8s.store.records import Batch, ResolutionRecord, RunRecord, utcnow

REPO = Path(__file__).resolve().parents[1]
STATES = ("scheduled", "running", "resolved")


def _env() -> dict[str, str]:
    roots = [str(REPO), str(REPO / "server"), os.environ.get("PYTHONPATH", "")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(r for r in roots if r), "SEMATIC_K8S_LOG_LEVEL": "warning"}


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(home: Path, db_url: str | None, stack: ExitStack) -> tuple[str, str]:
    """``sematic-k8s server`` in a subprocess; returns (url, api key)."""
    cli = [sys.executable, "-m", "sematic_k8s_server.cli"]
    db = ["--db-url", db_url] if db_url else []
    key = subprocess.run([*cli, "api-keys", "create", "bench", "--home", str(home), *db], env=_env(), check=True,
                         capture_output=True, text=True).stdout.strip().splitlines()[-1]
    port = _free_port()
    proc = subprocess.Popen([*cli, "server", "--port", str(port), "--home", str(home), *db], env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    stack.callback(lambda: (proc.terminate(), proc.wait(15)))
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(url + "/api/v1/health").status_code == 200:
                return url, key
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline or proc.poll() is not None:
            raise RuntimeError("the server did not start")
        time.sleep(0.05)


def seed(url: str, key: str, n_runs: int) -> list[str]:
    """A running resolution with ``n_runs`` created runs; returns their ids."""
    root = uuid.uuid4().hex
    batch = Batch()
    batch.add_resolution(ResolutionRecord(id=root, root_func_path="bench:fan", state="running", created_at=utcnow()))
    ids = [uuid.uuid4().hex for _ in range(n_runs)]
    for run_id in ids:
        batch.add_run(RunRecord(id=run_id, root_id=root, parent_id=None, func_path="bench:inc", func_name="inc",
                                state="created", created_at=utcnow()))
    r = httpx.post(url + "/api/v1/store/write", content=dumps(batch_to_json(batch)),
                   headers={"X-API-Key": key, "Content-Type": "application/json"}, timeout=120)
    r.raise_for_status()
    return ids


def _load(url: str, key: str, bodies: list[bytes], clients: int) -> dict:
    """POST every body from ``clients`` threads, each with its own keep-alive connection; req/s, latencies."""
    latencies: list[float] = []
    errors: list[str] = []
    next_index = itertools.count()  # thread-safe in CPython
    barrier = threading.Barrier(clients + 1)

    def worker() -> None:
        with httpx.Client(base_url=url, timeout=120,
                          headers={"X-API-Key": key, "Content-Type": "application/json"}) as client:
            barrier.wait()
            while (i := next(next_index)) < len(bodies):
                t0 = time.perf_counter()
                try:
                    r = client.post("/api/v1/store/write", content=bodies[i])
                    if r.status_code != 200:
                        errors.append(f"HTTP {r.status_code}: {r.text[:200]}")
                except httpx.HTTPError as e:
                    errors.append(f"{type(e).__name__}: {e}")
                latencies.append(time.perf_counter() - t0)

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - start
    if errors:
        print(f"{len(errors)} errors, e.g. {errors[0]}", file=sys.stderr)
    latencies.sort()
    return {"requests": len(bodies), "seconds": seconds, "req_s": len(bodies) / seconds, "errors": len(errors),
            "p50_ms": 1000 * latencies[len(latencies) // 2], "p99_ms": 1000 * latencies[int(len(latencies) * 0.99)]}


def single_updates(ids: list[str]) -> list[bytes]:
    """One request per state change per run, state by state (all runs scheduled, then running, ...)."""
    out = []
    for state in STATES:
        for run_id in ids:
            fields = {"state": state, **({"ended_at": utcnow()} if state == "resolved" else {})}
            out.append(dumps(batch_to_json(Batch(run_updates={run_id: fields}))))
    return out


def batched_updates(ids: list[str], size: int) -> list[bytes]:
    out = []
    for state in STATES:
        for i in range(0, len(ids), size):
            out.append(dumps(batch_to_json(Batch(run_updates={r: {"state": state} for r in ids[i:i + size]}))))
    return out


def bench_backend(name: str, db_url: str | None, runs: int, clients: list[int], batch: int) -> list[dict]:
    rows = []
    with ExitStack() as stack, tempfile.TemporaryDirectory() as home:
        url, key = start_server(Path(home), db_url, stack)
        for c in clients:
            ids = seed(url, key, runs)
            r = _load(url, key, single_updates(ids), c)
            rows.append({"db": name, "kind": "single-run update", "clients": c, **r, "updates_s": r["req_s"]})
        ids = seed(url, key, runs)
        c = min(clients[-1], runs // batch * len(STATES))
        r = _load(url, key, batched_updates(ids, batch), c)
        rows.append({"db": name, "kind": f"batch of {batch}", "clients": c, **r, "updates_s": r["req_s"] * batch})
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=1000, help="concurrent runs whose states are updated")
    parser.add_argument("--clients", type=int, nargs="+", default=[50, 1000], help="concurrent clients")
    parser.add_argument("--batch", type=int, default=50, help="runs per batched write")
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args(argv)
    rows = bench_backend("sqlite", None, args.runs, args.clients, args.batch)
    sys.path.insert(0, str(REPO / "tests" / "support"))
    from pgcluster import create_database, pg_bin, postgres_cluster
    bin_dir = None if args.no_postgres else pg_bin()
    if bin_dir is None:
        print("(PostgreSQL not installed here: SQLite only)", file=sys.stderr)
    else:
        with postgres_cluster(bin_dir) as server:
            rows += bench_backend("postgresql", create_database(server, "bench"), args.runs, args.clients, args.batch)
    print(f"\nserver load: {args.runs} runs x {len(STATES)} state updates, POST /api/v1/store/write, API keys on, "
          f"one uvicorn process; clients are threads on the same {os.cpu_count()}-CPU machine")
    header = f"{'db':<11} {'write':<18} {'clients':>7} {'requests':>8} {'req/s':>8} {'updates/s':>10} " \
             f"{'p50 ms':>7} {'p99 ms':>8} {'errors':>6}"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['db']:<11} {r['kind']:<18} {r['clients']:>7} {r['requests']:>8} {r['req_s']:>8.0f} "
              f"{r['updates_s']:>10.0f} {r['p50_ms']:>7.1f} {r['p99_ms']:>8.1f} {r['errors']:>6}")


if __name__ == "__main__":
    main()

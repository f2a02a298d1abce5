"""Run-state updates per second through the sematic-k8s server, from many concurrent clients.

A driver dispatching 1,000 concurrent runs sends, per run, state updates (scheduled -> running ->
resolved). Here 1,000 runs' worth of updates arrive from many concurrent clients at once, as single-run
writes (one ``POST /api/v1/store/write`` per update) and as batches (what the resolution loop's flushes
send). The server runs in its own process (uvicorn, API keys on) over SQLite, and over PostgreSQL when
its binaries are installed. Run with ``make bench`` or ``python -m bench.server_load``
(``--server-arg=--workers --server-arg=2`` for two server processes).

Two load models, both reported:

- closed (the ``closed`` rows): each of the connections sends its next request as soon as the previous one is
  answered. This measures the most the server can do (its throughput), but not its latency: with N
  connections always busy, N requests are always queued, so by Little's law latency is about N / throughput
  whatever the server does (1,000 connections at 2,000/s: 0.5 s). A closed-loop p99 is the queue length of a
  saturated server, and a stalled server is not charged for the requests it kept from being sent
  ("coordinated omission").
- open (the ``2000/s`` rows, ``--rate``, ``--seconds``): as wrk2 and Gatling's open model do, request ``i`` is
  due at ``i / rate`` seconds, on connection ``i % N``, whatever happened to the ones before, and its latency
  counts from when it was due. This is what clients see at that offered rate; a server that cannot keep up
  with it falls behind and its latencies grow without bound (the achieved rate says so).

Each figure is against a baseline measured in the same run: the same connections sending as many
``GET /api/v1/health`` (no key, no body, no database; a FastAPI route run on its thread pool), as requests per
second and as the server's CPU time per request (which the machine's other load skews less than rates do).
See :data:`FINDINGS` for what bounded the server when it was profiled.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx

from sematic_k8s.store.records import Batch, ResolutionRecord, RunRecord, utcnow
from sematic_k8s.store.wire import batch_to_json, dumps

REPO = Path(__file__).resolve().parents[1]
FINDINGS = """\
What bounds it (py-spy on the server under 1,000 connections, PostgreSQL; issue 14):
- at first: 280-450 updates/s, p99 3-10 s. Per request, a credential query on a pooled connection (with the pool's
  pre-ping and the rollback on return: three round trips, 42% of the samples) and a transaction of its own (33%),
  each on a worker thread; JSON and validation were a few percent, the event fan-out nothing (no subscribers).
- then: the requests waiting at one moment share one credential query and one transaction (coalesce.py,
  writes.py), and /store/write skips FastAPI's routing and dependency solving (fastpath.py). Closed loop
  1,735/s (one process), 2,163/s (--workers 2); open model at 2,000/s (--workers 2): p99 0.7-2.3 s, and
  deadlocks between the two processes' transactions (503s) once their batches mixed field sets.
- now: /store/write is one coroutine in front of the app (fastpath.py): FastAPI's own middleware (its
  telemetry check on every request, its body limit), Starlette's error middleware and the Guard as a layer cost
  a frame resumed per layer on every await; the credential and update statements are built once; updated rows
  are locked in id order (SqlStore.write: no deadlocks; one aborted all the same is retried); live events go
  out on the relay's own thread (a write no longer waits for a NOTIFY transaction). About 0.25-0.45 ms of server
  CPU per update, 0.3-0.5x a GET /health (a FastAPI route on the thread pool). What remains: uvicorn's HTTP
  (parsing, a task per request, sends: about a third), the coalescers' thread hand-offs, the batched SQL, pydantic
  and the Batch conversion. Offered 2,000/s, one process answers with p99 0.18-0.47 s when the machine's other
  work leaves it its share of the 2 cores (PostgreSQL and the load generator run on them too); --workers 2 does
  more at most (closed loop) but its p99 at 2,000/s is higher here (0.3-0.7 s): two processes, PostgreSQL and the
  load generator contend for 2 cores, and each process's batches are half as large."""
STATES = ("scheduled", "running", "resolved")


def _env() -> dict[str, str]:
    roots = [str(REPO), str(REPO / "server"), os.environ.get("PYTHONPATH", "")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(r for r in roots if r), "SEMATIC_K8S_LOG_LEVEL": "warning"}


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) used so far by process ``pid`` and its children (uvicorn's workers): unlike
    wall-clock rates, it does not depend on what else the machine's cores are doing."""
    tick = os.sysconf("SC_CLK_TCK")
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, IndexError):
            continue
    return total


def start_server(home: Path, db_url: str | None, stack: ExitStack, server_args: list[str]) -> tuple[str, str, int]:
    """``sematic-k8s server`` in a subprocess; returns (url, api key, its pid)."""
    cli = [sys.executable, "-m", "sematic_k8s_server.cli"]
    db = ["--db-url", db_url] if db_url else []
    key = subprocess.run([*cli, "api-keys", "create", "bench", "--home", str(home), *db], env=_env(), check=True,
                         capture_output=True, text=True).stdout.strip().splitlines()[-1]
    port = _free_port()
    proc = subprocess.Popen([*cli, "server", "--port", str(port), "--home", str(home), *db, *server_args], env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    stack.callback(lambda: (proc.terminate(), proc.wait(15)))
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(url + "/api/v1/health").status_code == 200:
                return url, key, proc.pid
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


class _Conn:
    """One keep-alive HTTP/1.1 connection, spoken by hand: the load generator must cost far less than the
    server it measures (it shares the machine's cores with it)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def request(self, head: bytes, body: bytes) -> tuple[int, bytes]:
        self.writer.write(head + str(len(body)).encode() + b"\r\n\r\n" + body)
        header = await self.reader.readuntil(b"\r\n\r\n")
        status = int(header[9:12])
        length = 0
        for line in header.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        return status, await self.reader.readexactly(length)


async def _aload(url: str, key: str, method: str, path: str, bodies: list[bytes], clients: int) -> dict:
    host, port = url.removeprefix("http://").split(":")
    head = (f"{method} {path} HTTP/1.1\r\nHost: {host}:{port}\r\nX-API-Key: {key}\r\n"
            "Content-Type: application/json\r\nContent-Length: ").encode()
    latencies: list[float] = []
    errors: list[str] = []
    next_index = itertools.count()
    conns = [_Conn(*await asyncio.open_connection(host, int(port))) for _ in range(clients)]

    async def worker(conn: _Conn) -> None:
        while (i := next(next_index)) < len(bodies):
            t0 = time.perf_counter()
            conn = await _send(conn, (host, int(port)), head, bodies[i], errors)
            latencies.append(time.perf_counter() - t0)

    start = time.perf_counter()
    await asyncio.gather(*(worker(c) for c in conns))
    return _summary(conns, len(bodies), time.perf_counter() - start, latencies, errors)


async def _aopen(url: str, key: str, method: str, path: str, bodies: list[bytes], clients: int,
                 rate: float) -> dict:
    """The open model (wrk2's, Gatling's): request ``i`` is due at ``i / rate`` seconds, on connection
    ``i % clients``, whatever the server did with the ones before; its latency counts from when it was due, so
    a request that waits for its connection (still busy with the one before) or for a stalled server is
    charged for the wait (no coordinated omission)."""
    host, port = url.removeprefix("http://").split(":")
    head = (f"{method} {path} HTTP/1.1\r\nHost: {host}:{port}\r\nX-API-Key: {key}\r\n"
            "Content-Type: application/json\r\nContent-Length: ").encode()
    latencies: list[float] = []
    errors: list[str] = []
    conns = [_Conn(*await asyncio.open_connection(host, int(port))) for _ in range(clients)]
    start = time.perf_counter() + 0.1

    async def worker(k: int, conn: _Conn) -> None:
        for i in range(k, len(bodies), clients):
            due = start + i / rate
            if (wait := due - time.perf_counter()) > 0:
                await asyncio.sleep(wait)
            conn = await _send(conn, (host, int(port)), head, bodies[i], errors)
            latencies.append(time.perf_counter() - due)

    await asyncio.gather(*(worker(k, c) for k, c in enumerate(conns)))
    return _summary(conns, len(bodies), time.perf_counter() - start, latencies, errors)


async def _send(conn: _Conn, address: tuple[str, int], head: bytes, body: bytes, errors: list[str]) -> _Conn:
    """One request on ``conn``; a failure or a status other than 200 goes into ``errors``, and a connection that
    failed is replaced by a new one to ``address`` (returned)."""
    try:
        status, text = await conn.request(head, body)
        if status != 200:
            errors.append(f"HTTP {status}: {text[:200]!r}")
    except (OSError, asyncio.IncompleteReadError, ValueError) as e:
        errors.append(f"{type(e).__name__}: {e}")
        conn.writer.close()
        conn = _Conn(*await asyncio.open_connection(*address))
    return conn


def _summary(conns: list[_Conn], requests: int, seconds: float, latencies: list[float], errors: list[str]) -> dict:
    """Close the connections; the rate, latency percentiles and errors of a load."""
    for c in conns:
        c.writer.close()
    if errors:
        print(f"{len(errors)} errors, e.g. {errors[0]}", file=sys.stderr)
    latencies.sort()
    return {"requests": requests, "seconds": seconds, "req_s": requests / seconds, "errors": len(errors),
            "p50_ms": 1000 * latencies[len(latencies) // 2], "p99_ms": 1000 * latencies[int(len(latencies) * 0.99)],
            "max_ms": 1000 * latencies[-1]}


def _run(coroutine: Any) -> dict:  # noqa: ANN401 - a coroutine
    try:
        import uvloop
        return uvloop.run(coroutine)
    except ImportError:
        return asyncio.run(coroutine)


def _load(url: str, key: str, bodies: list[bytes], clients: int, method: str = "POST",
          path: str = "/api/v1/store/write", rate: float | None = None) -> dict:
    """Send every body from ``clients`` concurrent keep-alive connections, each as soon as its connection's
    previous one is answered (closed) or at ``rate`` requests per second in all (open); req/s, latencies,
    errors."""
    if rate is None:
        return _run(_aload(url, key, method, path, bodies, clients))
    return _run(_aopen(url, key, method, path, bodies, clients, rate))


def single_updates(ids: list[str]) -> list[bytes]:
    """One request per state change per run, state by state (all runs scheduled, then running, ...)."""
    out = []
    for state in STATES:
        for run_id in ids:
            fields = {"state": state, **({"ended_at": utcnow()} if state == "resolved" else {})}
            out.append(dumps(batch_to_json(Batch(run_updates={run_id: fields}))))
    return out


def single_updates_by_run(ids: list[str]) -> list[list[bytes]]:
    """:func:`single_updates`, one list per run (its states in order)."""
    per_state = len(ids)
    flat = single_updates(ids)
    return [[flat[k * per_state + i] for k in range(len(STATES))] for i in range(per_state)]


def _interleaved(by_run: list[list[bytes]], runs: int) -> list[bytes]:
    """The runs' updates ``runs`` runs at a time, state by state within each group (as :func:`single_updates`
    orders them): at most ``runs`` runs in flight at once, each moved forward once per state."""
    out: list[bytes] = []
    for i in range(0, len(by_run), runs):
        group = by_run[i:i + runs]
        out += [updates[k] for k in range(len(STATES)) for updates in group]
    return out


def batched_updates(ids: list[str], size: int) -> list[bytes]:
    out = []
    for state in STATES:
        for i in range(0, len(ids), size):
            out.append(dumps(batch_to_json(Batch(run_updates={r: {"state": state} for r in ids[i:i + size]}))))
    return out


def bench_backend(name: str, db_url: str | None, runs: int, clients: list[int], batch: int,
                  server_args: list[str], rate: float = 0, seconds: float = 0) -> list[dict]:
    rows = []
    with ExitStack() as stack, tempfile.TemporaryDirectory() as home:
        url, key, pid = start_server(Path(home), db_url, stack, server_args)

        def measured(bodies: list[bytes], c: int, *how: Any) -> dict:  # noqa: ANN401 - _load's arguments
            cpu = cpu_seconds(pid)
            r = _load(url, key, bodies, c, *how)
            return {**r, "cpu_ms": 1000 * (cpu_seconds(pid) - cpu) / len(bodies)}

        n = runs * len(STATES)
        for c in clients:
            # the baseline, same server, same connections and request count: a trivial endpoint (no body, no
            # key, no database): what HTTP, the framework and this load generator cost on this machine now
            base = measured([b""] * n, c, "GET", "/api/v1/health")
            rows.append({"db": name, "kind": "baseline: GET health", "clients": c, **base, "updates_s": 0.0})
            ids = seed(url, key, runs)
            r = measured(single_updates(ids), c)
            rows.append({"db": name, "kind": "single-run update", "clients": c, **r, "updates_s": r["req_s"],
                         "ratio": r["req_s"] / base["req_s"], "cpu_ratio": r["cpu_ms"] / base["cpu_ms"]})
        ids = seed(url, key, runs)
        c = min(clients[-1], runs // batch * len(STATES))
        r = measured(batched_updates(ids, batch), c)
        rows.append({"db": name, "kind": f"batch of {batch}", "clients": c, **r, "updates_s": r["req_s"] * batch})
        if rate:  # the open model at the most connections: the latency at that offered rate
            c, n = clients[-1], int(rate * seconds)
            base = measured([b""] * n, c, "GET", "/api/v1/health", rate)
            rows.append({"db": name, "kind": "baseline: GET health", "offered": rate, "clients": c, **base,
                         "updates_s": 0.0})
            # runs enough for every request to move one forward (scheduled -> running -> resolved), each once: a
            # resolved run's state is final (the store refuses to set it back), so the updates cannot go round
            ids = [run_id for _ in range(0, -(-n // len(STATES)), runs) for run_id in seed(url, key, runs)]
            updates = _interleaved(single_updates_by_run(ids[:-(-n // len(STATES))]), runs)[:n]
            r = measured(updates, c, "POST", "/api/v1/store/write", rate)
            rows.append({"db": name, "kind": "single-run update", "offered": rate, "clients": c, **r,
                         "updates_s": r["req_s"], "cpu_ratio": r["cpu_ms"] / base["cpu_ms"]})
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=1000, help="concurrent runs whose states are updated")
    parser.add_argument("--clients", type=int, nargs="+", default=[50, 1000], help="concurrent clients")
    parser.add_argument("--batch", type=int, default=50, help="runs per batched write")
    parser.add_argument("--rate", type=float, default=2000, help="offered requests/s of the open-model rows "
                        "(sent at their scheduled times on the most connections; 0: none)")
    parser.add_argument("--seconds", type=float, default=10, help="how long the open-model rows offer --rate")
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--no-sqlite", action="store_true")
    parser.add_argument("--server-arg", action="append", default=[], help="passed to `sematic-k8s server`")
    args = parser.parse_args(argv)
    how = (args.runs, args.clients, args.batch, args.server_arg, args.rate, args.seconds)
    rows = [] if args.no_sqlite else bench_backend("sqlite", None, *how)
    sys.path.insert(0, str(REPO / "tests" / "support"))
    from pgcluster import create_database, pg_bin, postgres_cluster
    bin_dir = None if args.no_postgres else pg_bin()
    if bin_dir is None:
        print("(PostgreSQL not installed here: SQLite only)", file=sys.stderr)
    else:
        with postgres_cluster(bin_dir) as server:
            rows += bench_backend("postgresql", create_database(server, "bench"), *how)
    print(f"\nserver load: {args.runs} runs x {len(STATES)} state updates, POST /api/v1/store/write, API keys on, "
          f"`sematic-k8s server {' '.join(args.server_arg)}`; clients are {max(args.clients)} keep-alive connections "
          f"of one asyncio process on the same {os.cpu_count()}-CPU machine. Baseline: the same connections sending "
          "as many GET /api/v1/health (no key, no body, no database) to the same server in the same run")
    header = f"{'db':<11} {'requests':<21} {'offered':>8} {'clients':>7} {'count':>6} {'req/s':>7} " \
             f"{'updates/s':>10} {'p50 ms':>7} {'p99 ms':>8} {'max ms':>8} {'errors':>6} {'req/s vs base':>13} " \
             f"{'server CPU ms/req':>17} {'CPU vs base':>11}"
    print(header)
    print("-" * len(header))
    for r in rows:
        ratio = f"{r['ratio']:.2f}x" if "ratio" in r else ""
        cpu_ratio = f"{r['cpu_ratio']:.2f}x" if "cpu_ratio" in r else ""
        offered = f"{r['offered']:.0f}/s" if "offered" in r else "closed"
        print(f"{r['db']:<11} {r['kind']:<21} {offered:>8} {r['clients']:>7} {r['requests']:>6} {r['req_s']:>7.0f} "
              f"{r['updates_s']:>10.0f} {r['p50_ms']:>7.1f} {r['p99_ms']:>8.1f} {r['max_ms']:>8.1f} {r['errors']:>6} "
              f"{ratio:>13} {r['cpu_ms']:>17.2f} {cpu_ratio:>11}")
    print("\n" + FINDINGS)


if __name__ == "__main__":
    main()

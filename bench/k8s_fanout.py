"""A fan-out through the Kubernetes executor on the cluster model (tests/support/kube_model): API calls per run and
the driver's memory.

The pipeline is ``cubes(n) = total([cube(i) for i in range(n)])``: n worker Jobs, resolved by the driver's own
loop and KubernetesExecutor in this process. The cluster model runs in a child process (so that the driver's
memory is its own): an API server on 127.0.0.1, the Job controller, a scheduler and one simulated node with room
for ``--capacity`` pods at a time (200), whose kubelet runs each worker's real code (``run_task``) in-process. A
fan-out larger than the cluster waits for capacity (pods Unschedulable, then scheduled as others end).

Reported, for ``--runs`` (5000) and a baseline of ``--baseline`` runs (200) measured in the same invocation:
API calls by the driver per run (by verb and resource), wall time per run, and the driver's peak memory (max RSS
growth over the resolution) per run, each as a ratio to the baseline's. ``python -m bench.k8s_fanout --runs 500``
is a quicker look.

Measured (2 cores shared with other work, so wall times are loose; ``python -m bench.k8s_fanout``)::

      runs API calls  per run     wall   per run  max RSS   growth
       200       206     1.03     1.8s    9.02ms  113.5MB    2.6MB
      5000      5006    1.001   113.6s   22.71ms  181.9MB   67.4MB

One create per run; one list and one watch each of pods, Jobs and Warning Events for the whole fan-out (Events
of blocking kinds only are kept). The driver keeps about 13 KB per run (its records and graph); watch threads
keep only what the executor reads of each pod, and take events in during bursts of creates, so no backlog
builds up. The model's Job controller paces pod creation (about 45 pods/s here), so in this benchmark pods
seldom have to wait for capacity; waiting is exercised by ``tests/k8s/test_executor_on_model.py``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "support"))

import sematic_k8s as sk  # noqa: E402
from sematic_k8s.executors.inline import InlineExecutor  # noqa: E402
from sematic_k8s.executors.inline_or_remote import InlineOrRemoteExecutor  # noqa: E402
from sematic_k8s.executors.kubernetes import KubernetesExecutor  # noqa: E402
from sematic_k8s.executors.remote import run_task  # noqa: E402
from sematic_k8s.resolvers.loop import ResolutionLoop  # noqa: E402
from sematic_k8s.settings import STORAGE_ENV, TASK_ENV  # noqa: E402
from sematic_k8s.specs import ResolutionSettings, TaskSpec  # noqa: E402
from sematic_k8s.storage.local import LocalStorage  # noqa: E402
from sematic_k8s.storage.urls import storage_from_url, storage_url  # noqa: E402
from sematic_k8s.store import sql_store  # noqa: E402

NS = "bench"
IMAGE = "127.0.0.1:5000/bench@sha256:" + "0" * 64


@sk.func(inline=False, cpu="10m", memory="16Mi")
def cube(x: int) -> int:
    return x * x * x


@sk.func
def total(xs: list[int]) -> int:
    return sum(xs)


@sk.func
def cubes(n: int) -> int:
    return total([cube(i) for i in range(n)])


def _worker(ctx: Any) -> int:
    """The simulated kubelet's container: what ``python -m sematic_k8s.worker`` does, in the model's process."""
    doc = run_task(TaskSpec.from_json(ctx.env[TASK_ENV]), storage_from_url(ctx.env[STORAGE_ENV]))
    return 1 if "error" in doc else 0


def _cluster(conn: Any, capacity: int) -> None:
    """The child process: serve the model until told to stop; then send the driver's calls by kind."""
    import logging

    from kube_model import Cluster, NodeSpec, Script

    logging.getLogger("kube_model").setLevel(logging.ERROR)
    node = NodeSpec("node-1", runtime="sim", pods=capacity, cpu="1000", memory="4000Gi")
    with Cluster([node], behaviour=lambda pod, c: Script(func=_worker), tls=False) as k:
        k.namespace(NS)
        conn.send((k.url, k.admin_token))
        conn.recv()  # the resolution ended
        kinds: Counter = Counter()
        for r in k.calls(user="kube-model-admin"):
            watch = r.query.get("watch") == "true"
            kinds[f"{'watch' if watch else r.verb} {r.resource_path}"] += 1
        unschedulable = sum(1 for e in k.list("events", NS) if e.get("reason") == "FailedScheduling")
        conn.send((dict(kinds), unschedulable, k.errors[:3]))


def max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def measure(n: int, capacity: int, rate: float) -> dict[str, Any]:
    from kubernetes import client

    ctx = multiprocessing.get_context("fork")
    here, there = ctx.Pipe()
    child = ctx.Process(target=_cluster, args=(there, capacity), daemon=True)
    child.start()
    try:
        url, token = here.recv()
        with tempfile.TemporaryDirectory() as home:
            storage = LocalStorage(Path(home) / "storage")
            store = sql_store(f"sqlite:///{home}/db.sqlite3")
            config = client.Configuration(host=url)
            config.api_key, config.api_key_prefix = {"authorization": token}, {"authorization": "Bearer"}
            api = client.ApiClient(config)
            ex = KubernetesExecutor(storage, storage_url(storage), IMAGE, namespace=NS, api_client=api, env={},
                                    owner=False, creates_per_second=rate)
            loop = ResolutionLoop(store, storage, InlineOrRemoteExecutor(InlineExecutor(1), ex),
                                  ResolutionSettings(max_parallelism=n), kind="cloud")
            rss_before = max_rss_mb()
            start = time.perf_counter()
            value = loop.run(cubes(n))
            wall = time.perf_counter() - start
            rss_after = max_rss_mb()
            api.close()
        assert value == sum(i**3 for i in range(n)), value
        here.send("done")
        kinds, unschedulable, errors = here.recv()
    finally:
        child.join(60)
        if child.is_alive():
            child.kill()
    calls = sum(kinds.values())
    return {"runs": n, "capacity": capacity, "wall_s": round(wall, 1), "ms_per_run": round(wall / n * 1000, 2),
            "api_calls": calls, "calls_per_run": round(calls / n, 3), "by_kind": kinds,
            "failed_scheduling_events": unschedulable, "waits": dict(ex.stats.waits),
            "driver_max_rss_mb": round(rss_after, 1), "driver_rss_growth_mb": round(rss_after - rss_before, 1),
            "kb_per_run": round((rss_after - rss_before) * 1024 / n, 2), "model_errors": errors}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5000, help="runs in the fan-out (default 5000)")
    parser.add_argument("--baseline", type=int, default=200, help="runs in the baseline fan-out (default 200)")
    parser.add_argument("--capacity", type=int, default=200, help="pods the cluster runs at a time (default 200)")
    parser.add_argument("--rate", type=float, default=0, help="Job creations per second (0: no limit)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("SEMATIC_K8S_HEARTBEAT_INTERVAL", "5")
    base = measure(args.baseline, args.capacity, args.rate)
    big = measure(args.runs, args.capacity, args.rate)
    ratios = {"calls_per_run": round(big["calls_per_run"] / base["calls_per_run"], 3),
              "ms_per_run": round(big["ms_per_run"] / base["ms_per_run"], 2),
              "kb_per_run": round(big["kb_per_run"] / base["kb_per_run"], 2) if base["kb_per_run"] > 0 else None}
    if args.json:
        print(json.dumps({"baseline": base, "fanout": big, "ratio_to_baseline": ratios}, indent=2))
        return
    print(f"k8s fan-out on the cluster model (room for {args.capacity} pods at a time)")
    print(f"{'runs':>6} {'API calls':>9} {'per run':>8} {'wall':>8} {'per run':>9} {'max RSS':>8} {'growth':>8}"
          f"  by kind")
    for r in (base, big):
        print(f"{r['runs']:>6} {r['api_calls']:>9} {r['calls_per_run']:>8} {r['wall_s']:>7}s "
              f"{r['ms_per_run']:>7}ms {r['driver_max_rss_mb']:>6}MB {r['driver_rss_growth_mb']:>6}MB  "
              f"{r['by_kind']}")
    print(f"{big['runs']} runs vs {base['runs']}: API calls per run x{ratios['calls_per_run']}, time per run "
          f"x{ratios['ms_per_run']}, memory per run x{ratios['kb_per_run']}; waited for capacity: "
          f"{big['waits'].get('waiting for capacity', 0)} runs ({big['failed_scheduling_events']} FailedScheduling "
          f"Events)")
    for r in (base, big):
        if r["model_errors"]:
            print(f"cluster model errors ({r['runs']} runs): {r['model_errors']}")


if __name__ == "__main__":
    main()

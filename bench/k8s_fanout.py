"""API calls and time of a fan-out through the Kubernetes executor, against the API stand-in on 127.0.0.1.

The pipeline is ``cubes(n) = total([cube(i) for i in range(n)])``: n worker Jobs. A fake Job controller
(tests/support/kmock_k8s.py) runs each worker in-process and creates its pod already finished, so the figures are
the executor's and the resolution loop's own: Job creates, list and watch calls, wall time per run.

Measured (2 cores, kubernetes 37.0.2, kmock 0.8; ``python -m bench.k8s_fanout``):

    runs  rate   API calls by the executor                               per run  wall    per run
    100   none   100 POST jobs + list and watch of pods and of jobs (4)  1.04     0.7 s   7.0 ms
    1000  none   1000 POST jobs + list and watch of pods and of jobs (4) 1.004    6.8 s   6.8 ms
    100   20/s   100 POST jobs + 4                                       1.04     4.1 s   (80 creates past the
                                                                                          burst of 20, at 20/s)

No per-run polling: endings arrive on two watch streams; reads of pod logs happen only for failed pods. With
the default creation limit (20 Jobs/s) a 1000-run fan-out takes 50 s to launch: ``--rate 20`` shows it.
"""

from __future__ import annotations

import argparse
import json
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
from sematic_k8s.specs import ResolutionSettings, TaskSpec  # noqa: E402
from sematic_k8s.storage.local import LocalStorage  # noqa: E402
from sematic_k8s.storage.urls import storage_from_url, storage_url  # noqa: E402
from sematic_k8s.store import sql_store  # noqa: E402

NS = "bench"
IMAGE = "127.0.0.1:5000/bench@sha256:" + "0" * 64


@sk.func(inline=False)
def cube(x: int) -> int:
    return x * x * x


@sk.func
def total(xs: list[int]) -> int:
    return sum(xs)


@sk.func
def cubes(n: int) -> int:
    return total([cube(i) for i in range(n)])


def born_done(job: dict[str, Any]) -> dict[str, Any]:
    """The fake kubelet: run the worker now, and create the pod already ended."""
    env = {e["name"]: e.get("value") for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    doc = run_task(TaskSpec.from_json(env["SEMATIC_K8S_TASK"]), storage_from_url(env["SEMATIC_K8S_STORAGE"]))
    return {"phase": "Failed" if "error" in doc else "Succeeded"}


def calls_by_kind(emu: Any) -> Counter:
    kinds: Counter = Counter()
    for c in emu.agent_calls():
        last = c.path.rsplit("/", 1)[-1]
        if c.method == "GET" and c.params.get("watch") == "true":
            kinds[f"watch {last}"] += 1
        elif c.method == "GET" and last in ("pods", "jobs"):
            kinds[f"list {last}"] += 1
        else:
            kinds[f"{c.method} {last if last in ('pods', 'jobs') else 'one object'}"] += 1
    return kinds


def measure(n: int, rate: float) -> dict[str, Any]:
    from kubernetes import client

    from kmock_k8s import FakeJobController, serve_k8s

    with tempfile.TemporaryDirectory() as home, serve_k8s() as (emu, url):
        storage = LocalStorage(Path(home) / "storage")
        store = sql_store(f"sqlite:///{home}/db.sqlite3")
        api = client.ApiClient(client.Configuration(host=url))
        with FakeJobController(emu, url, NS, lambda pod: None, pod_status=born_done):
            ex = KubernetesExecutor(storage, storage_url(storage), IMAGE, namespace=NS, api_client=api, env={},
                                    owner=False, creates_per_second=rate)
            loop = ResolutionLoop(store, storage, InlineOrRemoteExecutor(InlineExecutor(1), ex),
                                  ResolutionSettings(max_parallelism=n), kind="cloud")
            start = time.perf_counter()
            value = loop.run(cubes(n))
            wall = time.perf_counter() - start
        assert value == sum(i**3 for i in range(n))
        kinds = calls_by_kind(emu)
        api.close()
    total_calls = sum(kinds.values())
    return {"runs": n, "rate": rate, "wall_s": round(wall, 2), "ms_per_run": round(wall / n * 1000, 2),
            "api_calls": total_calls, "calls_per_run": round(total_calls / n, 3), "by_kind": dict(kinds),
            "creation_wait_s": round(ex.bucket.waited, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,1000")
    parser.add_argument("--rate", type=float, default=0, help="Job creations per second (0: no limit)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results = [measure(int(n), args.rate) for n in args.sizes.split(",")]
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"{'runs':>6} {'API calls':>9} {'per run':>8} {'wall':>8} {'per run':>9}  by kind")
    for r in results:
        print(f"{r['runs']:>6} {r['api_calls']:>9} {r['calls_per_run']:>8} {r['wall_s']:>7}s "
              f"{r['ms_per_run']:>7}ms  {r['by_kind']}")


if __name__ == "__main__":
    main()

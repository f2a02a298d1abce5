"""The end-to-end pipelines, resolved on a real cluster by ``e2e/run.sh`` (``make e2e``).

Run from the repository root (the CloudResolver packages the current directory into the image)::

    python -m e2e.pipelines --namespace NS --out ids.json

with $SEMATIC_K8S_SERVER, $SEMATIC_K8S_API_KEY, $SEMATIC_K8S_STORAGE, $SEMATIC_K8S_REGISTRY,
$SEMATIC_K8S_BASE_IMAGE and the S3 settings in the environment, and kubectl pointing at the cluster.

It resolves, each with ``CloudResolver(executor="kubernetes")``:

1. the example pipeline (examples/pipeline.py): inline funcs, so everything runs in the driver pod;
2. the same shape with pod funcs (cpu/memory requests): one worker pod per ``load``/``scale``/``mean`` run;
3. (2) again in the same cache namespace: ``load`` is a cache hit, reusing the first output;
4. a rerun of (2) from one ``mean`` run: that run and what depends on it run again, the rest is reused.

After each one it checks the result, the recorded runs, and that
``kubectl get pods -l sematic-k8s/resolution-id=<id>`` lists the resolution's pods (the driver's, and the
workers' where funcs run in pods). Exits non-zero with "e2e FAILED: ..." on the first failed check.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import uuid
from typing import Any

import sematic_k8s as sk
from examples import pipeline as example
from sematic_k8s.store.http import HttpStore

POD = {"cpu": "100m", "memory": "256Mi"}  # requesting resources makes a func run in its own pod
N, FACTORS = 60, [0.5, 1.0, 2.0]
TIMEOUT = float(os.environ.get("E2E_RESOLUTION_TIMEOUT", "900"))  # seconds per resolution (image builds included)


@sk.func(cache=True, **POD)
def load(n: int) -> list[float]:
    return [float(i % 7) for i in range(n)]


@sk.func(**POD)
def scale(xs: list[float], factor: float) -> list[float]:
    return [x * factor for x in xs]


@sk.func(**POD)
def mean(xs: list[float]) -> float:
    ctx = sk.context()
    print(f"mean of {len(xs)} values in run {ctx.run_id} of pipeline {ctx.root_id}")
    return sum(xs) / len(xs)


report = example.report  # the same fan-in as the example pipeline, in the driver


@sk.func
def pods_pipeline(n: int, factors: list[float]) -> dict[str, float]:
    """Like the example pipeline, with load, scale and mean in worker pods."""
    xs = load(n)
    return report([mean(scale(xs, f)) for f in factors])


def expected(n: int, factors: list[float]) -> dict[str, float]:
    """Both pipelines' result, computed here the same way (same float operations, same order)."""
    xs = [float(i % 7) for i in range(n)]
    means = [sum(x * f for x in xs) / len(xs) for f in factors]
    return {"min": min(means), "max": max(means), "avg": sum(means) / len(means)}


def check(ok: bool, message: str) -> None:
    if not ok:
        raise SystemExit(f"e2e FAILED: {message}")


def pods_of(namespace: str, resolution_id: str) -> list[dict[str, Any]]:
    """``kubectl get pods -l sematic-k8s/resolution-id=<id>``, as the pods' metadata."""
    selector = f"sematic-k8s/resolution-id={resolution_id}"
    out = subprocess.run(["kubectl", "-n", namespace, "get", "pods", "-l", selector, "-o", "json"],
                         check=True, capture_output=True, text=True).stdout
    pods = [p["metadata"] for p in json.loads(out)["items"]]
    print(f"kubectl get pods -l {selector}:", file=sys.stderr)
    for p in pods:
        labels = p.get("labels", {})
        print(f"  {p['name']}  role={labels.get('sematic-k8s/role')}  func={labels.get('sematic-k8s/func')}  "
              f"run={labels.get('sematic-k8s/run-id')}", file=sys.stderr)
    return pods


def run_ids_with_pods(namespace: str, resolution_id: str) -> set[str]:
    return {p.get("labels", {}).get("sematic-k8s/run-id", "") for p in pods_of(namespace, resolution_id)}


def check_pods(namespace: str, resolution_id: str, runs: list[Any], *, workers: bool) -> None:
    pods = pods_of(namespace, resolution_id)
    roles = [p.get("labels", {}).get("sematic-k8s/role") for p in pods]
    check("driver" in roles, f"no driver pod labelled sematic-k8s/resolution-id={resolution_id}")
    if not workers:
        return
    labels = [p.get("labels", {}) for p in pods]
    pod_runs = {x.get("sematic-k8s/run-id") for x in labels if x.get("sematic-k8s/role") == "worker"}
    executed = {r.id for r in runs if r.func_name in ("load", "scale", "mean") and not r.cached_from
                and not r.notes.get("reused_from")}
    check(bool(executed), f"resolution {resolution_id} executed no pod funcs")
    check(executed <= pod_runs, f"runs without a worker pod in resolution {resolution_id}: {executed - pod_runs}")


def driver_logs(namespace: str, resolution_id: str) -> str:
    selector = f"sematic-k8s/resolution-id={resolution_id},sematic-k8s/role=driver"
    done = subprocess.run(["kubectl", "-n", namespace, "logs", "-l", selector, "--tail", "60", "--all-containers"],
                          capture_output=True, text=True)
    return done.stdout + done.stderr


def resolve(future: Any, namespace: str, **settings: Any) -> Any:
    """``future.resolve(CloudResolver(executor="kubernetes", ...))`` within TIMEOUT seconds; on failure or
    timeout, exits with the driver pod's last log lines (a driver that cannot reach the server or S3 would
    otherwise leave the resolver waiting)."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = future.resolve(sk.CloudResolver(executor="kubernetes", **settings))
        except BaseException as e:  # noqa: BLE001 - reported below, with the driver's logs
            outcome["error"] = e

    thread = threading.Thread(target=run, name=f"resolve-{future.id}", daemon=True)
    thread.start()
    thread.join(TIMEOUT)
    if "value" in outcome:
        return outcome["value"]
    problem = f"failed: {outcome['error']!r}" if "error" in outcome else f"did not finish within {TIMEOUT} s"
    raise SystemExit(f"e2e FAILED: resolution {future.id} {problem}\n"
                     f"driver logs:\n{driver_logs(namespace, future.id)}")


def resolved_runs(store: HttpStore, resolution_id: str) -> list[Any]:
    res = store.get_resolution(resolution_id)
    check(res is not None and res.state == "resolved", f"resolution {resolution_id} is {res and res.state}")
    runs = store.runs_of_root(resolution_id)
    check(all(r.state == "resolved" for r in runs), f"unresolved runs in {resolution_id}")
    return runs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--namespace", required=True, help="the run namespace (for kubectl)")
    parser.add_argument("--out", help="write the resolution ids here as JSON")
    args = parser.parse_args(argv)
    store = HttpStore(os.environ["SEMATIC_K8S_SERVER"], os.environ.get("SEMATIC_K8S_API_KEY"))
    cache_namespace = f"e2e-{uuid.uuid4().hex[:8]}"  # a fresh namespace: the first runs are never cache hits
    want = expected(N, FACTORS)
    ids: dict[str, str] = {}

    print("== 1. the example pipeline (inline funcs, in the driver pod)", file=sys.stderr)
    future = example.pipeline(N, FACTORS)
    got = resolve(future, args.namespace, cache_namespace=cache_namespace)
    check(got == want, f"example pipeline returned {got}, expected {want}")
    ids["example"] = future.id
    resolved_runs(store, future.id)
    check_pods(args.namespace, future.id, [], workers=False)

    print("== 2. the pipeline with pod funcs", file=sys.stderr)
    future = pods_pipeline(N, FACTORS)
    got = resolve(future, args.namespace, cache_namespace=cache_namespace)
    check(got == want, f"pods pipeline returned {got}, expected {want}")
    first = ids["pods"] = future.id
    first_runs = resolved_runs(store, first)
    check(len([r for r in first_runs if r.func_name == "mean"]) == len(FACTORS), "expected one mean run per factor")
    check_pods(args.namespace, first, first_runs, workers=True)

    print("== 3. the same pipeline again: load is a cache hit", file=sys.stderr)
    future = pods_pipeline(N, FACTORS)
    got = resolve(future, args.namespace, cache_namespace=cache_namespace)
    check(got == want, f"cached run returned {got}, expected {want}")
    ids["cached"] = future.id
    runs = resolved_runs(store, future.id)
    (first_load,) = [r for r in first_runs if r.func_name == "load"]
    (load_run,) = [r for r in runs if r.func_name == "load"]
    check(load_run.cached_from == first_load.id,
          f"load was not a cache hit of {first_load.id} (cached_from={load_run.cached_from})")
    check_pods(args.namespace, future.id, runs, workers=True)
    check(load_run.id not in run_ids_with_pods(args.namespace, future.id), "the cache hit started a pod")

    print("== 4. a rerun from one mean run", file=sys.stderr)
    target = next(r for r in first_runs if r.func_name == "mean")
    future = pods_pipeline(N, FACTORS)
    got = resolve(future, args.namespace, rerun_from=target.id, cache_namespace=cache_namespace)
    check(got == want, f"rerun returned {got}, expected {want}")
    ids["rerun"] = future.id
    runs = resolved_runs(store, future.id)
    res = store.get_resolution(future.id)
    check(res is not None and res.rerun_of == first, f"resolution {future.id} is not a rerun of {first}")
    redone = [r for r in runs if r.original_run_id == target.id]
    check(len(redone) == 1 and not redone[0].notes.get("reused_from"), f"run {target.id} was not run again")
    check(any(r.notes.get("reused_from") for r in runs), "the rerun reused no run")
    (load_run,) = [r for r in runs if r.func_name == "load"]
    check(load_run.id not in run_ids_with_pods(args.namespace, future.id), "the rerun ran load again in a pod")
    check_pods(args.namespace, future.id, runs, workers=True)

    print(f"e2e pipelines passed: {json.dumps(ids)}", file=sys.stderr)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(ids, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())

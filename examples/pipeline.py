"""An example pipeline: load numbers, normalise them in parallel, train, evaluate.

Run it with ``make run`` (or ``python -m examples.pipeline``): it resolves on the embedded
LocalResolver, with no services, and records everything under $SEMATIC_K8S_HOME.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import sematic_k8s as sk


@sk.func(cache=True)
def load(n: int) -> list[float]:
    """Make a small data set (cached: a second run with the same n reuses it)."""
    return [float(i % 7) for i in range(n)]


@sk.func
def scale(xs: list[float], factor: float) -> list[float]:
    return [x * factor for x in xs]


@sk.func
def mean(xs: list[float]) -> float:
    ctx = sk.context()
    print(f"mean of {len(xs)} values in run {ctx.run_id} of pipeline {ctx.root_id}")
    return sum(xs) / len(xs)


@sk.func
def report(means: list[float]) -> dict[str, float]:
    return {"min": min(means), "max": max(means), "avg": sum(means) / len(means)}


@sk.func
def pipeline(n: int, factors: list[float]) -> dict[str, float]:
    """Fan out one scale+mean branch per factor, then fan in to a report."""
    xs = load(n)
    return report([mean(scale(xs, f)) for f in factors])


def cli() -> str:
    """The ``sematic-k8s`` command as it runs from here: by name when it is on PATH, else this venv's (after
    ``make run``, its venv not activated: .venv/bin/sematic-k8s)."""
    if shutil.which("sematic-k8s"):
        return "sematic-k8s"
    beside = Path(sys.executable).parent / "sematic-k8s"
    return os.path.relpath(beside) if beside.exists() else "sematic-k8s"


def main() -> None:
    future = pipeline(100, [0.5, 1.0, 2.0])
    result = future.resolve(sk.LocalResolver(cache_namespace="example", max_parallelism=2))
    print(f"result: {result}")
    print(f"root run: {future.id}   (try: {cli()} runs list --root-id {future.id})")


if __name__ == "__main__":
    main()

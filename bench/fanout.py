"""Fan-out overhead per run: sematic-k8s's LocalResolver (persisting to SQLite) vs Sematic 0.41.0.

The pipeline is ``fan(n) = total([inc(i) for i in range(n)])``: n + 2 runs of trivial funcs, so the
time per run is the runner's own overhead. Run with ``make bench``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import sematic_k8s as sk


@sk.func
def inc(i: int) -> int:
    return i + 1


@sk.func
def total(xs: list[int]) -> int:
    return sum(xs)


@sk.func
def fan(n: int) -> int:
    return total([inc(i) for i in range(n)])


def measure(n: int, parallelism: int) -> dict:
    """One resolution of fan(n) into a fresh home directory (SQLite + local artifact storage)."""
    with tempfile.TemporaryDirectory() as home:
        resolver = sk.LocalResolver(home=home, max_parallelism=parallelism)
        fan(1).resolve(resolver)  # warm-up: imports, tables
        start = time.perf_counter()
        value = fan(n).resolve(resolver)
        seconds = time.perf_counter() - start
    assert value == n * (n + 1) // 2
    runs = n + 2
    return {"tool": f"sematic-k8s-{sk.__version__}", "runner": f"local(p={parallelism})", "runs": runs,
            "seconds": round(seconds, 4), "ms_per_run": round(seconds * 1000 / runs, 4)}


def sematic_lines(python: str) -> list[dict]:
    """Run bench/sematic_baseline.py in the Sematic venv; its JSON lines, or an error line."""
    script = Path(__file__).with_name("sematic_baseline.py")
    try:
        out = subprocess.run([python, str(script)], capture_output=True, text=True, timeout=600,
                             check=False).stdout
    except (OSError, subprocess.TimeoutExpired) as e:
        return [{"tool": "sematic-0.41.0", "error": str(e)}]
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def table(rows: list[dict]) -> str:
    """Side by side: ms per run for each runner at each size."""
    runners = sorted({(r["tool"], r["runner"]) for r in rows if "ms_per_run" in r})
    sizes = sorted({r["runs"] - 2 for r in rows if "runs" in r})
    cell = {(r["tool"], r["runner"], r["runs"] - 2): r["ms_per_run"] for r in rows if "ms_per_run" in r}
    head = ["fan-out n"] + [f"{t} {ru}" for t, ru in runners]
    lines = [head] + [[str(n)] + [f"{cell[(t, ru, n)]:.3f}" if (t, ru, n) in cell else "-" for t, ru in runners]
                      for n in sizes]
    widths = [max(len(row[i]) for row in lines) for i in range(len(head))]
    text = ["  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in lines]
    return "ms of overhead per run (lower is better)\n" + "\n".join(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,1000,2000,5000")
    parser.add_argument("--parallelism", default="1,2")
    parser.add_argument("--sematic-python", help="python of a venv with sematic==0.41.0 (bench/sematic_venv.sh)")
    args = parser.parse_args()
    rows = []
    for p in (int(x) for x in args.parallelism.split(",")):
        for n in (int(x) for x in args.sizes.split(",")):
            rows.append(measure(n, p))
            print(json.dumps(rows[-1]), flush=True)
    if args.sematic_python:
        for row in sematic_lines(args.sematic_python):
            rows.append(row)
            print(json.dumps(row), flush=True)
    print(table(rows))


if __name__ == "__main__":
    sys.exit(main())

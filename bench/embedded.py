"""The embedded resolver's floors (``make bench``), each a ratio against a baseline measured in the same run:

- inline: a fresh fan-out with small values kept inline with their records / the same with a file per value;
- cache: re-resolving a fan-out whose funcs all hit the cache / its fresh resolution (goal <= 0.3);
- rerun: ``rerun_from`` one leaf of the fan-out / its fresh resolution (goal <= 0.1);
  both the median of three repeats, each in a home of its own against its own fresh resolution (with their range),
  beside SQLite's share alone (the hits' look-up and rows; the reused runs' copies) against the same fresh
  resolution: a floor that neither goes below while each hit and each reused run is a row of its own;
  a missed cache or rerun goal prints (stderr) where one more such resolution's time goes (cProfile);
- disk: a chain of runs while another process writes and fsyncs on the same disk / the same on a quiet disk
  (goal <= 2);
- memory: peak memory per run of a 100,000-run fan-out (goal <= 3 KB), in a process of its own.

Every resolution records to SQLite and a storage directory under one temporary home on the working disk.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sematic_k8s as sk
from sematic_k8s.store import sql_store


@sk.func(cache=True)
def inc(i: int) -> int:
    return i + 1


@sk.func(cache=True)
def total(xs: list[int]) -> int:
    return sum(xs)


@sk.func
def fan(n: int) -> int:
    return total([inc(i) for i in range(n)])


@sk.func
def step(x: int) -> int:
    return x + 1


@sk.func
def chain(n: int) -> int:
    x: Any = 0
    for _ in range(n):
        x = step(x)
    return x


def timed(call: Callable[[], Any]) -> float:
    """Wall-clock seconds of ``call``, started after a full garbage collection: each measured section starts
    without the collector's debt from the sections before it (a full collection falling inside a 0.1 s section
    would otherwise double it)."""
    return timed_cpu(call)[0]


def timed_cpu(call: Callable[[], Any]) -> tuple[float, float]:
    """:func:`timed`'s wall-clock seconds, with the CPU seconds of this process meanwhile (less swayed by other
    jobs on the machine's cores; the figures are the wall-clock ones). Both start after the full collection."""
    gc.collect()
    cpu, start = time.process_time(), time.perf_counter()
    call()
    return time.perf_counter() - start, time.process_time() - cpu


def resolver(home: str, **settings: Any) -> sk.LocalResolver:
    return sk.LocalResolver(home=home, **settings)


def _home(base: Path | None) -> tempfile.TemporaryDirectory:
    return tempfile.TemporaryDirectory(dir=base)


def bench_inline(n: int, base: Path | None) -> dict:
    """A fresh fan-out, small values inline vs one file each."""
    out = {}
    for name, limit in (("files", 0), ("inline", None)):
        with _home(base) as home:
            r = resolver(home)
            if limit is not None:
                r.inline_limit = limit
            fan(2).resolve(r)  # warm-up: tables, imports
            out[name] = timed(lambda r=r: fan(n).resolve(r))
    return {"figure": "inline", "runs": n + 2, "files_s": round(out["files"], 3), "inline_s": round(out["inline"], 3),
            "ratio": round(out["inline"] / out["files"], 3)}


def profile_top(call: Callable[[], Any], title: str, limit: int = 15) -> None:
    """Run ``call`` under cProfile and print (to stderr) the functions taking the most time, with what they call:
    where a missed goal's time goes. Outside the timed sections."""
    import cProfile
    import pstats

    profiler = cProfile.Profile()
    profiler.runcall(call)
    stats = pstats.Stats(profiler, stream=sys.stderr)
    print(f"--- {title} (cProfile): the library's functions by cumulative time ---", file=sys.stderr)
    stats.sort_stats("cumulative").print_stats(r"sematic_k8s/(resolvers|store)/", limit)
    print(f"--- {title} (cProfile): by own time ---", file=sys.stderr)
    stats.sort_stats("tottime").print_stats(limit)


def home_db(home: str) -> Path:
    """The SQLite database of a LocalResolver's ``home``."""
    return Path(home) / "db.sqlite3"


def a_leaf(home: str, root_id: str) -> str:
    """The id of one ``inc`` run of the fan-out resolved as ``root_id`` in ``home``: what a rerun starts from."""
    store = sql_store(f"sqlite:///{home_db(home)}")
    return next(r.id for r in store.list_runs(root_id=root_id, func="inc", limit=1))


def _cache_and_rerun_once(n: int, base: Path | None, rerun: bool) -> dict[str, float]:
    """One repeat in a home of its own: a fresh fan-out, the same again (every func hits the cache), a rerun
    from one leaf; wall-clock and CPU seconds of each."""
    with _home(base) as home:
        fan(2).resolve(resolver(home, cache_namespace="warm"))
        first = fan(n)
        out: dict[str, float] = {}
        out["fresh"], out["fresh_cpu"] = timed_cpu(lambda: first.resolve(resolver(home, cache_namespace="bench")))
        out["hit"], out["hit_cpu"] = timed_cpu(lambda: fan(n).resolve(resolver(home, cache_namespace="bench")))
        if rerun:
            leaf = a_leaf(home, first.id)
            out["rerun"] = timed(lambda: fan(n).resolve(resolver(home, rerun_from=leaf)))
        return out | sqlite_floors(home)


def sqlite_floors(home: str) -> dict[str, float]:
    """What the store's SQLite work alone takes of the all-hit re-resolution and of the rerun just measured in
    ``home``: the store's look-up of the hits' cache keys (``find_hits``, their runs with their output artifacts),
    then SQLite inserting as many rows as the hits' ("hit_floor"); SQLite inserting as many rows as the rerun's
    reused runs ("rerun_floor"), as its ``INSERT ... SELECT`` does; the inserts in a transaction rolled back.
    Neither resolution can take less while each hit and each reused run is a Run row of its own (DESIGN.md: a
    cached Run is recorded; a rerun clones the resolution)."""
    db = sqlite3.connect(home_db(home), isolation_level=None)
    try:
        columns = [row[1] for row in db.execute("PRAGMA table_info(runs)")]
        copied = ", ".join("'copy-' || id" if c == "id" else c for c in columns)

        def copies(where: str) -> float:
            db.execute("BEGIN")
            try:
                start = time.perf_counter()
                db.execute(f"INSERT INTO runs ({', '.join(columns)}) SELECT {copied} FROM runs WHERE {where}")
                return time.perf_counter() - start
            finally:
                db.execute("ROLLBACK")

        keys = [key for (key,) in db.execute("SELECT cache_key FROM runs WHERE cached_from IS NOT NULL")]
        store = sql_store(f"sqlite:///{home_db(home)}")
        start = time.perf_counter()
        store.find_hits(keys)
        look_up = time.perf_counter() - start
        return {"hit_floor": look_up + copies("cached_from IS NOT NULL"),
                "rerun_floor": copies("original_run_id IS NOT NULL")}
    finally:
        db.close()


def _profile_missed(n: int, base: Path | None, what: str) -> None:
    """cProfile one more all-hit re-resolution (``what="cache"``) or rerun (``"rerun"``) of an n-run fan-out."""
    with _home(base) as home:
        first = fan(n)
        first.resolve(resolver(home, cache_namespace="bench"))
        if what == "cache":
            profile_top(lambda: fan(n).resolve(resolver(home, cache_namespace="bench")),
                        f"all-hit re-resolution of a {n}-run fan-out")
            return
        leaf = a_leaf(home, first.id)
        profile_top(lambda: fan(n).resolve(resolver(home, rerun_from=leaf)),
                    f"rerun_from one leaf of a {n}-run fan-out")


def bench_cache_and_rerun(n: int, base: Path | None, rerun: bool, repeats: int = 3) -> list[dict]:
    """The all-hit and rerun figures of an n-run fan-out: the median of ``repeats`` repeats (each its own home, its
    own fresh baseline), with their range; a goal the median misses profiles one more, outside the timed sections."""
    runs = [_cache_and_rerun_once(n, base, rerun) for _ in range(repeats)]

    def figure(key: str) -> tuple[float, list[float]]:
        ratios = sorted(r[key] / r["fresh"] for r in runs)
        return statistics.median(ratios), ratios

    hit, hits = figure("hit")
    cpu = statistics.median(r["hit_cpu"] / r["fresh_cpu"] for r in runs)
    rows = [{"figure": "cache", "runs": n + 2, "repeats": repeats,
             "fresh_s": round(statistics.median(r["fresh"] for r in runs), 3),
             "all_hits_s": round(statistics.median(r["hit"] for r in runs), 3), "ratio": round(hit, 3),
             "range": [round(hits[0], 3), round(hits[-1], 3)], "goal": 0.3, "cpu_ratio": round(cpu, 3),
             "sqlite_floor": round(figure("hit_floor")[0], 3)}]
    if hit > 0.3:
        _profile_missed(n, base, "cache")
    if rerun:
        again, agains = figure("rerun")
        rows.append({"figure": "rerun", "runs": n + 2, "repeats": repeats,
                     "fresh_s": rows[0]["fresh_s"], "rerun_s": round(statistics.median(r["rerun"] for r in runs), 3),
                     "ratio": round(again, 3), "range": [round(agains[0], 3), round(agains[-1], 3)], "goal": 0.1,
                     "sqlite_floor": round(figure("rerun_floor")[0], 3)})
        if again > 0.1:
            _profile_missed(n, base, "rerun")
    return rows


WRITER = """
import os, sys
path = os.path.join(sys.argv[1], "busy.bin")
block = os.urandom(64 * 1024)
with open(path, "wb") as f:
    while True:
        for _ in range(16):
            f.write(block)
        f.flush()
        os.fsync(f.fileno())
        f.seek(0)
"""


def bench_disk(n: int, base: Path | None, repeats: int = 3) -> dict:
    """A chain of n runs (one loop turn each: every turn writes) on a quiet disk, then while another process
    rewrites and fsyncs 1 MiB at a time in the same directory's file system."""
    def once() -> float:
        with _home(base) as home:
            r = resolver(home)
            chain(2).resolve(r)
            return timed(lambda: chain(n).resolve(r))

    quiet = min(once() for _ in range(repeats))
    with _home(base) as busy_dir:
        writer = subprocess.Popen([sys.executable, "-c", WRITER, busy_dir])
        try:
            time.sleep(0.5)
            busy = min(once() for _ in range(repeats))
        finally:
            writer.kill()
            writer.wait()
    return {"figure": "disk", "runs": n + 1, "quiet_s": round(quiet, 3), "busy_s": round(busy, 3),
            "ratio": round(busy / quiet, 3), "goal": 2.0}


MEMORY = """
import gc, json, resource, sys, tempfile
import sematic_k8s as sk
from bench.embedded import fan
n = int(sys.argv[1])
with tempfile.TemporaryDirectory(dir=sys.argv[2] or None) as home:
    r = sk.LocalResolver(home=home)
    fan(2).resolve(r)
    gc.collect()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    fan(n).resolve(r)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"before_kb": before, "peak_kb": peak}))
"""


def bench_memory(n: int, base: Path | None) -> dict:
    """Peak RSS growth of a process resolving an n-run fan-out, per run (a process of its own: a clean peak)."""
    out = subprocess.run([sys.executable, "-c", MEMORY, str(n), str(base or "")], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).parent.parent).stdout
    doc = json.loads(out.strip().splitlines()[-1])
    per_run = (doc["peak_kb"] - doc["before_kb"]) * 1024 / (n + 2)
    return {"figure": "memory", "runs": n + 2, "peak_growth_mb": round((doc["peak_kb"] - doc["before_kb"]) / 1024, 1),
            "bytes_per_run": round(per_run), "ratio_to_goal": round(per_run / 3000, 3), "goal_bytes": 3000}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="inline,cache,disk,memory", help="figures to measure")
    parser.add_argument("--sizes", default="1000,10000", help="fan-out sizes of the cache and rerun figures")
    parser.add_argument("--memory-runs", type=int, default=100_000)
    parser.add_argument("--dir", type=Path, default=None, help="where the homes go (default: the system temp dir)")
    args = parser.parse_args()
    only = set(args.only.split(","))
    base = args.dir or Path(os.environ.get("BENCH_DIR", Path.cwd() / ".bench"))
    base.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []

    def emit(row: dict) -> None:
        rows.append(row)
        print(json.dumps(row), flush=True)

    if "inline" in only:
        emit(bench_inline(2000, base))
    if "cache" in only:
        sizes = [int(x) for x in args.sizes.split(",")]
        for n in sizes:
            for row in bench_cache_and_rerun(n, base, rerun=n == max(sizes)):
                emit(row)
    if "disk" in only:
        emit(bench_disk(1000, base))
    if "memory" in only:
        emit(bench_memory(args.memory_runs, base))
    print("embedded resolver: ratio against a baseline measured in the same run (lower is better)")
    for r in rows:
        goal = r.get("goal", r.get("goal_bytes"))
        ratio = r.get("ratio", r.get("ratio_to_goal"))
        spread = f"  (range {r['range'][0]:.3f}-{r['range'][1]:.3f})" if "range" in r else ""
        floor = f"; SQLite's share alone {r['sqlite_floor']:.3f}" if "sqlite_floor" in r else ""
        print(f"  {r['figure']:7s} {r['runs']:>7d} runs  ratio {ratio:6.3f}" + (f"  (goal {goal})" if goal else "")
              + spread + floor)


if __name__ == "__main__":
    sys.exit(main())

"""A small pipeline for the dashboard test: a nested composition, logs, and a step that can be made to fail.

Importable by module name (tests/ is on the path), so the server's rerun processes can load it.
"""

from __future__ import annotations

import time
from pathlib import Path

import sematic_k8s as sk


@sk.func
def make_numbers(n: int) -> list[int]:
    print(f"making {n} numbers")
    return list(range(1, n + 1))


@sk.func(cache=True)
def total(xs: list[int]) -> int:
    print(f"summing {len(xs)} numbers")
    return sum(xs)


@sk.func
def scale(x: int, factor: int, hold: str) -> int:
    """Waits (up to 2 minutes) while the file ``hold`` exists, so a test can watch it running."""
    print(f"scaling {x} by {factor}")
    deadline = time.monotonic() + 120
    while Path(hold).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return x * factor


@sk.func
def report(xs: list[int], hold: str) -> int:
    """A composition nested in the pipeline."""
    return scale(total(xs), 10, hold)


@sk.func
def check(x: int, flag: str) -> int:
    """Fails while the file ``flag`` exists."""
    print(f"checking {x}")
    if Path(flag).exists():
        raise RuntimeError(f"flag file {flag} is set")
    return x


@sk.func
def pipeline(n: int, flag: str) -> int:
    return check(report(make_numbers(n), flag + ".hold"), flag)

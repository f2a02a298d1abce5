"""Pipelines for the server tests. A module (not a test file) so server-started rerun processes can
import it: they find it from the recorded source file."""

from __future__ import annotations

import time
from pathlib import Path

import sematic_k8s as sk


@sk.func
def add(a: int, b: int) -> int:
    print(f"adding {a} + {b}")
    return a + b


@sk.func(cache=True)
def square(x: int) -> int:
    return x * x


@sk.func
def flaky(x: int, flag: str) -> int:
    """Fails while the file ``flag`` exists."""
    if Path(flag).exists():
        raise RuntimeError(f"flag file {flag} is set")
    return x * 10


@sk.func
def pipeline(a: int, b: int, flag: str) -> int:
    return flaky(square(add(a, b)), flag)


@sk.func
def gate(path: str, timeout: float = 60.0) -> int:
    """Waits until the file ``path`` exists (so a test can cancel a resolution while this runs)."""
    deadline = time.monotonic() + timeout
    while not Path(path).exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} never appeared")
        time.sleep(0.05)
    return 1


@sk.func
def slow_pipeline(path: str) -> int:
    return add(gate(path), 1)

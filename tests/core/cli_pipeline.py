"""A small pipeline for the CLI tests (importable by path, so reruns can load it)."""

from __future__ import annotations

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
    print(f"flaky got {x}")
    if Path(flag).exists():
        raise RuntimeError(f"flag file {flag} is set")
    return x * 10


@sk.func
def pipeline(a: int, b: int, flag: str) -> int:
    return flaky(square(add(a, b)), flag)


@sk.func(cache=True)
def square_anything(x: object) -> int:
    return 4

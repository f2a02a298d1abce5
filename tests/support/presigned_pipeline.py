"""A pipeline for tests/store/test_presigned.py, in a module of its own: its workers import only this (and
sematic_k8s), so whether botocore got imported says what the worker itself needed."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import sematic_k8s as sk


@sk.func(inline=False)
def probe(x: int) -> dict[str, Any]:
    print(f"probing {x}")
    environ = Path("/proc/self/environ").read_bytes()  # as it started: what `ps e` and /proc show its user
    return {"x": x, "botocore": "botocore" in sys.modules, "stdin": sys.stdin.read(),
            "environ_has_url": b"Signature=" in environ, "environ_has_task": b"SEMATIC_K8S_TASK=" in environ}


@sk.func(inline=False)
def big(n: int) -> bytes:
    return b"z" * n


@sk.func(inline=False)
def length(b: bytes) -> int:
    return len(b)


@sk.func
def measured(n: int) -> int:
    return length(big(n))  # length's worker reads big's output


@sk.func(inline=False, retries=1, retry_backoff=0, retry_on=(ValueError,))
def fails_once(marker: str) -> str:
    """Raises the first time (no file at ``marker`` yet: it makes one), then returns."""
    if not os.path.exists(marker):
        Path(marker).touch()
        raise ValueError("the first time")
    return "passed"


@sk.func(inline=False)
def fan(n: int) -> list[dict[str, Any]]:
    return [probe(i) for i in range(n)]  # an expansion: Futures sent back to the driver


@sk.func
def pipeline(n: int) -> tuple[list[dict[str, Any]], int]:
    return fan(n), size(big(2 * 1024 * 1024))


@sk.func
def size(b: bytes) -> int:
    return len(b)

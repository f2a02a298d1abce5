"""A pipeline for tests/store/test_presigned.py, in a module of its own: its workers import only this (and
sematic_k8s), so whether botocore got imported says what the worker itself needed."""

from __future__ import annotations

import sys
from typing import Any

import sematic_k8s as sk


@sk.func(inline=False)
def probe(x: int) -> dict[str, Any]:
    print(f"probing {x}")
    return {"x": x, "botocore": "botocore" in sys.modules}


@sk.func(inline=False)
def big(n: int) -> bytes:
    return b"z" * n


@sk.func(inline=False)
def fan(n: int) -> list[dict[str, Any]]:
    return [probe(i) for i in range(n)]  # an expansion: Futures sent back to the driver


@sk.func
def pipeline(n: int) -> tuple[list[dict[str, Any]], int]:
    return fan(n), size(big(2 * 1024 * 1024))


@sk.func
def size(b: bytes) -> int:
    return len(b)

"""Pipelines for the fault tests. A module (not a test file) so that the processes a test starts, and then
kills, can import it (the tests put this directory on their PYTHONPATH)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import sematic_k8s as sk


@sk.func
def add(a: int, b: int) -> int:
    return a + b


@sk.func
def pipeline(n: int) -> int:
    """Three additions; every process that resolves it computes the same artifacts (the value 2 twice)."""
    return add(add(n, 1), add(1, 1))


@sk.func
def wait_for(path: str, x: int) -> int:
    """Returns ``x`` once the file ``path`` exists; writes ``path + ".started"`` first (so a test knows)."""
    Path(path + ".started").touch()
    while not os.path.exists(path):
        time.sleep(0.05)
    return x


@sk.func
def gated(n: int, gate: str) -> int:
    """``add(n, 1)`` and ``add(1, 1)``, then a step that waits for the file ``gate``, then a last addition."""
    return add(wait_for(gate, add(n, 1)), add(1, 1))


@sk.func
def fail_at(path: str, x: int) -> int:
    """Raises ValueError once the file ``path`` exists; writes ``path + ".started"`` first (so a test knows)."""
    Path(path + ".started").touch()
    while not os.path.exists(path):
        time.sleep(0.05)
    raise ValueError(f"failed as told, with {x}")


@sk.func
def gated_failure(n: int, gate: str) -> int:
    """:func:`gated` whose gated step fails once its gate opens."""
    return add(fail_at(gate, add(n, 1)), add(1, 1))


@sk.func(inline=False)
def remote_add(a: int, b: int) -> int:
    return a + b


@sk.func(inline=False)
def remote_wait_for(path: str, x: int) -> int:
    """:func:`wait_for` in a worker; the ``.started`` file holds the pid of the process running it."""
    Path(path + ".started").write_text(str(os.getpid()))
    while not os.path.exists(path):
        time.sleep(0.05)
    return x


@sk.func
def remote_gated(n: int, gate: str) -> int:
    """:func:`gated` with every step in a worker of its own (process, container or pod)."""
    return remote_add(remote_wait_for(gate, remote_add(n, 1)), remote_add(1, 1))


@sk.func
def two_gates(n: int, first: str, second: str) -> int:
    """Five steps in workers, two of them waiting at gates: ``(n + 1) + (1 + 1) + 10``."""
    a = remote_wait_for(first, remote_add(n, 1))
    b = remote_wait_for(second, remote_add(a, remote_add(1, 1)))
    return remote_add(b, 10)


@sk.func
def until_fixed(x: int) -> int:
    """Fails until the file ``$RACE_FIXED`` exists; then notes its run (a file ``$RACE_FIXED.ran.<pid>``) and waits
    for the file ``$RACE_GATE`` before it returns ``x * 10``. Paths from the environment: a continue runs it again on
    its recorded inputs."""
    fixed = os.environ["RACE_FIXED"]
    if not os.path.exists(fixed):
        raise RuntimeError("not fixed yet")
    Path(f"{fixed}.ran.{os.getpid()}").touch()
    while not os.path.exists(os.environ["RACE_GATE"]):
        time.sleep(0.02)
    return x * 10


@sk.func
def fixable(n: int) -> int:
    """``until_fixed(n + 1) + 2``: fails (and is continued) until the step is fixed."""
    return add(until_fixed(add(n, 1)), add(1, 1))


@sk.func(cache=True)
def drawn(n: int) -> float:
    """``n`` plus a random fraction: another value each time it runs. Cached. Notes its run (a file in the
    directory ``$RACE_DRAWS``) and waits until ``$RACE_DRAWERS`` runs did (at most 60 s), so that resolutions started
    together all miss the cache and compute it at once."""
    import random

    draws = Path(os.environ["RACE_DRAWS"])
    (draws / str(os.getpid())).touch()
    deadline = time.monotonic() + 60
    while len(list(draws.iterdir())) < int(os.environ["RACE_DRAWERS"]) and time.monotonic() < deadline:
        time.sleep(0.02)
    return n + random.random()


@sk.func
def draw(n: int) -> float:
    return drawn(n)


@sk.func
def slow_add(a: int, b: int) -> int:
    time.sleep(0.05)
    return a + b


@sk.func
def long_chain(n: int, gate: str) -> int:
    """``n`` additions of 1, one after another, behind a step waiting at ``gate``: ``n`` once the gate opens."""
    x = wait_for(gate, 0)
    for _ in range(n):
        x = slow_add(x, 1)
    return x


@sk.func
def total(xs: list[int]) -> int:
    return sum(xs)


@sk.func
def fan(n: int) -> int:
    """``n`` additions composed at once (planned in one wave, written as they are planned), summed."""
    return total([add(i, 1) for i in range(n)])

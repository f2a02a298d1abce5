"""A pipeline whose one remote step is a fan-in too large for a Secret (WIDTH inputs, a presigned GET each: more than
the 1 MiB a Secret holds), so that its task is handed over through a stored copy; and a small one, ``one`` twice; for
drivers run as processes."""

from __future__ import annotations

import inspect

import sematic_k8s as sk

WIDTH = 3000  # about 390 bytes of task an input (its presigned GET, id, format): > 1 MiB


def wide(**xs: int) -> int:
    """A fan-in of WIDTH inputs, x0 ... x2999 (its signature says so)."""
    return sum(xs.values())


wide.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
    [inspect.Parameter(f"x{i}", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=int) for i in range(WIDTH)],
    return_annotation=int)
wide = sk.func(inline=False, cpu="100m", memory="64Mi")(wide)


@sk.func(inline=False, cpu="100m", memory="64Mi")
def one(x: int) -> int:
    return x


@sk.func
def fan_in(n: int) -> int:
    """``wide`` over 0 ... n-1 (each input a constant), then one small step after it."""
    return one(wide(**{f"x{i}": i for i in range(n)}))


@sk.func
def twice(x: int) -> int:
    """``one`` of ``one`` of ``x``: two remote steps, one after the other."""
    return one(one(x))

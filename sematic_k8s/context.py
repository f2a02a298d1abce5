"""``context()``: which Run the calling func is executing as."""

from __future__ import annotations

import contextvars
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Context:
    """Identity of the running func: its Run, the pipeline's root Run and the Resolution.

    A Resolution's id is its root Run's id, so ``resolution_id == root_id``.
    """

    run_id: str
    root_id: str
    resolution_id: str


_current: contextvars.ContextVar[Context | None] = contextvars.ContextVar("sematic_k8s_context", default=None)


def context() -> Context:
    """The Context of the func being executed; a clear error anywhere else."""
    ctx = _current.get()
    if ctx is None:
        raise RuntimeError(
            "sematic_k8s.context() was called outside of a running func: it is only available "
            "inside the body of an @sk.func while a resolver executes it"
        )
    return ctx


def set_context(ctx: Context | None) -> contextvars.Token:
    """Make ``ctx`` current (used by executors around a func body)."""
    return _current.set(ctx)


def reset_context(token: contextvars.Token) -> None:
    _current.reset(token)

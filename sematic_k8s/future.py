"""Future: the not-yet-computed value of one func call.

This module knows no resolver: ``Future.resolve()`` without one uses the factory registered with
:func:`set_default_resolver` (the LocalResolver registers itself when :mod:`sematic_k8s.resolvers.local` is
imported, as ``import sematic_k8s`` does). So the graph, the loop and the executors, which all see Futures,
sit below the resolvers with no import cycle.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from sematic_k8s.func import Func


class Resolves(Protocol):
    """What resolves a Future: a resolver (LocalResolver, CloudResolver, ...)."""

    def resolve(self, future: Future) -> Any: ...


_default_resolver: Callable[[], Resolves] | None = None


def set_default_resolver(factory: Callable[[], Resolves]) -> None:
    """Make ``factory()`` the resolver of ``Future.resolve()`` called without one."""
    global _default_resolver
    _default_resolver = factory


def new_id() -> str:
    """A fresh Run id (32 hex characters)."""
    return uuid.uuid4().hex


class Future:
    """The value of ``func(**kwargs)``, computed when a resolver resolves it.

    ``id`` is the id of the Run that computes it; after ``resolve`` on a root Future it is the
    root Run id of that Resolution.
    """

    __slots__ = ("func", "kwargs", "id")

    def __init__(self, func: Func, kwargs: dict[str, Any]) -> None:
        self.func = func
        self.kwargs = kwargs
        self.id = new_id()

    def __repr__(self) -> str:
        return f"<Future {self.func.name} id={self.id}>"

    def resolve(self, resolver: Resolves | None = None) -> Any:
        """Run this pipeline with ``resolver`` (default: an embedded LocalResolver) and return its value."""
        if resolver is None:
            if _default_resolver is None:
                raise RuntimeError("no default resolver is registered: pass one, e.g. "
                                   "future.resolve(sematic_k8s.LocalResolver())")
            resolver = _default_resolver()
        return resolver.resolve(self)

    def _no_value(self, *_: Any, **__: Any) -> Any:
        raise TypeError(
            f"{self!r} has no value while the pipeline is being built: pass it to another func, "
            "or return it, and read its value inside a func that takes it as an input"
        )

    __bool__ = __iter__ = __len__ = __getitem__ = __contains__ = _no_value

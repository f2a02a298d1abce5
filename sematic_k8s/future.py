"""Future: the not-yet-computed value of one func call."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sematic_k8s.func import Func
    from sematic_k8s.resolvers.base import Resolver


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

    def resolve(self, resolver: Resolver | None = None) -> Any:
        """Run this pipeline with ``resolver`` (default: an embedded LocalResolver) and return its value."""
        if resolver is None:
            from sematic_k8s.resolvers.local import LocalResolver

            resolver = LocalResolver()
        return resolver.resolve(self)

    def _no_value(self, *_: Any, **__: Any) -> Any:
        raise TypeError(
            f"{self!r} has no value while the pipeline is being built: pass it to another func, "
            "or return it, and read its value inside a func that takes it as an input"
        )

    __bool__ = __iter__ = __len__ = __getitem__ = __contains__ = _no_value

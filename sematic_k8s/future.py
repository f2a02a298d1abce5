"""Future: the not-yet-computed value of one func call.

This module knows no resolver: ``Future.resolve()`` without one uses the factory registered with
:func:`set_default_resolver` (``import sematic_k8s`` registers the LocalResolver, imported on first use;
:mod:`sematic_k8s.resolvers.local` registers it too). So the graph, the loop and the executors, which all see Futures,
sit below the resolvers with no import cycle.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Protocol

from sematic_k8s.error_records import said_whole, verdict
from sematic_k8s.errors import FuncError, FutureHasNoValue, ResolutionFailed
from sematic_k8s.modules import check_not_loading

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


_DRAWN: list[str] = []  # ids drawn ahead, taken one at a time by new_id
_DRAW = 256
if hasattr(os, "register_at_fork"):  # (Unix) a forked child never hands out its parent's ids again
    os.register_at_fork(after_in_child=_DRAWN.clear)


def new_id() -> str:
    """A fresh Run id (32 hex characters: a random version-4 UUID's, without importing :mod:`uuid`); drawn
    :data:`_DRAW` at a time (a fan-out's Futures each take one)."""
    while True:
        try:
            return _DRAWN.pop()  # atomic: threads never take the same one
        except IndexError:
            _DRAWN.extend(new_ids(_DRAW))


def new_ids(count: int) -> Iterator[str]:
    """``count`` fresh Run ids, as :func:`new_id` gives them (random version-4 UUIDs), drawn together: the
    thousands of a rerun's reused runs without a UUID object each."""
    raw = bytearray(os.urandom(16 * count))
    raw[6::16] = bytes(b & 0x0F | 0x40 for b in raw[6::16])  # version 4
    raw[8::16] = bytes(b & 0x3F | 0x80 for b in raw[8::16])  # RFC 4122 variant
    text = raw.hex()
    return (text[i:i + 32] for i in range(0, len(text), 32))


_HINT = ("pass it to another func, or return it, and read its value inside a func that takes it as an input")


class Future:
    """The value of ``func(**kwargs)``, computed when a resolver resolves it.

    ``id`` is the id of the Run that computes it; after ``resolve`` on a root Future it is the
    root Run id of that Resolution.

    A Future has no value while the pipeline is being built: using it as one (``if f``, ``f > 3``,
    ``f.attr``, ``f + 1``, ``len(f)``) raises :class:`~sematic_k8s.errors.FutureHasNoValue`. A func whose return
    hint is a fixed-size tuple (``-> tuple[int, str]``) can be unpacked, ``a, b = f(x)``, into one Future per
    element; ``f(x)[key]`` is the Future of one element of a tuple, list or dict output. Each element is
    recorded as a run of the inline func ``getitem``.
    """

    __slots__ = ("func", "kwargs", "id", "_items")

    def __init__(self, func: Func, kwargs: dict[str, Any]) -> None:
        self.func = func
        self.kwargs = kwargs
        self.id = new_id()
        self._items: dict[Any, Future] = {}

    def __repr__(self) -> str:
        return f"<Future {self.func.name} id={self.id}>"

    def resolve(self, resolver: Resolves | None = None) -> Any:
        """Run this pipeline with ``resolver`` (default: an embedded LocalResolver) and return its value."""
        check_not_loading(f"{self.func.name}(...).resolve()")  # a script's top level, loaded to find its funcs
        if resolver is None:
            if _default_resolver is None:
                raise RuntimeError("no default resolver is registered: pass one, e.g. "
                                   "future.resolve(sematic_k8s.LocalResolver())")
            resolver = _default_resolver()
        elif isinstance(resolver, type) or not callable(getattr(resolver, "resolve", None)):
            made = ": call the class to make one, e.g. LocalResolver()" if isinstance(resolver, type) else ""
            raise TypeError(f"resolve() takes a resolver such as sematic_k8s.LocalResolver(), got {resolver!r}{made}")
        try:
            return resolver.resolve(self)
        except ResolutionFailed as e:
            # shown from the user's .resolve() line, not through the resolvers' frames; its cause (the func's
            # error, with its traceback from the user's code on) stays as it was
            raise e.with_traceback(None) from (said_whole(e.__cause__) if e.__cause__ is not None else None)
        except FuncError as e:  # the root's own (an argument that cannot be serialized): from this line, as above
            if not verdict(e):
                raise
            raise said_whole(e) from None

    # -- elements of a tuple, list or dict output ------------------------------------------------------

    def __getitem__(self, key: Any) -> Future:
        items = self.__dict_items()
        if key not in items:
            items[key] = self.func.item(self, key)  # checks the key against the return hint
        return items[key]

    def __iter__(self) -> Iterator[Future]:
        return iter([self[i] for i in range(self.__length("unpacked or iterated"))])

    def __len__(self) -> int:
        return self.__length("measured with len()")

    def __length(self, what: str) -> int:
        n = self.func.output_length()
        if n is None:
            raise FutureHasNoValue(f"{self!r} has no value while the pipeline is being built, so it cannot be "
                                   f"{what}: only a func whose return hint is a fixed-size tuple (such as "
                                   f"-> tuple[int, str]) can be unpacked; otherwise {_HINT}")
        return n

    def __dict_items(self) -> dict[Any, Future]:
        try:
            return self._items
        except AttributeError:  # unpickled from before elements existed
            self._items = {}
            return self._items

    # -- everything else that needs a value ----------------------------------------------------------

    def _no_value(self, what: str) -> FutureHasNoValue:
        return FutureHasNoValue(f"{self!r} has no value while the pipeline is being built ({what}): {_HINT}")

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):  # dunder probes (copy, pickle, numpy...) and private names: plain AttributeError
            raise AttributeError(name)
        raise self._no_value(f"attribute .{name}")

    def __bool__(self) -> bool:
        raise self._no_value("used as a truth value, as in `if future:`")

    def __contains__(self, item: Any) -> bool:
        raise self._no_value("`in`")

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Future):
            return self is other
        raise self._no_value("`==`")

    def __ne__(self, other: object) -> bool:
        if isinstance(other, Future):
            return self is not other
        raise self._no_value("`!=`")

    __hash__ = object.__hash__

    def __setitem__(self, key: Any, value: Any) -> None:
        raise self._no_value("item assignment")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise self._no_value("called")

    def __index__(self) -> int:
        raise self._no_value("used as an index")

    def __int__(self) -> int:
        raise self._no_value("int()")

    def __float__(self) -> float:
        raise self._no_value("float()")

    def __complex__(self) -> complex:
        raise self._no_value("complex()")


def _operator(symbol: str) -> Callable[..., Any]:
    def method(self: Future, *_: Any) -> Any:
        raise self._no_value(f"`{symbol}`")
    return method


for _names, _symbol in [
    (("__lt__",), "<"), (("__le__",), "<="), (("__gt__",), ">"), (("__ge__",), ">="),
    (("__add__", "__radd__"), "+"), (("__sub__", "__rsub__"), "-"), (("__mul__", "__rmul__"), "*"),
    (("__matmul__", "__rmatmul__"), "@"), (("__truediv__", "__rtruediv__"), "/"),
    (("__floordiv__", "__rfloordiv__"), "//"), (("__mod__", "__rmod__"), "%"),
    (("__divmod__", "__rdivmod__"), "divmod"),
    (("__pow__", "__rpow__"), "**"), (("__lshift__", "__rlshift__"), "<<"), (("__rshift__", "__rrshift__"), ">>"),
    (("__and__", "__rand__"), "&"), (("__or__", "__ror__"), "|"), (("__xor__", "__rxor__"), "^"),
    (("__neg__",), "unary -"), (("__pos__",), "unary +"), (("__abs__",), "abs()"), (("__invert__",), "~"),
    (("__round__",), "round()"), (("__trunc__",), "math.trunc()"), (("__floor__",), "math.floor()"),
    (("__ceil__",), "math.ceil()"),
]:
    for _name in _names:
        setattr(Future, _name, _operator(_symbol))

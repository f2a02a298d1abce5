"""``@func``: turn a plain function into a pipeline step with its settings."""

from __future__ import annotations

import collections.abc
import functools
import hashlib
import inspect
import math
import numbers
import os
import re
import sys
import types
import typing
from collections.abc import Callable
from typing import Any

from sematic_k8s import limits, modules, packaged, quantities
from sematic_k8s.error_records import user_line
from sematic_k8s.errors import (
    CodeRefused,
    FuncError,
    FuncNotFound,
    FutureHasNoValue,
    InfrastructureError,
)
from sematic_k8s.future import Future
from sematic_k8s.packaged import NotPackaged
from sematic_k8s.serialization import type_name
from sematic_k8s.settings import SOURCE_MAP_ENV

_REGISTRY: dict[str, Func] = {}
_REGISTERED: list[str] = []  # every path registered, in order (what a module's top level registered before it raised)
_UNNAMED = {inspect.Parameter.VAR_POSITIONAL: "*{}", inspect.Parameter.VAR_KEYWORD: "**{}",
            inspect.Parameter.POSITIONAL_ONLY: "positional-only parameter {}"}
_RETRY_BACKOFF_CAP = 300.0
_SCALARS = frozenset({str, int, float, bool, bytes, complex, type(None)})  # values that hold no Future
_TOLERATION_FIELDS = {"key", "operator", "value", "effect", "tolerationSeconds"}  # a Kubernetes Toleration's


def _seconds(value: Any) -> bool:
    """A finite number of seconds (not a bool, not nan or infinity)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _short_repr(value: Any, limit: int = 80) -> str:
    r = repr(value)
    return r if len(r) <= limit else r[:limit] + "…"


def _plainly_of(value: Any, hint: Any) -> bool:
    """True when ``value`` matches ``hint`` by ``isinstance`` alone: a plain class, or a list, set, frozenset,
    ``tuple[X, ...]`` or dict of plain classes whose every item is an instance of them (``list[int]`` of 10,000
    ints in one pass, not a typeguard call per item). False means: ask typeguard (it may still accept, e.g. an int
    for ``float``, and it says what is wrong)."""
    if type(hint) is type:
        return isinstance(value, hint)
    origin = typing.get_origin(hint)
    if origin is None or type(origin) is not type or not isinstance(value, origin):
        return False
    items: Any = value
    args = typing.get_args(hint)
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        args = args[:1]
    elif origin not in (list, set, frozenset, dict):
        return False
    if not args or not all(type(a) is type for a in args):
        return False
    if origin is dict:
        if len(args) != 2:
            return False
        key, item = args
        return all(isinstance(k, key) and isinstance(v, item) for k, v in items.items())
    if len(args) != 1:
        return False
    item = args[0]
    return all(isinstance(x, item) for x in items)


def _may_pass(given: type, hint: type) -> bool:
    """Whether a value of class ``given`` may match the plain class ``hint`` (as the run's check takes it: an int for
    a float or complex, a float for a complex; ``object`` may be anything)."""
    return (given is object or issubclass(given, hint) or (hint is float and issubclass(given, int))
            or (hint is complex and issubclass(given, (int, float))))


def _hint_name(hint: Any) -> str:
    return hint.__name__ if isinstance(hint, type) else str(hint).replace("typing.", "")


_ARITY = {list: 1, set: 1, frozenset: 1, type: 1, dict: 2}  # builtin generics and their number of arguments
_UNIONS = (typing.Union, types.UnionType)
HINT_ADVICE = "hint it with a class or a generic of classes (int, list[int], dict[str, float], int | None), or drop it"


def _hint_of(name: str) -> str:
    """How a message names the hint of parameter ``name`` (``"return"``: the return hint)."""
    return "its return hint" if name == "return" else f"the type hint of parameter '{name}'"


def _hint_problem(hint: Any, aliases: tuple[Any, ...] = ()) -> str | None:
    """What makes ``hint`` no type hint (a value such as ``5``, ``list[5]``, ``dict[str]``), which the run's check
    would take for anything, or refuse every value of; None for a hint (a class, None, Any, a TypeVar, a union,
    Literal, Annotated, a generic whose arguments are hints). A type alias (``type X = ...``) is checked as what it
    stands for, once (``aliases``: those being checked: one may name itself); NameError when that names what its
    module does not define (yet)."""
    if isinstance(hint, type) or hint is None or hint is typing.Any or isinstance(hint, (typing.TypeVar,
                                                                                      typing.NewType)):
        return None
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is None and hasattr(hint, "__value__"):  # ``type X = ...`` (Python 3.12): what it stands for
        return None if any(hint is a for a in aliases) else _hint_problem(hint.__value__, (*aliases, hint))
    if origin is None:
        return None if callable(hint) or isinstance(hint, typing._SpecialForm) else f"{hint!r} is not a type"
    if origin in (typing.Literal, collections.abc.Callable):
        return None  # Literal's arguments are values; Callable's a list of hints
    if origin is typing.Annotated:
        args = args[:1]
    elif origin in _ARITY and args and len(args) != _ARITY[origin]:  # none: typing.List alone, a list of Any
        return f"{origin.__name__}[...] takes {_ARITY[origin]} type(s), not {len(args)}"
    for arg in args:
        if arg is Ellipsis and origin is tuple:
            continue
        if (problem := _hint_problem(arg, aliases)) is not None:
            return problem
    return None


def _classes(hint: Any) -> tuple[type, ...] | None:
    """The classes a value matching ``hint`` is an instance of, when that can be told (a plain class, None, a union
    or a generic of them, Literal, Annotated); None when it may be anything (Any, a TypeVar, a class of a metaclass
    of its own: a protocol, an ABC, given alone)."""
    if hint is None or hint is type(None):
        return (type(None),)
    if type(hint) is type:
        return (hint,)
    origin = typing.get_origin(hint)
    if origin in _UNIONS:
        found: list[type] = []
        for arg in typing.get_args(hint):
            classes = _classes(arg)
            if classes is None:
                return None
            found.extend(classes)
        return tuple(found)
    if origin is typing.Literal:
        return tuple({type(v) for v in typing.get_args(hint)})
    if origin is typing.Annotated:
        return _classes(typing.get_args(hint)[0])
    return (origin,) if isinstance(origin, type) else None  # list, or an ABC (collections.abc.Sequence)


def _never(given: tuple[type, ...] | None, wanted: tuple[type, ...] | None) -> bool:
    """Whether no value of one of the classes ``given`` can match one of ``wanted`` (either None: it may)."""
    if given is None or wanted is None:
        return False
    try:
        return not any(_may_pass(g, w) for g in given for w in wanted)
    except TypeError:  # issubclass of a protocol that is not runtime_checkable: the run's check will tell
        return False


def _plain_parameters(signature: inspect.Signature) -> tuple[str, ...] | None:
    """The parameters' names when each is an ordinary one (positional or keyword, no ``*args``/``**kwargs``): a call
    with one positional argument for each binds them in order, as :meth:`inspect.Signature.bind` would."""
    params = signature.parameters.values()
    if all(p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD for p in params):
        return tuple(p.name for p in params)
    return None


def _check_named(fn: Callable[..., Any]) -> None:
    """FuncError unless ``fn`` has a name of its own its runs can be recorded, cached and found again by: not a lambda
    (every lambda of a module is ``module:<lambda>``, so a second one took the first one's cache hits and reruns), not
    a method in a class body (``obj.method(x)`` would bind ``obj``'s place to ``x``: a Func is not bound)."""
    if fn.__name__ == "<lambda>":
        raise FuncError(f"@func {fn.__qualname__}: a lambda has no name of its own (its runs, cache entries and reruns "
                        "would be another lambda's): define it with def")
    parts = fn.__qualname__.split(".")
    if len(parts) > 1 and parts[-2] != "<locals>":
        raise FuncError(f"@func {fn.__qualname__}: a method in class {parts[-2]}'s body is not a func (it is not bound "
                        "to an instance): define it at module level and pass what it needs as arguments")


def _check_no_captured_data(fn: Callable[..., Any]) -> None:
    """FuncError when a cached ``fn`` reads values of the function it was defined in (a closure's free variables,
    other than funcs, functions, classes and modules): its cache key (its name and inputs) cannot see them, so a
    closure made with other values would take this one's cache entries."""
    names = fn.__code__.co_freevars
    captured = []
    for name, cell in zip(names, fn.__closure__ or (), strict=False):
        try:
            value = cell.cell_contents
        except ValueError:  # not assigned yet (a func calling itself): code, not data
            continue
        if not isinstance(value, (Func, types.FunctionType, type, types.ModuleType)):
            captured.append(name)
    if captured:
        raise FuncError(f"@func(cache=True) {fn.__qualname__}: it reads {', '.join(captured)} from the function it "
                        "was defined in, which its cache key cannot see (another closure's values would share its "
                        "cache entries): pass them as arguments, or define it at module level")


class Func:
    """A decorated function and its settings. Calling it returns a :class:`Future`."""

    fn: Callable[..., Any]
    _plain: tuple[str, ...] | None  # the parameters, when a call with one positional argument each binds at once
    cache: bool
    inline: bool
    cpu: str | None
    memory: str | None
    gpu: int | None
    node_selector: dict[str, str] | None
    tolerations: list[dict[str, Any]] | None
    retries: int
    retry_backoff: float
    retry_on: tuple[type[BaseException], ...]
    timeout: float | None
    signature: inspect.Signature
    name: str
    path: str  # module:qualname, how runs record it
    source_file: str | None

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        cache: bool = False,
        inline: bool | None = None,
        cpu: str | float | None = None,
        memory: str | None = None,
        gpu: int | None = None,
        node_selector: dict[str, str] | None = None,
        tolerations: list[dict[str, Any]] | None = None,
        retries: int = 0,
        retry_backoff: float = 1.0,
        retry_on: tuple[type[BaseException], ...] = (Exception,),
        timeout: float | None = None,
    ) -> None:
        if isinstance(fn, Func):
            raise FuncError(f"@func {fn.path}: already a func (decorated twice): keep one @func")
        if not callable(fn) or not inspect.isfunction(fn):
            raise FuncError(f"@func decorates plain functions, not {type_name(fn)}")
        if inspect.iscoroutinefunction(fn) or inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn):
            raise FuncError(f"@func {fn.__qualname__}: async and generator functions are not supported")
        _check_named(fn)
        if not isinstance(cache, bool):
            raise FuncError(f"@func {fn.__qualname__}: cache must be True or False, got {cache!r}")
        if inline is not None and not isinstance(inline, bool):  # inline="no" would be truthy: run in the driver
            raise FuncError(f"@func {fn.__qualname__}: inline must be True or False (or left out), got {inline!r}")
        if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
            raise FuncError(f"@func {fn.__qualname__}: retries must be a whole number >= 0, got {retries!r}")
        if not _seconds(retry_backoff) or retry_backoff < 0:  # nan: "retrying in nans", never retried
            raise FuncError(f"@func {fn.__qualname__}: retry_backoff must be seconds >= 0, got {retry_backoff!r}")
        if not (isinstance(retry_on, tuple) and all(isinstance(e, type) and issubclass(e, BaseException)
                                                    for e in retry_on)):
            raise FuncError(f"@func {fn.__qualname__}: retry_on must be a tuple of exception classes")
        if timeout is not None and (not _seconds(timeout) or timeout <= 0):  # nan and inf: no timeout at all
            raise FuncError(f"@func {fn.__qualname__}: timeout must be seconds > 0 (or left out: none), got "
                            f"{timeout!r}")
        if gpu is not None and (not isinstance(gpu, int) or isinstance(gpu, bool) or gpu < 0):  # gpu=True: 1 GPU
            raise FuncError(f"@func {fn.__qualname__}: gpu must be a whole number >= 0, got {gpu!r}")
        if cpu is not None and not isinstance(cpu, (str, int, float)):
            raise FuncError(f"@func {fn.__qualname__}: cpu must be like '2' or '500m', got {cpu!r}")
        if memory is not None and not isinstance(memory, str):
            raise FuncError(f"@func {fn.__qualname__}: memory must be like '4Gi', got {memory!r}")
        try:  # as its pod's manifest will take them: a mistake shows here, not when the run starts on a cluster
            cpu = None if cpu is None else quantities.quantity(cpu, "cpu")
            memory = None if memory is None else quantities.memory_quantity(memory)
        except ValueError as e:
            raise FuncError(f"@func {fn.__qualname__}: {e}") from None
        if cpu is not None and quantities.amount(cpu)[0] == 0:  # '0': no CPU at all (Docker's --cpus 0: no limit)
            raise FuncError(f"@func {fn.__qualname__}: cpu {cpu!r} is no CPU at all: ask for more than 0, like '500m' "
                            "or '2', or leave cpu out")
        if cache:
            _check_no_captured_data(fn)
        if node_selector is not None and not (isinstance(node_selector, dict) and all(
                isinstance(k, str) and isinstance(v, str) for k, v in node_selector.items())):
            raise FuncError(f"@func {fn.__qualname__}: node_selector must map label names to values (str: str)")
        if tolerations is not None and not (isinstance(tolerations, list)
                                            and all(isinstance(t, dict) for t in tolerations)):
            raise FuncError(f"@func {fn.__qualname__}: tolerations must be a list of dicts like "
                            "{'key': 'gpu', 'operator': 'Exists', 'effect': 'NoSchedule'}")
        unknown = sorted({str(k) for t in tolerations or () for k in t} - _TOLERATION_FIELDS)
        if unknown:  # the API server would refuse (or drop) them when the run's pod is made, not here
            raise FuncError(f"@func {fn.__qualname__}: tolerations take {', '.join(sorted(_TOLERATION_FIELDS))}, not "
                            f"{', '.join(unknown)}")
        wants_pod = any(x is not None for x in (cpu, memory, gpu, node_selector, tolerations))
        if inline and wants_pod:
            raise FuncError(f"@func {fn.__qualname__}: inline=True runs in the driver, so it cannot "
                            "request cpu, memory, gpu, node_selector or tolerations")
        self.fn = fn
        self.cache = cache
        self.inline = (not wants_pod) if inline is None else bool(inline)
        self.cpu = None if cpu is None else str(cpu)
        self.memory = memory
        self.gpu = gpu
        self.node_selector = node_selector
        self.tolerations = tolerations
        self.retries = retries
        self.retry_backoff = float(retry_backoff)
        self.retry_on = retry_on
        self.timeout = None if timeout is None else float(timeout)
        try:  # recorded on each of its runs, as the server takes them
            limits.check_json("its settings", self.settings(), "give it fewer node_selector labels and tolerations")
        except ValueError as e:
            raise FuncError(f"@func {fn.__qualname__}: {e}") from None
        self.signature = inspect.signature(fn)
        unnamed = [_UNNAMED[p.kind].format(p.name) for p in self.signature.parameters.values() if p.kind in _UNNAMED]
        if unnamed:  # a run's inputs are named: its body is called with them as keywords
            raise FuncError(f"@func {fn.__qualname__}: {unnamed[0]} is not supported (a run's inputs are named): take "
                            "a list or a dict instead of *args or **kwargs, and drop the '/'")
        self._plain = _plain_parameters(self.signature)
        self.name = fn.__name__
        self.path = f"{modules.recorded_name(fn.__module__)}:{fn.__qualname__}"
        self.source_file = getattr(sys.modules.get(fn.__module__), "__file__", None)
        try:  # its hints checked now, when they can be evaluated now
            self._hints  # noqa: B018 - evaluated and cached
        except FuncError as e:
            if not isinstance(e.__cause__, NameError):  # a name defined later in its module: at the first call
                raise
        functools.update_wrapper(self, fn)
        _REGISTRY[self.path] = self
        _REGISTERED.append(self.path)

    def __repr__(self) -> str:
        return f"<sk.func {self.path}>"

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled by reference: unpickling finds the func by its path (in a worker's image)."""
        return load_func, (self.path, self.source_file)

    def __call__(self, *args: Any, **kwargs: Any) -> Future:
        plain = self._plain
        if plain is not None and not kwargs and len(args) == len(plain):  # f(a, b): the usual call, bound at once
            inputs = dict(zip(plain, args, strict=True))
        else:
            try:
                bound = self.signature.bind(*args, **kwargs)
            except TypeError as e:
                raise FuncError(f"{self.name}(): {e}") from None
            bound.apply_defaults()
            inputs = dict(bound.arguments)
        hints = self._hints  # evaluated at the first call (or at decoration): hints that cannot be are said there
        if hints:
            for name, value in inputs.items():
                hint, kind = hints.get(name), type(value)
                if hint is None:
                    continue
                if type(hint) is type:
                    if kind is Future or (kind in _SCALARS and not isinstance(value, hint)):
                        self._check_argument(name, value, hint)
                elif kind is Future or kind in _SCALARS:  # list[int], int | None, ...: values holding no Future
                    self._check_argument(name, value, hint)
        return Future(self, inputs)

    def _check_argument(self, name: str, value: Any, hint: Any) -> None:
        """Said at the call (not when the run executes): a plain value (a number, a string, bytes, None) that does
        not match the parameter's hint, as the run would say; a Future whose func's return hint never can
        (``-> str`` into ``x: int``, ``-> list[int]`` into ``x: int | None``). Told by the classes the hints name
        (:func:`_classes`); what they cannot tell (Any, a protocol, a Literal's values) is checked when the run
        executes."""
        wanted = self._hint_classes[name]
        if type(value) is not Future:
            if _never((type(value),), wanted):
                self._check(value, hint, f"input '{name}'")  # typeguard's words, as when the run executes
            return
        given = value.func._hints.get("return")
        if given is not None and _never(value.func._hint_classes["return"], wanted):
            raise FuncError(f"{self.name}(): argument '{name}' takes {_hint_name(hint)}, but is given the Future of "
                            f"{value.func.name}(), which returns {_hint_name(given)}: pass it a value of that type, "
                            "or correct the hints")

    @functools.cached_property
    def _hints(self) -> dict[str, Any]:
        """The func's type hints, evaluated once (at decoration when they can be then, else at the first call: a
        forward reference to a class defined later) and checked (:func:`_hint_problem`): FuncError in one line
        naming the parameter whose hint cannot be evaluated or is no type hint, and what to do."""
        try:
            hints = typing.get_type_hints(self.fn)
        except Exception as e:
            raise self._unevaluable(self._unevaluated(e), e) from e
        for name, hint in hints.items():
            try:
                problem = _hint_problem(hint)
            except NameError as e:  # a type alias naming what its module defines later (evaluated lazily)
                raise self._unevaluable(_hint_of(name), e) from e
            if problem is not None:
                raise FuncError(f"@func {self.name}: {_hint_of(name)} is no type hint ({problem}): {HINT_ADVICE}")
        return hints

    def _unevaluable(self, what: str, error: Exception) -> FuncError:
        """The FuncError for the hint ``what`` names, whose evaluation raised ``error``."""
        return FuncError(f"@func {self.name}: {what} cannot be evaluated ({error}): define or import what it names "
                         f"in the func's module, or {HINT_ADVICE}")

    def _unevaluated(self, error: Exception) -> str:
        """Which hint ``error`` (from evaluating the hints) is about: "the type hint of parameter 'x' (its text)",
        when the name it did not find is in one hint's text, as a whole name (``Foo``, not the start of ``FooBar``);
        else "its type hints"."""
        missing = getattr(error, "name", None)
        whole = re.compile(rf"(?<!\w){re.escape(missing)}(?!\w)") if isinstance(missing, str) else None
        for name, text in getattr(self.fn, "__annotations__", {}).items():
            if whole is not None and isinstance(text, str) and whole.search(text):
                return f"{_hint_of(name)} ({text})"
        return "its type hints"

    @functools.cached_property
    def _hint_classes(self) -> dict[str, tuple[type, ...] | None]:
        """For each hint, the classes a value matching it is an instance of (:func:`_classes`); None: anything."""
        return {name: _classes(hint) for name, hint in self._hints.items()}

    @functools.cached_property
    def source_hash(self) -> str:
        """sha256 of the function's source (recorded with every run, compared on cache hits)."""
        try:
            src = inspect.getsource(self.fn)
        except (OSError, TypeError):
            src = self.fn.__code__.co_code.hex()
        return hashlib.sha256(src.encode()).hexdigest()

    @functools.cached_property
    def source_text(self) -> str | None:
        """The function's source code, recorded with every run (None when Python cannot find it); a very long one
        clipped to its start and end (:func:`~sematic_k8s.limits.source_excerpt`)."""
        try:
            return limits.source_excerpt(inspect.getsource(self.fn))
        except (OSError, TypeError):
            return None

    def settings(self) -> dict[str, Any]:
        """The func's settings as recorded on each of its Runs."""
        return {"cache": self.cache, "inline": self.inline, "cpu": self.cpu, "memory": self.memory,
                "gpu": self.gpu, "node_selector": self.node_selector, "tolerations": self.tolerations,
                "retries": self.retries, "retry_backoff": self.retry_backoff,
                "timeout": self.timeout}

    def check_inputs(self, values: dict[str, Any]) -> None:
        """Raise FuncError if an input value does not match its type hint."""
        hints = self._hints
        for name, value in values.items():
            if name in hints:
                self._check(value, hints[name], f"input '{name}'")

    def check_output(self, value: Any) -> None:
        """Raise FuncError if the returned value does not match the return hint."""
        if "return" in self._hints:
            self._check(value, self._hints["return"], "output")

    def _check(self, value: Any, hint: Any, what: str) -> None:
        if _plainly_of(value, hint):
            return  # what typeguard would say, without importing it (a tenth of a worker's start), or its item walk
        import typeguard

        try:
            typeguard.check_type(value, hint, collection_check_strategy=typeguard.CollectionCheckStrategy.ALL_ITEMS)
        except typeguard.TypeCheckError as e:
            raise FuncError(f"{self.name}: {what} should be {_hint_name(hint)}, "
                            f"got {type_name(value)} {_short_repr(value)} ({e})") from None

    def output_length(self) -> int | None:
        """The number of elements when the return hint is a fixed-size tuple (``tuple[int, str]``, a NamedTuple),
        else None: what ``a, b = f()`` unpacks."""
        hint = self._hints.get("return")
        if typing.get_origin(hint) is tuple:
            args = typing.get_args(hint)
            return None if args and args[-1] is Ellipsis else len(args)
        fields = getattr(hint, "_fields", None)
        if isinstance(hint, type) and issubclass(hint, tuple) and isinstance(fields, tuple):
            return len(fields)
        return None

    def item(self, future: Future, key: Any) -> Future:
        """The Future of ``future[key]``: a run of :data:`GETITEM` on this func's output, checked against the
        return hint here (a fixed-size tuple takes an index in range; a list or tuple an int; a dict a key)."""
        hint = self._hints.get("return")
        origin = typing.get_origin(hint) or hint
        n = self.output_length()
        if n is not None:
            if not isinstance(key, int) or isinstance(key, bool) or not -n <= key < n:
                raise FuncError(f"{self.name}() returns {_hint_name(hint)}, {n} elements: index {key!r} is not "
                                f"one of 0..{n - 1}")
            key %= n
        elif origin in (list, tuple):
            if not isinstance(key, (int, Future)) or isinstance(key, bool):
                raise FuncError(f"{self.name}() returns {_hint_name(hint)}: index it with an int, not {key!r}")
        elif origin is not dict:
            raise FutureHasNoValue(
                f"{future!r} has no value while the pipeline is being built, so it cannot be indexed: "
                f"only a func whose return hint is a tuple, list or dict (this one's is "
                f"{_hint_name(hint) if hint is not None else 'missing'}) can be; otherwise pass it to another "
                "func, or return it, and read its value inside a func that takes it as an input")
        return GETITEM(future, key)

    def retry_delay(self, attempt: int) -> float:
        """Seconds to wait before retry number ``attempt`` (1-based): exponential backoff, capped."""
        return min(self.retry_backoff * (2 ** (attempt - 1)), _RETRY_BACKOFF_CAP)


def getitem(value: Any, key: Any) -> Any:
    """One element of a func's output: what ``a, b = f()`` and ``f()[key]`` record as a run."""
    return value[key]


GETITEM = Func(getitem, inline=True)


@typing.overload
def func(fn: Callable[..., Any], /) -> Func: ...
@typing.overload
def func(**settings: Any) -> Callable[[Callable[..., Any]], Func]: ...


def func(fn: Callable[..., Any] | None = None, /, **settings: Any) -> Any:
    """Decorate a function as a pipeline step: ``@func`` or ``@func(cache=True, cpu="2", ...)``.

    Settings: ``cache``, ``inline`` (run in the driver; default unless resources are requested),
    ``cpu``, ``memory``, ``gpu``, ``node_selector``, ``tolerations`` (where its pod may run), ``retries``,
    ``retry_backoff`` (seconds, doubled each retry), ``retry_on`` (exception classes worth a retry),
    ``timeout`` (seconds).
    """
    if fn is not None:
        if settings:
            raise FuncError("use @func or @func(setting=...), not both")
        return Func(fn)
    known = set(inspect.signature(Func.__init__).parameters) - {"self", "fn"}
    unknown = set(settings) - known
    if unknown:
        raise FuncError(f"@func: unknown setting(s) {sorted(unknown)}; known: {sorted(known)}")
    return lambda f: Func(f, **settings)


def map_source(path: str | None) -> str | None:
    """Where a recorded source file is here: $SEMATIC_K8S_SOURCE_MAP="HOST_ROOT=LOCAL_ROOT" maps
    the user's project root to where an image copied it."""
    mapping = os.environ.get(SOURCE_MAP_ENV)
    if not path or not mapping or "=" not in mapping:
        return path
    host, _, here = (p.rstrip("/") for p in mapping.partition("="))
    return here + path[len(host):] if path.startswith(host + "/") else path


def _unloadable(what: str, path: str, exc: Exception) -> Exception:
    """The error of func ``path``'s module raising ``exc`` as it loaded: the module's mistake (FuncNotFound: fix it),
    or, for an error that may pass (a network mount or service its top level reads, memory short), ImportInterrupted
    (a driver is started again, a worker's attempt run again); an InfrastructureError of its own, itself."""
    if isinstance(exc, InfrastructureError):
        return exc
    module = path.partition(":")[0]
    return modules.interrupted(f"{what} {path}", module, exc) or FuncNotFound(
        f"{what} {path} cannot be loaded: {modules.raised(module, exc)}; fix the module (it must import without "
        "error), then run again")


def load_func(path: str, source_file: str | None = None, what: str = "func") -> Func:
    """Find the Func recorded as ``module:qualname``: loading its module by name, or else from its recorded
    source file, without running a pipeline its top level resolves (:mod:`sematic_k8s.modules`).

    Inside :func:`sematic_k8s.packaged.only`, its module must be one of the image's packaged files (CodeRefused,
    naming it as ``what``, otherwise). FuncNotFound when it cannot be found, or its module raised as it loaded;
    ImportInterrupted when what it raised may pass (an OSError, a service's 5xx, MemoryError), its own
    InfrastructureError itself."""
    within = packaged.restricted_to()
    if path in _REGISTRY and within is None:
        return _REGISTRY[path]
    module_name = path.partition(":")[0]
    mark = len(_REGISTERED)
    try:
        module = _module_of(path, source_file, what, within)
    except BaseException:
        _forget_unloaded(mark)
        raise
    if path not in _REGISTRY:
        where = getattr(module, "__file__", None)
        raise FuncNotFound(f"{what} {path} is not defined in its module {module_name}{f' ({where})' if where else ''}: "
                           "renamed or removed since it was recorded? Put it back to re-run it")
    return _REGISTRY[path]


def _module_of(path: str, source_file: str | None, what: str, within: packaged.PackagedCode | None) -> types.ModuleType:
    """The module of func ``path``, loaded (:func:`load_func`'s errors)."""
    try:
        return modules.load_module(path.partition(":")[0], map_source(source_file), within)
    except NotPackaged as e:
        raise CodeRefused(f"{what} {path[:300]} is not in this image's packaged code ({within.code_dir}): {e}; "  # type: ignore[union-attr]
                          "a rerun runs only the pipeline's own funcs") from None
    except FuncNotFound:  # CodeRefused, ValueRefused: the loader's own refusals, said already
        raise
    except ImportError as e:
        if user_line(e) is None:  # no line of the user's ran: the module is not here
            raise FuncNotFound(f"{what} {path} cannot be found: {e}") from e
        raise _unloadable(what, path, e) from e  # the module is: an import of its own failed
    except Exception as e:  # noqa: BLE001 - whatever its top level raised (a typo'd name, a service not answering)
        unloadable = _unloadable(what, path, e)
        if unloadable is e:
            raise
        raise unloadable from e


def _forget_unloaded(mark: int) -> None:
    """Drop the funcs registered since ``_REGISTERED[mark]`` by a module's top level that then raised: that module is
    not kept (nor in sys.modules), their globals lack what its top level did not reach, and loading them again runs
    it again. Those of a module that loaded (one it imported, another thread's) stay."""
    for path in _REGISTERED[mark:]:
        f = _REGISTRY.get(path)
        if f is not None and getattr(f.fn, "__module__", None) not in sys.modules:
            _REGISTRY.pop(path, None)

"""The Python API used carelessly: each mistake is one line naming it and what to do, raised where it is made (the
decorator's line, the call, the resolver's constructor) rather than once the resolution runs, and nothing recorded
is lost. Cases refused so before are in test_resolver.py (test_bad_decorator_settings, test_rerun_errors, ...)."""

from __future__ import annotations

import collections.abc
import math
import re
import sys
import typing

import pytest

import sematic_k8s as sk
from sematic_k8s.resolvers import loop

SERVER = "http://127.0.0.1:1"  # never asked: every case here is refused by the constructor


@sk.func
def number() -> int:
    return 2


@sk.func
def text() -> str:
    return "two"


@sk.func
def half(x: float) -> float:
    return x / 2


@sk.func
def twice(x: int) -> int:
    return 2 * x


@sk.func
def numbers() -> list[int]:
    return [1, 2]


@sk.func
def maybe(x: int | None, names: list[str], kind: typing.Literal["a", "b"] = "a") -> int:
    return 0 if x is None else x


@sk.func
def ratio(x: float | None) -> float:
    return 0.0 if x is None else x


@sk.func
def counted(xs: collections.abc.Sequence[float]) -> int:
    return len(xs)


@sk.func
def scaled(x: int, factor: float = "2") -> float:  # type: ignore[assignment]
    return x * factor


@sk.func
def miswired() -> int:
    return twice(text())  # type: ignore[arg-type]


@sk.func
def forever(n: int) -> int:
    return forever(n + 1)


def plain(x: int) -> int:
    return x


# -- the decorator ------------------------------------------------------------------------------------------------


def test_a_lambda_is_refused_as_it_has_no_name_of_its_own():
    """Was accepted as module:<lambda>: a second lambda of the module took the first one's cache hits (its value
    returned for the other's code) and was what a rerun of the first loaded."""
    with pytest.raises(sk.FuncError, match=r"^@func .*<lambda>: a lambda has no name of its own .*: define it with "
                       r"def$"):
        sk.func(cache=True)(lambda x: x + 1)


def test_a_method_in_a_class_body_is_refused_where_it_is_defined():
    """Was accepted, then ``Model().fit(1)`` said "missing a required argument: 'x'" (1 bound to self)."""
    with pytest.raises(sk.FuncError, match=r"^@func .*Model.fit: a method in class Model's body is not a func .*"
                       "define it at module level"):
        class Model:
            @sk.func
            def fit(self, x: int) -> int:
                return x


def test_a_func_decorated_twice_says_so():
    with pytest.raises(sk.FuncError, match=r"^@func .*:plain: already a func \(decorated twice\): keep one @func$"):
        sk.func(sk.func(plain))


@pytest.mark.parametrize("source, named", [
    ("def f(*xs: int) -> int: return sum(xs)", r"\*xs"),
    ("def f(**kw: int) -> int: return sum(kw.values())", r"\*\*kw"),
    ("def f(x: int, /) -> int: return x", "positional-only parameter x"),
])
def test_parameters_a_run_cannot_be_called_with_are_refused_at_the_decorator(source, named):
    """Were accepted, and every run failed: ``*xs`` checked as one int ("input 'xs' should be int, got tuple"), then
    the body called with xs= as a keyword (a run's inputs are named)."""
    space: dict = {}
    exec(source, space)
    with pytest.raises(sk.FuncError, match=rf"^@func f: {named} is not supported \(a run's inputs are named\): take "
                       "a list or a dict instead"):
        sk.func(space["f"])


def _plus(k: int) -> sk.Func:
    @sk.func(cache=True)
    def plus(x: int) -> int:
        return x + k
    return plus


def test_a_cached_closure_reading_its_makers_values_is_refused(resolver):
    """Was accepted: plus made with k=100 took the cache entry of plus made with k=1 (both 'mod:_plus.<locals>.plus'
    with the same inputs and source), and returned 4 for 3 + 100."""
    with pytest.raises(sk.FuncError, match=r"^@func\(cache=True\) _plus.<locals>.plus: it reads k from the function "
                       "it was defined in, which its cache key cannot see .*: pass them as arguments"):
        _plus(1)

    def pipeline_of_closures() -> sk.Func:  # funcs it calls, and an uncached closure, are fine
        k = 1

        @sk.func
        def add_k(x: int) -> int:
            return x + k

        @sk.func(cache=True)
        def outer(x: int) -> int:
            return add_k(twice(x))
        return outer
    assert pipeline_of_closures()(3).resolve(resolver(cache_namespace="n")) == 7


def test_resources_that_ask_for_nothing_are_refused():
    """gpu=True was recorded as gpu True (a bool is an int); cpu '0' was taken (Docker's --cpus 0 is no limit at all);
    a toleration's misspelt field was left for the API server to refuse when the pod is made."""
    with pytest.raises(sk.FuncError, match=r"gpu must be a whole number >= 0, got True"):
        sk.func(gpu=True)(plain)
    for cpu in ("0", 0, "0m", "0.0"):
        with pytest.raises(sk.FuncError, match=rf"cpu '{cpu}' is no CPU at all: ask for more than 0"):
            sk.func(cpu=cpu)(plain)
    with pytest.raises(sk.FuncError, match=r"tolerations take effect, key, operator, tolerationSeconds, value, not "
                       "efect$"):
        sk.func(tolerations=[{"key": "gpu", "operator": "Exists", "efect": "NoSchedule"}])(plain)
    assert sk.func(cpu="1m", gpu=0, tolerations=[{"key": "gpu", "operator": "Exists"}])(plain).cpu == "1m"


# -- the call -----------------------------------------------------------------------------------------------------


def test_type_hints_that_cannot_be_evaluated_are_said_at_the_call():
    """Was said only once the run executed, as its failure."""
    space: dict = {"sk": sk}
    exec("@sk.func\ndef f(x: 'Nope') -> int:\n    return 1", space)
    with pytest.raises(sk.FuncError, match=r"^@func f: the type hint of parameter 'x' \('Nope'\) cannot be evaluated "
                       r"\(name 'Nope' is not defined\): define or import what it names in the func's module, or "
                       r"hint it with a class"):
        space["f"](1)


def test_a_hint_that_cannot_be_evaluated_is_named_not_another_whose_text_holds_its_name():
    """The name not found is matched as a whole name: ``y: 'Foo'`` is the one named, not ``x: 'FooBar'``, a class
    that is defined (was: the first hint whose text held 'Foo' named, x)."""
    space: dict = {"sk": sk}
    exec("class FooBar: pass\n@sk.func\ndef f(x: 'FooBar', y: 'Foo') -> int:\n    return 1", space)
    with pytest.raises(sk.FuncError, match=r"^@func f: the type hint of parameter 'y' \('Foo'\) cannot be evaluated "
                       r"\(name 'Foo' is not defined\)"):
        space["f"](space["FooBar"](), 1)


def test_a_future_of_the_wrong_type_is_refused_at_the_call(resolver, store):
    """Was refused only when the run executed (after text() ran); now where the Future is passed: at the root call,
    and in a composition's body (its run fails with the same line)."""
    with pytest.raises(sk.FuncError, match=r"^twice\(\): argument 'x' takes int, but is given the Future of "
                       r"text\(\), which returns str: pass it a value of that type, or correct the hints$"):
        twice(text())
    f = miswired()
    with pytest.raises(sk.ResolutionFailed, match=r"miswired \(run \w+\) raised FuncError: twice\(\): argument 'x' "
                       r"takes int, but is given the Future of text\(\)"):
        f.resolve(resolver())
    assert {r.func_name: r.state for r in store.runs_of_root(f.id)} == {"miswired": "failed"}
    assert half(number()).kwargs["x"].func is number  # an int for a float, as the run's check takes it


T = typing.TypeVar("T")


@pytest.mark.parametrize(("signature", "where", "problem"), [
    ("(x: 5)", "the type hint of parameter 'x'", "5 is not a type"),
    ("(x: list[5])", "the type hint of parameter 'x'", "5 is not a type"),
    ("(x: dict[str])", "the type hint of parameter 'x'", "dict[...] takes 2 type(s), not 1"),
    ("(x: int, y: dict[str, 3] | None)", "the type hint of parameter 'y'", "3 is not a type"),
    ("(x: int) -> ('a', 'b')", "its return hint", "('a', 'b') is not a type")])
def test_a_type_hint_that_is_no_type_is_refused_at_decoration(signature, where, problem):
    """Was taken as it was: ``x: 5`` let every value through, ``list[5]`` or ``dict[str]`` failed each run with a
    'should be list[5]' once it executed (a pod's start later, on a cluster)."""
    space: dict = {"sk": sk}
    with pytest.raises(sk.FuncError, match=rf"^@func f: {where} is no type hint \({re.escape(problem)}\): hint it "
                       r"with a class or a generic of classes \(int, list\[int\], dict\[str, float\], int \| None\), "
                       r"or drop it$"):
        exec(compile(f"@sk.func\ndef f{signature}:\n    return 1", "<hints>", "exec", dont_inherit=True), space)


@pytest.mark.parametrize(("hint", "value"), [
    ("typing.List", [1]), ("typing.Dict", {"a": 1}), ("typing.Set", {1}), ("typing.FrozenSet", frozenset()),
    ("typing.Type", int), ("typing.Optional[typing.Dict]", None), ("typing.List[typing.Dict]", [{}])])
def test_a_bare_typing_generic_is_a_hint(hint, value):
    """``typing.List``, ``typing.Dict``... alone mean the generic of Any: they decorate, and a call with such a value is
    taken (was: refused at decoration, 'list[...] takes 1 type(s), not 0')."""
    space: dict = {"sk": sk, "typing": typing}
    exec(compile(f"@sk.func\ndef f(x: {hint}) -> int:\n    return 1", "<hints>", "exec", dont_inherit=True), space)
    assert space["f"](value).func is space["f"]


class _LazyAlias:
    """Python 3.12's ``type X = ...`` (typing.TypeAliasType) on an older Python: its value evaluated when first asked
    for (``__value__``), so it may name itself or what its module defines later."""

    def __init__(self, name: str, value: typing.Callable[[], object]) -> None:
        self.__name__, self._value = name, value

    @property
    def __value__(self) -> object:
        return self._value()


def _aliases(space: dict) -> None:
    """``Tree``, an alias naming itself, and ``Later``, one naming a class the module defines after it, in ``space``."""
    if sys.version_info >= (3, 12):
        exec("type Tree = list[Tree] | int\ntype Later = Defined", space)
    else:
        space["Tree"] = _LazyAlias("Tree", lambda: eval("list[Tree] | int", space))  # noqa: S307 - the alias's text
        space["Later"] = _LazyAlias("Later", lambda: eval("Defined", space))  # noqa: S307


def test_a_type_alias_naming_itself_or_a_later_class_decorates():
    """A type alias is evaluated lazily: one naming itself (a tree) is a hint (was: RecursionError at decoration); one
    naming a class its module defines later is evaluated at the first call (was: NameError at decoration), said in
    one line there if that class is still not defined."""
    space: dict = {"sk": sk}
    _aliases(space)
    exec("@sk.func\ndef tree(x: Tree) -> int:\n    return 1\n@sk.func\ndef later(x: Later) -> int:\n    return 1",
         space)
    with pytest.raises(sk.FuncError, match=r"^@func later: the type hint of parameter 'x' cannot be evaluated "
                       r"\(name 'Defined' is not defined\): define or import what it names"):
        space["later"](1)
    exec("class Defined: pass", space)
    assert space["later"](space["Defined"]()).func is space["later"]
    assert space["tree"]([1, [2]]).func is space["tree"]


def test_type_hints_are_taken_as_the_run_takes_them():
    """Unions, Literal, Any, a TypeVar, Annotated, Callable, tuple[X, ...], an ABC's generic, a class defined after
    the func (evaluated at the first call): all decorate, and a call whose values may match them is taken."""
    space: dict = {"sk": sk, "typing": typing, "collections": collections, "T": T}
    exec(compile("import collections.abc\n"
                 "@sk.func\n"
                 "def f(a: int | None, b: typing.Optional[str], c: typing.Literal[1, 'x'], d: typing.Any, e: T,\n"
                 "      g: typing.Annotated[int, 'meta'], h: typing.Callable[[int], str], i: tuple[int, ...],\n"
                 "      j: collections.abc.Mapping[str, float], k: 'Later') -> dict[str, list[int]]:\n"
                 "    return {}\n"
                 "class Later:\n"
                 "    pass\n", "<hints>", "exec", dont_inherit=True), space)
    future = space["f"](None, "s", 1, object(), 3, 4, str, (1, 2), {"a": 1.0}, space["Later"]())
    assert future.kwargs["a"] is None


def test_a_value_of_the_wrong_type_for_a_union_or_a_generic_is_refused_at_the_call():
    """Was refused only when the run executed (recorded failed): a plain value for ``list[str]``, ``int | None``,
    ``Literal['a', 'b']``; a Future whose func returns a list for ``int | None``, a str for ``float | None``. The
    same words as the run's, at the call."""
    with pytest.raises(sk.FuncError, match=r"^maybe: input 'x' should be int \| None, got str '3' \("):
        maybe("3", ["n"])  # type: ignore[arg-type]
    with pytest.raises(sk.FuncError, match=r"^maybe: input 'names' should be list\[str\], got str 'n' \(str is not a "
                       r"list\)$"):
        maybe(3, "n")  # type: ignore[arg-type]
    with pytest.raises(sk.FuncError, match=r"^maybe: input 'kind' should be Literal\['a', 'b'\], got int 3"):
        maybe(3, ["n"], 3)  # type: ignore[arg-type]
    with pytest.raises(sk.FuncError, match=r"^maybe\(\): argument 'x' takes int \| None, but is given the Future of "
                       r"numbers\(\), which returns list\[int\]: pass it a value of that type, or correct the "
                       r"hints$"):
        maybe(numbers(), ["n"])
    with pytest.raises(sk.FuncError, match=r"^ratio\(\): argument 'x' takes float \| None, but is given the Future "
                       r"of text\(\), which returns str"):
        ratio(text())
    with pytest.raises(sk.FuncError, match=r"^counted: input 'xs' should be collections.abc.Sequence\[float\], got "
                       r"int 3"):
        counted(3)  # type: ignore[arg-type]
    # as the run's check takes them: an int for a float, a Future that may match, what only the run can tell
    assert ratio(3).kwargs == {"x": 3} and ratio(number()).kwargs["x"].func is number
    assert maybe(None, ["n"], "b").kwargs["x"] is None and counted(numbers()).kwargs["xs"].func is numbers
    assert maybe(twice(1), ["n"]).kwargs["x"].func is twice


def test_a_plain_value_of_the_wrong_type_is_refused_at_the_call():
    """Was refused only when the run executed (recorded failed); the same words, at the call: an argument, a default."""
    with pytest.raises(sk.FuncError, match=r"^twice: input 'x' should be int, got str '3' \(str is not an instance "
                       r"of int\)$"):
        twice("3")  # type: ignore[arg-type]
    with pytest.raises(sk.FuncError, match=r"^twice: input 'x' should be int, got NoneType None"):
        twice(x=None)  # type: ignore[arg-type]
    with pytest.raises(sk.FuncError, match=r"^scaled: input 'factor' should be float, got str '2'"):
        scaled(1)
    assert half(3).kwargs == {"x": 3} and twice(True).kwargs == {"x": True}  # as the run's check takes them


def test_resolve_with_something_that_is_not_a_resolver_is_one_line():
    """Was "LocalResolver.resolve() missing 1 required positional argument: 'future'", and "'str' object has no
    attribute 'resolve'", from inside the library."""
    with pytest.raises(TypeError, match=r"^resolve\(\) takes a resolver such as sematic_k8s.LocalResolver\(\), got "
                       r"<class .*LocalResolver'>: call the class to make one"):
        number().resolve(sk.LocalResolver)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^resolve\(\) takes a resolver such as .*, got 'local'$"):
        number().resolve("local")  # type: ignore[arg-type]


# -- the resolver -------------------------------------------------------------------------------------------------


def test_a_namespace_string_that_cannot_be_is_refused_by_the_constructor(resolver):
    """Was taken by the constructor and refused only by resolve()."""
    for ns, shown in (("", "''"), ("x" * 300, r"'xxxx.*\.\.\. \(300 characters\)")):
        with pytest.raises(ValueError, match=rf"^cache_namespace must be a non-empty string of at most 256 characters "
                           rf"\(or a callable returning one\), got {shown}$"):
            resolver(cache_namespace=ns)


def test_a_namespace_callable_that_raises_is_named(resolver, store):
    """Was its bare error ("division by zero"), not saying the cache namespace raised it."""
    def nightly(root: sk.Future) -> str:
        return str(1 / 0)
    with pytest.raises(ValueError, match=r"^cache_namespace .*nightly\(root future\) raised ZeroDivisionError: "
                       "division by zero: make it return a string") as e:
        number().resolve(resolver(cache_namespace=nightly))
    assert isinstance(e.value.__cause__, ZeroDivisionError)
    assert store.list_resolutions() == []  # nothing recorded, nothing left running


@pytest.mark.parametrize("home", ["", "  ", 5])
def test_a_home_that_is_not_a_path_is_refused(home):
    """home='' was the default home (~/.sematic_k8s), without a word; home=5 was pathlib's TypeError."""
    with pytest.raises(ValueError, match=r"^home must be a directory's path \(or left out: \$SEMATIC_K8S_HOME, else "
                       rf"~/.sematic_k8s\), got {home!r}$"):
        sk.LocalResolver(home=home)


@pytest.mark.parametrize("root_id", ["x", "", 5, "ab\n", "A" * 32])
def test_a_root_id_that_is_not_a_run_id_is_refused(resolver, root_id):
    """Was taken: a resolution recorded with the id 'x', which the server and the CLI do not take."""
    with pytest.raises(ValueError, match=r"^root_id must be a new run id, hexadecimal like uuid.uuid4\(\).hex"):
        resolver(root_id=root_id)


@pytest.mark.parametrize("argument, says", [
    ({"storage": "s4://bucket"}, r"unsupported storage URL 's4://bucket': use s3://bucket/prefix"),
    ({"registry": "http://127.0.0.1:5000/p"}, r"registry must be HOST\[:PORT\]\[/PATH\] .*no http://"),
    ({"detach": "no"}, r"detach must be True or False, got 'no'"),
    ({"poll_interval": -1}, r"poll_interval must be seconds > 0, got -1"),
    ({"poll_interval": math.nan}, r"poll_interval must be seconds > 0, got nan"),
    ({"progress": "yes"}, r"progress must be a function taking each line"),
    ({"executor_settings": [1]}, r"executor_settings must be a dict"),
    ({"executor_settings": {"pull_grace": 5, "namespace": "x"}},
     r"unknown Docker executor setting\(s\) \['namespace'\]; known: \['pull_grace'\]"),
    ({"executor": "kubernetes", "executor_settings": {"namespce": "x"}},
     r"unknown Kubernetes executor setting\(s\) \['namespce'\]"),
])
def test_cloud_resolver_arguments_that_cannot_be_right_are_refused_by_the_constructor(argument, says):
    """Were taken, and met later: once the image was built (time.sleep(-1) deep in the follower, the storage URL),
    by the driver on the cluster (a Kubernetes setting), or never (detach="no" detached, a Docker setting ignored)."""
    options = {"server": SERVER, "storage": "s3://bucket", "registry": "127.0.0.1:5000/p", **argument}
    with pytest.raises(ValueError, match=f"^{says}"):
        sk.CloudResolver(**options)
    sk.CloudResolver(server=SERVER, storage="s3://bucket", registry="127.0.0.1:5000/p", poll_interval=0.2,
                     detach=True, progress=print, executor="kubernetes", executor_settings={"namespace": "x"})


# -- the resolution -----------------------------------------------------------------------------------------------


def test_a_pipeline_calling_itself_forever_fails_at_a_depth_limit(resolver, store):
    """Was planned without end: 166,000 nested runs recorded in 155 s before it was interrupted by hand."""
    f = forever(0)
    with pytest.raises(sk.ResolutionFailed, match=rf"forever \(run \w+\) is {loop.MAX_NESTING} compositions deep, "
                       "the most a pipeline may nest: does a func call itself without a case that returns a value"):
        f.resolve(resolver())
    runs = store.runs_of_root(f.id)
    assert len(runs) == loop.MAX_NESTING + 1 and {r.state for r in runs} == {"failed"}
    assert store.get_resolution(f.id).state == "failed"

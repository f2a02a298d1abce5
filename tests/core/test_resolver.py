"""End-to-end pipelines through LocalResolver: what executed, what was recorded, what failed."""

from __future__ import annotations

import collections
import datetime as dt
import gc
import logging
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

import pytest
import sqlalchemy as sa

import sematic_k8s as sk
from sematic_k8s.resolvers.recorder import INLINE_LIMIT
from sematic_k8s.storage.base import artifact_key, log_key
from sematic_k8s.storage.local import LocalStorage

CALLS: collections.Counter[str] = collections.Counter()
FLAGS: dict[str, object] = {}


@pytest.fixture(autouse=True)
def _reset() -> None:
    CALLS.clear()
    FLAGS.clear()


def runs_by_func(store, root_id: str) -> dict[str, list]:
    out: dict[str, list] = collections.defaultdict(list)
    for r in store.runs_of_root(root_id):
        out[r.func_name].append(r)
    return out


# -- funcs --------------------------------------------------------------------------------------


@sk.func
def add(a: int, b: int) -> int:
    CALLS["add"] += 1
    return a + b


@sk.func
def double(x: int) -> int:
    CALLS["double"] += 1
    return 2 * x


@sk.func
def total(xs: list[int]) -> int:
    CALLS["total"] += 1
    return sum(xs)


@sk.func
def inner(x: int) -> int:
    CALLS["inner"] += 1
    return double(add(x, 1))


@sk.func
def outer(x: int) -> int:
    CALLS["outer"] += 1
    return add(inner(x), inner(x + 10))


@sk.func
def fan(n: int) -> int:
    return total([double(i) for i in range(n)])


@sk.func
def structures(x: int) -> dict[str, list[int]]:
    return {"pair": [double(x), add(x, x)], "const": [7]}


@sk.func
def takes_tuple(t: tuple[int, int], d: dict[str, int]) -> int:
    return t[0] + t[1] + d["k"]


@sk.func
def tuple_args(x: int) -> int:
    return takes_tuple((double(x), 1), {"k": add(x, 0)})


# -- resolving ------------------------------------------------------------------------------------


def test_resolves_value_and_records_runs(resolver, store):
    f = add(1, 2)
    assert f.resolve(resolver()) == 3
    run = store.get_run(f.id)
    assert run is not None and run.state == "resolved" and run.parent_id is None and run.root_id == f.id
    res = store.get_resolution(f.id)
    assert res.state == "resolved" and res.root_func_path.endswith(":add")
    assert set(run.inputs) == {"a", "b"} and run.output_id


@sk.func
def collector_state(x: int) -> int:
    FLAGS.setdefault("collector on in funcs", set()).add(gc.isenabled())
    return x


@sk.func
def collector_fan(n: int, fails: bool) -> list[int]:
    FLAGS.setdefault("collector on in funcs", set()).add(gc.isenabled())
    return [collector_state(i) for i in range(n)] + ([add(1, "x")] if fails else [])  # type: ignore[arg-type]


@pytest.mark.parametrize("fails", [False, True])
def test_the_collector_pauses_for_the_librarys_work_only(resolver, fails):
    """The loop pauses Python's cyclic garbage collector while it plans, looks up and records in bulk, never while a
    func runs, and it is back on after the resolution, however it ended."""
    assert gc.isenabled()
    future = collector_fan(50, fails)
    if fails:
        with pytest.raises(sk.ResolutionFailed):
            future.resolve(resolver(cache_namespace="gc"))
    else:
        assert future.resolve(resolver(cache_namespace="gc")) == list(range(50))
    assert FLAGS["collector on in funcs"] == {True}
    assert gc.isenabled()


def test_nested_pipelines_record_parents(resolver, store):
    f = outer(1)
    assert f.resolve(resolver()) == (2 * 2) + (2 * 12)
    by = runs_by_func(store, f.id)
    assert len(by["inner"]) == 2 and len(by["add"]) == 3 and len(by["double"]) == 2
    assert all(r.state == "resolved" for rs in by.values() for r in rs)
    inners = {r.id for r in by["inner"]}
    assert sorted(r.parent_id in inners for r in by["double"]) == [True, True]
    assert by["inner"][0].parent_id == f.id and by["inner"][0].output_ref == {"run": by["inner"][0].output_ref["run"]}


def test_lists_dicts_tuples_of_futures(resolver):
    assert fan(5).resolve(resolver()) == 20
    assert structures(3).resolve(resolver()) == {"pair": [6, 6], "const": [7]}
    assert tuple_args(4).resolve(resolver()) == 8 + 1 + 4


def test_same_root_future_resolved_twice_gets_new_root(resolver, store):
    f = add(2, 2)
    f.resolve(resolver())
    first = f.id
    assert f.resolve(resolver()) == 4
    assert f.id != first and store.get_resolution(f.id).state == "resolved"


def test_equal_values_share_one_content_addressed_artifact(resolver, store, tmp_path):
    f, g = add(1, 1), double(1)
    f.resolve(resolver())
    g.resolve(resolver())
    a, b = store.get_run(f.id), store.get_run(g.id)
    assert a.output_id == b.output_id  # both 2
    assert a.inputs["a"] == a.inputs["b"] == b.inputs["x"]  # all 1
    storage = LocalStorage(tmp_path / "storage")
    assert store.get_artifact(a.output_id).inline == b"2"  # small: kept inline with its record, no file
    assert not storage.exists(artifact_key(a.output_id))
    assert store.get_artifact(a.output_id).summary == 2


@sk.func
def xs_text(n: int) -> str:
    return "x" * n


def test_small_values_inline_large_ones_in_storage(resolver, store, tmp_path):
    small, large = xs_text(INLINE_LIMIT - 2), xs_text(INLINE_LIMIT)  # JSON adds the quotes
    assert small.resolve(resolver()) == "x" * (INLINE_LIMIT - 2)
    assert large.resolve(resolver()) == "x" * INLINE_LIMIT
    storage = LocalStorage(tmp_path / "storage")
    s_art = store.get_artifact(store.get_run(small.id).output_id)
    l_art = store.get_artifact(store.get_run(large.id).output_id)
    assert (s_art.size, len(s_art.inline)) == (INLINE_LIMIT, INLINE_LIMIT)
    assert not storage.exists(artifact_key(s_art.id))
    assert l_art.inline is None and len(storage.get(artifact_key(l_art.id))) == INLINE_LIMIT + 2


@sk.func
def joined_len(a: str, b: str) -> int:
    return len(a) + len(b)


@sk.func
def xs_texts() -> int:
    return joined_len(xs_text(10), xs_text(INLINE_LIMIT * 2))


def test_a_rerun_reads_inline_and_stored_inputs(resolver, store):
    first = xs_texts()
    assert first.resolve(resolver()) == 10 + INLINE_LIMIT * 2
    joined = next(r for r in store.runs_of_root(first.id) if r.func_name == "joined_len")
    again = xs_texts()
    assert again.resolve(resolver(rerun_from=joined.id)) == 10 + INLINE_LIMIT * 2  # loads both reused outputs
    new = {r.func_name: r for r in store.runs_of_root(again.id)}
    assert new["joined_len"].state == "resolved" and new["xs_text"].notes.get("reused_from")


# -- bad input ---------------------------------------------------------------------------------------


def test_call_with_wrong_arguments_is_a_clear_error():
    with pytest.raises(sk.FuncError, match=r"add\(\): missing a required argument: 'b'"):
        add(1)
    with pytest.raises(sk.FuncError, match="unexpected keyword argument 'c'"):
        add(1, 2, c=3)


@sk.func
def with_default(a: int, b: int = 5) -> int:
    return a + b


@sk.func
def keyword_only(a: int, *, b: int) -> int:
    return a + b


def test_every_way_of_calling_binds_the_same_inputs():
    """A call with one positional argument per parameter (bound at once) gives the Future the same inputs, in the
    parameters' order, as keywords, a mix, or defaults (bound by the signature)."""
    assert add(1, 2).kwargs == add(b=2, a=1).kwargs == add(1, b=2).kwargs == {"a": 1, "b": 2}
    assert list(add(b=2, a=1).kwargs) == ["a", "b"]
    assert with_default(1).kwargs == with_default(1, 5).kwargs == {"a": 1, "b": 5}
    assert keyword_only(1, b=2).kwargs == {"a": 1, "b": 2}
    with pytest.raises(sk.FuncError, match=r"keyword_only\(\): too many positional arguments"):
        keyword_only(1, 2)
    with pytest.raises(sk.FuncError, match=r"add\(\): too many positional arguments"):
        add(1, 2, 3)


@sk.func
def anything(x: Any) -> object:
    return x


@sk.func
def add_anything(x: Any) -> int:
    return add(anything(x), 2)


def test_wrong_input_type_fails_with_clear_message(resolver, store):
    with pytest.raises(sk.FuncError, match=r"^add: input 'a' should be int, got str 'x'"):  # a plain value: at the call
        add("x", 2)
    f = add_anything("x")  # a value known only once computed: when the run executes
    with pytest.raises(sk.ResolutionFailed, match=r"add: input 'a' should be int, got str 'x'") as e:
        f.resolve(resolver())
    [run] = runs_by_func(store, f.id)["add"]
    assert run.state == "failed" and e.value.run_id == run.id


@sk.func
def lies() -> int:
    return "not an int"  # type: ignore[return-value]


@sk.func
def lying_pipeline() -> list[str]:
    return [double(1)]  # type: ignore[list-item]


def test_wrong_output_type_fails(resolver):
    with pytest.raises(sk.ResolutionFailed, match=r"lies: output should be int, got str"):
        lies().resolve(resolver())
    with pytest.raises(sk.ResolutionFailed, match=r"lying_pipeline: output should be list\[str\]"):
        lying_pipeline().resolve(resolver())


def test_root_future_with_future_argument_is_rejected(resolver):
    with pytest.raises(sk.FuncError, match="argument 'x' is a Future"):
        double(add(1, 2)).resolve(resolver())


@pytest.mark.parametrize("use", [
    "if f: pass", "f > 3", "3 < f", "f == 3", "f != 3", "f.attr", "f.value", "f + 1", "1 - f", "-f", "abs(f)",
    "len(f)", "list(f)", "a, b = f", "for x in f: pass", "3 in f", "int(f)", "float(f)", "round(f)", "f[0]",
    "f['k']", "f()", "f[0] = 1", "range(f)",
])
def test_futures_have_no_value_while_building(use):
    """Every use of a Future as a value gets the same message, naming what was tried."""
    f = add(1, 2)
    with pytest.raises(sk.errors.FutureHasNoValue,
                       match=r"<Future add id=\w+> has no value while the pipeline is being built"):
        exec(use, {"f": f})


def test_futures_are_still_ordinary_objects():
    f = add(1, 2)
    assert not hasattr(f, "shape") and f in [add(1, 2), f] and f == f and f != add(1, 2)
    assert len({f, f}) == 1 and repr(f).startswith("<Future add id=")


@sk.func
def split(x: int) -> tuple[int, str]:
    return x, f"x={x}"


@sk.func
def join(n: int, text: str) -> str:
    return f"{text} n={n}"


@sk.func
def listing(n: int) -> list[int]:
    return list(range(n))


@sk.func
def mapping(n: int) -> dict[str, int]:
    return {"n": n, "twice": 2 * n}


@sk.func
def unpacked(x: int) -> list:
    n, text = split(x)  # one Future per element
    first, last = split(x + 1)[0], split(x + 1)[-1]
    return [join(n, text), join(double(n), text), first, last, listing(4)[2], mapping(x)["twice"]]


def test_fixed_size_tuple_outputs_unpack_into_futures(resolver, store):
    f = unpacked(5)
    assert f.resolve(resolver()) == ["x=5 n=5", "x=5 n=10", 6, "x=6", 2, 10]
    runs = runs_by_func(store, f.id)
    assert len(runs["split"]) == 3  # split(x), and split(x + 1) twice: each call is a run, as written
    items = runs["getitem"]
    assert all(r.state == "resolved" and r.settings["inline"] for r in items)
    split_ids = {r.id for r in runs["split"]}
    per_split = collections.Counter(r.input_refs["value"]["run"] for r in items
                                    if r.input_refs["value"]["run"] in split_ids)
    assert sorted(per_split.values()) == [1, 1, 2] and len(items) == 6  # and one each for listing, mapping
    unpacked_split = next(run_id for run_id, n in per_split.items() if n == 2)
    from_first = [r for r in items if r.input_refs["value"] == {"run": unpacked_split}]
    # unpacking made one run per element, each reading split's output
    joins = {r.id: r for r in runs["join"]}
    sources = {ref["run"] for j in joins.values() for ref in j.input_refs.values()}
    assert {r.id for r in from_first} <= sources  # join reads the elements, not the whole tuple
    assert f.resolve(resolver()) == ["x=5 n=5", "x=5 n=10", 6, "x=6", 2, 10]  # and again: new runs, same values


def test_unpacking_needs_a_fixed_size_tuple_hint():
    with pytest.raises(sk.errors.FutureHasNoValue, match="only a func whose return hint is a fixed-size tuple"):
        a, b = listing(2)
    with pytest.raises(sk.FuncError, match=r"split\(\) returns tuple\[int, str\], 2 elements: index 2 is not"):
        split(1)[2]
    with pytest.raises(ValueError, match="not enough values to unpack"):
        a, b, c = split(1)
    with pytest.raises(sk.FuncError, match="index it with an int"):
        listing(2)["a"]
    with pytest.raises(sk.errors.FutureHasNoValue, match=r"cannot be indexed.*\(this one's is int\)"):
        add(1, 2)[0]


def plain_one() -> int:
    """A plain function to decorate with settings (a lambda is refused)."""
    return 1


def test_bad_decorator_settings():
    with pytest.raises(sk.FuncError, match="retries must be a whole number"):
        sk.func(retries=-1)(plain_one)
    with pytest.raises(sk.FuncError, match="unknown setting"):
        sk.func(cahce=True)
    with pytest.raises(sk.FuncError, match="cannot request cpu"):
        @sk.func(inline=True, cpu="2")
        def f() -> None: ...
    with pytest.raises(sk.FuncError, match="async"):
        @sk.func
        async def g() -> None: ...
    # quantities as a pod's manifest takes them, said on the decorator's line rather than when the run starts
    with pytest.raises(sk.FuncError, match=r"@func .*h: memory '512m' is a fraction of a byte .*did you mean '512Mi'"):
        @sk.func(memory="512m")
        def h() -> None: ...
    with pytest.raises(sk.FuncError, match=r"memory '4Ki' is 4096 bytes: a container needs at least 6Mi"):
        sk.func(memory="4Ki")(plain_one)
    with pytest.raises(sk.FuncError, match=r"cpu 'two' is not a Kubernetes quantity"):
        sk.func(cpu="two")(plain_one)
    # accepted, these ran with no timeout at all, waited "nan s" and never retried, or ran inline='no' in the driver
    for setting, value, says in (("timeout", float("nan"), "timeout must be seconds > 0"),
                                 ("timeout", float("inf"), "timeout must be seconds > 0"),
                                 ("timeout", True, "timeout must be seconds > 0"),
                                 ("retry_backoff", float("nan"), "retry_backoff must be seconds >= 0"),
                                 ("inline", "no", "inline must be True or False")):
        with pytest.raises(sk.FuncError, match=f"{says}.*got {value!r}"):
            sk.func(**{setting: value})(plain_one)
    assert (sk.func(cpu=0.5, memory=" 1.5Gi")(plain_one).settings()["memory"], sk.func(cpu=2)(plain_one).cpu) \
        == ("1.5Gi", "2")


def test_bad_resolver_settings(resolver):
    with pytest.raises(ValueError, match="rerun_mode"):
        resolver(rerun_from="x", rerun_mode="sideways")
    with pytest.raises(ValueError, match="max_parallelism"):
        resolver(max_parallelism=0)
    with pytest.raises(TypeError, match="resolve\\(\\) takes the Future"):
        resolver().resolve(42)


# -- failures, retries, timeouts ------------------------------------------------------------------


@sk.func
def boom(x: int) -> int:
    CALLS["boom"] += 1
    raise ValueError(f"boom {x}")


@sk.func
def with_boom(x: int) -> int:
    return add(boom(x), double(x))


def test_failure_records_traceback_and_fails_cleanly(resolver, store):
    f = with_boom(3)
    with pytest.raises(sk.ResolutionFailed, match=r"boom \(run \w+\) raised ValueError: boom 3") as e:
        f.resolve(resolver())
    assert isinstance(e.value.__cause__, ValueError)
    by = runs_by_func(store, f.id)
    failed = by["boom"][0]
    assert failed.state == "failed" and failed.error["type"] == "ValueError"
    assert "raise ValueError" in failed.error["traceback"] and 'boom {x}' in failed.error["traceback"]
    assert by["with_boom"][0].state == "failed"
    assert by["add"][0].state == "canceled"
    res = store.get_resolution(f.id)
    assert res.state == "failed" and "boom 3" in res.error


@sk.func(retries=3, retry_backoff=0.05)
def flaky(x: int) -> int:
    CALLS["flaky"] += 1
    FLAGS.setdefault("times", []).append(time.monotonic())  # type: ignore[union-attr]
    if CALLS["flaky"] < 3:
        raise ConnectionError("try again")
    return x


@sk.func(retries=2, retry_backoff=0.01, retry_on=(ConnectionError,))
def always_flaky(x: int) -> int:
    CALLS["always_flaky"] += 1
    raise ConnectionError("never")


@sk.func(retries=5, retry_backoff=0.01, retry_on=(ConnectionError,))
def wrong_kind_of_error(x: int) -> int:
    CALLS["wrong_kind_of_error"] += 1
    raise KeyError("not retried")


def test_retries_with_exponential_backoff(resolver, store):
    f = flaky(5)
    assert f.resolve(resolver()) == 5
    assert CALLS["flaky"] == 3
    run = store.get_run(f.id)
    assert run.attempts == 3 and run.state == "resolved" and run.error is None
    t = FLAGS["times"]
    assert t[1] - t[0] >= 0.05 and t[2] - t[1] >= 0.1  # backoff doubles
    assert flaky.retry_delay(1) == 0.05 and flaky.retry_delay(3) == 0.2
    assert sk.func(retries=50, retry_backoff=1)(plain_one).retry_delay(40) == 300  # capped


def test_retries_exhausted_and_unlisted_errors(resolver, store):
    f = always_flaky(1)
    with pytest.raises(sk.ResolutionFailed, match="ConnectionError: never"):
        f.resolve(resolver())
    assert CALLS["always_flaky"] == 3 and store.get_run(f.id).attempts == 3
    with pytest.raises(sk.ResolutionFailed, match="KeyError"):
        wrong_kind_of_error(1).resolve(resolver())
    assert CALLS["wrong_kind_of_error"] == 1


SLOW_RELEASE, SLOW_RETURNED = threading.Event(), threading.Event()


@sk.func(timeout=0.2)
def slow(x: int) -> int:
    SLOW_RELEASE.wait(60)
    SLOW_RETURNED.set()
    return x


def test_timeout_fails_the_run(resolver, store):
    SLOW_RELEASE.clear()
    SLOW_RETURNED.clear()
    f = slow(1)
    try:
        with pytest.raises(sk.ResolutionFailed, match=r"slow exceeded its timeout of 0.2s"):
            f.resolve(resolver())
        assert not SLOW_RETURNED.is_set()  # failed at its timeout, not once the func returned
    finally:
        SLOW_RELEASE.set()
    assert store.get_run(f.id).error["type"] == "TimeoutError"


# -- parallelism and context ----------------------------------------------------------------------


@sk.func
def meet(i: int) -> str:
    FLAGS["barrier"].wait()  # type: ignore[attr-defined]
    ctx = sk.context()
    return f"{ctx.run_id}/{ctx.root_id}/{ctx.resolution_id}"


@sk.func
def meeting(n: int) -> list[str]:
    return [meet(i) for i in range(n)]


def test_independent_runs_execute_in_parallel_with_their_own_context(resolver, store):
    FLAGS["barrier"] = threading.Barrier(4, timeout=10)  # only passes if 4 runs are in flight at once
    f = meeting(4)
    seen = f.resolve(resolver(max_parallelism=4))
    meets = {r.id for r in runs_by_func(store, f.id)["meet"]}
    assert {s.split("/")[0] for s in seen} == meets
    assert {s.split("/", 1)[1] for s in seen} == {f"{f.id}/{f.id}"}


def test_context_outside_a_func_is_a_clear_error():
    with pytest.raises(RuntimeError, match="outside of a running func"):
        sk.context()


# -- logs ---------------------------------------------------------------------------------------------


@sk.func
def chatty(x: int) -> int:
    print(f"hello from {x}")
    return x


def test_stdout_is_captured_per_run(resolver, tmp_path, capsys):
    f = chatty(7)
    f.resolve(resolver())
    assert LocalStorage(tmp_path / "storage").get(log_key(f.id)) == b"hello from 7\n"
    assert "hello from 7" in capsys.readouterr().out  # still shown on the terminal


TALKERS = """
import sys
import sematic_k8s as sk

@sk.func
def talker(k: int) -> int:
    for i in range(3000):
        print(f"line {k} {i} " + "x" * 40)
    print(f"end of {k}", end="")  # no newline: written out when the run ends
    return k

@sk.func
def talkers() -> list[int]:
    return [talker(0), talker(1), talker(2)]

talkers().resolve(sk.LocalResolver(home=sys.argv[1], max_parallelism=3))
"""


def test_funcs_printing_on_threads_at_once_do_not_cut_into_each_others_lines(tmp_path):
    """Three funcs printing at once (max_parallelism=3) in a process whose stdout is a pipe: each line reaches it
    whole, each func's last partial line too. Before, print's two writes (the text, then its newline) let another
    thread's line in between: `make run`'s example showed "mean of 100 values ...mean of 100 values ..." on one
    line (here, hundreds of lines were torn)."""
    script = tmp_path / "talkers.py"
    script.write_text(TALKERS)
    done = subprocess.run([sys.executable, str(script), str(tmp_path / "home")], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    torn = [line for line in done.stdout.splitlines()
            if not re.fullmatch(r"(end of \d)*line \d \d+ x{40}|(end of \d)+", line)]
    assert not torn, torn[:5]
    assert sorted(re.findall(r"end of (\d)", done.stdout)) == ["0", "1", "2"]


# -- caching ---------------------------------------------------------------------------------------


@sk.func(cache=True)
def expensive(x: int) -> int:
    CALLS["expensive"] += 1
    return x * 100


@sk.func(cache=True)
def cached_pipeline(x: int) -> int:
    CALLS["cached_pipeline"] += 1
    return double(expensive(x))


@dataclass
class Opaque:
    """A dataclass carrying state outside its fields: only pickle keeps it, so no stable hash."""

    def __init__(self) -> None:
        self.extra = {"state": 1}


class Unpicklable:
    def __init__(self) -> None:
        self.lock = threading.Lock()


@sk.func(cache=True)
def takes_object(o: object) -> int:
    return 1


def test_cache_hit_reuses_output_and_records_source(resolver, store):
    a = expensive(3)
    assert a.resolve(resolver(cache_namespace="ns")) == 300
    b = expensive(3)
    assert b.resolve(resolver(cache_namespace="ns")) == 300
    assert CALLS["expensive"] == 1
    hit = store.get_run(b.id)
    assert hit.cached_from == a.id and hit.output_id == store.get_run(a.id).output_id
    assert hit.cache_key == store.get_run(a.id).cache_key and hit.notes["cache"]["source_changed"] is False
    expensive(4).resolve(resolver(cache_namespace="ns"))
    expensive(3).resolve(resolver(cache_namespace="other"))
    assert CALLS["expensive"] == 3  # other inputs, other namespace: misses


@sk.func(cache=True)
def cached_inc(i: int) -> int:
    CALLS["cached_inc"] += 1
    return i + 1


@sk.func(cache=True)
def cached_total(xs: list[int]) -> int:
    return sum(xs)


@sk.func
def cached_fan(n: int) -> int:
    return cached_total([cached_inc(i) for i in range(n)])


def test_cache_hits_of_a_fan_out_are_one_look_up_per_wave(resolver, store, monkeypatch):
    CALLS.clear()
    first = cached_fan(30)
    assert first.resolve(resolver(cache_namespace="ns")) == sum(range(1, 31)) and CALLS["cached_inc"] == 30
    looked_up: list[int] = []
    alone: list[str] = []
    batched = "find_hits" if hasattr(type(store), "find_hits") else "find_cached_many"  # SQL: with the outputs
    many, one = getattr(type(store), batched), type(store).find_cached
    monkeypatch.setattr(type(store), batched, lambda self, keys: many(self, looked_up.append(
        len(keys := list(keys))) or keys))
    monkeypatch.setattr(type(store), "find_cached", lambda self, key: alone.append(key) or one(self, key))
    second = cached_fan(30)
    assert second.resolve(resolver(cache_namespace="ns")) == sum(range(1, 31)) and CALLS["cached_inc"] == 30
    assert looked_up == [30, 1] and alone == []  # the 30 incs, then the total: two look-ups, none alone
    old = {r.cache_key: r for r in store.runs_of_root(first.id) if r.cache_key}
    new = [r for r in store.runs_of_root(second.id) if r.cache_key]
    assert len(new) == 31 and all(r.cached_from == old[r.cache_key].id and r.state == "resolved" and
                                  r.output_id == old[r.cache_key].output_id for r in new)
    assert all(isinstance(r.created_at, dt.datetime) and r.created_at <= r.started_at == r.ended_at for r in new)
    # a rerun's target executes even when cached, the others hit
    CALLS.clear()
    target = next(r for r in store.runs_of_root(first.id) if r.func_name == "cached_inc")
    assert cached_fan(30).resolve(resolver(cache_namespace="ns", rerun_from=target.id)) == sum(range(1, 31))
    assert CALLS["cached_inc"] == 1


def test_cache_look_ups_read_the_cache_index_alone(resolver, store):
    """Every cache look-up reads the partial index of the runs a key can hit (not the state's, which would walk every
    resolved run), and the batched one needs nothing else of the runs table; hits are not in that index."""
    import sqlalchemy as sa

    from sematic_k8s.store import sql, tables

    first = cached_fan(5)
    first.resolve(resolver(cache_namespace="ns"))
    cached_fan(5).resolve(resolver(cache_namespace="ns"))  # hits
    t = store._runs
    keys = ["a" * 64, "b" * 64]
    single = sa.select(t).where(t.c.cache_key == keys[0], t.c.state == "resolved", t.c.cached_from.is_(None))
    many = sa.select(t.c.id).where(t.c.cache_key.in_(keys), t.c.state == "resolved", t.c.cached_from.is_(None))
    with store.engine.connect() as conn:
        def plan(statement: str, params: Any) -> str:
            return " ".join(str(row[-1]) for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, params))

        hits_plan = plan(sql._HITS_SQL.format("?, ?"), tuple(keys))
        assert "SEARCH runs USING COVERING INDEX ix_runs_cache_hits" in hits_plan, hits_plan
        for stmt in (single, many):  # find_cached, find_cached_many
            text = str(stmt.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True}))
            assert "INDEX ix_runs_cache_hits" in plan(text, ()), plan(text, ())
        indexed = conn.exec_driver_sql("SELECT count(*) FROM runs INDEXED BY ix_runs_cache_hits "
                                       f"WHERE {tables.CACHE_HITS_WHERE}").scalar()
        hits = conn.exec_driver_sql("SELECT count(*) FROM runs WHERE cached_from IS NOT NULL").scalar()
    assert hits == 6 and indexed == 6  # the first resolution's cached runs only


def test_a_corrupt_cached_output_fails_the_run_that_takes_it_naming_it(resolver, store):
    """A hit's small output is decoded with the others of its wave, each verified against its content id first: a
    corrupt one is not taken as a value; the run that takes it fails, naming the artifact."""
    first = cached_fan(5)
    assert first.resolve(resolver(cache_namespace="ns")) == sum(range(1, 6))
    victim = next(r for r in store.runs_of_root(first.id) if r.func_name == "cached_inc")
    assert store.get_artifact(victim.output_id).inline is not None
    arts = store._arts
    with store.engine.begin() as conn:
        conn.execute(sa.update(arts).where(arts.c.id == victim.output_id).values(inline=b"12345"))
    with pytest.raises(sk.ResolutionFailed, match=f"{victim.output_id} is corrupt"):
        cached_fan(5).resolve(resolver(cache_namespace="ns"))


def test_a_fan_out_larger_than_a_planning_write_is_recorded_as_planned_and_hits_alike(resolver, store, monkeypatch):
    """A fan-out's Run records are written while it is planned, a few at a time (not all held until its end):
    every run is recorded and resolves, and in an all-hit re-resolution the runs whose planned records were
    already written are recorded as hits like the others."""
    from sematic_k8s.resolvers import planning

    monkeypatch.setattr(planning, "PLANNED_RUNS_PER_WRITE", 7)
    writes: list[int] = []
    write = type(store).write
    monkeypatch.setattr(type(store), "write", lambda self, batch, **kw: writes.append(len(batch.new_runs))
                        or write(self, batch, **kw))
    CALLS.clear()
    first = cached_fan(30)
    assert first.resolve(resolver(cache_namespace="ns")) == sum(range(1, 31)) and CALLS["cached_inc"] == 30
    assert writes.count(7) >= 4, writes  # the 31 planned runs went out 7 at a time
    runs = store.runs_of_root(first.id)
    assert len(runs) == 32 and all(r.state == "resolved" for r in runs)
    second = cached_fan(30)
    assert second.resolve(resolver(cache_namespace="ns")) == sum(range(1, 31)) and CALLS["cached_inc"] == 30
    old = {r.cache_key: r for r in runs if r.cache_key}
    new = [r for r in store.runs_of_root(second.id) if r.cache_key]
    assert len(new) == 31 and all(
        r.cached_from == old[r.cache_key].id and r.state == "resolved" and r.output_id == old[r.cache_key].output_id
        and r.notes["cache"] == {"hit": old[r.cache_key].id, "source_changed": False} and r.ended_at is not None
        for r in new)


def test_cache_hit_skips_nested_funcs(resolver, store):
    first = cached_pipeline(2)
    assert first.resolve(resolver(cache_namespace="ns")) == 400
    CALLS.clear()
    second = cached_pipeline(2)
    assert second.resolve(resolver(cache_namespace="ns")) == 400
    assert CALLS == {}
    assert [r.func_name for r in store.runs_of_root(second.id)] == ["cached_pipeline"]


@sk.func
def around_cached(x: int) -> int:
    return double(cached_pipeline(x))


def test_nested_cache_hit_resolves_at_its_look_up_and_skips_its_nested_funcs(resolver, store):
    """A cached composition planned inside another run hits as its wave is looked up: recorded whole in its
    place, its own nested funcs neither run nor recorded, what waits on it runs with its output."""
    first = around_cached(3)
    assert first.resolve(resolver(cache_namespace="ns")) == 1200
    CALLS.clear()
    second = around_cached(3)
    assert second.resolve(resolver(cache_namespace="ns")) == 1200
    assert CALLS == {"double": 1}  # the outer double only: nor cached_pipeline's body, nor expensive
    old = runs_by_func(store, first.id)
    new = runs_by_func(store, second.id)
    assert sorted(new) == ["around_cached", "cached_pipeline", "double"] and len(new["double"]) == 1
    hit, orig = new["cached_pipeline"][0], old["cached_pipeline"][0]
    assert (hit.cached_from, hit.output_id, hit.cache_key, hit.state) == (orig.id, orig.output_id, orig.cache_key,
                                                                          "resolved")
    assert (hit.parent_id, hit.root_id, hit.output_ref) == (second.id, second.id, None)
    assert new["double"][0].inputs == {"x": orig.output_id} and new["double"][0].state == "resolved"


def test_callable_namespace_is_called_once_with_the_root_future(resolver):
    seen = []

    def namespace(root):
        seen.append(root)
        return f"ns-{root.kwargs['x']}"

    f = cached_pipeline(5)
    f.resolve(resolver(cache_namespace=namespace))
    assert seen == [f]
    with pytest.raises(ValueError, match="cache_namespace must be a non-empty string"):
        cached_pipeline(5).resolve(resolver(cache_namespace=lambda root: 42))


def test_no_namespace_means_no_caching_with_a_warning(resolver, caplog):
    with caplog.at_level(logging.WARNING, logger="sematic_k8s"):
        expensive(1).resolve(resolver())
        expensive(1).resolve(resolver())
    assert CALLS["expensive"] == 2
    assert "has no cache_namespace" in caplog.text
    assert 'give the resolver one (e.g. cache_namespace="dev") to reuse cached outputs' in caplog.text  # what to do


def test_inputs_without_deterministic_encoding_run_uncached_and_say_why(resolver, store, caplog):
    """The seed: a cached func with no matching cache entry executes as usual. Here no key can be computed:
    the run executes, uncached, and its notes say why."""
    with caplog.at_level(logging.WARNING, logger="sematic_k8s"):
        first = takes_object(Opaque())
        assert first.resolve(resolver(cache_namespace="ns")) == 1
        second = takes_object(Opaque())
        assert second.resolve(resolver(cache_namespace="ns")) == 1
    for f in (first, second):
        run = store.get_run(f.id)
        assert run.state == "resolved" and run.cached_from is None and run.cache_key is None
        assert re.fullmatch(r"not cached: input 'o' \(.*Opaque\) has no deterministic encoding.*",
                            run.notes["cache"]["skipped"])
    assert "has no deterministic encoding" in caplog.text


def test_unserializable_argument_names_func_and_parameter(resolver):
    with pytest.raises(sk.FuncError, match=r"takes_object\(\): argument 'o': value of type .*Unpicklable cannot be"):
        takes_object(Unpicklable()).resolve(resolver())


def test_cache_hit_from_changed_source_is_flagged(resolver, store, caplog, monkeypatch):
    expensive(9).resolve(resolver(cache_namespace="ns"))
    monkeypatch.setitem(expensive.__dict__, "source_hash", "0" * 64)
    f = expensive(9)
    with caplog.at_level(logging.WARNING, logger="sematic_k8s"):
        f.resolve(resolver(cache_namespace="ns"))
    assert store.get_run(f.id).notes["cache"]["source_changed"] is True
    assert "source differs" in caplog.text


# -- rerun_from -------------------------------------------------------------------------------------


@sk.func
def step(name: str, upstream: int) -> int:
    CALLS[name] += 1
    return upstream + int(FLAGS.get(name, 1))  # type: ignore[call-overload]


@sk.func
def chain() -> int:
    a = step("a", 0)
    b = step("b", a)
    c = step("c", b)
    d = step("d", 100)
    return add(c, d)


def ids_by_name(store, root_id: str) -> dict[str, str]:
    runs = store.runs_of_root(root_id)
    out = {}
    for r in runs:
        if r.func_name == "step":
            out[store.get_artifact(r.inputs["name"]).summary] = r.id
        else:
            out[r.func_name] = r.id
    return out


def test_rerun_from_resets_run_ancestors_and_downstream_only(resolver, store):
    first = chain()
    assert first.resolve(resolver()) == 3 + 101
    old = ids_by_name(store, first.id)
    CALLS.clear()
    FLAGS["b"] = 10  # "patch" b
    again = chain()
    assert again.resolve(resolver(rerun_from=old["b"])) == 12 + 101
    assert CALLS == {"b": 1, "c": 1, "add": 1}
    new = ids_by_name(store, again.id)
    assert again.id != first.id and store.get_resolution(again.id).rerun_of == first.id
    runs = {r.id: r for r in store.runs_of_root(again.id)}
    assert {n: runs[new[n]].original_run_id for n in new} == {n: old[n] for n in new}
    assert runs[new["a"]].output_id == store.get_run(old["a"]).output_id
    assert runs[new["a"]].notes["reused_from"] == old["a"]
    assert store.get_run(old["b"]).state == "resolved"  # the original is never touched


def test_rerun_mode_continue_runs_only_what_failed(resolver, store):
    FLAGS["c"] = "oops"  # c fails: int("oops")
    first = chain()
    with pytest.raises(sk.ResolutionFailed, match="ValueError"):
        first.resolve(resolver())
    assert store.get_resolution(first.id).state == "failed"
    CALLS.clear()
    FLAGS["c"] = 1
    again = chain()
    assert again.resolve(resolver(rerun_from=first.id, rerun_mode="continue")) == 3 + 101
    assert CALLS == {"c": 1, "add": 1}


def test_rerun_from_cached_target_forces_execution(resolver, store):
    first = cached_pipeline(1)
    first.resolve(resolver(cache_namespace="ns"))
    target = next(r for r in store.runs_of_root(first.id) if r.func_name == "expensive")
    CALLS.clear()
    cached_pipeline(1).resolve(resolver(cache_namespace="ns", rerun_from=target.id))
    assert CALLS["expensive"] == 1 and CALLS["double"] == 1


def test_rerun_callable_namespace_receives_the_root_as_recorded(resolver, store):
    """The rerun uses the recorded inputs, whatever the Future .resolve() is called on: so does the namespace."""
    first = cached_pipeline(7)
    first.resolve(resolver(cache_namespace="ns-7"))
    target = next(r for r in store.runs_of_root(first.id) if r.func_name == "double")
    seen = []

    def namespace(root):
        seen.append((root.func.name, dict(root.kwargs), root.id))
        return f"ns-{root.kwargs['x']}"

    again = cached_pipeline(0)  # a placeholder: its argument is not what the rerun computes with
    assert again.resolve(resolver(cache_namespace=namespace, rerun_from=target.id)) == 1400
    assert seen == [("cached_pipeline", {"x": 7}, again.id)]
    assert store.get_resolution(again.id).settings["cache_namespace"] == "ns-7"


def test_rerun_errors(resolver, store):
    with pytest.raises(LookupError, match="rerun_from: 'nope' is not a run id: ids are hexadecimal"):
        chain().resolve(resolver(rerun_from="nope"))
    with pytest.raises(LookupError, match="rerun_from: no run with id 'abc123': list them with"):
        chain().resolve(resolver(rerun_from="abc123"))
    first = chain()
    first.resolve(resolver())
    child = ids_by_name(store, first.id)["b"]
    with pytest.raises(ValueError, match=f"takes the root run id, and {child} is not a root run: give its "
                       f"resolution's, {first.id}, or rerun from {child} with mode 'from'"):
        chain().resolve(resolver(rerun_from=child, rerun_mode="continue"))
    with pytest.raises(ValueError, match=r"belongs to a .*chain pipeline, not .*fan: resolve a chain\(\.\.\.\) future "
                       "with it, or give a run of a .*fan resolution"):  # was without what to do
        fan(1).resolve(resolver(rerun_from=child))


def test_rerun_from_a_unique_start_of_a_run_id(resolver, store):
    """rerun_from takes a unique start of a run id, as the CLI does (README: rerun_from="3f2a..."); the resolution
    records the whole id. A start no run has, or several have, is one line (naming a few of them)."""
    first = fan(40)
    assert first.resolve(resolver()) == 1560
    target = runs_by_func(store, first.id)["double"][3]
    again = fan(0)  # a placeholder: the rerun computes with the recorded inputs
    assert again.resolve(resolver(rerun_from=target.id[:10].upper())) == 1560
    res = store.get_resolution(again.id)
    assert res.rerun_of == first.id and res.settings["rerun_from"] == target.id
    [rerun] = [r for r in store.runs_of_root(again.id) if r.original_run_id == target.id]
    assert not rerun.notes.get("reused_from")  # executed again, not reused

    ids = [r.id for root in (first.id, again.id) for r in store.runs_of_root(root)]
    shared = next(c for c in "0123456789abcdef" if sum(i.startswith(c) for i in ids) > 5)  # 84 ids, 16 starts
    with pytest.raises(LookupError) as e:
        fan(0).resolve(resolver(rerun_from=shared))
    [line] = str(e.value).splitlines()
    assert re.fullmatch(rf"rerun_from: run id prefix '{shared}' is ambiguous: it starts ({shared}[0-9a-f]{{31}} "
                        r"\((fan|double|total)\)(, | and more; give more of the id)){5}", line), line
    unknown = next(p for p in (f"{c}{c}{c}" for c in "0123456789abcdef") if not any(i.startswith(p) for i in ids))
    with pytest.raises(LookupError, match=f"^rerun_from: no run with id '{unknown}': list them with "):
        fan(0).resolve(resolver(rerun_from=unknown))
    assert len(store.list_resolutions()) == 2  # the refused ones recorded nothing


@sk.func
def interrupted(x: int) -> int:
    raise KeyboardInterrupt


@sk.func
def interrupted_pipeline() -> int:
    return add(interrupted(1), double(2))


def test_interrupt_cancels_the_resolution_and_is_recorded(resolver, store):
    f = interrupted_pipeline()
    with pytest.raises(KeyboardInterrupt):
        f.resolve(resolver())
    assert store.get_resolution(f.id).state == "canceled"
    assert {r.state for r in store.runs_of_root(f.id) if r.func_name != "double"} == {"canceled"}


@sk.func
def fails_with_a_table(n: int) -> int:
    raise ValueError("bad rows:\n" + "a row\n" * n + "the end")


def test_a_huge_error_message_is_recorded_and_raised_clipped_to_its_start_and_end(resolver, store):
    f = fails_with_a_table(1_000_000)
    with pytest.raises(sk.ResolutionFailed) as info:
        f.resolve(resolver())
    err = store.get_run(f.id).error
    message, tb = err["message"], err["traceback"]
    assert message.startswith("bad rows:\na row\n") and message.endswith("a row\nthe end"), message[-40:]
    head, cut, tail = re.fullmatch(r"(.*)\n\.\.\. \[([\d,]+) characters cut\] \.\.\.\n(.*)", message, re.S).groups()
    full = len("bad rows:\n" + "a row\n" * 1_000_000 + "the end")
    assert len(message) == 20_000 and len(head) + int(cut.replace(",", "")) + len(tail) == full
    assert "fails_with_a_table" in tb and tb.rstrip().endswith("the end") and len(tb) < 100_100
    assert "bad rows:" in str(info.value) and len(str(info.value)) < 25_000
    assert len(store.get_resolution(f.id).error or "") < 25_000

"""Serialization: exact round trips, canonical bytes, content ids, summaries."""

from __future__ import annotations

import collections
import datetime as dt
import decimal
import enum
import fractions
import os
import pathlib
import subprocess
import sys
import threading
import uuid
from dataclasses import dataclass, field
from typing import NamedTuple

import pytest

from sematic_k8s import serialization as ser


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


@dataclass(frozen=True)
class Point:
    x: float
    y: float
    tags: tuple[str, ...] = ()
    meta: dict[str, int] = field(default_factory=dict)


class Pair(NamedTuple):
    left: int
    right: tuple[str, ...] = ()


class Thing:
    def __init__(self, n: int) -> None:
        self.n = n

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Thing) and other.n == self.n


PLAIN = [
    None, True, False, 0, -7, 2**80, 1.5, float("inf"), -0.0, "", "héllo", b"\x00\xff",
    [1, [2, [3]]], (1, "a", (2.0,)), {"a": 1, "b": [1, 2]}, {1: "x", (1, 2): "y"}, {"__sk__": "not a tag"},
    {3, 1, 2}, frozenset({"a", "b"}), Color.RED, Point(1.0, 2.0, ("a",), {"k": 1}),
    dt.datetime(2026, 11, 25, 6, 0, 1, 5), dt.date(2026, 1, 1), dt.time(1, 2), dt.timedelta(days=1, seconds=3),
    uuid.UUID(int=5), decimal.Decimal("1.10"), pathlib.PurePosixPath("/a/b"),
    Pair(1, ("a",)), collections.OrderedDict([("b", 1), ("a", Pair(2))]), collections.Counter("abracadabra"),
    complex(1.5, -2), fractions.Fraction(3, 9), [Pair(3), {"c": complex(0, 1)}],
]


@pytest.mark.parametrize("value", PLAIN, ids=lambda v: ser.type_name(v))
def test_plain_values_round_trip_exactly_as_json(value):
    s = ser.serialize(value)
    assert s.format == ser.JSON and s.deterministic
    back = ser.deserialize(s.format, s.payload)
    assert back == value and type(back) is type(value)


def test_types_that_compare_equal_get_different_ids():
    ids = {ser.serialize(v).id for v in [1, 1.0, True, "1", (1,), [1], {1}]}
    assert len(ids) == 7


# Equal values built differently: each pair must get one id (they are cache keys).
EQUAL_PAIRS = [
    (Pair(1, ("x",)), Pair(left=1, right=("x",))),
    (collections.Counter({"a": 2, "b": 1}), collections.Counter("aba")),
    (collections.OrderedDict([("a", 1), ("b", 2)]), collections.OrderedDict(a=1, b=2)),
    (complex(2, 3), 2 + 3j),
    (fractions.Fraction(2, 4), fractions.Fraction("1/2")),
]


@pytest.mark.parametrize(("a", "b"), EQUAL_PAIRS, ids=lambda v: ser.type_name(v))
def test_equal_values_get_equal_ids(a, b):
    assert a == b
    assert ser.serialize(a).id == ser.serialize(b).id


def test_order_matters_only_where_equality_says_so():
    first, second = collections.OrderedDict(a=1, b=2), collections.OrderedDict(b=2, a=1)
    assert first != second and ser.serialize(first).id != ser.serialize(second).id
    assert ser.serialize(collections.Counter(a=1, b=2)).id == ser.serialize(collections.Counter(b=2, a=1)).id
    assert ser.serialize(Pair(1)).id != ser.serialize((1, ())).id  # a NamedTuple keeps its type


def test_classes_defined_in_a_function_are_pickled():
    """A class found by no module path cannot be loaded from JSON elsewhere: pickle keeps it."""
    class Local(NamedTuple):
        n: int

    @dataclass
    class LocalData:
        n: int

    for value in (Local(1), LocalData(2)):
        s = ser.serialize(value)
        assert s.format == ser.PICKLE and ser.deserialize(s.format, s.payload) == value


def test_other_values_fall_back_to_pickle():
    s = ser.serialize(Thing(3))
    assert s.format == ser.PICKLE and not s.deterministic
    assert ser.deserialize(s.format, s.payload) == Thing(3)
    assert "Thing" in s.type_name and "repr" in s.summary


def test_ids_are_sha256_of_format_and_payload_and_verified():
    s = ser.serialize({"a": [1, 2]})
    assert len(s.id) == 64
    ser.verify(s.id, s.format, s.payload)
    with pytest.raises(ValueError, match="is corrupt"):
        ser.verify(s.id, s.format, s.payload + b" ")


def test_canonical_bytes_do_not_depend_on_insertion_order_or_hash_seed():
    assert ser.serialize({"b": 1, "a": 2}).id == ser.serialize({"a": 2, "b": 1}).id
    code = ("from sematic_k8s.serialization import serialize; "
            "print(serialize({'alpha', 'beta', 'gamma', 'delta', ('x', 1)}).id)")
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    ids = {subprocess.run([sys.executable, "-c", code], env={**env, "PYTHONHASHSEED": seed}, check=True,
                          capture_output=True, text=True).stdout for seed in ("1", "2", "3")}
    assert len(ids) == 1


def test_uuids_decimals_and_fractions_load_where_their_modules_are_not_imported_yet():
    values = [uuid.UUID(int=5), decimal.Decimal("1.10"), fractions.Fraction(3, 9)]
    s = ser.serialize(values)
    code = ("import sys; from sematic_k8s import serialization as ser; "
            "assert not {'uuid', 'decimal', 'fractions'} & set(sys.modules); "
            f"print(repr(ser.deserialize({s.format!r}, {s.payload!r})))")
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": os.getcwd()}, check=True,
                         capture_output=True, text=True).stdout
    assert out.strip() == repr(values)


def test_summaries_are_bounded():
    s = ser.serialize(list(range(1000)))
    assert len(s.summary) == 21 and s.summary[-1] == "… 980 more"
    assert ser.serialize("x" * 10_000).summary.endswith("…")


def test_unserializable_values_are_a_clear_error():
    import threading
    with pytest.raises(TypeError, match="value of type _thread.lock cannot be serialized"):
        ser.serialize(threading.Lock())


@pytest.mark.parametrize("value", [(x for x in range(3)), threading.Lock()], ids=["generator", "lock"])
def test_an_unserializable_value_says_what_to_do(value: object) -> None:
    """The words name the way out, not only pickle's refusal (was "... cannot be serialized: cannot pickle
    'generator' object" alone)."""
    with pytest.raises(TypeError) as info:
        ser.serialize(value)
    assert str(info.value).endswith("only values that can be pickled go between funcs: make a lock, a connection, a "
                                    "generator or an open file inside the func that uses it"), info.value


def test_previews_of_dataframes_and_figures() -> None:
    """Pickled values people look at get a preview in their summary: a table, a PNG picture."""
    import base64

    import matplotlib
    import pandas as pd

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sematic_k8s.serialization import serialize

    df = pd.DataFrame({"lr": [0.1, 0.01] * 40, "loss": range(80), "when": pd.Timestamp("2026-01-01")})
    table = serialize(df).summary["preview"]
    assert table["kind"] == "table" and table["columns"] == ["lr", "loss", "when"] and table["shape"] == [80, 3]
    assert len(table["rows"]) == 50 and table["rows"][0][:2] == [0.1, 0] and table["rows"][0][2].startswith("2026")
    fig, ax = plt.subplots(figsize=(3, 2))
    ax.plot([1, 3, 2])
    image = serialize(fig).summary["preview"]
    plt.close(fig)
    assert image["mime"] == "image/png" and base64.b64decode(image["base64"]).startswith(b"\x89PNG\r\n\x1a\n")
    assert "preview" not in serialize(object()).summary


def _global_pickle(module: str, name: str) -> bytes:
    """A pickle (protocol 4) of just the global ``module.name`` (a dotted name is looked up attribute by attribute)."""
    m, n = module.encode(), name.encode()
    return b"\x80\x04\x8c" + bytes([len(m)]) + m + b"\x8c" + bytes([len(n)]) + n + b"\x93."


def test_a_server_started_rerun_loads_only_allowed_globals(tmp_path, monkeypatch):
    """Inside ``packaged.only`` (a driver the server started, and its workers), values name only globals of the packaged
    code, of libraries installed in site-packages that sematic-k8s does not bring itself, and a few value types of the
    standard library; refused modules are not imported. Outside it, anything importable loads as before."""
    import pickle

    import cloudpickle
    import httpx
    import pandas as pd

    from sematic_k8s import packaged
    from sematic_k8s.errors import ValueRefused

    code_dir, elsewhere = tmp_path / "app", tmp_path / "elsewhere"
    code_dir.mkdir(), elsewhere.mkdir()
    (code_dir / "valmod_ok.py").write_text("import os\nimport dataclasses\nfrom os import system as run\n\n\n"
                                           "@dataclasses.dataclass\nclass Point:\n    x: int\n")
    (elsewhere / "valmod_elsewhere.py").write_text("raise SystemExit('imported')\n")
    monkeypatch.syspath_prepend(str(elsewhere))
    monkeypatch.syspath_prepend(str(code_dir))
    code = packaged.PackagedCode.from_json(packaged.manifest_json(str(code_dir), ["valmod_ok.py"]))
    import valmod_ok

    good = [valmod_ok.Point(1), dt.datetime(2024, 1, 2, tzinfo=dt.timezone.utc), decimal.Decimal("1.5"),
            collections.OrderedDict(a={1, 2}), pathlib.PurePosixPath("/x"), uuid.UUID(int=5)]
    frame = pd.DataFrame({"a": [1, 2]})
    refused = {  # payload -> (what it names, why)
        pickle.dumps(eval): ("builtins.eval", "eval is not one of the few names of builtins"),
        _global_pickle("valmod_ok", "os.system"): ("valmod_ok.os.system", "it is posix.system: posix is of the"),
        _global_pickle("valmod_ok", "run"): ("valmod_ok.run", "it is posix.system"),
        _global_pickle("valmod_ok", "os"): ("valmod_ok.os", "it is a module"),
        pickle.dumps(httpx.get): ("httpx.get", "module httpx is of httpx, which sematic-k8s installs itself"),
        cloudpickle.dumps(lambda: 1): ("cloudpickle.cloudpickle._make_function", "module cloudpickle is of"),
        _global_pickle("valmod_elsewhere", "x"): ("valmod_elsewhere.x", f"module valmod_elsewhere is {elsewhere}"),
    }
    json_refused = {"os:system": "os is of the standard library", "antigravity:x": "antigravity is of the standard"}
    with packaged.only(code):
        for value in good:
            s = ser.serialize(value)
            assert ser.deserialize(s.format, s.payload, s.id) == value
            assert ser.deserialize(ser.PICKLE, pickle.dumps(value), "p") == value
        assert ser.deserialize(ser.PICKLE, pickle.dumps(frame), "p").equals(frame)  # pandas: a library installed
        assert ser.deserialize(ser.PICKLE, pickle.dumps(ValueError("v")), "p").args == ("v",)
        for payload, (name, why) in refused.items():
            with pytest.raises(ValueRefused) as e:
                ser.deserialize(ser.PICKLE, payload, "abc")
            assert str(e.value).startswith(f"artifact abc names {name}, which a rerun started by the server may not "
                                           f"load: {why}"), str(e.value)
        for cls, why in json_refused.items():
            tree = ser._canonical({"__sk__": "path", "cls": cls, "v": "/tmp"}).encode()
            with pytest.raises(ValueRefused, match=f"^artifact j names {cls.replace(':', '.')}, .*: {why}"):
                ser.deserialize(ser.JSON, tree, "j")
    assert "valmod_elsewhere" not in sys.modules and "antigravity" not in sys.modules
    assert ser.deserialize(ser.PICKLE, pickle.dumps(eval)) is eval  # a user's own resolution: unchanged

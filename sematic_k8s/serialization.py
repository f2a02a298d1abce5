"""Values to artifact bytes and back, with a JSON summary and a sha256 content id.

Every value is serialized exactly once, in one of two formats:

* ``json``: a canonical, tagged JSON tree for plain data (None, bool, int, float, complex, Fraction,
  str, bytes, list, tuple, NamedTuple, dict, OrderedDict, Counter, set, frozenset, dataclasses, Enums,
  datetime/date/time, UUID, Decimal, Path). Canonical means the same value always gives the same
  bytes, in any process, so its artifact id can serve as a cache key.
* ``pickle``: cloudpickle, for everything else. Exact, but not guaranteed to be the same bytes
  for the same value, so such artifacts cannot be cache keys.

The artifact id is ``sha256(format + NUL + payload)``.

A value whose bytes do not load back (a ``__reduce__`` or ``__setstate__`` that raises; a JSON value whose class
cannot be found by its name) raises :class:`~sematic_k8s.errors.Unloadable` as it is serialized: the bytes of a
pickle, and of a JSON value naming a class, are loaded once here, in this process (plain JSON data always loads), up
to :data:`LOAD_BACK_LIMIT` bytes. A recorded artifact that does not load (stored before its class changed) raises
:class:`~sematic_k8s.errors.ArtifactUnloadable` where it is used, naming the run that produced it.

The globals a payload names (a pickle's, a JSON value's class) are found by :func:`sematic_k8s.loadable.find`:
in a process working for a rerun the server started, only those its rule allows.
"""

from __future__ import annotations

import base64
import collections
import dataclasses
import datetime as dt
import enum
import hashlib
import json
import pathlib
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sematic_k8s import loadable, modules, packaged, previews
from sematic_k8s.error_records import message_of, one_line
from sematic_k8s.errors import ArtifactUnloadable, InfrastructureError, Unloadable, ValueRefused

JSON = "json"
PICKLE = "pickle"
_TAG = "__sk__"
_SUMMARY_ITEMS = 20
_SUMMARY_CHARS = 500


@dataclass(frozen=True, slots=True)
class Serialized:
    """One serialized value: its content id, format, payload bytes and display summary."""

    id: str
    format: str
    payload: bytes
    type_name: str
    summary: Any

    @property
    def deterministic(self) -> bool:
        """True when equal values always give this id (usable in cache keys)."""
        return self.format == JSON

    def record(self) -> dict[str, Any]:
        """The artifact's metadata as the store records it (without its creation time)."""
        return {"id": self.id, "format": self.format, "type_name": self.type_name, "summary": self.summary,
                "size": len(self.payload)}


class _NotPlain(Exception):
    """Raised inside the JSON encoder when a value needs pickle."""


def type_name(value: Any) -> str:
    """``module.QualName`` of a value's type (builtins without the module)."""
    t = type(value)
    return t.__qualname__ if t.__module__ == "builtins" else f"{modules.recorded_name(t.__module__)}.{t.__qualname__}"


def _class_path(cls: type) -> str:
    """``module:QualName`` of a class that can be found again by that path (else the value needs pickle)."""
    if "<locals>" in cls.__qualname__:
        raise _NotPlain(cls.__qualname__)
    return f"{modules.recorded_name(cls.__module__)}:{cls.__qualname__}"


def _is_namedtuple(t: type) -> bool:
    return issubclass(t, tuple) and isinstance(getattr(t, "_fields", None), tuple) and t.__bases__ == (tuple,)


def _load_class(path: str) -> Any:
    module, _, qualname = path.partition(":")
    return loadable.find(module, qualname)


def _encode(v: Any) -> Any:
    """Value -> JSON-compatible tree; non-JSON types are tagged so decoding is exact."""
    t = type(v)
    if v is None or t is str or t is bool or t is int or t is float:
        return v
    if t is list:
        return [_encode(x) for x in v]
    if t is dict:
        if all(type(k) is str for k in v) and _TAG not in v:
            return {k: _encode(x) for k, x in v.items()}
        return {_TAG: "dict", "v": [[_encode(k), _encode(x)] for k, x in v.items()]}
    if t is tuple:
        return {_TAG: "tuple", "v": [_encode(x) for x in v]}
    if t is complex:
        return {_TAG: "complex", "v": [v.real, v.imag]}
    if t is _loaded("fractions", "Fraction"):
        return {_TAG: "fraction", "v": [v.numerator, v.denominator]}
    if t is collections.OrderedDict:  # equality depends on order: keep it
        return {_TAG: "odict", "v": [[_encode(k), _encode(x)] for k, x in v.items()]}
    if t is collections.Counter:  # equality does not depend on order: sort
        return {_TAG: "counter", "v": sorted(([_encode(k), _encode(x)] for k, x in v.items()), key=_canonical)}
    if _is_namedtuple(t):
        return {_TAG: "namedtuple", "cls": _class_path(t), "v": [_encode(x) for x in v]}
    if t is set or t is frozenset:
        items = sorted((_encode(x) for x in v), key=_canonical)
        return {_TAG: t.__name__, "v": items}
    if t is bytes:
        return {_TAG: "bytes", "v": base64.b64encode(v).decode()}
    if isinstance(v, enum.Enum):
        return {_TAG: "enum", "cls": _class_path(t), "v": _encode(v.value)}
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        names = [f.name for f in dataclasses.fields(v)]
        if not set(getattr(v, "__dict__", ())) <= set(names):
            raise _NotPlain(type_name(v))  # state outside its fields: only pickle keeps it all
        fields = {name: _encode(getattr(v, name)) for name in names}
        return {_TAG: "dataclass", "cls": _class_path(t), "v": fields}
    if t is dt.datetime:
        return {_TAG: "datetime", "v": v.isoformat()}
    if t is dt.date:
        return {_TAG: "date", "v": v.isoformat()}
    if t is dt.time:
        return {_TAG: "time", "v": v.isoformat()}
    if t is dt.timedelta:
        return {_TAG: "timedelta", "v": [v.days, v.seconds, v.microseconds]}
    if t is _loaded("uuid", "UUID"):
        return {_TAG: "uuid", "v": str(v)}
    if t is _loaded("decimal", "Decimal"):
        return {_TAG: "decimal", "v": str(v)}
    if isinstance(v, pathlib.PurePath):
        return {_TAG: "path", "cls": _class_path(t), "v": str(v)}
    raise _NotPlain(type_name(v))


def _loaded(module: str, name: str) -> Any:
    """``module.name`` if that module has been imported, else None: a Fraction, UUID or Decimal value can exist
    only once its module is imported, so this one need not import them."""
    m = sys.modules.get(module)
    return None if m is None else getattr(m, name, None)


_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)  # made once, not per value


def _canonical(tree: Any) -> str:
    if type(tree) is int:  # what the encoder writes for an int, without making one
        return int.__repr__(tree)
    return _CANONICAL.encode(tree)


def _decode(tree: Any) -> Any:
    if isinstance(tree, list):
        return [_decode(x) for x in tree]
    if not isinstance(tree, dict):
        return tree
    tag = tree.get(_TAG)
    if tag is None:
        return {k: _decode(x) for k, x in tree.items()}
    v = tree["v"]
    if tag == "dict":
        return {_decode(k): _decode(x) for k, x in v}
    if tag == "tuple":
        return tuple(_decode(x) for x in v)
    if tag == "complex":
        return complex(v[0], v[1])
    if tag == "fraction":
        import fractions

        return fractions.Fraction(v[0], v[1])
    if tag == "odict":
        return collections.OrderedDict((_decode(k), _decode(x)) for k, x in v)
    if tag == "counter":
        return collections.Counter({_decode(k): _decode(x) for k, x in v})
    if tag == "namedtuple":
        return _load_class(tree["cls"])(*(_decode(x) for x in v))
    if tag == "set":
        return {_decode(x) for x in v}
    if tag == "frozenset":
        return frozenset(_decode(x) for x in v)
    if tag == "bytes":
        return base64.b64decode(v)
    if tag == "enum":
        return _load_class(tree["cls"])(_decode(v))
    if tag == "dataclass":
        cls = _load_class(tree["cls"])
        fields = {k: _decode(x) for k, x in v.items()}
        init = {f.name: fields.pop(f.name) for f in dataclasses.fields(cls) if f.init}
        obj = cls(**init)
        for k, x in fields.items():
            object.__setattr__(obj, k, x)
        return obj
    if tag == "datetime":
        return dt.datetime.fromisoformat(v)
    if tag == "date":
        return dt.date.fromisoformat(v)
    if tag == "time":
        return dt.time.fromisoformat(v)
    if tag == "timedelta":
        return dt.timedelta(days=v[0], seconds=v[1], microseconds=v[2])
    if tag == "uuid":
        import uuid

        return uuid.UUID(v)
    if tag == "decimal":
        import decimal

        return decimal.Decimal(v)
    if tag == "path":
        return _load_class(tree["cls"])(v)
    raise ValueError(f"unknown artifact tag {tag!r}")


def _summarize(tree: Any, depth: int = 0) -> Any:
    """A bounded-size copy of a JSON tree for display."""
    if isinstance(tree, str):
        return tree if len(tree) <= _SUMMARY_CHARS else tree[:_SUMMARY_CHARS] + "…"
    if isinstance(tree, list):
        if depth > 4:
            return f"[… {len(tree)} items]"
        head = [_summarize(x, depth + 1) for x in tree[:_SUMMARY_ITEMS]]
        return head + ([f"… {len(tree) - _SUMMARY_ITEMS} more"] if len(tree) > _SUMMARY_ITEMS else [])
    if isinstance(tree, dict):
        if depth > 4:
            return f"{{… {len(tree)} keys}}"
        items = list(tree.items())[:_SUMMARY_ITEMS]
        out = {k: _summarize(x, depth + 1) for k, x in items}
        if len(tree) > _SUMMARY_ITEMS:
            out["…"] = f"{len(tree) - _SUMMARY_ITEMS} more keys"
        return out
    return tree


def content_id(fmt: str, payload: bytes) -> str:
    """An artifact's id: sha256 of its format and payload."""
    hasher = id_hasher(fmt)
    hasher.update(payload)
    return hasher.hexdigest()


def id_hasher(fmt: str) -> Any:
    """The hash of an artifact's id (:func:`content_id`) fed its format: its payload's bytes are fed to it next (in
    parts, for bytes read in parts), then its ``hexdigest()`` is the id."""
    return hashlib.sha256(fmt.encode() + b"\0")


def serialize(value: Any, returned_by: str | None = None) -> Serialized:
    """Serialize ``value`` once: canonical JSON when it is plain data, cloudpickle otherwise; Unloadable (naming
    ``returned_by``, the func whose output it is) when its bytes do not load back."""
    try:
        tree = _encode(value)
    except _NotPlain:
        tree = None
    except RecursionError as e:
        raise ValueError(f"value of type {type_name(value)} is nested too deeply to serialize") from e
    if tree is not None or value is None:
        payload = _canonical(tree).encode()
        if (type(tree) is dict or type(tree) is list) and _NAMES_A_CLASS in payload:  # a dataclass, an Enum, a
            # NamedTuple, a Path: made again by its class (a scalar is none of these: not even looked at)
            _loads_back(value, JSON, payload, returned_by)
        return Serialized(content_id(JSON, payload), JSON, payload, type_name(value), _summarize(tree))
    import cloudpickle  # here: a worker whose values are plain data never needs it (nor pickle, nor its imports)

    try:
        payload = cloudpickle.dumps(value)
    except Exception as e:
        raise TypeError(f"value of type {type_name(value)} cannot be serialized: {e}; only values that can be pickled "
                        "go between funcs: make a lock, a connection, a generator or an open file inside the func "
                        "that uses it") from e
    _loads_back(value, PICKLE, payload, returned_by)
    summary: dict[str, Any] = {"repr": _shown(value)}
    shown = previews.preview(value)  # a table or a picture for the dashboard
    if shown is not None:
        summary["preview"] = shown
    return Serialized(content_id(PICKLE, payload), PICKLE, payload, type_name(value), summary)


_NAMES_A_CLASS = b'"cls":'  # in the bytes of every JSON value a class makes again (and of a dict with that key)
_CAUSE_CHARS = 300
LOAD_BACK_LIMIT = 64 << 20  # bytes: a larger value is not loaded back (the copy would hold its memory twice over)


def _loads_back(value: Any, fmt: str, payload: bytes, returned_by: str | None) -> None:  # noqa: ANN401 - any value
    """Raise Unloadable unless ``payload`` loads, here, as every process loads an artifact (:func:`deserialize`);
    not tried past LOAD_BACK_LIMIT bytes."""
    if len(payload) > LOAD_BACK_LIMIT:
        return
    try:
        deserialize(fmt, payload)
    except MemoryError:
        raise
    except Exception as e:  # noqa: BLE001 - whatever the value's own loading raised
        raise Unloadable(type_name(value), _cause(e), returned_by) from e


def _cause(e: BaseException) -> str:
    """``Class: message`` of what a load raised, on one line, clipped."""
    cause = one_line(f"{type(e).__qualname__}: {message_of(e)}")
    return cause if len(cause) <= _CAUSE_CHARS else cause[:_CAUSE_CHARS] + "…"


def _shown(value: Any) -> str:  # noqa: ANN401 - any value
    """A pickled value's ``repr`` for its summary, clipped; a nicety, like its preview: a ``__repr__`` that raises
    (a func's own class) never fails the run that returned the value."""
    try:
        r = repr(value)
    except Exception as e:  # noqa: BLE001 - whatever the value's own __repr__ raised
        return f"<{type_name(value)}: its __repr__ raised {type(e).__qualname__}>"
    return r if len(r) <= _SUMMARY_CHARS else r[:_SUMMARY_CHARS] + "…"


def deserialize(fmt: str, payload: bytes, artifact_id: str | None = None) -> Any:
    """Inverse of :func:`serialize`. ValueRefused, naming the artifact, when it names a global this process may
    not load (:mod:`sematic_k8s.loadable`)."""
    try:
        if fmt == JSON:
            return _decode(json.loads(payload))
        if fmt == PICKLE:
            return _loads(payload)
    except ValueRefused as e:
        raise ValueRefused(e.name, e.why, artifact_id) from None
    raise ValueError(f"unknown artifact format {fmt!r}")


def _loads(payload: bytes) -> Any:
    """``pickle.loads`` (what cloudpickle's ``loads`` is) whose globals are found by :func:`sematic_k8s.loadable.find`
    in a process working for a server-started rerun (a restricted unpickler); elsewhere by pickle itself, a module
    that raises an error that may pass as it loads told apart all the same (ImportInterrupted)."""
    import io
    import pickle  # here, as cloudpickle is: a worker whose values are plain data never needs it

    restricted = packaged.restricted_to() is not None

    class Unpickler(pickle.Unpickler):
        def find_class(self, module: str, name: str) -> Any:
            if restricted:
                return loadable.find(module, name)
            with modules.told_apart(loadable.named(module, name), module):
                return super().find_class(module, name)

    return Unpickler(io.BytesIO(payload)).load()


def deserialize_json_many(payloads: list[bytes]) -> list[Any]:
    """:func:`deserialize` of many JSON payloads, parsed in one go (plain scalars need no decoding after)."""
    if not payloads:
        return []
    trees = json.loads(b"[" + b",".join(payloads) + b"]")
    return [t if t is None or type(t) in _SCALARS else _decode(t) for t in trees]


_SCALARS = frozenset({int, str, float, bool})


REPAIR = "rerun the run that produced it (`sematic-k8s rerun RUN_ID`): computing the value again rewrites them"


def verify(artifact_id: str, fmt: str, payload: bytes) -> None:
    """Raise if ``payload`` does not hash to ``artifact_id`` (storage integrity check)."""
    got = content_id(fmt, payload)
    if got != artifact_id:
        raise ValueError(f"artifact {artifact_id} is corrupt: its bytes hash to {got}; {REPAIR}")


def load_recorded(v: Value, payload: bytes) -> Any:
    """The value of recorded artifact ``v`` from its bytes: verified, then loaded; ArtifactUnloadable (naming it and
    the run that produced it, where known) when they do not load here."""
    verify(v.id, v.format, payload)
    try:
        return deserialize(v.format, payload, v.id)
    except (ValueRefused, MemoryError, InfrastructureError):  # not its bytes' fault: a func's module that may load
        raise  # on another try (ImportInterrupted), an outage met as it loaded
    except Exception as e:
        raise ArtifactUnloadable(v.id, v.type_name, _cause(e), v.origin) from e


class Value:
    """A graph leaf: an artifact id with its value, loaded from storage on first use; ``origin``: the run that
    produced it, where known (named if it does not load)."""

    __slots__ = ("id", "format", "type_name", "_value", "_load", "origin")

    def __init__(self, artifact_id: str, fmt: str, type_name: str, value: Any = None,
                 load: Callable[[Value], Any] | None = None) -> None:
        self.id, self.format, self.type_name = artifact_id, fmt, type_name
        self._value, self._load = value, load
        self.origin: str | None = None

    @property
    def value(self) -> Any:
        if self._load is not None:
            self._value, self._load = self._load(self), None
        return self._value

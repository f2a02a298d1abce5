"""Cache keys and cache namespaces (DESIGN.md "Caching")."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from json.encoder import encode_basestring_ascii
from typing import Any

CacheNamespace = str | Callable[[Any], str] | None
_MAX_NAMESPACE = 256


def check_namespace(value: Any) -> str:
    """``value`` when it is a namespace string (not empty, at most 256 characters), else ValueError in one line."""
    if not isinstance(value, str) or not value or len(value) > _MAX_NAMESPACE:
        shown = repr(value) if len(repr(value)) <= 80 else f"{repr(value)[:60]}... ({len(value)} characters)"
        raise ValueError(f"cache_namespace must be a non-empty string of at most {_MAX_NAMESPACE} "
                         f"characters (or a callable returning one), got {shown}")
    return value


def resolve_namespace(namespace: CacheNamespace, root: Any) -> str | None:
    """The namespace string: ``namespace`` itself, or ``namespace(root_future)`` called once (its error said in one
    line naming it, the error itself as the cause)."""
    if namespace is None:
        return None
    if not callable(namespace):
        return check_namespace(namespace)
    try:
        value = namespace(root)
    except Exception as e:
        name = getattr(namespace, "__qualname__", type(namespace).__name__)
        raise ValueError(f"cache_namespace {name}(root future) raised {type(e).__name__}: {e}: make it return "
                         "a string for this pipeline, or pass the namespace as a string") from e
    return check_namespace(value)


def cache_key(namespace: str, func_path: str, input_ids: Mapping[str, str]) -> str:
    """sha256 of (namespace, func qualified name, input artifact ids by parameter name)."""
    # json.dumps([namespace, func_path, sorted(input_ids.items())], separators=(",", ":")), written out: the same
    # text (keys recorded before stay valid) without making a JSON encoder per key
    q = encode_basestring_ascii
    pairs = ",".join(f"[{q(k)},{q(v)}]" for k, v in sorted(input_ids.items()))
    doc = f"[{q(namespace)},{q(func_path)},[{pairs}]]"
    return hashlib.sha256(doc.encode()).hexdigest()


def uncacheable_reason(nondeterministic: list[tuple[str, str]]) -> str | None:
    """Why a cached func cannot use the cache for these inputs (``(name, type)`` of each input without a
    deterministic serialization), or None when it can. Such a run executes as usual, uncached."""
    if not nondeterministic:
        return None
    what = ", ".join(f"'{name}' ({type_name})" for name, type_name in nondeterministic)
    return (f"not cached: input {what} has no deterministic encoding, so no cache key can be computed "
            "(pass plain data such as numbers, strings, lists, dicts, dataclasses, or a reference such as a path)")

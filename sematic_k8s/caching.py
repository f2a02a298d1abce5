"""Cache keys and cache namespaces (DESIGN.md "Caching")."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from json.encoder import encode_basestring_ascii
from typing import Any

CacheNamespace = str | Callable[[Any], str] | None
_MAX_NAMESPACE = 256


def resolve_namespace(namespace: CacheNamespace, root: Any) -> str | None:
    """The namespace string: ``namespace`` itself, or ``namespace(root_future)`` called once."""
    if namespace is None:
        return None
    value = namespace(root) if callable(namespace) else namespace
    if not isinstance(value, str) or not value or len(value) > _MAX_NAMESPACE:
        raise ValueError(f"cache_namespace must be a non-empty string of at most {_MAX_NAMESPACE} "
                         f"characters (or a callable returning one), got {value!r}")
    return value


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

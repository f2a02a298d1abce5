"""Cache keys and cache namespaces (DESIGN.md "Caching")."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from typing import Any

from sematic_k8s.errors import FuncError

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
    doc = json.dumps([namespace, func_path, sorted(input_ids.items())], separators=(",", ":"))
    return hashlib.sha256(doc.encode()).hexdigest()


def require_deterministic(func_name: str, nondeterministic: list[tuple[str, str]]) -> None:
    """A clear error when inputs of a cached func have no deterministic serialization."""
    if nondeterministic:
        what = ", ".join(f"'{name}' ({type_name})" for name, type_name in nondeterministic)
        raise FuncError(
            f"{func_name} has cache=True but input {what} cannot be hashed deterministically, so no "
            "cache key can be computed: pass plain data (numbers, strings, bytes, lists, tuples, dicts, "
            "sets, dataclasses, enums, dates) or a reference such as a path, or drop cache=True"
        )

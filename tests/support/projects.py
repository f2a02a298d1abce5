"""A user's project in a test: one pipeline module written to a folder, importable here as in its image, and
forgotten afterwards (its folder off ``sys.path``, the module and its funcs out of the registry)."""

from __future__ import annotations

import importlib
import sys
import textwrap
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sematic_k8s.func import _REGISTRY


@contextmanager
def user_project(root: Path, prefix: str, source: str) -> Iterator[str]:
    """Write ``source`` as a new module ``<prefix>_<hex>`` under ``root`` and yield its name while it is
    importable."""
    root.mkdir(parents=True, exist_ok=True)
    module = f"{prefix}_{uuid.uuid4().hex[:8]}"
    (root / f"{module}.py").write_text(textwrap.dedent(source))
    sys.path.insert(0, str(root))
    importlib.invalidate_caches()
    try:
        yield module
    finally:
        sys.path.remove(str(root))
        forget(module)


def forget(module: str) -> None:
    """The module and the funcs it registered, gone (a later test's module of another name cannot meet them)."""
    sys.modules.pop(module, None)
    for path in [p for p in _REGISTRY if p.startswith(module + ":")]:
        del _REGISTRY[path]

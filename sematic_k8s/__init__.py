"""sematic-k8s: plain Python funcs as recorded, cached, re-runnable pipeline steps.

The resolvers (and the store, HTTP and packaging code behind them) are imported when first used, so that a
worker in a container, which imports this package with the user's module, starts in a fraction of the time.
"""

import typing as _typing

from sematic_k8s import errors, log_lines
from sematic_k8s.context import Context, context
from sematic_k8s.errors import FuncError, InfrastructureError, ResolutionCanceled, ResolutionFailed
from sematic_k8s.func import Func, func
from sematic_k8s.future import Future
from sematic_k8s.future import set_default_resolver as _set_default_resolver

if _typing.TYPE_CHECKING:
    from sematic_k8s.resolvers.base import Resolver
    from sematic_k8s.resolvers.cloud import CloudResolver
    from sematic_k8s.resolvers.local import LocalResolver
    from sematic_k8s.version import __version__ as __version__

__all__ = ["CloudResolver", "Context", "Func", "FuncError", "Future", "InfrastructureError", "LocalResolver",
           "ResolutionCanceled", "ResolutionFailed", "Resolver", "context", "errors", "func"]

log_lines.install()  # a log line no handler takes: others' words in it safe on a terminal, no forged lines

_LAZY = {"CloudResolver": "sematic_k8s.resolvers.cloud", "LocalResolver": "sematic_k8s.resolvers.local",
         "Resolver": "sematic_k8s.resolvers.base", "__version__": "sematic_k8s.version"}


def __getattr__(name: str) -> _typing.Any:  # noqa: ANN401 - PEP 562: the lazily imported names
    if name not in _LAZY:
        raise AttributeError(f"module 'sematic_k8s' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


def _local_resolver() -> "Resolver":
    """``Future.resolve()`` without a resolver: an embedded LocalResolver (its module imported on first use)."""
    return __getattr__("LocalResolver")()


_set_default_resolver(_local_resolver)

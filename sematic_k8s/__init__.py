"""sematic-k8s: plain Python funcs as recorded, cached, re-runnable pipeline steps."""

from sematic_k8s.context import Context, context
from sematic_k8s.func import Func, FuncError, func
from sematic_k8s.future import Future
from sematic_k8s.resolvers.base import Resolver
from sematic_k8s.resolvers.cloud import CloudResolver
from sematic_k8s.resolvers.local import LocalResolver
from sematic_k8s.resolvers.loop import ResolutionFailed
from sematic_k8s.version import __version__ as __version__  # re-exported

__all__ = ["CloudResolver", "Context", "Func", "FuncError", "Future", "LocalResolver", "ResolutionFailed", "Resolver",
           "context", "func"]

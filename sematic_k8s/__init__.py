"""sematic-k8s: plain Python funcs as recorded, cached, re-runnable pipeline steps."""

from sematic_k8s.context import Context, context
from sematic_k8s.func import Func, FuncError, func
from sematic_k8s.future import Future
from sematic_k8s.resolvers.base import Resolver
from sematic_k8s.resolvers.cloud import CloudResolver
from sematic_k8s.resolvers.local import LocalResolver
from sematic_k8s.resolvers.loop import ResolutionFailed

__all__ = ["CloudResolver", "Context", "Func", "FuncError", "Future", "LocalResolver", "ResolutionFailed", "Resolver",
           "context", "func"]
__version__ = "0.1.0"

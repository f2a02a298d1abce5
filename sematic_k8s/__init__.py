"""sematic-k8s: plain Python funcs as recorded, cached, re-runnable pipeline steps."""

from sematic_k8s import errors
from sematic_k8s.context import Context, context
from sematic_k8s.errors import FuncError, InfrastructureError, ResolutionCanceled, ResolutionFailed
from sematic_k8s.func import Func, func
from sematic_k8s.future import Future
from sematic_k8s.resolvers.base import Resolver
from sematic_k8s.resolvers.cloud import CloudResolver
from sematic_k8s.resolvers.local import LocalResolver
from sematic_k8s.version import __version__ as __version__

__all__ = ["CloudResolver", "Context", "Func", "FuncError", "Future", "InfrastructureError", "LocalResolver",
           "ResolutionCanceled", "ResolutionFailed", "Resolver", "context", "errors", "func"]

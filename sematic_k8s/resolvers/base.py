"""What every resolver shares: settings, validation, and the call into the resolution loop."""

from __future__ import annotations

from typing import Any

from sematic_k8s import caching
from sematic_k8s.executors.base import Executor
from sematic_k8s.future import Future
from sematic_k8s.resolvers.loop import ResolutionLoop
from sematic_k8s.storage.base import Storage
from sematic_k8s.store.base import Store

RERUN_MODES = ("from", "continue")


class Resolver:
    """Drives a Future graph to values. Subclasses choose the store, storage and executor."""

    kind = "base"

    def __init__(self, *, cache_namespace: caching.CacheNamespace = None, rerun_from: str | None = None,
                 rerun_mode: str = "from", max_parallelism: int = 1, root_id: str | None = None) -> None:
        if cache_namespace is not None and not (isinstance(cache_namespace, str) or callable(cache_namespace)):
            raise TypeError(f"cache_namespace must be a string or a callable, got {cache_namespace!r}")
        if rerun_from is not None and (not isinstance(rerun_from, str) or not rerun_from):
            raise TypeError(f"rerun_from must be a run id string, got {rerun_from!r}")
        if rerun_mode not in RERUN_MODES:
            raise ValueError(f"rerun_mode must be one of {RERUN_MODES}, got {rerun_mode!r}")
        if not isinstance(max_parallelism, int) or isinstance(max_parallelism, bool) or max_parallelism < 1:
            raise ValueError(f"max_parallelism must be a whole number >= 1, got {max_parallelism!r}")
        self.cache_namespace = cache_namespace
        self.rerun_from = rerun_from
        self.rerun_mode = rerun_mode
        self.max_parallelism = max_parallelism
        self.root_id = root_id  # the new Resolution's id, when the caller must know it up front (the server)

    def _parts(self) -> tuple[Store, Storage, Executor]:
        raise NotImplementedError

    def resolve(self, future: Future) -> Any:
        """Resolve ``future`` (a root pipeline call) and return its value."""
        if not isinstance(future, Future):
            raise TypeError(f"resolve() takes the Future returned by calling an @func, got {future!r}")
        store, storage, executor = self._parts()
        loop = ResolutionLoop(store, storage, executor, kind=self.kind, cache_namespace=self.cache_namespace,
                              max_parallelism=self.max_parallelism, rerun_from=self.rerun_from,
                              rerun_mode=self.rerun_mode, root_id=self.root_id)
        return loop.run(future)

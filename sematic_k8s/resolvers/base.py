"""What every resolver shares: its ResolutionSettings, and the call into the resolution loop."""

from __future__ import annotations

import dataclasses
from typing import Any

from sematic_k8s import caching, settings
from sematic_k8s.executors.base import Executor
from sematic_k8s.future import Future
from sematic_k8s.modules import check_not_loading
from sematic_k8s.resolvers.loop import ResolutionLoop
from sematic_k8s.specs import RERUN_MODES, ResolutionSettings
from sematic_k8s.storage.base import Storage
from sematic_k8s.store.base import Store
from sematic_k8s.store.lookup import ID, find_run, refuse_live
from sematic_k8s.store.records import RunRecord

__all__ = ["RERUN_MODES", "Resolver"]


def check_server(url: str, argument: str | None) -> None:
    """Refuse a resolver's server URL in one line unless it is one (:func:`settings.check_server_url`), named as it
    was given: the ``server`` argument (``argument``), else $SEMATIC_K8S_SERVER."""
    settings.check_server_url(url, "server {url}" if argument else f"${settings.SERVER_ENV}={{url}}")


def check_key(store: Store) -> None:
    """Through a server: refuse a key that may not record (a read-only key) at once, in one line, with one request
    (:meth:`~sematic_k8s.store.http.HttpStore.check_may_record`), before any user code runs (a callable
    cache_namespace, a func) or an image is built or pushed; was: refused at the resolution's first write. An
    embedded store has no key: nothing to ask."""
    check = getattr(store, "check_may_record", None)
    if check is not None:
        check()


class Resolver:
    """Drives a Future graph to values. Subclasses choose the store, storage and executor.

    The keyword arguments are the :class:`~sematic_k8s.specs.ResolutionSettings` (checked at once).
    """

    kind = "base"
    inline_limit = 0  # artifacts of at most this many bytes are kept inline with their records (Recorder)

    def __init__(self, *, cache_namespace: caching.CacheNamespace = None, rerun_from: str | None = None,
                 rerun_mode: str = "from", max_parallelism: int = 1, root_id: str | None = None) -> None:
        self.resolution = ResolutionSettings(cache_namespace=cache_namespace, rerun_from=rerun_from,
                                             rerun_mode=rerun_mode, max_parallelism=max_parallelism, root_id=root_id)
        if isinstance(cache_namespace, str):  # refused here, not once the resolution starts
            caching.check_namespace(cache_namespace)
        if root_id is not None and not (isinstance(root_id, str) and ID.fullmatch(root_id)):
            raise ValueError(f"root_id must be a new run id, hexadecimal like uuid.uuid4().hex (or left out), got "
                             f"{root_id!r}")

    @property
    def cache_namespace(self) -> caching.CacheNamespace:
        return self.resolution.cache_namespace

    @property
    def rerun_from(self) -> str | None:
        return self.resolution.rerun_from

    @property
    def rerun_mode(self) -> str:
        return self.resolution.rerun_mode

    @property
    def max_parallelism(self) -> int:
        return self.resolution.max_parallelism

    @property
    def root_id(self) -> str | None:
        """The new Resolution's id, when the caller must know it up front (the server)."""
        return self.resolution.root_id

    def _parts(self) -> tuple[Store, Storage, Executor]:
        raise NotImplementedError

    def _rerun_target(self, store: Store) -> RunRecord | None:
        """The run ``rerun_from`` names (an id, or a unique start of one, as the CLI takes them), read once; None
        when not a rerun. LookupError in one line when it names no run or several; ResolutionLive when its
        resolution has not ended (read first: a silent one is marked dead by that read, and may be re-run)."""
        if self.rerun_from is None:
            return None
        try:
            target = find_run(store, self.rerun_from)
        except LookupError as e:
            raise LookupError(f"rerun_from: {e}") from None
        refuse_live(store.get_resolution(target.root_id))
        return target

    def _settings(self, target: RunRecord | None) -> ResolutionSettings:
        """The settings with ``rerun_from`` the whole id of ``target`` (:meth:`_rerun_target`): what the resolution
        records."""
        return self.resolution if target is None else dataclasses.replace(self.resolution, rerun_from=target.id)

    def resolve(self, future: Future) -> Any:
        """Resolve ``future`` (a root pipeline call) and return its value."""
        if not isinstance(future, Future):
            raise TypeError(f"resolve() takes the Future returned by calling an @func, got {future!r}")
        check_not_loading(f"{type(self).__name__}.resolve()")  # a script's top level, loaded to find its funcs
        store, storage, executor = self._parts()
        check_key(store)
        return ResolutionLoop(store, storage, executor, self._settings(self._rerun_target(store)), kind=self.kind,
                              recorded=self._recorded(), inline_limit=self.inline_limit).run(future)

    def _recorded(self) -> dict[str, Any]:
        """What the resolution records of where its resolver keeps things, besides its settings (none here)."""
        return {}

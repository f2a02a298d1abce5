"""LocalResolver: the embedded default. SQLite + a local directory + in-process execution."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from sematic_k8s import logcapture, settings
from sematic_k8s.executors.inline import InlineExecutor
from sematic_k8s.future import Future
from sematic_k8s.resolvers.base import Resolver
from sematic_k8s.settings import API_KEY_ENV, SERVER_ENV
from sematic_k8s.storage.local import LocalStorage
from sematic_k8s.store.base import Store
from sematic_k8s.store.http import http_store
from sematic_k8s.store.sql import SqlStore

_STORES: dict[str, SqlStore] = {}


def sql_store(url: str) -> SqlStore:
    """One SqlStore (engine, connection pool) per URL per process."""
    if url not in _STORES:
        _STORES[url] = SqlStore(url)
    return _STORES[url]


def open_store(home: Path, server: str | None = None, api_key: str | None = None) -> Store:
    """Where metadata is recorded: the sematic-k8s server at ``server`` (default $SEMATIC_K8S_SERVER,
    with ``api_key`` or $SEMATIC_K8S_API_KEY) when there is one, else the embedded database of ``home``."""
    server = server or os.environ.get(SERVER_ENV) or None
    if server:
        return http_store(server, api_key or os.environ.get(API_KEY_ENV) or None)
    return sql_store(settings.db_url(home))


class LocalResolver(Resolver):
    """Resolve in this process, recording to ``home`` (default $SEMATIC_K8S_HOME or ~/.sematic_k8s).

    ``max_parallelism`` > 1 runs independent funcs on that many threads. With ``server`` (default
    $SEMATIC_K8S_SERVER) metadata is recorded through that sematic-k8s server, authenticated with
    ``api_key`` (default $SEMATIC_K8S_API_KEY); artifacts and logs stay under ``home``.
    """

    kind = "local"

    def __init__(self, *, home: str | os.PathLike[str] | None = None, server: str | None = None,
                 api_key: str | None = None, **options: Any) -> None:
        super().__init__(**options)
        self.home = settings.home(home)
        self.server = server or os.environ.get(SERVER_ENV) or None
        self.api_key = api_key or os.environ.get(API_KEY_ENV) or None

    @property
    def store(self) -> Store:
        return open_store(self.home, self.server, self.api_key)

    @property
    def storage(self) -> LocalStorage:
        return LocalStorage(self.home / "storage")

    def _parts(self) -> tuple[Store, LocalStorage, InlineExecutor]:
        return self.store, self.storage, InlineExecutor(self.max_parallelism)

    def resolve(self, future: Future) -> Any:
        logcapture.install()
        try:
            return super().resolve(future)
        finally:
            logcapture.uninstall()

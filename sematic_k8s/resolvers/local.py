"""LocalResolver: the embedded default. SQLite + a local directory + in-process execution."""

from __future__ import annotations

import os
from typing import Any

from sematic_k8s import logcapture, settings
from sematic_k8s.executors.inline import InlineExecutor
from sematic_k8s.future import Future, set_default_resolver
from sematic_k8s.resolvers.base import Resolver, check_server
from sematic_k8s.resolvers.recorder import INLINE_LIMIT
from sematic_k8s.settings import API_KEY_ENV, SERVER_ENV
from sematic_k8s.storage.local import LocalStorage
from sematic_k8s.store import Store, open_store
from sematic_k8s.store.records import IN_RESOLVER_HOME


class LocalResolver(Resolver):
    """Resolve in this process, recording to ``home`` (default $SEMATIC_K8S_HOME or ~/.sematic_k8s).

    ``max_parallelism`` > 1 runs independent funcs on that many threads. With ``server`` (default
    $SEMATIC_K8S_SERVER) metadata is recorded through that sematic-k8s server, authenticated with
    ``api_key`` (default $SEMATIC_K8S_API_KEY); artifacts and logs stay under ``home``.
    """

    kind = "local"
    inline_limit = INLINE_LIMIT  # funcs run in this process: small values need no file of their own

    def __init__(self, *, home: str | os.PathLike[str] | None = None, server: str | None = None,
                 api_key: str | None = None, **options: Any) -> None:
        super().__init__(**options)
        if home is not None and not (isinstance(home, (str, os.PathLike)) and str(os.fspath(home)).strip()):
            raise ValueError(f"home must be a directory's path (or left out: ${settings.HOME_ENV}, else "
                             f"~/.sematic_k8s), got {home!r}")  # home='' was the default home, without a word
        self.home = settings.home(home)
        self.server = server or os.environ.get(SERVER_ENV) or None
        if self.server:  # a typo refused here, not by the resolution's first request
            check_server(self.server, server)
        self.api_key = api_key or os.environ.get(API_KEY_ENV) or None

    @property
    def store(self) -> Store:
        return open_store(self.home, self.server, self.api_key)

    @property
    def storage(self) -> LocalStorage:
        return LocalStorage(self.home / "storage")

    def _recorded(self) -> dict[str, Any]:
        """Through a server, its resolutions say that their artifacts and logs stay in this home (naming no path):
        the server, and a CLI through it, then say where a log is rather than that the run printed nothing."""
        return {"storage": IN_RESOLVER_HOME} if self.server else {}

    def _parts(self) -> tuple[Store, LocalStorage, InlineExecutor]:
        return self.store, self.storage, InlineExecutor(self.max_parallelism)

    def resolve(self, future: Future) -> Any:
        logcapture.install()
        try:
            return super().resolve(future)
        finally:
            logcapture.uninstall()


set_default_resolver(LocalResolver)  # Future.resolve() without a resolver

"""A LocalResolver whose non-inline funcs run in worker processes (a ProcessExecutor), as a driver runs them: shared
by the tests that need real worker processes under a resolution of the test's own."""

from __future__ import annotations

import sematic_k8s as sk
from sematic_k8s.executors.inline import InlineExecutor
from sematic_k8s.executors.inline_or_remote import InlineOrRemoteExecutor
from sematic_k8s.executors.process import ProcessExecutor
from sematic_k8s.storage.urls import storage_url


class ProcessResolver(sk.LocalResolver):
    """Inline funcs in this process, the others in worker processes."""

    def _parts(self):  # noqa: ANN202
        storage = self.storage
        return self.store, storage, InlineOrRemoteExecutor(InlineExecutor(self.max_parallelism),
                                                           ProcessExecutor(storage, storage_url(storage)))

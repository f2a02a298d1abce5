"""The drivers' token Secrets left owned by nothing in the rerun namespace, deleted by the server.

A driver's launch (:func:`sematic_k8s.launchers.kubernetes.launch_driver`: the server's rerun, a CloudResolver's
``start_driver``) makes its resolution's token Secret (``sk-token-<resolution>``), then the driver Job, then makes
the Job the Secret's owner (so that the Job's TTL deletes both). A launching process killed between the Secret's
create and that patch leaves the Secret owned by nothing, for good: its token stops working once the resolution (or
claim) ends, but the Secret holding it stays. After each sweep of silent resolutions, :class:`LeftTokens` lists the
namespace's driver Secrets (``sematic-k8s/role=driver``, ours: ``app.kubernetes.io/managed-by=sematic-k8s``;
:data:`PAGE` at a time, with limit/continue) and deletes each token Secret with no owner, made more than
:data:`GRACE_ENV` seconds ago (a launch under way owns its Secret within that), whose resolution has ended (resolved,
failed, canceled: a claim failed too) or is not recorded here. Its delete names the resourceVersion listed: a Secret
owned (or updated by a second launch) meanwhile stays. Each call is tried once (no retry within a pass, so no "retrying"
line at each sweep of an outage): a failure is logged once until a pass succeeds, and tried again at the next sweep.
Only with the Kubernetes rerun launcher, in its namespace (the chart's server Role grants ``list`` and ``delete`` on
secrets there).
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from sematic_k8s import settings
from sematic_k8s.error_records import one_line
from sematic_k8s.labels import RESOLUTION_LABEL, ROLE_LABEL
from sematic_k8s.store.records import ENDED_STATES
from sematic_k8s.store.sql import SqlStore
from sematic_k8s_server.woken_pass import WokenPass

log = logging.getLogger("sematic_k8s_server")

GRACE_ENV = settings.TOKEN_SECRET_GRACE_ENV  # seconds an unowned token Secret is left to its launch
DEFAULT_GRACE = 600.0
SELECTOR = f"{ROLE_LABEL}=driver,app.kubernetes.io/managed-by=sematic-k8s"
TOKEN_PREFIX = "sk-token-"  # manifests.token_secret_name
PAGE = 500  # Secrets per list request (limit/continue)


class LeftTokens(WokenPass):
    """Deletes the token Secrets left owned by nothing in ``namespace`` (None: the client's own), on a daemon thread
    woken by :meth:`wake` (the sweeper's, after each sweep)."""

    thread_name = "sk-left-tokens"

    def __init__(self, store: SqlStore, namespace: str | None) -> None:
        self.store, self.namespace = store, namespace
        self.grace = settings.seconds(GRACE_ENV, DEFAULT_GRACE)
        super().__init__()
        self._api: Any = None
        self._said = False  # a failed pass was logged (once until one succeeds)

    def close(self) -> None:
        """Close the Kubernetes client, if one was made (:meth:`stop` does, once its thread ended)."""
        if self._api is not None:
            self._api.close()
            self._api = None

    def passed(self) -> None:
        self._said = False

    def failed(self, e: Exception) -> None:
        if not self._said:  # the API or database may be out of reach: the next sweep tries again
            self._said = True
            log.warning("looking for drivers' token Secrets left owned by nothing in namespace %s failed "
                        "(tried again at the next sweep): %s: %s", self.namespace or "(the current one)",
                        type(e).__name__, one_line(str(getattr(e, "reason", None) or e)))

    def ended(self) -> None:
        self.close()

    def sweep(self) -> list[str]:
        """Delete the token Secrets left now; their names."""
        from kubernetes import client

        from sematic_k8s.k8s.client import Backoff, api_call, current_namespace, make_api_client

        if self._api is None:
            self._api = make_api_client()
        namespace = self.namespace or current_namespace()
        core = client.CoreV1Api(self._api)
        once = Backoff(attempts=1)  # the next sweep is its retry: an outage said once (failed), not at each pass
        now = dt.datetime.now(dt.timezone.utc)
        deleted: list[str] = []
        token = None
        while True:  # a page at a time (limit/continue): a namespace may hold many Secrets
            page: dict[str, Any] = {"label_selector": SELECTOR, "limit": PAGE}
            if token:
                page["_continue"] = token
            listed = api_call(core.list_namespaced_secret, namespace, backoff=once, **page)
            for secret in listed.items:
                name = self._deleted(core, namespace, secret.metadata, now, once)
                if name is not None:
                    deleted.append(name)
            token = listed.metadata._continue if listed.metadata is not None else None
            if not token or self.stopping():
                return deleted

    def _deleted(self, core: Any, namespace: str, meta: Any, now: dt.datetime, once: Any) -> str | None:
        """The name of the Secret of ``meta`` if it was left (owned by nothing, past the grace, its resolution ended or
        not recorded) and is now deleted; else None."""
        from kubernetes import client

        from sematic_k8s.k8s.client import api_call

        if meta is None:
            return None
        res_id = (meta.labels or {}).get(RESOLUTION_LABEL, "")
        if (meta.owner_references or meta.name != TOKEN_PREFIX + res_id or meta.creation_timestamp is None
                or (now - meta.creation_timestamp).total_seconds() < self.grace):
            return None
        res = self.store.get_resolution(res_id)
        if res is not None and res.state not in ENDED_STATES:
            return None
        try:
            api_call(core.delete_namespaced_secret, meta.name, namespace, backoff=once,
                     body=client.V1DeleteOptions(preconditions=client.V1Preconditions(
                         uid=meta.uid, resource_version=meta.resource_version)))
        except client.ApiException as e:
            if e.status in (404, 409):  # gone, or changed since listed (owned, updated): left
                return None
            raise
        log.info("deleted the token Secret %s in namespace %s: owned by nothing (its launch was cut short) and "
                 "its resolution %s", meta.name, namespace, "not recorded" if res is None else res.state)
        return str(meta.name)

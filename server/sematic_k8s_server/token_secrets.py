"""The drivers' token Secrets left owned by nothing, deleted by the server, in its rerun namespace and the namespaces it
is configured to sweep.

A driver's launch (:func:`sematic_k8s.launchers.kubernetes.launch_driver`: the server's rerun, a CloudResolver's
``start_driver``) makes its resolution's token Secret (``sk-token-<resolution>``), then the driver Job, then makes
the Job the Secret's owner (so that the Job's TTL deletes both). A launching process killed between the Secret's
create and that patch leaves the Secret owned by nothing, for good: its token stops working once the resolution (or
claim) ends, but the Secret holding it stays. After each sweep of silent resolutions, :class:`LeftTokens` lists, in
each of its namespaces, the driver Secrets (``sematic-k8s/role=driver``, ours: ``app.kubernetes.io/managed-by=
sematic-k8s``; :data:`PAGE` at a time, with limit/continue; their metadata only,
:func:`sematic_k8s.k8s.client.list_metadata`: no Secret's data reaches the server) and deletes each token Secret with
no owner, made more than :data:`GRACE_ENV` seconds ago (a launch under way owns its Secret within that), whose
resolution has ended (resolved, failed, canceled: a claim failed too) or is not recorded here. Its delete names the
uid and resourceVersion listed: a Secret owned (or updated by a second launch) meanwhile stays. Each call is tried
once (no retry within a pass, so no "retrying" line at each sweep of an outage): a failure is logged once until a
pass succeeds, and tried again at the next sweep; a namespace whose Secrets the server may not list or delete (403)
is said once (until it may), and the others are swept all the same.

Its namespaces are the server's settings only: the rerun namespace (with the Kubernetes rerun launcher; the chart's
server Role there grants ``list`` and ``delete`` on secrets) and ``ServerConfig.token_sweep_namespaces``
(``$SEMATIC_K8S_TOKEN_SWEEP_NAMESPACES``, the chart's ``server.tokenSweepNamespaces``, a Role in each): a namespace a
record names (a resolution launched elsewhere) is never listed.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
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
    """Deletes the token Secrets left owned by nothing in ``namespaces`` (None: the client's own), in turn, on a daemon
    thread woken by :meth:`wake` (the sweeper's, after each sweep). ``rerun_namespaces``: those of ``namespaces`` that
    are the server's rerun namespace (None: the client's own), whose refusal (403) is worded so."""

    thread_name = "sk-left-tokens"

    def __init__(self, store: SqlStore, namespaces: Sequence[str | None],
                 rerun_namespaces: Sequence[str | None] = ()) -> None:
        self.store, self.namespaces, self.rerun_namespaces = store, tuple(namespaces), tuple(rerun_namespaces)
        self.grace = settings.seconds(GRACE_ENV, DEFAULT_GRACE)
        super().__init__()
        self._api: Any = None
        self._said = False  # a failed pass was logged (once until one succeeds)
        self._failing = ""  # the namespace(s) of the failure a pass raised
        self._refused: set[str] = set()  # namespaces whose refusal (403) was said (until a pass there succeeds)

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
                        "(tried again at the next sweep): %s: %s", self._failing,
                        type(e).__name__, one_line(str(getattr(e, "reason", None) or e)))

    def ended(self) -> None:
        self.close()

    def sweep(self) -> list[str]:
        """Delete the token Secrets left now, in each namespace (one refused or failing: the others all the same);
        their names. A failure (but a refusal) is raised once the others were swept."""
        from kubernetes import client

        from sematic_k8s.k8s.client import Backoff, current_namespace, make_api_client

        self._failing = ", ".join(n or "(the current one)" for n in self.namespaces)  # until one is named
        if self._api is None:
            self._api = make_api_client()
        core = client.CoreV1Api(self._api)
        once = Backoff(attempts=1)  # the next sweep is its retry: an outage said once (failed), not at each pass
        now = dt.datetime.now(dt.timezone.utc)
        deleted: list[str] = []
        failure: Exception | None = None
        reruns = {n or current_namespace() for n in self.rerun_namespaces}
        for namespace in dict.fromkeys(n or current_namespace() for n in self.namespaces):
            if self.stopping():
                break
            try:
                deleted += self._sweep(core, namespace, now, once)
            except Exception as e:  # noqa: BLE001 - raised once the other namespaces were swept
                if isinstance(e, client.ApiException) and e.status == 403:  # the same at every pass: said once
                    if namespace not in self._refused:
                        self._refused.add(namespace)
                        log.warning("%s", refusal(e, namespace, rerun=namespace in reruns))
                elif failure is None:
                    failure, self._failing = e, namespace
                continue
            self._refused.discard(namespace)
        if failure is not None:
            raise failure
        return deleted

    def _sweep(self, core: Any, namespace: str, now: dt.datetime, once: Any) -> list[str]:
        """Delete the token Secrets left now in ``namespace``; their names."""
        from sematic_k8s.k8s.client import list_metadata

        deleted: list[str] = []
        token = None
        while True:  # a page at a time (limit/continue): a namespace may hold many Secrets
            listed = list_metadata(core.list_namespaced_secret, namespace, SELECTOR, PAGE, token, backoff=once)
            for item in listed.get("items") or []:
                name = self._deleted(core, namespace, item.get("metadata") or {}, now, once)
                if name is not None:
                    deleted.append(name)
            token = (listed.get("metadata") or {}).get("continue")
            if not token or self.stopping():
                return deleted

    def _deleted(self, core: Any, namespace: str, meta: dict[str, Any], now: dt.datetime, once: Any) -> str | None:
        """The name of the Secret of metadata ``meta`` (the API's JSON) if it was left (owned by nothing, past the
        grace, its resolution ended or not recorded) and is now deleted; else None."""
        from kubernetes import client

        from sematic_k8s.k8s.client import api_call

        name, res_id = meta.get("name"), (meta.get("labels") or {}).get(RESOLUTION_LABEL, "")
        made = _timestamp(meta.get("creationTimestamp"))
        if (meta.get("ownerReferences") or name != TOKEN_PREFIX + res_id or made is None
                or (now - made).total_seconds() < self.grace):
            return None
        res = self.store.get_resolution(res_id)
        if res is not None and res.state not in ENDED_STATES:
            return None
        try:  # its answer (the Secret deleted, its data too) not decoded, but read to its end and let go, so that its
            # connection goes back to the pool (was: held by the unread answer, a new connection for each delete)
            answer = api_call(core.delete_namespaced_secret, name, namespace, backoff=once, _preload_content=False,
                              body=client.V1DeleteOptions(preconditions=client.V1Preconditions(
                                  uid=meta.get("uid"), resource_version=meta.get("resourceVersion"))))
            answer.drain_conn()
            answer.release_conn()
        except client.ApiException as e:
            if e.status in (404, 409):  # gone, or changed since listed (owned, updated): left
                return None
            raise
        log.info("deleted the token Secret %s in namespace %s: owned by nothing (its launch was cut short) and "
                 "its resolution %s", name, namespace, "not recorded" if res is None else res.state)
        return str(name)


def _timestamp(text: Any) -> dt.datetime | None:
    """An API timestamp (RFC 3339, ``2026-01-02T03:04:05Z``), else None."""
    try:
        return dt.datetime.fromisoformat(str(text).replace("Z", "+00:00")) if text else None
    except ValueError:
        return None


def refusal(e: Any, namespace: str, *, rerun: bool = False) -> str:
    """The server's words for a refusal (403) to sweep ``namespace``: what it lacks, and what to do: a Role there, or,
    for one of $SEMATIC_K8S_TOKEN_SWEEP_NAMESPACES, its removal from it; for the rerun namespace (``rerun``), where
    this server's reruns make their token Secrets, the Role alone (the chart's server Role grants it)."""
    from sematic_k8s.k8s.client import api_message, denial

    denied = denial(e)
    lacks = f" it lacks {denied};" if denied is not None else ""
    do = ("; it is this server's rerun namespace (--rerun-namespace), where its reruns make their drivers' token "
          "Secrets: give its ServiceAccount list and delete on secrets there, as the chart's server Role in the rerun "
          "namespace does" if rerun else " until its ServiceAccount has a Role allowing list and delete on secrets "
          "there (the chart makes one in each of server.tokenSweepNamespaces), or the namespace is taken out of "
          f"${settings.TOKEN_SWEEP_NAMESPACES_ENV}")
    return (f"the Kubernetes API refuses to let this server sweep the drivers' token Secrets left owned by nothing in "
            f"namespace {namespace} ({e.status}: {one_line(api_message(e))});{lacks} they are not deleted there{do}")

"""Start a driver Job on Kubernetes for a DriverSpec (the CloudResolver's and the server's way in), and
follow it (:class:`DriverJob`: the Job's conditions, its last pod's exit and log).

The driver's environment is merged with the chart's ``sematic-k8s`` ConfigMap: the in-cluster addresses of
the server and S3 win over the submitting machine's (which may be port-forwards to 127.0.0.1), and the
ConfigMap names the ServiceAccounts and the storage Secret for the driver and its workers.

The driver's credential is its resolution's token (``$SEMATIC_K8S_API_KEY`` in the env given): it goes into a
Secret of its own (``sk-token-<resolution>``, owned by the driver's Job), which the Job reads it from; it is
never a plain value of the Job. So does the user info of the server URL (``$SEMATIC_K8S_SERVER_AUTH``), when it
has one and the chart's ConfigMap does not give the in-cluster address instead. Whoever launches needs to create,
patch and delete Secrets and create and get Jobs in the run namespace (a Job's create that fails deletes its token
Secret again, once a read finds no such Job). One a launching process killed left owned by nothing is deleted by
the server's sweeper (``sematic_k8s_server.token_secrets``) in its rerun namespace, once its resolution ended.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable, Mapping
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from sematic_k8s import settings
from sematic_k8s.errors import CallStopped, DriverUnneeded
from sematic_k8s.k8s import manifests
from sematic_k8s.k8s.client import (
    Backoff,
    api_call,
    api_message,
    current_namespace,
    lasting_refusal,
    log_text,
    make_api_client,
)
from sematic_k8s.k8s.events import message_of, refused_for_good
from sematic_k8s.k8s.manifests import driver_job, driver_job_name, token_secret_name
from sematic_k8s.k8s.pods import job_failure, pod_state, pods_left
from sematic_k8s.labels import RESOLUTION_LABEL, ROLE_LABEL
from sematic_k8s.launchers import LOG_TAIL, DriverEnd
from sematic_k8s.settings import (
    API_KEY_ENV,
    DRIVER_ENV,
    SERVER_AUTH_ENV,
    SERVICE_ACCOUNT_ENV,
    STORAGE_SECRET_ENV,
    WORKER_SERVICE_ACCOUNT_ENV,
)
from sematic_k8s.specs import DRIVER_EXIT_FAILED, DriverSpec
from sematic_k8s.stopping import Stop

log = logging.getLogger("sematic_k8s.k8s")

DRIVER_ASKS = (f"the driver's pod asks cpu {manifests.DRIVER_CPU} and memory {manifests.DRIVER_MEMORY} unless "
               "launch_driver's driver_settings say cpu=, memory=")  # what to change, for refused_for_good
ONCE = Backoff(attempts=1)  # the clean-up after a failed Job create: best effort, not held up by retries
SLOW_API = "a slow Kubernetes API"  # what a launch canceled meanwhile waited for (DriverUnneeded)
RUN_CONFIG_MAP = "sematic-k8s"  # the chart's in-cluster settings for drivers, in the run namespace
# What the follower (DriverJob) goes without when the API server refuses it a read, by the resource refused
UNREAD = {"jobs": "the driver's end is not seen here (the resolution's record is followed on: a driver that dies is "
                  "marked failed once its heartbeat stops)",
          "pods": "its pod is not read: a driver that cannot pull its image or exits 1 is told only when its Job ends, "
                  "without its exit code and last lines",
          "events": "why the driver's pod is not created or does not start is not told",
          "pods/log": "the driver's last log lines are not shown"}
ANSWERED = (400, 404, 409, 410)  # errors the API server answers a read it allowed with (429: before it looks)
REASK_REFUSED = 60.0  # seconds between the follower's asks of a read refused (a Role granted later, a token renewed)
IN_CLUSTER_KEYS = (settings.SERVER_ENV, settings.STORAGE_ENV, settings.S3_BUCKET_ENV, settings.S3_KEY_PREFIX_ENV,
                   settings.S3_ENDPOINT_ENV, settings.S3_REGION_ENV)


def run_config(api: client.ApiClient, namespace: str) -> dict[str, str]:
    """The chart's ConfigMap of in-cluster settings ($SEMATIC_K8S_CONFIG_MAP, default ``sematic-k8s``); {} if absent."""
    name = os.environ.get(settings.CONFIG_MAP_ENV, RUN_CONFIG_MAP)
    try:
        return dict(client.CoreV1Api(api).read_namespaced_config_map(name, namespace).data or {})
    except ApiException as e:
        if e.status in (403, 404):
            return {}
        raise


def in_cluster_env(env: Mapping[str, str], cluster: Mapping[str, str]) -> dict[str, str]:
    """The driver's env: addresses as seen from inside the cluster win over the submitting machine's
    (whose server and S3 endpoint may be port-forwards to 127.0.0.1)."""
    if not cluster:
        return dict(env)
    kept = {k: v for k, v in env.items() if not k.startswith("AWS_ENDPOINT_URL")}
    merged = {**kept, **{k: cluster[k] for k in IN_CLUSTER_KEYS if cluster.get(k)}}
    if cluster.get(settings.SERVER_ENV):  # the user info of the submitting machine's URL is for that URL alone
        merged[settings.SERVER_ENV], auth = settings.split_user_info(cluster[settings.SERVER_ENV])
        merged.pop(SERVER_AUTH_ENV, None)
        if auth:
            merged[SERVER_AUTH_ENV] = auth
    return merged


def check_platform(api: client.ApiClient, platform: str, image: str) -> None:
    """Refuse, in plain words, to launch an image built for ``platform`` on a cluster without a node of that CPU
    architecture (its pods would never be scheduled). Nodes are listed only when the caller may (a user's
    kubeconfig); without that permission (drivers, the server) the check is left to the scheduler."""
    try:
        nodes = client.CoreV1Api(api).list_node(_request_timeout=30).items
    except ApiException as e:  # not allowed (or not served): the check is a courtesy
        log.debug("cannot list nodes to check the image's platform (%s): %s", e.status, api_message(e))
        return
    arches = sorted({((n.metadata and n.metadata.labels) or {}).get(manifests.ARCH_LABEL, "") for n in nodes} - {""})
    if arches and platform not in arches:
        raise RuntimeError(f"image {image} was built for {platform} but the cluster's nodes are {', '.join(arches)}: "
                           f"build from a base image for {arches[0]} (CloudResolver(base_image=...), "
                           f"${settings.BASE_IMAGE_ENV}) or add {platform} nodes")


def launch_driver(spec: DriverSpec, root_id: str, env: Mapping[str, str], *, namespace: str | None = None,
                  service_account: str | None = None, storage_secret: str | None = None,
                  worker_service_account: str | None = None,
                  func_name: str = "driver", host: str | None = None, api_client: client.ApiClient | None = None,
                  driver_settings: Mapping[str, Any] | None = None, ended: Callable[[], bool] | None = None,
                  stop: Stop | None = None, **worker_settings: Any) -> str:
    """Create the driver's Job for ``spec`` (a DriverSpec) and return its name; idempotent (409: it exists, and is
    treated as the one made now: a create whose answer was lost and was tried again is answered so).

    Defaults come from the environment: $SEMATIC_K8S_NAMESPACE, $SEMATIC_K8S_SERVICE_ACCOUNT,
    $SEMATIC_K8S_WORKER_SERVICE_ACCOUNT, $SEMATIC_K8S_STORAGE_SECRET. The token in ``env`` goes to the
    resolution's own Secret (:func:`~sematic_k8s.k8s.manifests.token_secret`). ``worker_settings``
    (node_selector, tolerations, ...) go to the driver's KubernetesExecutor through ``spec.executor_settings``;
    ``driver_settings`` (cpu, memory, node_selector, tolerations, image_pull_secrets, backoff_limit,
    ttl_seconds_after_finished) shape the driver's own pod. ``ended()`` (a server's rerun: its claim no longer waits
    for a driver, canceled while the API was slow) is asked right before the token Secret and the Job are made, and
    once the Job's create was answered (then the Job is deleted again): :class:`DriverUnneeded`, no driver started.
    ``stop`` (a server's, set as it stops) ends the call under way and the launch with it: :class:`CallStopped`,
    saying so when it was the Job's create, which may have been made (a client given, ``api_client``, is its
    giver's to make with the stop).

    A client made here (none given) is closed before it returns or raises (was: left to be collected, its kept-alive
    connection to the API server held meanwhile: as long as a refused launch's error was kept, its traceback holding
    the client); ``api_client`` is its giver's, left open.
    """
    namespace = namespace or current_namespace()
    api = api_client or make_api_client(host, stop)
    try:
        return _launch(api, spec, root_id, env, namespace, service_account, storage_secret, worker_service_account,
                       func_name, driver_settings, worker_settings, ended or (lambda: False))
    finally:
        if api_client is None:
            api.close()


def _launch(api: client.ApiClient, spec: DriverSpec, root_id: str, env: Mapping[str, str], namespace: str,
            service_account: str | None, storage_secret: str | None, worker_service_account: str | None,
            func_name: str, driver_settings: Mapping[str, Any] | None, worker_settings: Mapping[str, Any],
            ended: Callable[[], bool]) -> str:
    """:func:`launch_driver` with ``api``."""
    cluster = run_config(api, namespace)
    env = in_cluster_env(env, cluster)
    service_account = service_account or cluster.get(SERVICE_ACCOUNT_ENV)
    worker_service_account = worker_service_account or cluster.get(WORKER_SERVICE_ACCOUNT_ENV)
    storage_secret = storage_secret or os.environ.get(STORAGE_SECRET_ENV) or cluster.get(STORAGE_SECRET_ENV) or None
    settings = {"namespace": namespace, **dict(spec.executor_settings or {}), **worker_settings}
    if spec.platform:  # workers run the driver's image: on nodes of its architecture too
        check_platform(api, spec.platform, spec.image)
        settings["node_selector"] = {**(settings.get("node_selector") or {}), **manifests.arch_selector(spec.platform)}
    worker_sa = worker_service_account or os.environ.get(WORKER_SERVICE_ACCOUNT_ENV)
    if worker_sa:
        settings.setdefault("service_account", worker_sa)
    if storage_secret:
        settings.setdefault("storage_secret", storage_secret)
    for key in ("image_pull_secrets",):
        if driver_settings and key in driver_settings:
            settings.setdefault(key, list(driver_settings[key]))
    spec = dataclasses.replace(spec, executor_settings=settings,
                               resolution=dataclasses.replace(spec.resolution, root_id=spec.root_id or root_id))
    if ended():
        raise DriverUnneeded(root_id, SLOW_API)
    token, auth = env.get(API_KEY_ENV), env.get(SERVER_AUTH_ENV)
    secret_name = _store_token(api, namespace, root_id, token or "", auth, func_name) if token or auth else None
    job = driver_job(spec, root_id, {**env, DRIVER_ENV: spec.to_json()}, namespace=namespace,
                     service_account=service_account or os.environ.get(SERVICE_ACCOUNT_ENV) or None,
                     secret_name=secret_name, storage_secret=storage_secret, func_name=func_name,
                     **dict(driver_settings or {}))
    name = driver_job_name(root_id)
    batch = client.BatchV1Api(api)
    try:
        created = api_call(batch.create_namespaced_job, namespace, job)
        uid = created.metadata.uid if created.metadata is not None else None
    except CallStopped as e:  # its answer unread: the Job may be there, its driver then finds its resolution ended
        raise CallStopped(f"the create of its driver Job {name} in namespace {namespace} (it may have been made: "
                          "its driver, if it starts, finds its resolution ended and stops)") from e
    except ApiException as e:
        if e.status != 409:
            if secret_name:
                _token_left(api, namespace, secret_name, name)
            raise RuntimeError(f"could not create the driver Job {name} in namespace {namespace} "
                               f"({e.status}): {api_message(e)}") from e
        # made by an earlier launch, or by this one's try whose answer was lost (unanswered, then tried again): it is
        # this resolution's (its name is), owning its token Secret and dropped if the claim ended, as one made now
        log.info("driver Job %s already exists: not launched again", name)
        existing = api_call(batch.read_namespaced_job, name, namespace)
        uid = existing.metadata.uid if existing.metadata is not None else None
    except Exception:  # unanswered, cut: the Job may have been made
        if secret_name:
            _token_left(api, namespace, secret_name, name)
        raise
    if secret_name and uid:
        _owned_by_job(api, namespace, secret_name, name, uid)
    if ended():  # canceled while the create was under way: its Job goes (its token Secret, owned, with it)
        _delete_unneeded(api, namespace, name, uid)
        raise DriverUnneeded(root_id, SLOW_API)
    return name


def _delete_unneeded(api: client.ApiClient, namespace: str, name: str, uid: str | None) -> None:
    """Delete the driver Job just made (by uid) for a resolution that ended meanwhile; refused, logged (its driver,
    finding its resolution ended, stops)."""
    try:
        api_call(client.BatchV1Api(api).delete_namespaced_job, name, namespace, propagation_policy="Background",
                 body=client.V1DeleteOptions(preconditions=client.V1Preconditions(uid=uid) if uid else None))
    except ApiException as e:
        if e.status != 404:
            log.warning("could not delete driver Job %s, made for a resolution that ended meanwhile (%s): %s", name,
                        e.status, api_message(e))


def _token_left(api: client.ApiClient, namespace: str, secret: str, job: str) -> None:
    """After the driver Job's create failed (refused, or its outcome unknown): its token Secret is deleted if a read
    finds no such Job, and made owned by the Job if it finds one (made after all, or an earlier launch's that a quota
    refused again), so that no Secret holding a token is left owned by nothing. Best effort, one try each (the
    launch's own error is the one raised): a failure is logged, the Secret then left to the server's sweeper."""
    try:
        try:
            found = api_call(client.BatchV1Api(api).read_namespaced_job, job, namespace, backoff=ONCE)
        except ApiException as e:
            if e.status != 404:
                raise
            api_call(client.CoreV1Api(api).delete_namespaced_secret, secret, namespace, backoff=ONCE)
            return
        if found.metadata is not None and found.metadata.uid:
            _owned_by_job(api, namespace, secret, job, found.metadata.uid)
    except ApiException as e:
        if e.status != 404:  # 404: the Secret is gone already
            log.warning("could not delete the token Secret %s of driver Job %s, whose create failed (%s): %s",
                        secret, job, e.status, api_message(e))
    except Exception as e:  # unanswered, cut, stopped
        log.warning("could not delete the token Secret %s of driver Job %s, whose create failed: %s: %s", secret,
                    job, type(e).__name__, e)


def _store_token(api: client.ApiClient, namespace: str, root_id: str, token: str, server_auth: str | None,
                 func_name: str) -> str:
    """Create (or, on a second launch, update) the Secret holding ``root_id``'s driver token (and the user info of
    its server URL); its name."""
    core = client.CoreV1Api(api)
    secret = manifests.token_secret(root_id, token, namespace=namespace, func_name=func_name, server_auth=server_auth)
    name = token_secret_name(root_id)
    try:
        api_call(core.create_namespaced_secret, namespace, secret)
    except ApiException as e:
        if e.status != 409:
            raise RuntimeError(f"could not create the driver's token Secret {name} in namespace {namespace} "
                               f"({e.status}): {api_message(e)}") from e
        api_call(core.patch_namespaced_secret, name, namespace, {"data": secret.data})
    return name


def _owned_by_job(api: client.ApiClient, namespace: str, secret: str, job: str, uid: str) -> None:
    """Make the Job own its token Secret, so that the Job's TTL deletes both (best effort: the token ends with
    its resolution anyway)."""
    owner = manifests.to_dict(manifests.owner_reference(job, uid))
    try:
        api_call(client.CoreV1Api(api).patch_namespaced_secret, secret, namespace,
                 {"metadata": {"ownerReferences": [owner]}})
    except ApiException as e:
        log.warning("could not make Job %s own Secret %s (%s): %s", job, secret, e.status, api_message(e))


def start_driver(spec: DriverSpec, env: Mapping[str, str], *, progress: Callable[[str], None] | None = None,
                 ended: Callable[[], bool] | None = None, pending: Callable[[str], None] | None = None,
                 stop: Stop | None = None) -> None:
    """The launcher of ``backends.LAUNCHERS["kubernetes"]``: the driver's Job in the spec's namespace. ``progress``
    is told nothing: the Job's pod waits for its image by itself (ImagePullBackOff), followed by :class:`DriverJob`.
    ``pending`` is told, before the first request, what the launch does, in the words for a Kubernetes API slow to
    answer it (a server's rerun answers its request if it goes on); ``ended``, ``stop``: see :func:`launch_driver`."""
    namespace = spec.executor_settings.get("namespace") or current_namespace()
    if pending is not None:
        pending(f"launching the driver: its Job {driver_job_name(spec.root_id or '')} in namespace {namespace}; "
                f"the Kubernetes API is slow to answer")
    launch_driver(spec, spec.root_id or "", env, namespace=namespace, ended=ended, stop=stop)


class DriverJob:
    """Follows the driver Job of ``spec``'s resolution. It has ended when the Job failed (its pods used up
    their retries: a driver pod that dies while retries are left comes back and resumes) or completed, or
    when it is gone (deleted without its pod: that pod and the worker Jobs are deleted by :meth:`cleanup`);
    also when its pod is never created (``FailedCreate`` Events: Pod Security, a missing ServiceAccount, a
    quota, a webhook), never starts (an image that cannot be pulled, a missing Secret,
    ``FailedCreatePodSandBox`` / ``FailedMount``) for ``start_grace`` seconds ($SEMATIC_K8S_DRIVER_START_GRACE,
    default 60), or exits 1 (the pipeline failed: final) before the Job says so; at once when a LimitRange refuses
    what its pod asks (each try of its Job controller meets it again). The end carries the reason and its last pod's
    exit code and log lines.

    It reads with its user's own credentials: ``get`` on jobs (which launching a driver needs too), ``list`` on pods
    and events, ``get`` on pods/log. A read refused (401, 403, another lasting 4xx) is said once, in one line naming
    the verb, resource and namespace and what to grant, and then asked again only every :data:`REASK_REFUSED` seconds
    (a 401: nothing else is asked meanwhile), since a Role granted later or a token renewed makes it pass: once
    answered, one line says the read works again. A 429, 5xx or broken connection is asked again at the next poll."""

    def __init__(self, spec: DriverSpec, api_client: client.ApiClient | None = None,
                 start_grace: float | None = None) -> None:
        self.namespace = spec.executor_settings.get("namespace") or current_namespace()
        self.root_id = spec.root_id or ""
        self.name = driver_job_name(self.root_id)
        self.api = api_client or make_api_client()  # as start_driver reached it
        self._own_api = api_client is None  # closed by close() (a client given is its giver's)
        self.batch, self.core = client.BatchV1Api(self.api), client.CoreV1Api(self.api)
        self.start_grace = settings.seconds(settings.DRIVER_START_GRACE_ENV, 60.0) if start_grace is None \
            else start_grace
        self.check_every = min(5.0, max(0.5, self.start_grace / 4))
        self.stuck: tuple[str, float] | None = None  # (what keeps it from starting, since when: monotonic)
        self.checked = float("-inf")
        self.uid: str | None = None  # the Job's, as last read (its pods carry it in their labels)
        self.left: list[tuple[str, str]] = []  # (name, uid) of driver pods its deletion left behind
        # resources refused (said once), "*": every one (401), each with when it was last asked (monotonic)
        self.refused: dict[str, float] = {}

    def _ask(self, verb: str, resource: str, call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:  # noqa: ANN401
        """``call``'s answer (``verb`` on ``resource``), or None while the API server refuses it: said once at the
        refusal, then asked again every :data:`REASK_REFUSED` seconds; answered again, said so once. Any other error
        is raised (to be asked again later)."""
        held = [key for key in ("*", resource) if key in self.refused]
        now = time.monotonic()
        if held and now - min(self.refused[key] for key in held) < REASK_REFUSED:
            return None
        for key in held:
            self.refused[key] = now
        try:
            answer = call(*args, **kwargs)
        except ApiException as e:
            if not lasting_refusal(e):
                if e.status in ANSWERED:  # the read allowed, the object's own answer
                    for key in held:
                        self._answered_again(key, verb, resource)
                raise
            key = "*" if e.status == 401 else resource
            if key != "*" and "*" in self.refused:  # answered (if refused): the credentials are accepted again
                self._answered_again("*", verb, resource)
            if key not in self.refused:
                log.error("%s", self._refusal(verb, resource, e))
            self.refused[key] = now
            return None
        for key in held:
            self._answered_again(key, verb, resource)
        return answer

    def _answered_again(self, key: str, verb: str, resource: str) -> None:
        """Say, once, that a read refused before (``key``: its resource, or "*": all of them) is answered again."""
        del self.refused[key]
        what = "the Kubernetes API accepts your kube credentials again" if key == "*" else \
            f"the Kubernetes API answers {verb} on {resource} in namespace {self.namespace} again"
        log.warning("following driver Job %s: %s (refused before)", self.name, what)

    def _refusal(self, verb: str, resource: str, e: ApiException) -> str:
        """The one line saying the API server refused ``verb`` on ``resource``, and what to do."""
        group = "batch" if resource == "jobs" else ""
        refused = (f'following driver Job {self.name}: the Kubernetes API refuses {verb} on {resource} (API group '
                   f'"{group}") in namespace {self.namespace} ({e.status}: {" ".join(api_message(e).split())})')
        again = f"asked again every {REASK_REFUSED:g}s"
        if e.status == 401:
            return (f"{refused}, so nothing more is read from it ({again}) and {UNREAD['jobs']}: your kube "
                    "credentials are not accepted; renew them (an expired token, a revoked certificate)")
        fix = again
        if e.status == 403:
            fix = f'grant your kube credentials {verb} on {resource} in API group "{group}" in namespace ' \
                  f"{self.namespace}" + (" (launching a driver needs create and get on jobs there)"
                                         if resource == "jobs" else "") + f" ({again})"
        return f"{refused}, so {UNREAD[resource]}; {fix}"

    def _deleted(self) -> DriverEnd:
        """The Job is gone. A delete that orphans its pods (propagationPolicy Orphan: ``kubectl delete
        --cascade=orphan``, or a client sending none, the batch/v1 default) leaves the driver's pod running the
        resolution unseen, and the worker Jobs it started unowned: found here (by the labels the Job controller set
        on the pod), deleted by :meth:`cleanup` once the end is recorded."""
        root = self.root_id
        try:
            listed = self._ask("list", "pods", self.core.list_namespaced_pod, self.namespace,
                               label_selector=f"{RESOLUTION_LABEL}={root},{ROLE_LABEL}=driver")
            pods = [] if listed is None else self.api.sanitize_for_serialization(listed).get("items") or []
            self.left = pods_left(pods, self.name, self.uid, root, root, role="driver")
        except Exception as e:  # noqa: BLE001 - not listable: the Job's end is known all the same
            log.warning("could not list the pods of driver Job %s, deleted: %s", self.name, e)
        if not self.left:
            return DriverEnd(f"Job {self.name} was deleted")
        names = ", ".join(name for name, _ in self.left)
        return DriverEnd(f"Job {self.name} was deleted without its pod {names} (a delete that orphans pods: "
                         "propagationPolicy Orphan, kubectl delete --cascade=orphan)",
                         leftovers="that pod and the resolution's worker Jobs")

    def ended(self) -> DriverEnd | None:
        try:  # the Job itself, not its status subresource: RBAC grants jobs/status apart; who launches may get jobs
            read = self._ask("get", "jobs", self.batch.read_namespaced_job, self.name, self.namespace)
        except ApiException as e:
            if e.status == 404:
                return self._deleted()
            log.debug("reading driver Job %s: %s", self.name, api_message(e))
            return None  # the API server may be busy: ask again later
        except Exception as e:  # noqa: BLE001 - unreachable API server: ask again later
            log.debug("reading driver Job %s: %s", self.name, e)
            return None
        if read is None:  # refused, said: the resolution's record alone is followed meanwhile
            return None
        job = self.api.sanitize_for_serialization(read)
        self.uid = (job.get("metadata") or {}).get("uid") or self.uid
        failure = job_failure(job)
        complete = any(c.get("type") == "Complete" and c.get("status") == "True"
                       for c in (job.get("status") or {}).get("conditions") or [])
        if failure is None and not complete:
            return self._not_running(job)
        code, logs = self._last_pod()
        if failure is None:
            return DriverEnd(f"Job {self.name} completed", code, logs)
        reason, message = failure
        how = f"Job {self.name} failed ({reason}{': ' + message if message else ''})"
        if code is not None:
            how += f"; its last pod exited with code {code}"
        return DriverEnd(how, code, logs)

    def _not_running(self, job: dict[str, Any]) -> DriverEnd | None:
        """While the Job runs no ready pod, look (every few seconds) at why: a pod never created or never
        started past the grace, or one that exited 1, ends it."""
        if (job.get("status") or {}).get("ready"):
            self.stuck = None
            return None
        now = time.monotonic()
        if now - self.checked < self.check_every:
            return None
        self.checked = now
        try:
            pod = self._newest_pod()
            why = self._why_not_started(pod)
        except Exception as e:  # noqa: BLE001 - ask again later
            log.debug("looking at the driver pod of %s: %s", self.name, e)
            return None
        if pod is not None:
            state = pod_state(pod, container=manifests.DRIVER_CONTAINER)
            if state.terminal and state.exit_code == DRIVER_EXIT_FAILED and not state.retryable:
                logs = self._logs(pod, state)
                return DriverEnd(f"pod {pod['metadata']['name']} of Job {self.name} exited with code "
                                 f"{DRIVER_EXIT_FAILED} (the pipeline failed)", DRIVER_EXIT_FAILED, logs)
        if why is None:
            self.stuck = None
            return None
        if self.stuck is None or self.stuck[0].split(":")[0] != why.split(":")[0]:
            self.stuck = (why, now)
        self.stuck = (why, self.stuck[1])
        fix = refused_for_good(why, DRIVER_ASKS, self.namespace)
        if fix is not None:  # its pod can never be made as it is: no grace (cleanup() deletes the Job)
            return DriverEnd(f"Job {self.name} cannot start its driver: {why}; {fix}")
        if now - self.stuck[1] < self.start_grace:
            return None
        return DriverEnd(f"Job {self.name} could not start its driver for {self.start_grace:g}s: {why}")

    def _why_not_started(self, pod: dict[str, Any] | None) -> str | None:
        """What keeps the driver from starting, in plain words (None: nothing known)."""
        if pod is not None:
            state = pod_state(pod, container=manifests.DRIVER_CONTAINER)
            if state.stuck or state.fatal:
                return f"{state.reason}: {state.message or ''}".rstrip(": ")
            if not state.creating:
                return None
        name = pod["metadata"]["name"] if pod is not None else self.name
        listed = self._ask("list", "events", self.core.list_namespaced_event, self.namespace,
                           field_selector=f"involvedObject.name={name},type=Warning")
        if listed is None:
            return None
        events = [e for e in self.api.sanitize_for_serialization(listed).get("items") or []
                  if e.get("reason") in ("FailedCreate", "FailedCreatePodSandBox", "FailedMount")]
        if not events:
            return None
        event = max(events, key=lambda e: int((e.get("metadata") or {}).get("resourceVersion") or 0))
        plain = {"FailedCreate": "Kubernetes could not create its pod",
                 "FailedCreatePodSandBox": "its pod could not start", "FailedMount": "a volume could not be mounted"}
        return f"{plain[event['reason']]}: {message_of(event)}"

    def _newest_pod(self) -> dict[str, Any] | None:
        listed = self._ask("list", "pods", self.core.list_namespaced_pod, self.namespace,
                           label_selector=f"job-name={self.name}")
        if listed is None:
            return None
        pods = self.api.sanitize_for_serialization(listed).get("items") or []
        if not pods:
            return None
        return max(pods, key=lambda p: str(p["metadata"].get("creationTimestamp") or ""))

    def _logs(self, pod: dict[str, Any], state: Any) -> str:
        try:
            answer = self._ask("get", "pods/log", self.core.read_namespaced_pod_log, pod["metadata"]["name"],
                               self.namespace, container=manifests.DRIVER_CONTAINER, tail_lines=LOG_TAIL,
                               _preload_content=False)
            text = state.termination_log if answer is None else log_text(answer)
        except Exception:  # noqa: BLE001 - gone already: the kubelet's copy
            text = state.termination_log
        return text or ""

    def _last_pod(self) -> tuple[int | None, str]:
        """The exit code and last log lines of the Job's newest pod."""
        try:
            pod = self._newest_pod()
            if pod is None:
                return None, ""
            state = pod_state(pod, container=manifests.DRIVER_CONTAINER)
            return state.exit_code, self._logs(pod, state)
        except Exception as e:  # noqa: BLE001 - the end is known; its details are a bonus
            log.debug("reading the driver pod of %s: %s", self.name, e)
            return None, ""

    def cleanup(self) -> None:
        """A driver that never started: delete its Job (its controller would go on trying). A driver Job deleted
        without its pod: delete that pod (by uid), the resolution's worker Jobs and their task Secrets (no longer
        owned by it).
        Otherwise nothing: worker Jobs are owned by the driver's Job (deleted with it, or when their pods end)."""
        if self.left:
            self._delete_left()
            return
        if self.stuck is None:
            return
        try:
            self.batch.delete_namespaced_job(self.name, self.namespace, propagation_policy="Background")
        except Exception as e:  # noqa: BLE001 - best effort: its TTL does not apply to a Job that never ended
            log.warning("could not delete driver Job %s: %s", self.name, e)

    def _delete_left(self) -> None:
        """Delete the driver pods the Job's deletion left behind, each only while it is that pod (its uid), and the
        resolution's worker Jobs with their pods. Refused (the user's credentials may not), it says what to run."""
        by_hand = (f"kubectl delete pods,jobs,secrets -n {self.namespace} -l {RESOLUTION_LABEL}={self.root_id} "
                   "--cascade=background")
        for name, uid in self.left:
            try:
                self.core.delete_namespaced_pod(name, self.namespace, body=client.V1DeleteOptions(
                    preconditions=client.V1Preconditions(uid=uid)))
                log.warning("deleted driver pod %s, left running when its Job %s was deleted", name, self.name)
            except ApiException as e:
                if e.status not in (404, 409):  # gone already, or another pod of that name: not ours to delete
                    log.warning("could not delete driver pod %s (%s: %s): %s", name, e.status, api_message(e),
                                by_hand)
        try:
            listed = self.api.sanitize_for_serialization(self.batch.list_namespaced_job(
                self.namespace, label_selector=f"{RESOLUTION_LABEL}={self.root_id},{ROLE_LABEL}=worker"))
            for job in listed.get("items") or []:
                try:
                    self.batch.delete_namespaced_job(job["metadata"]["name"], self.namespace,
                                                     propagation_policy="Background")
                except ApiException as e:
                    if e.status != 404:
                        raise
        except ApiException as e:
            log.warning("could not delete the worker Jobs of resolution %s (%s: %s): %s", self.root_id, e.status,
                        api_message(e), by_hand)
        try:  # their task Secrets, owned by the driver's Job, were orphaned with them: nothing else deletes them
            self.core.delete_collection_namespaced_secret(
                self.namespace, label_selector=f"{RESOLUTION_LABEL}={self.root_id},{ROLE_LABEL}=worker",
                _preload_content=False)
        except ApiException as e:
            log.warning("could not delete the worker Secrets of resolution %s (%s: %s): %s", self.root_id, e.status,
                        api_message(e), by_hand)

    def close(self) -> None:
        """Close the client this follower made (its connections to the API server); a client given is its giver's,
        left open (was: closed too, its giver's kept-alive connections with it)."""
        if self._own_api:
            self.api.close()

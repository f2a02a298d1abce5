"""Job manifests for drivers and workers, as official ``kubernetes`` client models.

Every Job and its pod carry the labels of DESIGN.md ("kubectl"): ``sematic-k8s/resolution-id``,
``sematic-k8s/run-id``, ``sematic-k8s/func`` and ``sematic-k8s/role``; workers also carry
``sematic-k8s/attempt`` and ``sematic-k8s/relaunch`` (0, or n for the n-th Job of an evicted attempt). Job
names are deterministic (a Run id and its attempt), so creating a Job that already exists means "re-attach",
never "duplicate". Secrets never appear as plain env: the driver's token
(minted for its resolution alone, in a Secret of its own: :func:`token_secret`) and the S3 credentials come
from Secrets through ``secretKeyRef``; workers get no token at all. A worker whose task carries presigned URLs
gets neither: its task is a file of a Secret of its attempt's own (:func:`task_secret`, mounted read-only at
:data:`TASK_DIR`, readable by the image's user through ``fsGroup``), never a value of its Job; a task too large for a
Secret (:data:`SECRET_DATA_MAX`) is stored, and the Secret holds a presigned GET of it.

Pods meet the Pod Security "restricted" level: non-root (the images' numeric user, :data:`IMAGE_UID`), no
privilege escalation, every capability dropped, the runtime's default seccomp profile. With the image's CPU
architecture known, they carry a ``kubernetes.io/arch`` node selector, so that an image never lands on a node it
cannot run on.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Mapping, Sequence
from typing import Any

from kubernetes import client

from sematic_k8s.k8s.pods import JOB_NAME_LABELS, JOB_UID_LABELS
from sematic_k8s.labels import (
    ATTEMPT_LABEL,
    RELAUNCH_LABEL,
    RUN_LABEL,
    label_value,
    run_labels,
)
from sematic_k8s.quantities import memory_quantity, quantity
from sematic_k8s.settings import (
    API_KEY_ENV,
    DRIVER_JOB_ENV,
    DRIVER_JOB_UID_ENV,
    NAMESPACE_ENV,
    POD_NAME_ENV,
    SECRET_FILE_ENVS,
    SERVER_AUTH_ENV,
    TASK_FILE_ENV,
)
from sematic_k8s.specs import (
    ARCHITECTURES,
    DRIVER_EXIT_FAILED,
    DRIVER_EXIT_REPLACED,
    DRIVER_POD_COMMAND,
    IMAGE_UID,
    WORKER_ONE_STREAM_COMMAND,
    DriverSpec,
    TaskSpec,
)

MANAGED_BY = {"app.kubernetes.io/managed-by": "sematic-k8s"}

DRIVER_RESTARTS = 3  # a restarted driver resumes its Resolution (see ResolutionLoop._resume)
DRIVER_CPU, DRIVER_MEMORY = "250m", "512Mi"  # the driver pod's default requests (not BestEffort: evicted last)
WORKER_CONTAINER = "worker"
DRIVER_CONTAINER = "driver"

# A driver's token lives in a Secret of its resolution's (token_secret_name), under this key; the S3
# credentials in the Secret the Helm chart (or the user) provides, named by a setting, under these keys.
API_KEY_KEY = "api-key"
SERVER_AUTH_KEY = "server-auth"  # the user info of the server URL the driver was given, when it had one
STORAGE_SECRET_KEYS = {  # env var -> (key in the storage Secret, optional)
    "AWS_ACCESS_KEY_ID": ("AWS_ACCESS_KEY_ID", False),
    "AWS_SECRET_ACCESS_KEY": ("AWS_SECRET_ACCESS_KEY", False),
    "AWS_SESSION_TOKEN": ("AWS_SESSION_TOKEN", True),
}
# A worker's presigned task: in its attempt's Secret (task_secret), under this key, mounted at TASK_DIR: root-owned
# files (as a kubelet writes them) of group fsGroup (the image's user's), mode TASK_MODE: the worker reads it, no
# other user of the node's or the container's may.
TASK_KEY = "task"
SECRET_DATA_MAX = 1024 * 1024  # bytes a Secret's values may total (the API server's MaxSecretSize: more is 422 Invalid)
TASK_DIR = "/var/run/sematic-k8s/task"
TASK_MODE = 0o440
TASK_VOLUME = "task"
SECRET_ENV = frozenset(SECRET_FILE_ENVS)  # never passed as plain env: the token, the server's user info, the S3 keys

# What the driver learns about itself through the downward API (so workers can be owned by its Job).

ARCH_LABEL = "kubernetes.io/arch"  # the node label the kubelet sets to its CPU architecture
NAME_LIMIT = 52  # Job names: pods are named <job>-<5 chars>, and the job-name label holds <= 63 chars
GPU_RESOURCE = "nvidia.com/gpu"


def dns_name(*parts: str, limit: int = NAME_LIMIT) -> str:
    """A DNS-1123 label from ``parts`` (lowercase alphanumerics and '-'), at most ``limit`` characters;
    long names keep a hash of the whole so that they stay distinct and deterministic."""
    raw = "-".join(parts)
    name = re.sub(r"[^a-z0-9-]+", "-", raw.lower())
    name = re.sub(r"-{2,}", "-", name).strip("-") or "x"
    if len(name) > limit:
        digest = hashlib.sha256(raw.encode()).hexdigest()[:8]
        name = name[: limit - 9].rstrip("-") + "-" + digest
    if not name[0].isalnum():
        name = "x" + name[: limit - 1]
    return name


def worker_job_name(run_id: str, attempt: int, relaunch: int = 0) -> str:
    """``sk-<run id>-<attempt>`` (``...-r<n>`` when an evicted pod is launched again)."""
    return dns_name("sk", run_id, str(attempt), *([f"r{relaunch}"] if relaunch else []))


def relaunch_of(job_name: str) -> int:
    """The relaunch number in a worker Job's name (``...-r<n>``; 0 without one)."""
    m = re.search(r"-r(\d+)$", job_name)
    return int(m.group(1)) if m else 0


def newest_jobs(jobs: list[dict[str, Any]]) -> dict[tuple[str, str], tuple[int, str]]:
    """(run id, attempt) -> (relaunch, name) of the newest worker Job of each attempt among ``jobs`` (raw
    dicts, as listed), leaving out Jobs being deleted: the ones a restarted driver re-attaches to."""
    newest: dict[tuple[str, str], tuple[int, str]] = {}
    for job in jobs:
        meta = job.get("metadata") or {}
        labels = meta.get("labels") or {}
        key = (labels.get(RUN_LABEL, ""), labels.get(ATTEMPT_LABEL, ""))
        relaunch = int(labels.get(RELAUNCH_LABEL) or relaunch_of(meta.get("name", "")))
        if meta.get("deletionTimestamp") or not all(key):
            continue
        if key not in newest or newest[key][0] < relaunch:
            newest[key] = (relaunch, meta["name"])
    return newest


def driver_job_name(root_id: str) -> str:
    return dns_name("sk-driver", root_id)


def token_secret_name(root_id: str) -> str:
    """The Secret holding the token of ``root_id``'s driver."""
    return dns_name("sk-token", root_id)


def token_secret(root_id: str, token: str, *, namespace: str, func_name: str = "driver",
                 owner: tuple[str, str] | None = None, server_auth: str | None = None) -> client.V1Secret:
    """One resolution's driver token (key ``api-key``) and the user info of its server URL if it has one (key
    ``server-auth``), labelled like its driver; ``owner``: the driver Job's (name, uid), so that deleting the Job
    (or its TTL) deletes the Secret too."""
    data = {API_KEY_KEY: token, **({SERVER_AUTH_KEY: server_auth} if server_auth else {})}
    labels = {**MANAGED_BY, **run_labels(root_id, root_id, func_name, "driver")}
    return client.V1Secret(
        api_version="v1", kind="Secret", type="Opaque",
        metadata=client.V1ObjectMeta(name=token_secret_name(root_id), namespace=namespace, labels=labels,
                                     owner_references=[owner_reference(*owner)] if owner else None),
        data={k: base64.b64encode(v.encode()).decode() for k, v in data.items()})


def task_secret_name(job_name: str) -> str:
    """The Secret holding the task of the worker Job ``job_name`` (one per Job: a relaunch has its own)."""
    return f"{job_name}-task"


def task_secret(job: Mapping[str, Any], task_json: str, owner: tuple[str, str] | None = None) -> dict[str, Any]:
    """The Secret of the worker Job ``job`` (its manifest, as sent): its TaskSpec ``task_json`` (presigned URLs and
    all; or, past :data:`SECRET_DATA_MAX`, a TaskRef to its stored copy) under key ``task``, labelled as the Job is
    (``kubectl get secrets -l sematic-k8s/resolution-id=...``); ``owner``: the driver Job's (name, uid), so that its
    deletion (or TTL) deletes the Secret too, whatever became of the driver."""
    meta = job["metadata"]
    secret = client.V1Secret(
        api_version="v1", kind="Secret", type="Opaque",
        metadata=client.V1ObjectMeta(name=task_secret_name(meta["name"]), namespace=meta.get("namespace"),
                                     labels=dict(meta.get("labels") or {}),
                                     owner_references=[owner_reference(*owner)] if owner else None),
        data={TASK_KEY: base64.b64encode(task_json.encode()).decode()})
    return to_dict(secret)


def resources(cpu: str | None, memory: str | None, gpu: int | None, *,
              cpu_limits: bool = False) -> client.V1ResourceRequirements | None:
    """Requests for cpu and memory; limits for memory (so an overrun is an OOMKilled, not a node's
    problem), GPUs (``nvidia.com/gpu``, limits only) and, with ``cpu_limits``, cpu."""
    requests: dict[str, str] = {}
    limits: dict[str, str] = {}
    if cpu is not None:
        requests["cpu"] = quantity(cpu, "cpu")
        if cpu_limits:
            limits["cpu"] = requests["cpu"]
    if memory is not None:
        requests["memory"] = limits["memory"] = memory_quantity(memory)
    if gpu:
        limits[GPU_RESOURCE] = str(int(gpu))
    if not requests and not limits:
        return None
    return client.V1ResourceRequirements(requests=requests or None, limits=limits or None)


def pod_security_context() -> client.V1PodSecurityContext:
    """What the "restricted" Pod Security level asks of a pod: non-root (the images' user), RuntimeDefault seccomp."""
    return client.V1PodSecurityContext(run_as_non_root=True, run_as_user=IMAGE_UID, run_as_group=IMAGE_UID,
                                       seccomp_profile=client.V1SeccompProfile(type="RuntimeDefault"))


def container_security_context() -> client.V1SecurityContext:
    """What the "restricted" Pod Security level asks of a container: no privilege escalation, no capabilities."""
    return client.V1SecurityContext(allow_privilege_escalation=False,
                                    capabilities=client.V1Capabilities(drop=["ALL"]))


def arch_selector(platform: str | None) -> dict[str, str]:
    """``{"kubernetes.io/arch": platform}`` for an image built for ``platform``; {} when it is not known."""
    if not platform:
        return {}
    if platform not in ARCHITECTURES:
        raise ValueError(f"image platform {platform!r} is not one of {', '.join(ARCHITECTURES)}")
    return {ARCH_LABEL: platform}


def plain_env(env: Mapping[str, str]) -> list[client.V1EnvVar]:
    """Env vars with values, leaving out anything secret (those come from Secrets)."""
    return [client.V1EnvVar(name=k, value=str(v)) for k, v in sorted(env.items()) if k not in SECRET_ENV]


def secret_env(storage_secret: str | None, api_key_secret: str | None = None) -> list[client.V1EnvVar]:
    """``secretKeyRef`` env vars: S3 credentials from ``storage_secret``, the API key (and the server URL's user
    info, where the Secret has it) from ``api_key_secret``."""
    out = []
    if storage_secret:
        for env_name, (key, optional) in STORAGE_SECRET_KEYS.items():
            out.append(client.V1EnvVar(name=env_name, value_from=client.V1EnvVarSource(
                secret_key_ref=client.V1SecretKeySelector(name=storage_secret, key=key, optional=optional))))
    if api_key_secret:
        out.append(client.V1EnvVar(name=API_KEY_ENV, value_from=client.V1EnvVarSource(
            secret_key_ref=client.V1SecretKeySelector(name=api_key_secret, key=API_KEY_KEY, optional=False))))
        out.append(client.V1EnvVar(name=SERVER_AUTH_ENV, value_from=client.V1EnvVarSource(
            secret_key_ref=client.V1SecretKeySelector(name=api_key_secret, key=SERVER_AUTH_KEY, optional=True))))
    return out


def _field_env(name: str, path: str) -> client.V1EnvVar:
    return client.V1EnvVar(name=name, value_from=client.V1EnvVarSource(
        field_ref=client.V1ObjectFieldSelector(field_path=path)))


def downward_env() -> list[client.V1EnvVar]:
    """The driver's namespace, pod name, and its Job's name and uid (labels the Job controller sets)."""
    return [_field_env(NAMESPACE_ENV, "metadata.namespace"), _field_env(POD_NAME_ENV, "metadata.name"),
            _field_env(DRIVER_JOB_ENV, f"metadata.labels['{JOB_NAME_LABELS[0]}']"),
            _field_env(DRIVER_JOB_UID_ENV, f"metadata.labels['{JOB_UID_LABELS[0]}']")]


def toleration_models(items: Sequence[Mapping[str, Any]] | None) -> list[client.V1Toleration] | None:
    """Tolerations from dicts in either spelling (``tolerationSeconds`` or ``toleration_seconds``)."""
    if not items:
        return None
    keys = {"key": "key", "operator": "operator", "value": "value", "effect": "effect",
            "tolerationSeconds": "toleration_seconds", "toleration_seconds": "toleration_seconds"}
    out = []
    for item in items:
        unknown = set(item) - set(keys)
        if unknown:
            raise ValueError(f"toleration {dict(item)!r}: unknown field(s) {sorted(unknown)}")
        out.append(client.V1Toleration(**{keys[k]: v for k, v in item.items()}))
    return out


def owner_reference(job_name: str, job_uid: str) -> client.V1OwnerReference:
    """Owned by the driver's Job: deleting it (or its TTL) deletes the workers' Jobs and pods.
    ``blockOwnerDeletion`` stays off so that drivers need no ``jobs/finalizers`` permission."""
    return client.V1OwnerReference(api_version="batch/v1", kind="Job", name=job_name, uid=job_uid,
                                   controller=False, block_owner_deletion=False)


def _job(name: str, namespace: str, labels: dict[str, str], pod_spec: client.V1PodSpec, *,
         ttl: int | None, deadline: int | None, backoff_limit: int, annotations: dict[str, str] | None,
         owners: list[client.V1OwnerReference] | None,
         pod_failure_policy: client.V1PodFailurePolicy | None = None) -> client.V1Job:
    return client.V1Job(
        api_version="batch/v1", kind="Job",
        metadata=client.V1ObjectMeta(name=name, namespace=namespace, labels=labels, annotations=annotations,
                                     owner_references=owners),
        spec=client.V1JobSpec(
            backoff_limit=backoff_limit, ttl_seconds_after_finished=ttl, active_deadline_seconds=deadline,
            pod_failure_policy=pod_failure_policy,
            template=client.V1PodTemplateSpec(metadata=client.V1ObjectMeta(labels=labels, annotations=annotations),
                                              spec=pod_spec)))


def worker_job(spec: TaskSpec, func: Any, image: str, env: Mapping[str, str], *, namespace: str,
               owner: tuple[str, str] | None = None, service_account: str | None = None,
               storage_secret: str | None = None, node_selector: Mapping[str, str] | None = None,
               tolerations: Sequence[Mapping[str, Any]] | None = None, image_pull_secrets: Sequence[str] = (),
               ttl_seconds_after_finished: int | None = 3600, cpu_limits: bool = False,
               relaunch: int = 0, labels: Mapping[str, str] | None = None,
               automount_token: bool = False, task_in_secret: bool = False) -> client.V1Job:
    """One Job (one pod, never restarted) for one attempt of one Run.

    ``func`` supplies ``name``, ``path``, ``cpu``, ``memory``, ``gpu``, ``timeout`` and, if it has them,
    ``node_selector`` and ``tolerations`` (added to the executor's). ``owner`` is the driver Job's
    (name, uid). The func's ``timeout`` is no ``activeDeadlineSeconds`` (which would count scheduling, waiting
    for capacity and the image pull): the executor counts it from the worker container's start.
    Workers need no Kubernetes API: no service account token is mounted unless ``automount_token``. The worker runs
    with its stderr on its stdout's pipe (:data:`~sematic_k8s.specs.WORKER_ONE_STREAM_COMMAND`): the kubelet's log
    has its lines in the order written, its last words last.
    ``task_in_secret``: the task (with presigned URLs, or its signing key) is read from the Job's own Secret
    (:func:`task_secret`), mounted read-only at :data:`TASK_DIR` and named by $SEMATIC_K8S_TASK_FILE; pass no
    ``storage_secret`` with presigned URLs.
    """
    job_labels = {**MANAGED_BY, **(labels or {}), **run_labels(spec.root_id, spec.run_id, func.name, "worker"),
                  ATTEMPT_LABEL: str(spec.attempt), RELAUNCH_LABEL: str(relaunch)}
    selector = {**(node_selector or {}), **(getattr(func, "node_selector", None) or {})}
    tols = [*(tolerations or ()), *(getattr(func, "tolerations", None) or ())]
    name = worker_job_name(spec.run_id, spec.attempt, relaunch)
    security = pod_security_context()
    volumes = mounts = None
    if task_in_secret:
        env = {**env, TASK_FILE_ENV: f"{TASK_DIR}/{TASK_KEY}"}
        volumes = [client.V1Volume(name=TASK_VOLUME, secret=client.V1SecretVolumeSource(
            secret_name=task_secret_name(name), default_mode=TASK_MODE))]
        mounts = [client.V1VolumeMount(name=TASK_VOLUME, mount_path=TASK_DIR, read_only=True)]
        security.fs_group = IMAGE_UID  # the kubelet makes the files root:<fsGroup>, and the worker is in that group
    container = client.V1Container(
        name=WORKER_CONTAINER, image=image, command=list(WORKER_ONE_STREAM_COMMAND),
        env=plain_env(env) + secret_env(storage_secret), volume_mounts=mounts,
        resources=resources(func.cpu, func.memory, func.gpu, cpu_limits=cpu_limits),
        termination_message_policy="FallbackToLogsOnError", security_context=container_security_context())
    pod = client.V1PodSpec(
        restart_policy="Never", containers=[container], service_account_name=service_account,
        security_context=security, automount_service_account_token=automount_token, volumes=volumes,
        node_selector=selector or None, tolerations=toleration_models(tols),
        image_pull_secrets=[client.V1LocalObjectReference(name=s) for s in image_pull_secrets] or None)
    annotations = {"sematic-k8s/func-path": func.path}
    return _job(name, namespace, job_labels, pod,
                ttl=ttl_seconds_after_finished, deadline=None,
                backoff_limit=0, annotations=annotations,
                owners=[owner_reference(*owner)] if owner else None)


def driver_job(spec: DriverSpec, root_id: str, env: Mapping[str, str], *, namespace: str,
               service_account: str | None = None, secret_name: str | None = None,
               storage_secret: str | None = None, func_name: str = "driver",
               node_selector: Mapping[str, str] | None = None,
               tolerations: Sequence[Mapping[str, Any]] | None = None, image_pull_secrets: Sequence[str] = (),
               cpu: str | None = None, memory: str | None = None, ttl_seconds_after_finished: int | None = 86400,
               backoff_limit: int = DRIVER_RESTARTS, labels: Mapping[str, str] | None = None) -> client.V1Job:
    """The driver's Job: ``python -m sematic_k8s.driver`` from ``spec.image`` (by digest), its stderr on its stdout's
    pipe (:data:`~sematic_k8s.specs.DRIVER_POD_COMMAND`: its last log lines are its last words).

    A driver that dies (node loss, OOM) or exits 75 (an infrastructure failure: the server or the API server
    unreachable) is started again, up to ``backoff_limit`` times, and resumes its Resolution; an eviction
    (a ``DisruptionTarget`` condition) is started again without counting against ``backoff_limit``; one that
    exits 1 (the pipeline failed) ends the Job at once; one that exits 76 (another driver took its resolution
    over: a replacement started while it was cut off) is ignored, neither counted nor ending the Job. The pod
    requests ``cpu``/``memory`` (default 250m/512Mi: never BestEffort, the first evicted under node pressure).

    ``env`` holds the DriverSpec ($SEMATIC_K8S_DRIVER), the server URL and pass-through settings; secret
    entries in it are dropped: the resolution's token comes from Secret ``secret_name`` (key ``api-key``;
    :func:`token_secret`) and the S3 credentials from ``storage_secret``. The pod learns its Job's name and
    uid from the downward API.
    """
    if "@sha256:" not in spec.image:
        raise ValueError(f"driver image {spec.image!r} is not a reference by digest (repo@sha256:...)")
    job_labels = {**MANAGED_BY, **(labels or {}), **run_labels(root_id, root_id, func_name, "driver")}
    container = client.V1Container(
        name=DRIVER_CONTAINER, image=spec.image, command=list(DRIVER_POD_COMMAND),
        env=plain_env(env) + secret_env(storage_secret, secret_name) + downward_env(),
        resources=resources(cpu or DRIVER_CPU, memory or DRIVER_MEMORY, None),
        termination_message_policy="FallbackToLogsOnError", security_context=container_security_context())
    selector = {**(node_selector or {}), **arch_selector(spec.platform)}
    pod = client.V1PodSpec(
        restart_policy="Never", containers=[container], service_account_name=service_account,
        security_context=pod_security_context(), node_selector=selector or None,
        tolerations=toleration_models(tolerations),
        image_pull_secrets=[client.V1LocalObjectReference(name=s) for s in image_pull_secrets] or None)
    failed_resolution = client.V1PodFailurePolicy(rules=[
        client.V1PodFailurePolicyRule(action="Ignore", on_pod_conditions=[
            client.V1PodFailurePolicyOnPodConditionsPattern(type="DisruptionTarget", status="True")]),
        client.V1PodFailurePolicyRule(action="FailJob", on_exit_codes=client.V1PodFailurePolicyOnExitCodesRequirement(
            container_name=DRIVER_CONTAINER, operator="In", values=[DRIVER_EXIT_FAILED])),
        client.V1PodFailurePolicyRule(action="Ignore", on_exit_codes=client.V1PodFailurePolicyOnExitCodesRequirement(
            container_name=DRIVER_CONTAINER, operator="In", values=[DRIVER_EXIT_REPLACED]))])
    return _job(driver_job_name(root_id), namespace, job_labels, pod, ttl=ttl_seconds_after_finished,
                deadline=None, backoff_limit=backoff_limit, annotations=None, owners=None,
                pod_failure_policy=failed_resolution)


_SERIALIZER = client.ApiClient(client.Configuration())  # never connects: its sanitize_for_serialization alone


def to_dict(obj: Any) -> dict[str, Any]:
    """The JSON-ready dict the API server receives (camelCase, no nulls), by one shared client of its own (was: a
    client made on every call, from the process's default configuration: a kubeconfig's proxy included)."""
    return _SERIALIZER.sanitize_for_serialization(obj)


__all__ = ["arch_selector", "container_security_context", "dns_name", "driver_job", "driver_job_name", "label_value",
           "pod_security_context", "resources", "task_secret", "task_secret_name", "to_dict", "token_secret",
           "token_secret_name", "worker_job", "worker_job_name"]

"""What the KubernetesExecutor is told: its own settings and each worker Job's (``DriverSpec.executor_settings``
holds the same keys, flat)."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("sematic_k8s.k8s")

RETIRED = {"unschedulable_grace": "pods wait for capacity as long as it takes",
           "deadline_slack": "a func's timeout counts from its container's start; Jobs have no deadline"}


@dataclass(frozen=True)
class WorkerJobSettings:
    """How each worker's Job looks (the keywords of :func:`sematic_k8s.k8s.manifests.worker_job`).

    ``service_account``: the workers' (default $SEMATIC_K8S_WORKER_SERVICE_ACCOUNT); ``storage_secret``: a
    Secret with AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, optional AWS_SESSION_TOKEN (default
    $SEMATIC_K8S_STORAGE_SECRET); ``automount_token``: workers get no API token unless set.
    """

    service_account: str | None = None
    storage_secret: str | None = None
    node_selector: Mapping[str, str] | None = None
    tolerations: Sequence[Mapping[str, Any]] | None = None
    image_pull_secrets: Sequence[str] = ()
    ttl_seconds_after_finished: int | None = 3600
    cpu_limits: bool = False
    labels: Mapping[str, str] | None = None
    automount_token: bool = False


@dataclass(frozen=True)
class KubernetesSettings:
    """What the KubernetesExecutor is told; ``DriverSpec.executor_settings`` holds the same keys, flat (see
    :meth:`from_options`).

    ``namespace`` (default: :func:`~sematic_k8s.k8s.client.current_namespace`), ``host`` (an API server URL
    without credentials), ``env`` (plain env for workers; default the driver's pass-through env), ``owner``
    ((name, uid) of the driver Job; default from the downward API or by reading the driver's Job; ``False``:
    none), ``pull_grace`` / ``config_grace`` (seconds before a pod stuck pulling its image or setting up its
    container fails), ``create_grace`` (seconds before a pod never created or never started fails, counted
    from the first blocking Event), ``event_check`` (seconds without a pod, or with a pod not starting,
    before its Events are read, and between reads), ``creates_per_second`` and ``create_burst`` (the creation
    rate limit), ``requeue_cap`` (longest pause of creates the API server refuses for now),
    ``eviction_relaunches``, ``log_tail``, ``watch_timeout``, ``page`` (items per list page),
    ``forbidden_window`` (seconds the API server must go on refusing a watch, 401/403, before the resolution
    fails), ``owner_check`` (seconds between reads of the driver's own Job, ``owner``: gone, the driver
    stops), ``task_refresh`` (seconds after which a worker's task Secret is made again, with fresh URLs, while its
    pod waits for room on no node); ``job``: each worker Job's settings.
    """

    namespace: str | None = None
    host: str | None = None
    env: Mapping[str, str] | None = None
    owner: tuple[str, str] | list[str] | bool | None = None
    pull_grace: float = 120.0
    config_grace: float = 60.0
    create_grace: float = 120.0
    event_check: float = 10.0
    creates_per_second: float = 20.0
    create_burst: int | None = None
    requeue_cap: float = 30.0
    eviction_relaunches: int = 3
    log_tail: int = 40
    watch_timeout: int = 300
    page: int = 500
    forbidden_window: float = 30.0
    owner_check: float = 10.0
    task_refresh: float = 450.0  # half the life of a worker's input GETs (remote.READ_GRACE), the shortest it has
    job: WorkerJobSettings = field(default_factory=WorkerJobSettings)

    def with_options(self, **options: Any) -> KubernetesSettings:
        """These settings with ``options`` (flat keys of either class) replaced; TypeError for unknown keys."""
        for old in set(RETIRED) & set(options):  # recorded by earlier versions (a rerun replays them): no longer used
            log.warning("Kubernetes executor setting %r is no longer used (%s)", old, RETIRED[old])
            options = {k: v for k, v in options.items() if k != old}
        own = {f.name for f in dataclasses.fields(self)} - {"job"}
        job_keys = {f.name for f in dataclasses.fields(WorkerJobSettings)}
        unknown = set(options) - own - job_keys
        if unknown:
            raise TypeError(f"unknown Kubernetes executor setting(s) {sorted(unknown)}; known: "
                            f"{sorted(own | job_keys)}")
        job = dataclasses.replace(self.job, **{k: v for k, v in options.items() if k in job_keys})
        return dataclasses.replace(self, job=job, **{k: v for k, v in options.items() if k in own})

    @classmethod
    def from_options(cls, **options: Any) -> KubernetesSettings:
        return cls().with_options(**options)

"""The model's settings: component delays (short by default, real ones with :meth:`Timing.real`) and nodes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Timing:
    """Back-offs and intervals of the control plane and kubelets, in seconds.

    Defaults are the real ones divided by about 30, so that tests see the same sequences (ErrImagePull then
    ImagePullBackOff, growing Job back-off) without waiting minutes. Spec fields (activeDeadlineSeconds,
    ttlSecondsAfterFinished, terminationGracePeriodSeconds) are always honoured as written.
    """

    job_backoff: float = 0.3  # real 10 s, doubling, between a Job's failed pod and its replacement
    job_backoff_cap: float = 3.0  # real 6 min
    create_retry: float = 0.2  # Job controller requeue after a failed pod create (doubling)
    create_retry_cap: float = 3.0
    image_pull_backoff: float = 0.3  # real 10 s, doubling to 5 min
    image_pull_backoff_cap: float = 3.0
    pull_error_shown: float = 0.1  # how long ErrImagePull shows before ImagePullBackOff
    crash_backoff: float = 0.3  # real 10 s, doubling to 5 min (CrashLoopBackOff)
    crash_backoff_cap: float = 3.0
    volume_retry: float = 0.3  # FailedMount retries
    volume_retry_cap: float = 3.0
    sandbox_retry: float = 0.3  # FailedCreatePodSandBox retries
    config_retry: float = 0.3  # CreateContainerConfigError retries
    scheduler_retry: float = 1.0  # unschedulable pods are tried again at least this often (real: 5 min flush)
    bookmark_interval: float = 5.0  # real: about a minute
    watch_timeout: float = 1800.0  # a watch without timeoutSeconds ends after this (real: 30-60 min)
    quota_resync: float = 0.2
    autoscale_delay: float = 0.5
    event_aggregate_interval: float = 20.0  # real 600 s: the window of similar Events combined (EventCorrelator)
    event_spam_refill: float = 10.0  # real 300 s: one more Event about an object past the burst of 25
    event_series_refresh: float = 60.0  # real 30 min: an events.k8s.io series' count written
    event_series_finish: float = 12.0  # real 6 min: a series without repeats ends (its count written)

    @classmethod
    def real(cls) -> Timing:
        return cls(job_backoff=10, job_backoff_cap=360, create_retry=1, create_retry_cap=1000, image_pull_backoff=10,
                   image_pull_backoff_cap=300, pull_error_shown=1, crash_backoff=10, crash_backoff_cap=300,
                   volume_retry=2, volume_retry_cap=120, sandbox_retry=10, config_retry=10, scheduler_retry=300,
                   bookmark_interval=60, watch_timeout=1800, quota_resync=5, autoscale_delay=60,
                   event_aggregate_interval=600, event_spam_refill=300,
                   event_series_refresh=1800, event_series_finish=360)


@dataclass
class NodeSpec:
    """A node: allocatable resources, labels, taints, and whether its kubelet runs containers in Docker
    (``runtime="docker"``) or simulates them (``"sim"``). ``reserved``: usage only the kubelet sees (a static
    pod, a race with the scheduler): pods admitted past it are rejected with OutOfcpu / OutOfmemory.
    ``late_taints``: taints only the kubelet sees (put on the node as the scheduler bound a pod to it, its cache not
    updated yet): a NoExecute one the pod does not tolerate is rejected with TaintToleration.
    ``sandbox_error``: every new pod there fails FailedCreatePodSandBox until cleared."""

    name: str
    cpu: str = "4"
    memory: str = "16Gi"
    pods: int = 110
    extra: dict[str, str] = field(default_factory=dict)  # extended resources, e.g. {"nvidia.com/gpu": "1"}
    labels: dict[str, str] = field(default_factory=dict)
    taints: list[dict[str, Any]] = field(default_factory=list)
    runtime: str = "docker"
    arch: str = "amd64"
    unschedulable: bool = False
    reserved: dict[str, str] = field(default_factory=dict)
    late_taints: list[dict[str, Any]] = field(default_factory=list)
    sandbox_error: str | None = None

    def allocatable(self) -> dict[str, str]:
        return {"cpu": str(self.cpu), "memory": str(self.memory), "pods": str(self.pods),
                "ephemeral-storage": "100Gi", **self.extra}

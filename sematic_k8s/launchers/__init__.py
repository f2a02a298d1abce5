"""Launchers start a driver (``python -m sematic_k8s.driver``) for a :class:`~sematic_k8s.specs.DriverSpec`:
a container on this machine (:mod:`.docker`) or a Job on a cluster (:mod:`.kubernetes`), chosen by the spec's
executor through :data:`sematic_k8s.backends.LAUNCHERS`. The CloudResolver and the server's reruns use them.

They also follow a driver they started (:func:`watch_driver`): the CloudResolver asks whether it is still
there (the container's state, the Job's and its pod's), so that a driver that died is noticed at once, with
its last log lines, rather than only when its heartbeat goes quiet.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from sematic_k8s import backends, settings
from sematic_k8s.specs import DriverSpec

LOG_TAIL = 40  # the driver's last log lines shown when it dies


@dataclass(frozen=True, slots=True)
class DriverEnd:
    """How a driver ended: ``how`` in plain words ("exited with code 137"), its last log lines, and what its
    follower's ``cleanup`` is to stop that would otherwise run on (``leftovers``, in plain words, or "")."""

    how: str
    exit_code: int | None = None
    last_logs: str = ""
    leftovers: str = ""


class DriverWatch(Protocol):
    """Follows one driver."""

    def ended(self) -> DriverEnd | None:
        """None while the driver runs (or may run again: a Job with retries left); else how it ended."""

    def cleanup(self) -> None:
        """After the driver died: stop what it left running (its workers), where they would not stop alone."""

    def close(self) -> None:
        """Stop following."""


def driver_env(spec: DriverSpec, server: str, api_key: str | None, source_map: str | None) -> dict[str, str]:
    """The environment of a driver container or pod; ``api_key`` is its resolution's token,
    ``$SEMATIC_K8S_SERVER_AUTH`` the user info of a ``server`` URL that has one (``http://user:password@host``)
    and the ``AWS_*`` keys this process has (it stores): secrets (``settings.SECRET_FILE_ENVS``), which each
    launcher takes out of it and delivers its own way (a file, a Secret), never as plain variables."""
    server, auth = settings.split_user_info(server)
    env = {**settings.worker_env(), **settings.storage_keys(), settings.DRIVER_ENV: spec.to_json(),
           settings.SERVER_ENV: server}
    if auth:
        env[settings.SERVER_AUTH_ENV] = auth
    interval = settings.env(settings.HEARTBEAT_INTERVAL_ENV)
    if interval:
        env[settings.HEARTBEAT_INTERVAL_ENV] = interval
    if source_map:
        env[settings.SOURCE_MAP_ENV] = source_map
    if api_key:
        env[settings.API_KEY_ENV] = api_key
    return env


def start_driver(spec: DriverSpec, env: Mapping[str, str], progress: Callable[[str], None] | None = None) -> None:
    """Start the driver for ``spec``: a container on this machine, or a Job on the cluster; ``progress`` is told
    what the start waits for (a driver's image whose registry does not answer the Docker engine)."""
    try:
        launch: Callable[..., None] = backends.load(backends.LAUNCHERS, spec.executor)
    except LookupError:
        launch = backends.load(backends.LAUNCHERS, backends.DEFAULT_LAUNCHER)
    launch(spec, env, progress=progress)


def watch_driver(spec: DriverSpec) -> DriverWatch:
    """Follow the driver started for ``spec`` (by :func:`start_driver`)."""
    try:
        watch: Callable[[DriverSpec], DriverWatch] = backends.load(backends.DRIVER_WATCHES, spec.executor)
    except LookupError:
        watch = backends.load(backends.DRIVER_WATCHES, backends.DEFAULT_LAUNCHER)
    return watch(spec)

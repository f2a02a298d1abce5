"""Launchers start a driver (``python -m sematic_k8s.driver``) for a :class:`~sematic_k8s.specs.DriverSpec`:
a container on this machine (:mod:`.docker`) or a Job on a cluster (:mod:`.kubernetes`), chosen by the spec's
executor through :data:`sematic_k8s.backends.LAUNCHERS`. The CloudResolver and the server's reruns use them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from sematic_k8s import backends, settings
from sematic_k8s.specs import DriverSpec


def driver_env(spec: DriverSpec, server: str, api_key: str | None, source_map: str | None) -> dict[str, str]:
    """The environment of a driver container or pod; ``api_key`` is its resolution's token, which each
    launcher takes out of it and delivers its own way (a file, a Secret), never as a plain variable."""
    env = {**settings.worker_env(), settings.DRIVER_ENV: spec.to_json(), settings.SERVER_ENV: server}
    if source_map:
        env[settings.SOURCE_MAP_ENV] = source_map
    if api_key:
        env[settings.API_KEY_ENV] = api_key
    return env


def start_driver(spec: DriverSpec, env: Mapping[str, str]) -> None:
    """Start the driver for ``spec``: a container on this machine, or a Job on the cluster."""
    try:
        launch: Callable[[DriverSpec, Mapping[str, str]], None] = backends.load(backends.LAUNCHERS, spec.executor)
    except LookupError:
        launch = backends.load(backends.LAUNCHERS, backends.DEFAULT_LAUNCHER)
    launch(spec, env)

"""The server's settings, fixed at startup by whoever runs it (CLI flags, Helm values), never by a request
or a record: API keys, local-development mode, the request-size cap and body deadline, how reruns are
started, and whose resolutions a user key may act on."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sematic_k8s import settings

LAUNCHERS = ("kubernetes", "docker")  # how the server may start a rerun's driver
DEFAULT_MAX_REQUEST_BYTES = 32 * 1024 * 1024
DEFAULT_BODY_TIMEOUT = 60.0
DEFAULT_MAX_STREAMS_PER_KEY = 64  # live-event streams: a dashboard tab holds one
TEAM, OWNER = "team", "owner"  # actions_by: any user key acts on any resolution / a user key on its own only
ACTIONS_BY = (TEAM, OWNER)
UNOWNED = "(unowned)"  # in cache_trusted_keys: the runs recorded before owners were (migration 0012)
_DOMAIN = r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*(?::[0-9]{1,5})?"
_PATH = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
REPOSITORY = rf"(?:{_DOMAIN}/)?{_PATH}(?:/{_PATH})*"  # an image repository: [registry[:port]/]path
NAMESPACE = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"  # a Kubernetes namespace name (an RFC 1123 label)


@dataclass(frozen=True)
class RerunConfig:
    """How the server starts reruns of cloud resolutions.

    ``launcher``: "kubernetes" (a driver Job) or "docker" (a container on this machine, only with
    ``allow_docker``: local development); None: this server starts no reruns. ``image_repositories``: the
    allow-list: a rerun starts only from a recorded image whose repository is one of these or under one
    (``registry/team`` allows ``registry/team/pipelines``). ``storage_url``: the artifact storage drivers
    use (the server's own). ``executor_settings``: the driver's executor settings (namespace, ...), the
    server's, never the record's. ``concurrency`` launches run at once and ``queue`` more wait; beyond,
    requests get 429. Tokens live at most ``token_lifetime``.
    """

    launcher: str | None = None
    image_repositories: tuple[str, ...] = ()
    allow_docker: bool = False
    storage_url: str | None = None
    executor_settings: Mapping[str, Any] = field(default_factory=dict)
    concurrency: int = 2
    queue: int = 8
    token_lifetime: dt.timedelta = dt.timedelta(days=7)

    def __post_init__(self) -> None:
        if self.launcher is not None and self.launcher not in LAUNCHERS:
            raise ValueError(f"rerun launcher must be one of {', '.join(LAUNCHERS)}, not {self.launcher!r}")
        if self.launcher == "docker" and not self.allow_docker:
            raise ValueError("the docker rerun launcher is for local development only: start the server with "
                             "--allow-docker on a loopback address, or use --rerun-launcher kubernetes")
        if self.concurrency < 1 or self.queue < 0:
            raise ValueError("rerun concurrency must be >= 1 and the rerun queue >= 0")
        for repo in self.image_repositories:
            if not re.fullmatch(REPOSITORY, repo):
                raise ValueError(f"image repository {repo!r} in the rerun allow-list: give a repository "
                                 "without tag or digest, e.g. registry.example.com/pipelines")


@dataclass(frozen=True)
class ServerConfig:
    """``api_keys_required=False`` is local mode (a server only this machine reaches), which also turns on the
    laptop defences: JSON content type and same-origin ``Origin`` on state-changing requests, loopback
    ``Host``. ``max_request_bytes``: larger request bodies get 413, counted as they arrive.
    ``allowed_storages``: artifact storage URLs, besides the server's own, it may read the artifacts and logs
    of cloud resolutions from (when they recorded one of these); a record naming any other is refused.
    ``body_timeout``: seconds a request's body may take to arrive, once its headers have (then 408).
    ``max_streams_per_key``: live-event streams one API key (in local mode: this machine) may hold open at once in
    one server process (then 429). ``cache_trusted_keys``: the names of the API keys whose cached runs every key's
    look-ups may hit (besides its own); :data:`UNOWNED` trusts the runs recorded before owners were
    (:mod:`~sematic_k8s_server.cache_trust`). ``actions_by``: :data:`TEAM` (any user or admin key cancels, re-runs,
    continues, labels and notes any resolution) or :data:`OWNER` (a user key only the resolutions it recorded, an
    admin key any: :func:`~sematic_k8s_server.scopes.action_refusal`). ``token_sweep_namespaces``: namespaces, besides
    the rerun namespace, whose drivers' token Secrets left owned by nothing the server deletes
    (:mod:`~sematic_k8s_server.token_secrets`; where CloudResolvers launch drivers): the server's, never a record's."""

    api_keys_required: bool = True
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    body_timeout: float = DEFAULT_BODY_TIMEOUT
    max_streams_per_key: int = DEFAULT_MAX_STREAMS_PER_KEY
    reruns: RerunConfig = field(default_factory=RerunConfig)
    allowed_storages: tuple[str, ...] = ()
    cache_trusted_keys: tuple[str, ...] = ()
    actions_by: str = TEAM
    token_sweep_namespaces: tuple[str, ...] = ()

    @property
    def local(self) -> bool:
        return not self.api_keys_required

    def __post_init__(self) -> None:
        if self.max_request_bytes < 1024:
            raise ValueError(f"the request size cap must be at least 1024 bytes, got {self.max_request_bytes}")
        if not self.body_timeout > 0:
            raise ValueError(f"the request body timeout must be more than 0 seconds, got {self.body_timeout}")
        if self.max_streams_per_key < 1:
            raise ValueError(f"the live-event streams per API key must be at least 1, got {self.max_streams_per_key}")
        for namespace in self.token_sweep_namespaces:
            if not re.fullmatch(NAMESPACE, namespace):
                raise ValueError(f"namespace {namespace!r} in ${settings.TOKEN_SWEEP_NAMESPACES_ENV}: give namespace "
                                 "names (at most 63 lowercase letters, digits and '-', starting and ending with a "
                                 "letter or digit), separated by commas")
        if self.actions_by not in ACTIONS_BY:
            raise ValueError(f"actions by {self.actions_by!r}: give {' or '.join(ACTIONS_BY)} (--actions-by, "
                             f"${settings.ACTIONS_BY_ENV})")
        for name in self.cache_trusted_keys:
            if not 1 <= len(name) <= 128 or not name.isprintable() or name != name.strip():
                raise ValueError(f"cache trusted key {name[:140]!r}: give an API key's name (as `sematic-k8s api-keys "
                                 f"list` shows it), or {UNOWNED} for the runs recorded before owners were")

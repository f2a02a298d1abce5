"""Ask a registry (Docker Registry HTTP API v2) for the digest of a tag, or the CPU architecture or the labels of
an image, without pulling anything."""

from __future__ import annotations

import hashlib
import http.client
import ipaddress
import json
import re
import urllib.error
import urllib.parse
from dataclasses import dataclass
from typing import Any

from sematic_k8s.errors import RegistryAuthError

MANIFEST_TYPES = ", ".join([
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
])
DOCKER_HUB = "registry-1.docker.io"
# a look-up that got no usable answer: refused, dropped, timed out, or cut off or garbled mid-answer (http.client's
# BadStatusLine, IncompleteRead: not OSErrors); an HTTPError (a URLError) is an answer, which callers tell apart
UNANSWERED: tuple[type[Exception], ...] = (urllib.error.URLError, OSError, http.client.HTTPException)


@dataclass(frozen=True)
class Repo:
    """``127.0.0.1:5000/team/app`` -> host ``127.0.0.1:5000``, name ``team/app``."""

    host: str
    name: str

    @classmethod
    def parse(cls, repo: str) -> Repo:
        first, sep, rest = repo.partition("/")
        if sep and ("." in first or ":" in first or first == "localhost"):
            return cls(first, rest)
        return cls(DOCKER_HUB, repo if sep else f"library/{repo}")

    @property
    def insecure(self) -> bool:
        """Loopback registries speak plain HTTP (as dockerd assumes for 127.0.0.0/8)."""
        host = self.host.rsplit(":", 1)[0].strip("[]") if self.host.count(":") <= 1 else self.host.strip("[]")
        if host == "localhost":
            return True
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False

    @property
    def base_url(self) -> str:
        return f"{'http' if self.insecure else 'https'}://{self.host}"


def _bearer_token(challenge: str, timeout: float) -> str | None:
    """An anonymous pull token for a ``WWW-Authenticate: Bearer realm=...`` challenge."""
    if not challenge.lower().startswith("bearer "):
        return None
    params = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
    realm = params.pop("realm", None)
    if not realm:
        return None
    import urllib.request  # only when a registry is read: a driver imports this module at its start

    with urllib.request.urlopen(f"{realm}?{urllib.parse.urlencode(params)}", timeout=timeout) as resp:
        body = json.load(resp)
    return body.get("token") or body.get("access_token")


def manifest_digest(repo: str, tag: str, *, timeout: float = 10.0) -> str | None:
    """The ``sha256:...`` digest the registry serves for ``repo:tag``; None when the tag does not exist.

    ``HEAD /v2/<name>/manifests/<tag>``, reading ``Docker-Content-Digest``. Anonymous bearer tokens are
    fetched when challenged; a registry that still refuses raises :class:`RegistryAuthError`.
    """
    r = Repo.parse(repo)
    url = f"{r.base_url}/v2/{r.name}/manifests/{urllib.parse.quote(tag)}"
    headers = {"Accept": MANIFEST_TYPES}
    try:
        got, _ = _fetch(r, url, headers, f"{r.name}:{tag}", timeout, method="HEAD")
        if got.get("Docker-Content-Digest"):
            return got["Docker-Content-Digest"]
        _, body = _fetch(r, url, headers, f"{r.name}:{tag}", timeout)  # registries that omit the header
        return "sha256:" + hashlib.sha256(body).hexdigest()
    except urllib.error.HTTPError as e:
        if e.code == 404:
            return None
        raise


def _fetch(r: Repo, url: str, headers: dict[str, str], refused: str, timeout: float,
           method: str = "GET") -> tuple[Any, bytes]:
    """(response headers, body) of ``url``; when challenged, an anonymous bearer token is fetched once and kept in
    ``headers``. Other HTTP errors (404, ...) pass through; 401/403 after that raise :class:`RegistryAuthError`."""
    import urllib.request  # only when a registry is read (see _bearer_token)

    for attempt in range(2):
        try:
            req = urllib.request.Request(url, method=method, headers=headers)
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return resp.headers, resp.read()
        except urllib.error.HTTPError as e:
            if e.code == 401 and attempt == 0:
                token = _bearer_token(e.headers.get("WWW-Authenticate", ""), timeout)
                if token:
                    headers["Authorization"] = f"Bearer {token}"
                    continue
            if e.code in (401, 403):
                raise RegistryAuthError(f"{r.host} refused {refused} ({e.code})") from e
            raise
    raise RegistryAuthError(f"{r.host} refused {refused}")


def _get_json(r: Repo, path: str, accept: str, timeout: float) -> dict:
    """GET ``/v2/<name>/<path>`` as JSON, with an anonymous bearer token when challenged."""
    _, body = _fetch(r, f"{r.base_url}/v2/{r.name}/{path}", {"Accept": accept}, r.name, timeout)
    return json.loads(body)


def image_architecture(repo: str, reference: str, *, timeout: float = 10.0) -> str | None:
    """The CPU architecture (``amd64``, ``arm64``...) in the config of the single-platform image ``repo:reference``
    (a tag or a ``sha256:`` digest); None for a multi-platform index. Raises like :func:`manifest_digest`."""
    blob = _image_config(repo, reference, timeout)
    arch = (blob or {}).get("architecture")
    return str(arch) if arch else None


def image_labels(repo: str, reference: str, *, timeout: float = 10.0) -> dict[str, str] | None:
    """The labels in the config of the single-platform image ``repo:reference`` ({} for none); None for a
    multi-platform index. Raises like :func:`manifest_digest`."""
    blob = _image_config(repo, reference, timeout)
    if blob is None:
        return None
    labels = (blob.get("config") or {}).get("Labels") or {}
    return {str(k): str(v) for k, v in labels.items()} if isinstance(labels, dict) else {}


def _image_config(repo: str, reference: str, timeout: float) -> dict[str, Any] | None:
    """The config blob of the single-platform image ``repo:reference``; None for a multi-platform index."""
    r = Repo.parse(repo)
    manifest = _get_json(r, f"manifests/{urllib.parse.quote(reference)}", MANIFEST_TYPES, timeout)
    config = (manifest.get("config") or {}).get("digest")
    if not config:
        return None  # an index of several platforms
    return _get_json(r, f"blobs/{config}", "application/json, */*", timeout)


def split_reference(image: str) -> tuple[str, str]:
    """``repo@sha256:...`` (``repo:tag@sha256:...`` too: the digest wins) or ``repo:tag`` (``repo``: ``latest``) ->
    (repo, digest or tag)."""
    named, at, digest = image.partition("@")
    head, _, last = named.rpartition("/")
    name, colon, tag = last.partition(":")
    repo = f"{head}/{name}" if head else name
    return repo, digest if at else tag if colon else "latest"

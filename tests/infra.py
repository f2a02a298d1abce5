"""Real dockerd + registry for tests, from ``../shared/infra`` (up.sh, base-image.sh).

``require_docker()`` brings them up (idempotent: a few seconds when already up, ~30-60 s the first time) and
returns the local Python base image to build FROM. Without them a test skips with the reason, unless CI=true:
then it fails, because CI must exercise the real thing.
"""

from __future__ import annotations

import functools
import os
import subprocess
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_INFRA = Path(os.environ.get("SEMATIC_K8S_INFRA_SCRIPTS", REPO.parent / "shared" / "infra"))
REGISTRY = os.environ.get("REGISTRY", "127.0.0.1:5000")
BASE_IMAGE = os.environ.get("SEMATIC_K8S_TEST_BASE_IMAGE", "local/python-base:bookworm")


class InfraUnavailable(RuntimeError):
    """dockerd, the registry or the base image could not be had."""


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def docker_client():
    """A docker SDK client, or None when the SDK or the daemon is missing."""
    try:
        import docker

        client = docker.from_env(version="auto", timeout=30)
        client.ping()
        return client
    except Exception:  # noqa: BLE001 - any failure means "no docker"
        return None


def docker_available() -> bool:
    return docker_client() is not None


def registry_available(addr: str = REGISTRY) -> bool:
    try:
        with urllib.request.urlopen(f"http://{addr}/v2/", timeout=3) as resp:
            return resp.status == 200
    except OSError:
        return False


def _run_script(name: str, timeout: float) -> None:
    script = SHARED_INFRA / name
    if not script.is_file():
        raise InfraUnavailable(f"{script} not found (the shared infra scripts live in ../shared/infra)")
    try:
        proc = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise InfraUnavailable(f"{script} did not finish in {timeout:.0f}s") from e
    if proc.returncode != 0:
        raise InfraUnavailable(f"{script} failed ({proc.returncode}):\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")


@functools.cache
def bring_up() -> str:
    """Start dockerd + registry (up.sh) when they do not answer, make sure the base image exists
    (base-image.sh), and return the base image reference. Raises :class:`InfraUnavailable`."""
    try:
        import docker  # noqa: F401
    except ImportError as e:
        raise InfraUnavailable("the docker SDK is not installed (pip install 'sematic-k8s[docker]')") from e
    if not (docker_available() and registry_available()):
        _run_script("up.sh", timeout=900)
    client = docker_client()
    if client is None or not registry_available():
        raise InfraUnavailable(f"dockerd or the registry on {REGISTRY} still does not answer after up.sh")
    _run_script("base-image.sh", timeout=900)
    client.images.get(BASE_IMAGE)
    return BASE_IMAGE


@functools.cache
def _outcome() -> tuple[str | None, str]:
    try:
        return bring_up(), ""
    except InfraUnavailable as e:
        return None, str(e)
    except Exception as e:  # noqa: BLE001
        return None, f"{type(e).__name__}: {e}"


def require_docker() -> str:
    """The base image to build from; skips the test (fails it under CI=true) when docker is unavailable."""
    image, reason = _outcome()
    if image is None:
        message = f"real dockerd + registry unavailable: {reason}"
        if in_ci():
            pytest.fail(message)
        pytest.skip(message)
    return image

"""Real Docker engine, registry and S3 server for tests and benches, from the repository's ``infra/`` scripts.

``require_docker()`` reuses whatever already answers: the Docker engine of ``$DOCKER_HOST`` (else
``/var/run/docker.sock``), a registry on ``$REGISTRY`` (127.0.0.1:5000) and an S3 server on
``$AWS_ENDPOINT_URL_S3`` (http://127.0.0.1:9000). Only when one of them does not answer does it run
``infra/up.sh``, which starts just the missing ones (never a second dockerd over a running engine); then
``infra/base-image.sh`` makes sure the local Python base image exists (a few seconds when everything is
there, ~30-60 s the first time). It returns the base image to build FROM. Without them a test skips with the
reason, unless CI=true: then it fails, because CI must exercise the real thing.
``$SEMATIC_K8S_INFRA_SCRIPTS`` points at another copy of the scripts.
"""

from __future__ import annotations

import functools
import os
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from sematic_k8s.labels import RESOLUTION_LABEL, ROLE_LABEL, RUN_LABEL

REPO = Path(__file__).resolve().parents[2]
INFRA_SCRIPTS = Path(os.environ.get("SEMATIC_K8S_INFRA_SCRIPTS", REPO / "infra"))
REGISTRY = os.environ.get("REGISTRY", "127.0.0.1:5000")
S3_ENDPOINT = os.environ.get("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:9000")
DEFAULT_BASE_IMAGE = "local/python-base:bookworm"  # what base-image.sh builds
BASE_IMAGE = os.environ.get("SEMATIC_K8S_TEST_BASE_IMAGE", DEFAULT_BASE_IMAGE)


class InfraUnavailable(RuntimeError):
    """The Docker engine, the registry, the S3 server or the base image could not be had."""


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def docker_client():
    """A docker SDK client for $DOCKER_HOST (else the default socket), or None when the SDK or engine is missing."""
    try:
        import docker

        client = docker.from_env(version="auto", timeout=30)
        client.ping()
        return client
    except Exception:  # noqa: BLE001 - any failure means "no docker"
        return None


def containers_of(resolution: str | None = None, role: str | None = None, *, run: str | None = None) -> list[Any]:
    """The engine's containers in any state whose labels select them: those of resolution ``resolution`` (its role
    ``role``, driver or worker, when given) or of run ``run``. Listed again when one was removed while the list
    inspected it."""
    from docker import errors

    selectors = [f"{label}={value}" for label, value in ((RESOLUTION_LABEL, resolution), (ROLE_LABEL, role),
                                                         (RUN_LABEL, run)) if value is not None]
    assert selectors, "containers_of selects by resolution or run"
    while True:
        try:
            return docker_client().containers.list(all=True, filters={"label": selectors})
        except errors.NotFound:  # one was removed while the list inspected it: look again
            continue


def docker_available() -> bool:
    return docker_client() is not None


def registry_available(addr: str = REGISTRY) -> bool:
    try:
        with urllib.request.urlopen(f"http://{addr}/v2/", timeout=3) as resp:
            return resp.status == 200
    except OSError:
        return False


def s3_available(endpoint: str = S3_ENDPOINT) -> bool:
    """Whether anything answers HTTP at the S3 endpoint (moto, MinIO: any status counts)."""
    try:
        with urllib.request.urlopen(endpoint, timeout=3):
            return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


def script_env() -> dict[str, str]:
    """The environment for the infra scripts: the addresses the tests use."""
    env = dict(os.environ, REGISTRY_ADDR=REGISTRY, REGISTRY=REGISTRY)
    s3 = urlsplit(S3_ENDPOINT)
    if s3.hostname in ("127.0.0.1", "localhost") and s3.port:
        env["S3_PORT"] = str(s3.port)
    return env


def run_script(name: str, timeout: float) -> str:
    """Run ``infra/NAME`` with :func:`script_env`; its output. Raises :class:`InfraUnavailable` on failure."""
    script = INFRA_SCRIPTS / name
    if not script.is_file():
        raise InfraUnavailable(f"{script} not found (set SEMATIC_K8S_INFRA_SCRIPTS to the repository's infra/)")
    try:
        proc = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=timeout,
                              env=script_env())
    except subprocess.TimeoutExpired as e:
        raise InfraUnavailable(f"{script} did not finish in {timeout:.0f}s") from e
    if proc.returncode != 0:
        raise InfraUnavailable(f"{script} failed ({proc.returncode}):\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    return proc.stdout


@functools.cache
def bring_up() -> str:
    """Reuse the engine, registry and S3 server that answer, start the others (up.sh), make sure the base image
    exists (base-image.sh), and return the base image reference. Raises :class:`InfraUnavailable`."""
    try:
        import docker  # noqa: F401
    except ImportError as e:
        raise InfraUnavailable("the docker SDK is not installed (pip install 'sematic-k8s[docker]')") from e
    if not (docker_available() and registry_available() and s3_available()):
        run_script("up.sh", timeout=900)
    client = docker_client()
    if client is None or not registry_available():
        raise InfraUnavailable(f"the Docker engine or the registry on {REGISTRY} still does not answer after up.sh")
    if BASE_IMAGE == DEFAULT_BASE_IMAGE:
        run_script("base-image.sh", timeout=900)
    try:
        client.images.get(BASE_IMAGE)
    except Exception as e:  # noqa: BLE001 - docker.errors.ImageNotFound and API errors alike
        raise InfraUnavailable(f"base image {BASE_IMAGE} is not in the Docker engine: {e}") from e
    return BASE_IMAGE


def cloud_bench_services(bench: str) -> str | None:
    """For a bench that builds images and stores in S3: once Docker, the registry and an S3 server answer, the
    base image (``$SEMATIC_K8S_BASE_IMAGE`` if set) with the AWS variables pointed at that server unless set;
    None once it printed why the ``bench`` is skipped."""
    try:
        base_image = os.environ.get("SEMATIC_K8S_BASE_IMAGE", bring_up())  # the services brought up either way
    except InfraUnavailable as e:
        print(f"{bench} bench skipped: {e}")
        return None
    if not s3_available():
        print(f"{bench} bench skipped: no S3 server answers on {S3_ENDPOINT}")
        return None
    for name, value in (("AWS_ENDPOINT_URL_S3", S3_ENDPOINT), ("AWS_ACCESS_KEY_ID", "test"),
                        ("AWS_SECRET_ACCESS_KEY", "test"), ("AWS_DEFAULT_REGION", "us-east-1")):
        os.environ.setdefault(name, value)
    return base_image


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
        message = f"real Docker engine + registry unavailable: {reason}"
        if in_ci():
            pytest.fail(message)
        pytest.skip(message)
    return image

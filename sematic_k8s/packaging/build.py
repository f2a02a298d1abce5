"""Build and push a project's image with the docker SDK, and reuse images whose context hash is known.

:func:`ensure_image` is the entry point: a recorded (hash, digest) that matches is reused while the registry holds
it; a tag for the hash already in the registry is reused; otherwise the image is built (legacy builder, progress
streamed line by line) and pushed, and its reference by digest (``repo@sha256:...``) is returned. A registry that
fails for a while is ridden out for the retry window (:mod:`.push`); an engine that stops answering is
:class:`~sematic_k8s.errors.DockerUnavailable`.

Images are built for the base image's CPU architecture (:func:`base_platform`), with wheels fetched for it, and
that architecture comes back with the image (:attr:`ImageRef.platform`), so that pods go to nodes that can run it.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from sematic_k8s.docker_engine import docker_client as engine_client
from sematic_k8s.docker_engine import engine_calls
from sematic_k8s.errors import BuildError, RegistryAuthError
from sematic_k8s.packaging.archive import write_context
from sematic_k8s.packaging.context import DEFAULT_BASE_IMAGE, DEFAULT_EXTRAS, BuildContext, compute_context
from sematic_k8s.packaging.dockerfile import DOCKERFILE, render_dockerfile
from sematic_k8s.packaging.push import image_in_registry, push_image
from sematic_k8s.packaging.wheels import DEFAULT_PYTHON, build_sematic_wheel, fetch_wheels, sematic_dist
from sematic_k8s.registry import UNANSWERED, image_architecture, manifest_digest
from sematic_k8s.specs import ARCHITECTURES

logger = logging.getLogger("sematic_k8s.packaging")
Progress = Callable[[str], None]
_STEP = re.compile(r"^Step (\d+)/(\d+) : (.*)$")
# a registry look-up whose failure only means "unknown": no answer, credentials wanted, a manifest that does not parse
_UNREADABLE: tuple[type[Exception], ...] = (*UNANSWERED, RegistryAuthError, ValueError)
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")  # the legacy builder colours a RUN step's stderr
BUILD_TIMEOUT = 900.0  # seconds a build may be silent (a RUN step may print nothing for long; a push: PUSH_SILENCE)
WHEEL_ARCH = {"amd64": "x86_64", "arm64": "aarch64"}  # Docker's names -> the manylinux wheel tags'


@dataclass(frozen=True)
class ImageRef:
    """An image by digest, the context hash it was built from, and whether this call built it."""

    digest_ref: str
    context_hash: str
    built: bool
    log: tuple[str, ...] = field(default=(), compare=False)
    platform: str | None = field(default=None, compare=False)  # its CPU architecture (amd64, arm64); None: unknown

    @property
    def repo(self) -> str:
        return self.digest_ref.split("@", 1)[0]

    @property
    def digest(self) -> str:
        return self.digest_ref.split("@", 1)[1]


@dataclass
class StepLog:
    """One ``Step N/M`` of a legacy-builder log."""

    number: int
    total: int
    instruction: str
    cached: bool = False
    output: list[str] = field(default_factory=list)


def parse_steps(log: Sequence[str]) -> list[StepLog]:
    """The steps of a build log, each with whether it came from the cache and what it printed."""
    steps: list[StepLog] = []
    for line in log:
        m = _STEP.match(line)
        if m:
            steps.append(StepLog(int(m.group(1)), int(m.group(2)), m.group(3)))
        elif steps:
            if line.strip() == "---> Using cache":
                steps[-1].cached = True
            elif not line.startswith((" ---> ", "Removing intermediate container", "Successfully ")):
                steps[-1].output.append(line)
    return steps


def say_to(progress: Progress | None) -> Progress:
    return progress or (lambda line: logger.info("%s", line))


def docker_client() -> Any:
    """A docker SDK client for builds and pushes: a step may print nothing for a long time."""
    return engine_client(timeout=BUILD_TIMEOUT)


def docker_build(client: Any, context: IO[bytes], tag: str, *, dockerfile: str = "Dockerfile",
                 progress: Progress | None = None, network_mode: str | None = None, nocache: bool = False,
                 buildargs: dict[str, str] | None = None, platform: str | None = None,
                 source: str = "") -> tuple[str, list[str]]:
    """Build from a context tar, streaming each log line to ``progress``; returns (image id, log lines).

    Raises :class:`BuildError` naming the failing step and its output, or the engine's refusal to start (a
    Dockerfile that does not parse: its line quoted from ``source``, the Dockerfile's text);
    :class:`DockerUnavailable` when the engine stops answering meanwhile.
    """
    import docker.errors

    say = say_to(progress)
    log: list[str] = []
    step: str | None = None
    step_output: list[str] = []
    image_id = ""
    pending = ""
    kwargs: dict[str, Any] = {"network_mode": network_mode} if network_mode else {}
    if platform:
        kwargs["platform"] = f"linux/{platform}"
    with engine_calls(f"building {tag}"):
        try:
            stream = client.api.build(fileobj=context, custom_context=True, dockerfile=dockerfile, tag=tag, rm=True,
                                      forcerm=True, pull=False, nocache=nocache, decode=True,
                                      buildargs=buildargs or {}, **kwargs)
            for chunk in stream:
                if "stream" in chunk:
                    pending += _ANSI.sub("", chunk["stream"])
                    *lines, pending = pending.split("\n")
                    for raw in lines:
                        line = raw.rstrip("\r")
                        if not line.strip():
                            continue
                        log.append(line)
                        say(line)
                        if _STEP.match(line):
                            step, step_output = line, []
                        elif not line.startswith((" ---> ", "Removing intermediate container")):
                            step_output.append(line)
                elif "error" in chunk or "errorDetail" in chunk:
                    if pending.strip():
                        log.append(pending.rstrip())
                        step_output.append(pending.rstrip())
                    detail = chunk.get("errorDetail") or {}
                    raise BuildError(chunk.get("error") or detail.get("message") or str(chunk), step=step,
                                     output=step_output, log=log)
                elif "aux" in chunk and isinstance(chunk["aux"], dict) and "ID" in chunk["aux"]:
                    image_id = chunk["aux"]["ID"]
                elif "status" in chunk:  # pulling a base image
                    status = " ".join(str(chunk[k]) for k in ("id", "status") if chunk.get(k))
                    if "progressDetail" not in chunk or not chunk["progressDetail"]:
                        say(status)
        except docker.errors.APIError as e:  # refused before it began: a Dockerfile that does not parse
            raise _refused(e, source) from None
    if pending.strip():
        log.append(pending.rstrip())
        say(pending.rstrip())
    if not image_id:
        m = next((re.match(r"Successfully built ([0-9a-f]+)", ln) for ln in reversed(log)
                  if ln.startswith("Successfully built")), None)
        if not m:
            raise BuildError("the build finished without an image id", step=step, output=step_output, log=log)
        image_id = m.group(1)
    return image_id, log


def _refused(e: Any, source: str) -> BuildError:
    """The :class:`BuildError` of a build the engine would not start, quoting the Dockerfile line it names."""
    why = e.explanation if isinstance(e.explanation, str) and e.explanation else str(e)
    m = re.search(r"\bline (\d+)", why)
    lines = source.splitlines()
    quoted = [f"line {m.group(1)} of the Dockerfile: {lines[int(m.group(1)) - 1]}"] \
        if m and 0 < int(m.group(1)) <= len(lines) else []
    return BuildError(f"the Docker engine refused to start it: {why}", output=quoted)


def base_platform(client: Any, base_image: str) -> str:
    """The CPU architecture (``amd64`` or ``arm64``) images built from ``base_image`` get: the local image's, else
    the daemon's when the registry offers it (``docker build`` picks that one), else the registry's only one."""
    import docker.errors

    arch = ""
    with engine_calls(f"reading base image {base_image}"):
        try:
            arch = client.images.get(base_image).attrs.get("Architecture") or ""
        except docker.errors.ImageNotFound:
            native = client.version().get("Arch") or ""
            try:
                platforms = client.api.inspect_distribution(base_image).get("Platforms") or []
            except docker.errors.APIError as e:
                raise BuildError(f"base image {base_image} is neither here nor readable in its registry: {e}") from None
            offered = [p.get("architecture") for p in platforms]
            arch = native if native in offered or not offered else offered[0] or native
    if arch not in ARCHITECTURES:
        raise BuildError(f"base image {base_image} is for the {arch or 'unknown'} CPU architecture: sematic-k8s builds "
                         f"images for {' or '.join(ARCHITECTURES)}; choose a base image for one of those")
    return arch


def registry_platform(repo: str, reference: str) -> str | None:
    """The architecture of an image already in the registry (``reference``: a tag or a digest); None if unknown."""
    try:
        arch = image_architecture(repo, reference)
    except _UNREADABLE as e:
        logger.info("cannot read the platform of %s:%s (%s)", repo, reference, e)
        return None
    return arch if arch in ARCHITECTURES else None


def registry_digest(repo: str, tag: str, client: Any = None) -> str | None:
    """The digest of ``repo:tag`` in its registry, or None when the tag is not there (or cannot be checked)."""
    try:
        return manifest_digest(repo, tag)
    except RegistryAuthError:
        pass  # private registry: let the daemon ask, with its credentials
    except UNANSWERED as e:
        logger.warning("cannot reach the registry of %s: %s", repo, e)
        return None
    try:
        info = (client or docker_client()).api.inspect_distribution(f"{repo}:{tag}")
        return info["Descriptor"]["digest"]
    except Exception as e:  # noqa: BLE001 - any failure here just means "build it"
        logger.info("no manifest for %s:%s (%s)", repo, tag, e)
        return None


def build_and_push(ctx: BuildContext, registry_repo: str, *, client: Any = None, progress: Progress | None = None,
                   python_version: str = DEFAULT_PYTHON, nocache: bool = False) -> ImageRef:
    """Build the image of ``ctx`` (wheels fetched on the host unless ``ctx.network``), push, return it by digest."""
    say = say_to(progress)
    client = client or docker_client()
    platform = base_platform(client, ctx.base_image)
    dist = sematic_dist()
    wheel = build_sematic_wheel(dist)
    scratch = Path(tempfile.mkdtemp(prefix="sk-build-"))
    try:
        runtime_reqs, user_reqs = dist.requirements(ctx.extras), ctx.deps.lines
        if ctx.network:
            runtime, user = _requirements_dir(scratch / "runtime", runtime_reqs), None
            if user_reqs:
                user = _requirements_dir(scratch / "user", user_reqs)
        else:
            arch = WHEEL_ARCH[platform]
            runtime = fetch_wheels(runtime_reqs, python_version=python_version, arch=arch, progress=say)
            user = (fetch_wheels(user_reqs, python_version=python_version, arch=arch, progress=say)
                    if user_reqs else None)
        tag = f"{registry_repo}:{ctx.tag}"
        started = time.monotonic()
        dockerfile = render_dockerfile(ctx, wheel[0])
        with tempfile.TemporaryFile(dir=scratch) as tar:
            write_context(ctx, tar, dockerfile=dockerfile, sematic_wheel=wheel, runtime=runtime, user=user)
            size = tar.tell()
            tar.seek(0)
            say(f"build: {tag} for linux/{platform} from {ctx.root} ({len(ctx.files)} files, "
                f"context {size / 1e6:.1f} MB)")
            _, log = docker_build(client, tar, tag, dockerfile=DOCKERFILE, progress=say, nocache=nocache,
                                  network_mode="host" if ctx.network else None, platform=platform, source=dockerfile)
        say(f"build: done in {time.monotonic() - started:.1f}s; pushing {tag}")
        ref = push_image(client, registry_repo, ctx.tag, progress=say)
        say(f"image: {ref}")
        return ImageRef(ref, ctx.context_hash, True, tuple(log), platform)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _requirements_dir(path: Path, requirements: Sequence[str]) -> Path:
    path.mkdir(parents=True)
    (path / "requirements.txt").write_text("".join(f"{r}\n" for r in requirements))
    return path


def ensure_image(project_root: str | os.PathLike[str], registry_repo: str, base_image: str = DEFAULT_BASE_IMAGE,
                 recorded: ImageRef | tuple[str, str] | None = None, progress: Progress | None = None, *,
                 extras: Sequence[str] = DEFAULT_EXTRAS, network: bool = False, setup: Sequence[str] = (),
                 python_version: str | None = None, client: Any = None, nocache: bool = False) -> ImageRef:
    """The image for the project at ``project_root``, built and pushed only when needed.

    ``recorded`` is a previous (context hash, digest ref) such as a Resolution's: reused when the hash matches, the
    image is in ``registry_repo`` (a record is client-written: it never chooses another repository's image, nor a
    registry host to ask) and the registry still holds it (:func:`image_in_registry`; one deleted or
    garbage-collected is built and pushed again, saying so). Else a tag named by the hash already in
    ``registry_repo`` is reused. Else build + push.
    ``network=True`` installs dependencies from the network inside the build instead of host-fetched wheels.
    ``python_version`` is the base image's Python (for the wheels); default: from a ``python:X.Y`` base, else 3.11.
    """
    say = say_to(progress)
    ctx = compute_context(project_root, base_image, extras=extras, network=network, setup=setup)
    say(f"context: {len(ctx.files)} files, hash {ctx.context_hash[:16]}")
    if recorded is not None:
        rec_hash, rec_ref = ((recorded.context_hash, recorded.digest_ref) if isinstance(recorded, ImageRef)
                             else recorded)
        rec_repo, _, rec_digest = rec_ref.partition("@")
        ours = rec_repo == registry_repo.rstrip("/")
        if rec_hash == ctx.context_hash and rec_digest.startswith("sha256:") and not ours:
            say(f"image: the recorded {rec_ref[:300]} is not in {registry_repo}, where this resolver's images are: "
                "not reused")
        elif rec_hash == ctx.context_hash and rec_digest.startswith("sha256:"):
            if image_in_registry(rec_repo, rec_digest, client):
                say(f"image: reusing recorded {rec_ref}")
                return ImageRef(rec_ref, ctx.context_hash, False, platform=registry_platform(rec_repo, rec_digest))
            say(f"registry: the recorded image {rec_ref} is no longer in the registry (deleted, or garbage-collected): "
                "building it again")
    digest = registry_digest(registry_repo, ctx.tag, client)
    if digest:
        ref = f"{registry_repo}@{digest}"
        say(f"image: reusing {registry_repo}:{ctx.tag[:16]}... already in the registry: {ref}")
        return ImageRef(ref, ctx.context_hash, False, platform=registry_platform(registry_repo, digest))
    return build_and_push(ctx, registry_repo, client=client, progress=say, nocache=nocache,
                          python_version=python_version or base_python_version(base_image))


def base_python_version(base_image: str) -> str:
    """``python:3.12-slim`` -> ``3.12``; the default Python for other base images."""
    m = re.search(r"(?:^|/)python:(\d+\.\d+)", base_image)
    return m.group(1) if m else DEFAULT_PYTHON

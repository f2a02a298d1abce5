"""The build context of a user project: its files, dependency spec, base image and hashes.

The context hash decides whether an image must be rebuilt: it covers the user's code files (every file under
the project root that is not excluded; ``.dockerignore`` is honoured), the dependency spec, the base image, the
sematic_k8s version (including a digest of its source, so library edits rebuild too) and the install options.
The deps hash covers the same minus the code files: it names the dependency layers.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sematic_k8s.packaging.ignore import DockerIgnore, excluded_dir, excluded_file
from sematic_k8s.packaging.wheels import load_toml, sematic_version

DEFAULT_BASE_IMAGE = "python:3.11-slim"
DEFAULT_EXTRAS: tuple[str, ...] = ("s3",)  # workers load and store artifacts in S3
CODE_DIR = "/app"  # where the project root lands in the image (on PYTHONPATH, and the working directory)
FORMAT = "sematic-k8s-image-v2"  # bump when the generated Dockerfile changes meaning


@dataclass(frozen=True)
class DependencySpec:
    """The user's third-party requirements, as pip requirement lines.

    ``source`` is ``requirements.txt``, ``pyproject.toml`` (its ``[project].dependencies``) or ``""``.
    """

    source: str = ""
    requirements: str = ""

    @property
    def lines(self) -> list[str]:
        return [ln.strip() for ln in self.requirements.splitlines() if ln.strip() and not ln.strip().startswith("#")]


@dataclass(frozen=True)
class BuildContext:
    """Everything an image for one project is built from, and its hashes."""

    root: Path
    files: tuple[str, ...]  # sorted relative POSIX paths
    deps: DependencySpec
    base_image: str
    sematic_version: str
    extras: tuple[str, ...] = DEFAULT_EXTRAS
    network: bool = False  # True: pip installs from the network inside the build instead of host wheels
    setup: tuple[str, ...] = ()  # shell commands run right after FROM (e.g. system packages)
    context_hash: str = field(default="", compare=False)
    deps_hash: str = field(default="", compare=False)

    @property
    def tag(self) -> str:
        """The image tag this context is pushed under."""
        return self.context_hash


def dependency_spec(root: Path) -> DependencySpec:
    """``requirements.txt`` if present, else ``[project].dependencies`` of ``pyproject.toml``, else nothing."""
    req = root / "requirements.txt"
    if req.is_file():
        return DependencySpec("requirements.txt", req.read_text())
    pyproject = root / "pyproject.toml"
    if pyproject.is_file():
        deps = load_toml(pyproject).get("project", {}).get("dependencies", [])
        return DependencySpec("pyproject.toml", "".join(f"{d}\n" for d in deps))
    return DependencySpec()


def project_files(root: Path) -> list[str]:
    """The relative POSIX paths of the project's files that go into the image, sorted."""
    ignore = DockerIgnore.load(root)
    prune_ignored = not ignore.has_negations
    out: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        base = Path(dirpath).relative_to(root).as_posix()
        prefix = "" if base == "." else base + "/"
        keep = []
        for d in sorted(dirnames):
            rel = prefix + d
            if excluded_dir(rel) or (prune_ignored and ignore.ignored(rel)):
                continue
            keep.append(d)
        dirnames[:] = keep
        for name in filenames:
            rel = prefix + name
            path = Path(dirpath) / name
            if excluded_file(rel) or ignore.ignored(rel) or not path.is_file():
                continue
            out.append(rel)
    return sorted(out)


def _hash(parts: Iterable[bytes]) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(len(p).to_bytes(8, "big"))
        h.update(p)
    return h.hexdigest()


def _deps_parts(deps: DependencySpec, base_image: str, version: str, extras: Sequence[str], network: bool,
                setup: Sequence[str]) -> list[bytes]:
    return [FORMAT.encode(), base_image.encode(), version.encode(), deps.source.encode(),
            deps.requirements.encode(), ",".join(extras).encode(), b"network" if network else b"wheels",
            "\n".join(setup).encode()]


def compute_context(project_root: str | os.PathLike[str], base_image: str = DEFAULT_BASE_IMAGE, *,
                    extras: Sequence[str] = DEFAULT_EXTRAS, network: bool = False, setup: Sequence[str] = (),
                    version: str | None = None) -> BuildContext:
    """Collect and hash the build context of the project at ``project_root``."""
    root = Path(project_root).resolve()
    if not root.is_dir():
        raise NotADirectoryError(f"project root {root} is not a directory")
    files = project_files(root)
    deps = dependency_spec(root)
    version = version or sematic_version()
    extras, setup = tuple(sorted(set(extras))), tuple(setup)
    head = _deps_parts(deps, base_image, version, extras, network, setup)
    deps_hash = _hash(head)

    def file_parts() -> Iterable[bytes]:
        yield from head
        for rel in files:
            yield rel.encode()
            yield hashlib.sha256((root / rel).read_bytes()).digest()

    return BuildContext(root, tuple(files), deps, base_image, version, extras, network, setup,
                        context_hash=_hash(file_parts()), deps_hash=deps_hash)


def source_map(project_root: str | os.PathLike[str]) -> str:
    """The ``SEMATIC_K8S_SOURCE_MAP`` value mapping the host project root to its place in the image."""
    return f"{Path(project_root).resolve()}={CODE_DIR}"

"""Build the images of ``images/``: ``worker`` (the base image for user code) and ``server``.

Their contexts are staged here: the Dockerfile, ``wheels/`` (requirements.txt + wheels fetched on the host)
and ``sematic/`` (the sematic_k8s wheel), so builds need no network.

    python -m sematic_k8s.packaging.images worker --tag 127.0.0.1:5000/sematic-k8s-worker:dev \\
        --base-image local/python-base:bookworm --push
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from sematic_k8s.packaging.archive import ContextTar, wheel_dir_files
from sematic_k8s.packaging.build import (
    WHEEL_ARCH,
    Progress,
    base_platform,
    docker_build,
    docker_client,
    say_to,
)
from sematic_k8s.packaging.context import DEFAULT_BASE_IMAGE
from sematic_k8s.packaging.push import push_image
from sematic_k8s.packaging.wheels import DEFAULT_PYTHON, build_sematic_wheel, fetch_wheels, sematic_dist
from sematic_k8s.progress import display
from sematic_k8s.version import PACKAGE_DIR

# kind -> extras (the server starts rerun drivers as Jobs, and the chart's secrets hook makes Secrets: k8s)
KINDS: dict[str, tuple[str, ...]] = {"worker": ("s3",), "server": ("server", "s3", "k8s")}


def images_dir() -> Path:
    """The repository's ``images/`` directory (beside the sematic_k8s package of a source checkout)."""
    path = Path(PACKAGE_DIR).resolve().parent / "images"
    if not path.is_dir():
        raise FileNotFoundError(f"{path} not found: images/ ships with a source checkout of sematic-k8s")
    return path


def _parts(kind: str, python_version: str, progress: Progress,
           platform: str = "amd64") -> tuple[bytes, Path, tuple[str, bytes]]:
    if kind not in KINDS:
        raise ValueError(f"unknown image {kind!r}; one of {sorted(KINDS)}")
    dockerfile = (images_dir() / kind / "Dockerfile").read_bytes()
    dist = sematic_dist(include_server=kind == "server")
    wheels = fetch_wheels(dist.requirements(KINDS[kind]), python_version=python_version, arch=WHEEL_ARCH[platform],
                          progress=progress)
    return dockerfile, wheels, build_sematic_wheel(dist)


def stage_context(kind: str, dest: Path, *, python_version: str = DEFAULT_PYTHON,
                  progress: Progress | None = None, platform: str = "amd64") -> Path:
    """Write the build context of image ``kind`` into the directory ``dest`` (for any builder), with wheels for
    ``platform`` (amd64 or arm64)."""
    dockerfile, wheels, (wheel_name, wheel_bytes) = _parts(kind, python_version, say_to(progress), platform)
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "Dockerfile").write_bytes(dockerfile)
    shutil.rmtree(dest / "wheels", ignore_errors=True)
    shutil.rmtree(dest / "sematic", ignore_errors=True)
    (dest / "wheels").mkdir()
    (dest / "sematic").mkdir()
    for name in wheel_dir_files(wheels):
        shutil.copy2(wheels / name, dest / "wheels" / name)
    (dest / "sematic" / wheel_name).write_bytes(wheel_bytes)
    return dest


def build_image(kind: str, tag: str, *, base_image: str = DEFAULT_BASE_IMAGE, push: bool = False,
                client: Any = None, progress: Progress | None = None, python_version: str = DEFAULT_PYTHON,
                nocache: bool = False) -> str:
    """Build image ``kind`` as ``tag`` (``repo:tag``) for the base image's CPU architecture; returns its
    ``repo@sha256:...`` when pushed, else its id."""
    say = say_to(progress)
    client = client or docker_client()
    platform = base_platform(client, base_image)
    dockerfile, wheels, (wheel_name, wheel_bytes) = _parts(kind, python_version, say, platform)
    with tempfile.TemporaryFile() as tar:
        out = ContextTar(tar)
        out.add_bytes("Dockerfile", dockerfile)
        out.add_tree("wheels", wheels, wheel_dir_files(wheels))
        out.add_bytes(f"sematic/{wheel_name}", wheel_bytes)
        out.close()
        tar.seek(0)
        image_id, _ = docker_build(client, tar, tag, progress=say, nocache=nocache,
                                   buildargs={"BASE_IMAGE": base_image}, platform=platform)
    if not push:
        return image_id
    repo, _, name = tag.rpartition(":")
    if not repo or "/" in name:
        repo, name = tag, "latest"
    return push_image(client, repo, name, progress=say)


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sematic_k8s.packaging.images", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("kind", choices=sorted(KINDS))
    parser.add_argument("--tag", help="repo:tag to build (required unless --context-dir)")
    parser.add_argument("--base-image", default=DEFAULT_BASE_IMAGE, help="FROM image (build arg BASE_IMAGE)")
    parser.add_argument("--python-version", default=DEFAULT_PYTHON, help="the base image's Python, for wheels")
    parser.add_argument("--platform", choices=sorted(WHEEL_ARCH), default="amd64",
                        help="with --context-dir: the CPU architecture to stage wheels for (builds use the base's)")
    parser.add_argument("--push", action="store_true", help="push and print the image by digest")
    parser.add_argument("--context-dir", type=Path, help="only stage the build context into this directory")
    args = parser.parse_args(argv)
    if args.context_dir:
        print(stage_context(args.kind, args.context_dir, python_version=args.python_version, progress=_stderr,
                            platform=args.platform))
        return 0
    if not args.tag:
        parser.error("--tag is required to build")
    shown = display()  # live on a terminal, plain lines otherwise; a one-line summary at the end
    try:
        ref = build_image(args.kind, args.tag, base_image=args.base_image, push=args.push, progress=shown,
                          python_version=args.python_version)
    except BaseException:
        shown.close()
        raise
    shown(f"image: {ref}")
    shown.done()
    print(ref)
    return 0


if __name__ == "__main__":
    sys.exit(main())

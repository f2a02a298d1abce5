"""The docker build context as a tar stream: generated files under ``_sk/``, the project's files under ``code/``.

Entries are written with fixed owners and times, so identical inputs give identical layers (and build cache hits).
"""

from __future__ import annotations

import io
import os
import tarfile
from collections.abc import Iterable
from pathlib import Path
from typing import IO

from sematic_k8s.packaged import manifest_json
from sematic_k8s.packaging.context import CODE_DIR, BuildContext
from sematic_k8s.packaging.dockerfile import CODE, DOCKERFILE, PACKAGED, RUNTIME_DIR, SEMATIC_DIR, USER_DIR


class ContextTar:
    """Adds files to a build-context tar with normalised metadata."""

    def __init__(self, fileobj: IO[bytes]) -> None:
        self.tar = tarfile.open(fileobj=fileobj, mode="w", format=tarfile.PAX_FORMAT)
        self.dirs: set[str] = set()

    def _info(self, name: str, size: int, mode: int) -> tarfile.TarInfo:
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.mtime = size, mode, 0
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        return info

    def add_dir(self, name: str) -> None:
        parts = name.strip("/").split("/")
        for k in range(1, len(parts) + 1):
            d = "/".join(parts[:k])
            if d not in self.dirs:
                self.dirs.add(d)
                info = self._info(d, 0, 0o755)
                info.type = tarfile.DIRTYPE
                self.tar.addfile(info)

    def add_bytes(self, name: str, data: bytes, mode: int = 0o644) -> None:
        if "/" in name:
            self.add_dir(name.rsplit("/", 1)[0])
        self.tar.addfile(self._info(name, len(data), mode), io.BytesIO(data))

    def add_file(self, name: str, path: Path) -> None:
        if "/" in name:
            self.add_dir(name.rsplit("/", 1)[0])
        mode = 0o755 if os.access(path, os.X_OK) else 0o644
        with path.open("rb") as f:
            self.tar.addfile(self._info(name, path.stat().st_size, mode), f)

    def add_tree(self, name: str, root: Path, files: Iterable[str]) -> None:
        self.add_dir(name)
        for rel in files:
            self.add_file(f"{name}/{rel}", root / rel)

    def close(self) -> None:
        self.tar.close()


def wheel_dir_files(path: Path) -> list[str]:
    """``requirements.txt`` and the wheels of a fetched wheel directory, sorted."""
    return sorted(p.name for p in path.iterdir() if p.name == "requirements.txt" or p.suffix == ".whl")


def write_context(ctx: BuildContext, fileobj: IO[bytes], *, dockerfile: str, sematic_wheel: tuple[str, bytes],
                  runtime: Path, user: Path | None) -> None:
    """Write the whole build context of ``ctx`` to ``fileobj``.

    ``runtime`` and ``user`` are directories with a ``requirements.txt`` (and, for offline builds, the wheels).
    """
    out = ContextTar(fileobj)
    out.add_bytes(DOCKERFILE, dockerfile.encode())
    out.add_tree(RUNTIME_DIR, runtime, wheel_dir_files(runtime))
    if user is not None:
        out.add_tree(USER_DIR, user, wheel_dir_files(user))
    out.add_bytes(f"{SEMATIC_DIR}/{sematic_wheel[0]}", sematic_wheel[1])
    out.add_tree(CODE, ctx.root, ctx.files)
    out.add_bytes(PACKAGED, manifest_json(CODE_DIR, ctx.files).encode())
    out.close()

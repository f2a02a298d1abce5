"""The secrets a container gets as files, never as environment variables that ``docker inspect`` shows: a tar of
them (:func:`secret_archive`) copied into the created container before it starts, owned by the image's user
(:func:`image_user`, as the engine resolves its USER). A worker's and a driver's container alike."""

from __future__ import annotations

import io
import posixpath
import tarfile
import time
from typing import Any

from sematic_k8s.errors import ImageUserUnknown

SECRETS_DIR = "sematic-k8s-secrets"  # at a container's root: a driver's secrets, a worker's task (0400 files)
_OWNERS: dict[str, tuple[int, int]] = {}  # image id -> the (uid, gid) its USER resolves to there


def image_user(client: Any, image: str, container: str) -> tuple[int, int]:
    """The numeric uid and gid the image runs as, as the engine resolves its USER (``user[:group]``): root when it
    has none; a number as it is (its gid the uid's when no group is given); a name looked up in the image's own
    /etc/passwd (its gid there) or /etc/group, read through ``container`` (created from the image, not started).
    Cached per image id. A name the image does not have is :class:`~sematic_k8s.errors.ImageUserUnknown`, as the
    engine would refuse to start the container."""
    attrs = client.images.get(image).attrs
    if attrs["Id"] not in _OWNERS:
        user = (attrs.get("Config") or {}).get("User") or ""
        name, _, group = user.partition(":")
        if not user:
            _OWNERS[attrs["Id"]] = (0, 0)
        elif name.isdigit() and (group.isdigit() or not group):
            _OWNERS[attrs["Id"]] = (int(name), int(group or name))
        else:
            _OWNERS[attrs["Id"]] = _named_user(client, image, user, container)
    return _OWNERS[attrs["Id"]]


def _named_user(client: Any, image: str, user: str, container: str) -> tuple[int, int]:
    """``user`` (a name in it) resolved in the image's /etc/passwd and /etc/group, as the engine does: a user by
    name or uid (its gid there), a group by name or gid; a number not there as it is."""
    name, _, group = user.partition(":")
    uid = gid = 0
    if name:
        entry = _entry(client, container, "/etc/passwd", name)
        if entry is None and not name.isdigit():
            raise ImageUserUnknown.lacking(image, user, f"its /etc/passwd has no user {name}")
        uid, gid = (int(entry[2]), int(entry[3]) if entry[3].isdigit() else 0) if entry else (int(name), int(name))
    if group:
        entry = _entry(client, container, "/etc/group", group)
        if entry is None and not group.isdigit():
            raise ImageUserUnknown.lacking(image, user, f"its /etc/group has no group {group}")
        gid = int(entry[2]) if entry else int(group)
    return uid, gid


def _entry(client: Any, container: str, path: str, name: str) -> list[str] | None:
    """The fields of the first line of ``path`` (passwd or group: name, password, id, ...) naming ``name``, by its
    name or its id."""
    for line in _read(client, container, path).splitlines():
        fields = line.split(":")
        if len(fields) >= 4 and fields[2].isdigit() and name in (fields[0], fields[2]):
            return fields
    return None


def _read(client: Any, container: str, path: str, links: int = 8) -> str:
    """A file of a created container ("" when it has none), through the engine's archive of it (symlinks followed
    within the container, as the engine does)."""
    import docker.errors

    try:
        chunks, _ = client.api.get_archive(container, path)
    except docker.errors.NotFound:
        return ""
    with tarfile.open(fileobj=io.BytesIO(b"".join(chunks))) as tar:
        member = tar.next()
        if member is not None and member.issym() and links:
            return _read(client, container, posixpath.join(posixpath.dirname(path), member.linkname), links - 1)
        file = tar.extractfile(member) if member is not None and member.isfile() else None
        return file.read().decode(errors="replace") if file is not None else ""


def secret_archive(secrets: dict[str, str], owner: tuple[int, int]) -> bytes:
    """A tar of ``SECRETS_DIR/`` (0700) holding each of ``secrets`` (its path -> its text; 0400), owned by
    ``owner``."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        now = time.time()
        directory = tarfile.TarInfo(SECRETS_DIR)
        directory.type, directory.mode, directory.mtime = tarfile.DIRTYPE, 0o700, now
        directory.uid, directory.gid = owner
        tar.addfile(directory)
        for path, text in secrets.items():
            data = text.encode()
            file = tarfile.TarInfo(path.lstrip("/"))
            file.size, file.mode, file.mtime = len(data), 0o400, now
            file.uid, file.gid = owner
            tar.addfile(file, io.BytesIO(data))
    return out.getvalue()


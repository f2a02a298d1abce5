"""The embedded resolver with its artifacts in a storage of the test's choosing: a local directory, or a fresh bucket
of the real S3 API server the tests share (every output stored, none inline, as remote workers store them); and a
cached pipeline whose first step counts its runs (:data:`MADE`: clear it first)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sematic_k8s as sk
from s3server import fresh_bucket
from sematic_k8s.storage.base import Storage
from sematic_k8s.storage.urls import storage_from_url


class OnStorage(sk.LocalResolver):
    """The embedded resolver (its store, its loop) with its artifacts in ``on`` (an S3 bucket: as a driver's)."""

    def __init__(self, on: Storage, **options: Any) -> None:
        super().__init__(**options)
        self.on = on
        self.inline_limit = 0  # every output in storage, as remote workers store them

    @property
    def storage(self) -> Any:
        return self.on


def storage_at(where: str, tmp_path: Path, monkeypatch: Any, name: str) -> Storage:
    """A local directory (``where`` "local"), or a fresh bucket named after ``name`` ("s3")."""
    if where == "s3":
        _, bucket = fresh_bucket(monkeypatch, name)
        return storage_from_url(f"s3://{bucket}/prefix")
    return storage_from_url((tmp_path / "storage").as_uri())


MADE: list[int] = []


@sk.func(cache=True)
def made(n: int) -> list[int]:
    MADE.append(n)
    return list(range(n))


@sk.func
def summed(xs: list[int]) -> int:
    return sum(xs)


@sk.func
def made_and_summed(n: int) -> int:
    return summed(made(n))

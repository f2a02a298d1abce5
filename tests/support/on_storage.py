"""The embedded resolver with its artifacts in a storage of the test's choosing: a local directory, or a fresh bucket
of the real S3 API server the tests share (every output stored, none inline, as remote workers store them); and a
cached pipeline whose first step counts its runs (:data:`MADE`: clear it first), resolved once, and a rerun of it
refused for an output it would reuse."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import sematic_k8s as sk
from s3server import fresh_bucket
from sematic_k8s.errors import ReusedOutputGone
from sematic_k8s.storage.base import Storage, artifact_key
from sematic_k8s.storage.urls import storage_from_url
from sematic_k8s.store.records import RunRecord


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


def made_and_summed_once(resolver: Callable[[], sk.LocalResolver],
                         n: int) -> tuple[sk.Future, dict[str, RunRecord], str]:
    """``made_and_summed(n)`` resolved by ``resolver()`` (:data:`MADE` cleared first: ``made`` runs once): its root
    future, its runs by func name (as ``resolver()``'s store records them) and the storage key of ``made``'s output."""
    MADE.clear()
    first = made_and_summed(n)
    assert first.resolve(resolver()) == sum(range(n)) and MADE == [n]
    runs = {r.func_name: r for r in resolver().store.runs_of_root(first.id)}
    return first, runs, artifact_key(runs["made"].output_id)


def rerun_refused_then_run(resolver: Callable[..., sk.LocalResolver], first: sk.Future, runs: dict[str, RunRecord],
                           n: int, has: str) -> None:
    """A rerun of ``made_and_summed(n)`` (``first``, its ``runs`` by func name, of :func:`made_and_summed_once`) from
    its ``summed`` is refused before anything is recorded or run, naming its ``made``, whose output ``has`` (as the
    refusal says); one from that ``made`` runs it again."""
    summed_id, made_id = runs["summed"].id, runs["made"].id
    with pytest.raises(ReusedOutputGone) as refused:
        made_and_summed(n).resolve(resolver(rerun_from=summed_id))
    assert refused.value.run_id == made_id
    assert str(refused.value) == (
        f"rerun_from {summed_id}: run {made_id}, whose output this rerun would reuse, has its output {has}: rerun from "
        f"that run instead (rerun_from='{made_id}', `sematic-k8s rerun {made_id}`), which runs it again and stores its "
        "output")
    # nothing recorded, nothing ran
    assert [r.id for r in resolver().store.list_resolutions()] == [first.id] and MADE == [n]
    again = made_and_summed(n)
    assert again.resolve(resolver(rerun_from=refused.value.run_id)) == sum(range(n)) and MADE == [n, n]

"""Bad bytes (docs/FAULTS.md "Bad bytes"): a recorded output whose stored bytes were replaced behind the product's back
(a hand-edited or badly copied artifact, another object written at its key) is told by the one request a cache hit's
or a rerun's check of it makes anyway (S3 a HEAD, a local file a stat): its size is not the one recorded. A cache hit
on it is a miss (the func runs again, both artifacts kept); a rerun reusing it is refused naming the run to rerun."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import pytest

import sematic_k8s as sk
from on_storage import (
    MADE,
    OnStorage,
    made_and_summed,
    made_and_summed_once,
    rerun_refused_then_run,
    storage_at,
    summed,
)
from sematic_k8s.storage.base import Storage, artifact_key, location
from sematic_k8s.storage.local import LocalStorage
from sematic_k8s.storage.s3 import S3Storage

STAMPED: list[int] = []


@sk.func(cache=True)
def stamped(n: int) -> list[int]:
    """A value of its own each time it runs: its output is a new artifact."""
    STAMPED.append(n)
    return [*range(n), len(STAMPED)]


@sk.func
def stamped_and_summed(n: int) -> int:
    return summed(stamped(n))


def _storage(where: str, tmp_path: Path, monkeypatch: Any) -> Storage:
    return storage_at(where, tmp_path, monkeypatch, "replaced")


def _replace(storage: Storage, key: str, data: bytes) -> None:
    """Write ``data`` at ``key`` behind the product's back, as a hand or a bad copy does: boto3, or a file written."""
    if isinstance(storage, S3Storage):
        import boto3

        boto3.client("s3", endpoint_url=storage.where, region_name="us-east-1").put_object(
            Bucket=storage.bucket, Key=f"{storage.prefix}/{key}", Body=data)
    else:
        assert isinstance(storage, LocalStorage)
        (storage.root / key).write_bytes(data)


@pytest.mark.parametrize("where", ["local", "s3"])
def test_a_cache_hit_whose_stored_bytes_were_replaced_runs_again_and_keeps_both_artifacts(
        tmp_path, monkeypatch, caplog, where):
    """A cached run's output replaced in storage by other bytes of another length: the next cache hit on that run is
    a miss, said once in one line naming the func, the run and the artifact's key, and noted on the run; the func runs
    again, its new output is a new artifact, and the first one's record (and its run's) is kept as it was. Was: the hit
    was taken and the run reading its output failed naming the artifact corrupt."""
    monkeypatch.delenv("SEMATIC_K8S_SERVER", raising=False)
    storage = _storage(where, tmp_path, monkeypatch)

    resolver = functools.partial(OnStorage, storage, home=tmp_path, cache_namespace="ns")

    STAMPED.clear()
    first = stamped_and_summed(30)
    assert first.resolve(resolver()) == sum(range(30)) + 1 and STAMPED == [30]
    store = resolver().store
    producer = next(r for r in store.runs_of_root(first.id) if r.func_name == "stamped")
    key = artifact_key(producer.output_id)
    recorded = store.get_artifact(producer.output_id)
    replaced = b"[1, 2, 3]"
    assert recorded is not None and recorded.size != len(replaced) and recorded.inline is None
    _replace(storage, key, replaced)

    caplog.set_level("WARNING", logger="sematic_k8s")
    second = stamped_and_summed(30)
    assert second.resolve(resolver()) == sum(range(30)) + 2 and STAMPED == [30, 30]  # ran again
    said = (f"cached output of run {producer.id} no longer matches its record: its stored bytes "
            f"({location(storage, key)}) are {len(replaced)} bytes, recorded as {recorded.size}: running it again")
    assert caplog.text.count(f"stamped: {said}") == 1, caplog.text
    again = next(r for r in store.runs_of_root(second.id) if r.func_name == "stamped")
    assert again.state == "resolved" and again.cached_from is None and again.notes["cache"]["skipped"] == said
    assert again.output_id != producer.output_id and storage.exists(artifact_key(again.output_id))
    assert store.get_artifact(producer.output_id) == recorded  # both kept: the first's record as it was
    assert store.get_run(producer.id).output_id == producer.output_id and store.get_artifact(again.output_id)
    assert storage.get(key) == replaced  # the replaced object is left for its owner to look at

    caplog.clear()
    third = stamped_and_summed(30)
    assert third.resolve(resolver()) == sum(range(30)) + 2 and STAMPED == [30, 30]  # a hit on the new run
    assert next(r for r in store.runs_of_root(third.id) if r.func_name == "stamped").cached_from == again.id
    assert "no longer matches" not in caplog.text


def test_a_replaced_output_computed_again_to_the_same_value_has_its_bytes_rewritten(tmp_path, monkeypatch, caplog):
    """The same miss for a func whose value is the same each time: its output is the recorded artifact, whose stored
    bytes its run's put rewrites (a content id's bytes are known: the replaced ones were not it), so the next hit holds
    again; through a server (the driver's path: the artifacts' sizes come from ``POST /store/artifact_formats``)."""
    from serving import serve

    monkeypatch.delenv("SEMATIC_K8S_SERVER", raising=False)
    with serve(tmp_path) as s:
        def resolver() -> sk.LocalResolver:
            r = sk.LocalResolver(home=tmp_path, server=s.url, api_key=s.key, cache_namespace="ns")
            r.inline_limit = 0
            return r

        _, runs, key = made_and_summed_once(resolver, 30)
        storage = resolver().storage
        producer = runs["made"]
        good = storage.get(key)
        _replace(storage, key, good + b" ")

        caplog.set_level("WARNING", logger="sematic_k8s")
        assert made_and_summed(30).resolve(resolver()) == sum(range(30)) and MADE == [30, 30]  # ran again
        assert caplog.text.count(f"made: cached output of run {producer.id} no longer matches its record") == 1
        assert storage.get(key) == good  # rewritten by the run's put
        third = made_and_summed(30)
        assert third.resolve(resolver()) == sum(range(30)) and MADE == [30, 30]


@pytest.mark.parametrize("where", ["local", "s3"])
def test_a_rerun_that_would_reuse_an_output_whose_stored_bytes_were_replaced_is_refused_naming_the_run(
        tmp_path, monkeypatch, where):
    """A rerun reuses every run it does not reset with its output: one whose stored bytes were replaced cannot be
    (its reader would fail, or read a wrong value), so the rerun is refused before anything is recorded or run, as for
    gone bytes, naming that run and what its storage holds; rerunning from it runs it again and rewrites them. Was: the
    rerun was recorded and the run taking the output failed naming the artifact corrupt."""
    monkeypatch.delenv("SEMATIC_K8S_SERVER", raising=False)
    storage = _storage(where, tmp_path, monkeypatch)
    resolver = functools.partial(OnStorage, storage, home=tmp_path)
    first, runs, key = made_and_summed_once(resolver, 40)
    good = storage.get(key)
    _replace(storage, key, good[:-1] + b", 40]")

    rerun_refused_then_run(resolver, first, runs, 40, f"changed in storage: its stored bytes "
                           f"({location(storage, key)}) are {len(good) + 4} bytes, recorded as {len(good)}")
    assert storage.get(key) == good  # rewritten


@pytest.mark.parametrize("where", ["local", "s3"])
def test_a_size_recorded_ahead_by_another_key_in_a_storage_not_the_servers_poisons_no_hit_nor_rerun(
        tmp_path, monkeypatch, caplog, where):
    """Key B records the value ``made(30)`` will return ahead, stored (not inline), with a wrong size, before key A's
    resolution makes it, in a storage that is not the server's (A's resolver's own directory or bucket): the server
    cannot read those bytes to settle the two records, so B's stays. A's stored bytes, which hash to the id, are its
    bytes: A's next resolution hits (the bytes read once, the record's size said wrong) and a rerun reusing the run
    is not refused. Was: every hit of it a miss ("no longer matches its record", the func run each time), every
    rerun reusing it refused ("changed in storage"), for good."""
    from sematic_k8s import serialization
    from sematic_k8s_server import auth
    from serving import serve

    monkeypatch.delenv("SEMATIC_K8S_SERVER", raising=False)
    own = _storage(where, tmp_path, monkeypatch)  # the resolver's, not the server's default (tmp_path/server/storage)
    (tmp_path / "server").mkdir()
    with serve(tmp_path / "server") as s:
        value = serialization.serialize(list(range(30)))
        liar = auth.create_key(s.store.engine, "b")
        with s.client(liar) as b:
            r = b.post("/api/v1/store/write", json={"artifacts": {value.id: {
                **value.record(), "size": len(value.payload) + 7, "created_at": "2026-01-01T00:00:00+00:00"}}})
            assert r.status_code == 200, r.text

        def resolver(**options: Any) -> sk.LocalResolver:
            return OnStorage(own, home=tmp_path / "a", server=s.url, api_key=s.key, cache_namespace="ns", **options)

        MADE.clear()
        first = made_and_summed(30)
        assert first.resolve(resolver()) == sum(range(30)) and MADE == [30]
        runs = {r.func_name: r for r in s.store.runs_of_root(first.id)}
        assert runs["made"].output_id == value.id and own.get(artifact_key(value.id)) == value.payload
        assert s.store.get_artifact(value.id).size == len(value.payload) + 7  # B's record stays: the server cannot tell

        caplog.set_level("WARNING", logger="sematic_k8s")
        second = made_and_summed(30)
        assert second.resolve(resolver()) == sum(range(30)) and MADE == [30]  # a hit, not run again
        assert next(r for r in s.store.runs_of_root(second.id) if r.func_name == "made").cached_from == runs["made"].id
        assert "no longer matches" not in caplog.text and "the record's size is wrong" in caplog.text

        rerun = made_and_summed(30)
        assert rerun.resolve(resolver(rerun_from=runs["summed"].id)) == sum(range(30)) and MADE == [30]


@pytest.mark.parametrize("where", ["local", "s3"])
def test_bytes_of_another_size_than_recorded_are_matched_only_when_they_hash_to_the_id(tmp_path, monkeypatch, where):
    """``unmatched`` given the artifacts' formats reads an object of another size than recorded once, in parts (of 7
    bytes here: a value larger than one part), and matches it when it hashes to its id (the record's size is wrong);
    other bytes of that size (replaced) stay unmatched, with the size they have; gone ones stay gone."""
    from sematic_k8s import serialization
    from sematic_k8s.storage import base

    monkeypatch.setattr(base, "VERIFY_READ_BYTES", 7)
    storage = _storage(where, tmp_path, monkeypatch)
    true, replaced, gone = (serialization.serialize(list(range(n))) for n in (20, 21, 22))
    storage.put(artifact_key(true.id), true.payload)
    storage.put(artifact_key(replaced.id), replaced.payload + b" ")
    keys = {artifact_key(v.id): len(v.payload) + 3 for v in (true, replaced, gone)}
    formats = {artifact_key(v.id): v.format for v in (true, replaced, gone)}
    assert base.unmatched(storage, keys, formats) == {artifact_key(replaced.id): len(replaced.payload) + 1,
                                                      artifact_key(gone.id): None}
    assert artifact_key(true.id) in base.unmatched(storage, keys)  # no formats: sizes alone, as before

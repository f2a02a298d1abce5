"""Bad bytes (DESIGN.md "Faults"): an artifact corrupted on disk or in S3 is detected on read, rewritten when
its value is computed again, and never served as if it were fine."""

from __future__ import annotations

import base64
import functools
import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

import fault_pipelines as fp
import sematic_k8s as sk
from on_storage import (
    MADE,
    OnStorage,
    made,
    made_and_summed,
    made_and_summed_once,
    rerun_refused_then_run,
    storage_at,
    summed,
)
from outages import ThrottlingProxy, private_s3
from s3server import fresh_bucket
from sematic_k8s import serialization
from sematic_k8s.errors import (
    RerunUnplanned,
    ResolutionFailed,
    ReusedOutputGone,
    S3StorageError,
    StorageError,
    continue_how,
)
from sematic_k8s.storage.base import Storage, artifact_key, artifact_loader, inline_loader, put_artifact
from sematic_k8s.storage.local import LocalStorage
from sematic_k8s.storage.s3 import S3Storage
from sematic_k8s.storage.urls import storage_from_url
from serving import serve
from unprivileged import unprivileged


def corrupt_file(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte: same size
    path.write_bytes(bytes(data))


def corrupt_inline(store: Any, artifact_id: str) -> None:
    """Flip one byte of an inline artifact's bytes in its record."""
    data = bytearray(store.get_artifact(artifact_id).inline)
    data[len(data) // 2] ^= 0xFF
    with store.engine.begin() as conn:
        conn.execute(sa.text("UPDATE artifacts SET inline = :b WHERE id = :id"), {"b": bytes(data), "id": artifact_id})


def files(resolver: sk.LocalResolver) -> sk.LocalResolver:
    """The resolver with every artifact in a file of its own (none inline), as remote workers store them."""
    resolver.inline_limit = 0
    return resolver


def test_a_corrupt_local_artifact_is_detected_and_rewritten_when_computed_again(tmp_path, monkeypatch):
    monkeypatch.delenv("SEMATIC_K8S_SERVER", raising=False)
    f = fp.pipeline(20)
    assert f.resolve(files(sk.LocalResolver(home=tmp_path))) == 23
    store = sk.LocalResolver(home=tmp_path).store
    output = store.get_artifact(store.get_run(f.id).output_id)
    path = tmp_path / "storage" / artifact_key(output.id)
    corrupt_file(path)
    loader = artifact_loader(sk.LocalResolver(home=tmp_path).storage)
    with pytest.raises(ValueError, match=f"artifact {output.id} is corrupt"):
        _ = serialization.Value(output.id, output.format, output.type_name, load=loader).value

    assert fp.pipeline(20).resolve(files(sk.LocalResolver(home=tmp_path))) == 23  # computes 23 again: rewrites it
    assert serialization.Value(output.id, output.format, output.type_name, load=loader).value == 23


def test_a_corrupt_inline_artifact_is_detected_and_rewritten_when_computed_again(tmp_path, monkeypatch):
    monkeypatch.delenv("SEMATIC_K8S_SERVER", raising=False)
    f = fp.pipeline(20)
    assert f.resolve(sk.LocalResolver(home=tmp_path)) == 23
    store = sk.LocalResolver(home=tmp_path).store
    output_id = store.get_run(f.id).output_id
    assert store.get_artifact(output_id).inline == b"23"  # small: in its record, no file
    corrupt_inline(store, output_id)
    out = store.get_artifact(output_id)
    with pytest.raises(ValueError, match=f"artifact {output_id} is corrupt"):
        _ = serialization.Value(out.id, out.format, out.type_name, load=inline_loader(out.inline)).value

    assert fp.pipeline(20).resolve(sk.LocalResolver(home=tmp_path)) == 23  # computes 23 again: rewrites it
    out = store.get_artifact(output_id)
    assert serialization.Value(out.id, out.format, out.type_name, load=inline_loader(out.inline)).value == 23


def test_a_corrupt_s3_artifact_is_detected_and_rewritten_when_put_again(tmp_path, monkeypatch):
    with private_s3(monkeypatch) as (s3, storage_url):
        storage = storage_from_url(storage_url)
        assert isinstance(storage, S3Storage)
        s = serialization.serialize({"weights": list(range(100))})
        put_artifact(storage, s)
        full = f"{storage.prefix}/{artifact_key(s.id)}"
        bad = s.payload.replace(b"99", b"98")
        s3.client().put_object(Bucket=storage.bucket, Key=full, Body=bad)  # bytes changed behind our back
        with pytest.raises(ValueError, match="corrupt"):
            _ = serialization.Value(s.id, s.format, s.type_name, load=artifact_loader(storage)).value
        # the same bytes with the old object's checksum: only the content says they are wrong
        s3.client().put_object(Bucket=storage.bucket, Key=full, Body=bad, Metadata={"sha256": "0" * 64})
        put_artifact(storage, s)  # the value computed again
        assert storage.get(artifact_key(s.id)) == s.payload
        assert serialization.Value(s.id, s.format, s.type_name, load=artifact_loader(storage)).value == {
            "weights": list(range(100))}


@pytest.mark.parametrize("inline", [False, True], ids=["file", "inline"])
def test_the_server_never_serves_corrupt_bytes(tmp_path, monkeypatch, inline):
    monkeypatch.delenv("SEMATIC_K8S_SERVER", raising=False)
    with serve(tmp_path) as s, s.client() as c:
        f = fp.pipeline(7)
        resolver = sk.LocalResolver(home=tmp_path, server=s.url, api_key=s.key)
        assert f.resolve(resolver if inline else files(resolver)) == 10
        artifact_id = s.store.get_run(f.id).output_id
        r = c.get(f"/api/v1/artifacts/{artifact_id}/data")
        assert (r.status_code, r.content) == (200, b"10")
        assert (s.store.get_artifact(artifact_id).inline is not None) == inline
        if inline:
            corrupt_inline(s.store, artifact_id)
        else:
            corrupt_file(tmp_path / "storage" / artifact_key(artifact_id))
        r = c.get(f"/api/v1/artifacts/{artifact_id}/data")
        assert r.status_code == 500
        assert r.json()["detail"].startswith(f"artifact {artifact_id} is corrupt")
        assert "rerun the run that produced it" in r.json()["detail"]


def test_the_server_says_an_artifact_gone_from_storage_is_gone_and_what_repairs_it(tmp_path, monkeypatch):
    """Bytes deleted from storage behind the product's back (a lifecycle rule, a hand): the artifact's read is a 404
    in one line naming it and what repairs it (the dashboard's download, a client's read), never a 500."""
    monkeypatch.delenv("SEMATIC_K8S_SERVER", raising=False)
    with serve(tmp_path) as s, s.client() as c:
        f = fp.pipeline(7)
        assert f.resolve(files(sk.LocalResolver(home=tmp_path, server=s.url, api_key=s.key))) == 10
        artifact_id = s.store.get_run(f.id).output_id
        (tmp_path / "storage" / artifact_key(artifact_id)).unlink()
        r = c.get(f"/api/v1/artifacts/{artifact_id}/data")
        assert (r.status_code, r.json()["detail"]) == (404, (
            f"artifact {artifact_id} is recorded but its bytes are not in storage; rerun the run that produced it "
            "(`sematic-k8s rerun RUN_ID`): computing the value again rewrites them"))


def test_inline_bytes_that_do_not_match_their_id_are_refused_by_the_server(tmp_path):
    with serve(tmp_path) as s, s.client() as c:
        good = serialization.serialize([1, 2, 3])
        bad = {**good.record(), "inline": base64.b64encode(b"[1,2,4]").decode(), "created_at": "2026-12-02T10:00:00Z"}
        r = c.post("/api/v1/store/write", json={"artifacts": {good.id: bad}})
        assert r.status_code == 422 and f"artifact {good.id} is corrupt" in r.json()["detail"]
        assert s.store.get_artifact(good.id) is None
        ok = {**bad, "inline": base64.b64encode(good.payload).decode()}
        assert c.post("/api/v1/store/write", json={"artifacts": {good.id: ok}}).status_code == 200
        assert c.get(f"/api/v1/artifacts/{good.id}/data").content == good.payload


@pytest.mark.parametrize("fault", ["corrupt", "missing"])
def test_rerunning_the_run_whose_output_is_bad_rewrites_it(tmp_path, monkeypatch, fault):
    """The repair the error asks for when an artifact's bytes are corrupt or gone (a cached output is reused so,
    by every resolution): rerunning the run that produced them computes the value again and rewrites them,
    although the rerun knows the artifact already (recorded by the run it re-executes)."""
    monkeypatch.delenv("SEMATIC_K8S_SERVER", raising=False)
    f = fp.pipeline(20)  # add(add(20, 1), add(1, 1))
    assert f.resolve(files(sk.LocalResolver(home=tmp_path))) == 23
    store = sk.LocalResolver(home=tmp_path).store
    runs = store.runs_of_root(f.id)
    bad = serialization.serialize(21).id
    producer = next(r for r in runs if r.output_id == bad)
    consumer = next(r for r in runs if r.func_name == "add" and bad in r.inputs.values())
    path = tmp_path / "storage" / artifact_key(bad)
    if fault == "corrupt":
        corrupt_file(path)
    else:
        path.unlink()
    if fault == "corrupt":
        with pytest.raises(sk.ResolutionFailed, match=f"artifact {bad} is corrupt.*; rerun the run that produced it"):
            fp.pipeline(20).resolve(files(sk.LocalResolver(home=tmp_path, rerun_from=consumer.id)))
    else:  # gone: refused before anything runs, naming the run to rerun from (next test)
        with pytest.raises(ReusedOutputGone, match=f"run {producer.id}, whose output this rerun would reuse"):
            fp.pipeline(20).resolve(files(sk.LocalResolver(home=tmp_path, rerun_from=consumer.id)))

    assert fp.pipeline(20).resolve(files(sk.LocalResolver(home=tmp_path, rerun_from=producer.id))) == 23
    loader = artifact_loader(sk.LocalResolver(home=tmp_path).storage)
    assert serialization.Value(bad, serialization.JSON, "int", load=loader).value == 21  # rewritten


def _storage(where: str, tmp_path: Path, monkeypatch: Any) -> Storage:
    return storage_at(where, tmp_path, monkeypatch, "gone")


def _delete(storage: Storage, key: str) -> None:
    """Delete ``key``'s object behind the product's back, as a lifecycle rule (or a hand) does: boto3, or rm."""
    if isinstance(storage, S3Storage):
        import boto3

        boto3.client("s3", endpoint_url=storage.where, region_name="us-east-1").delete_object(
            Bucket=storage.bucket, Key=f"{storage.prefix}/{key}")
    else:
        assert isinstance(storage, LocalStorage)
        (storage.root / key).unlink()
    assert not storage.exists(key)


@pytest.mark.parametrize("where", ["local", "s3"])
def test_a_cache_hit_whose_output_is_gone_from_storage_runs_again_and_stores_it(tmp_path, monkeypatch, caplog,
                                                                                 where):
    """An operator's lifecycle rule (or a hand) deleted a recorded run's output from the bucket: the next cache hit on
    that run is a miss, said once and noted on the run; the func runs again, its output is stored again, and the
    resolution resolves (was: the run taking the output failed with ArtifactMissing, the resolution with it)."""
    monkeypatch.delenv("SEMATIC_K8S_SERVER", raising=False)
    storage = _storage(where, tmp_path, monkeypatch)

    resolver = functools.partial(OnStorage, storage, home=tmp_path, cache_namespace="ns")

    _, runs, key = made_and_summed_once(resolver, 50)
    store = resolver().store
    producer = runs["made"]
    _delete(storage, key)

    caplog.set_level("WARNING", logger="sematic_k8s")
    second = made_and_summed(50)
    assert second.resolve(resolver()) == sum(range(50)) and MADE == [50, 50]  # ran again
    said = f"cached output of run {producer.id} is gone from storage ("
    assert caplog.text.count(said) == 1 and f"/{key}): running it again" in caplog.text
    again = next(r for r in store.runs_of_root(second.id) if r.func_name == "made")
    assert again.state == "resolved" and again.cached_from is None and again.output_id == producer.output_id
    assert again.notes["cache"]["skipped"].startswith(said)
    assert storage.exists(key)  # stored again

    third = made_and_summed(50)
    assert third.resolve(resolver()) == sum(range(50)) and MADE == [50, 50]  # a hit again: its bytes are back
    assert next(r for r in store.runs_of_root(third.id) if r.func_name == "made").cached_from == again.id


@sk.func
def doubled(xs: list[int]) -> list[int]:
    return xs + xs


@sk.func
def lengths(a: list[int], b: list[int]) -> int:
    return len(a) + len(b)


@sk.func
def made_doubled_and_counted(n: int) -> int:
    xs = made(n)
    return lengths(xs, doubled(xs))


def test_a_rerun_that_would_reuse_two_gone_outputs_names_the_upstream_one(tmp_path, monkeypatch):
    """Rerun from ``lengths``, which reads the outputs of ``made`` and of ``doubled`` (made's downstream), both gone
    from storage, the downstream's storage key sorting first: the refusal names ``made``, the first in plan order,
    whose rerun runs both again (rerunning from ``doubled`` would meet ``made``'s gone output next). Was: the run
    whose key sorts first, ``doubled``."""
    monkeypatch.delenv("SEMATIC_K8S_SERVER", raising=False)
    n = next(n for n in range(40, 400) if artifact_key(serialization.serialize(list(range(n)) * 2).id)
             < artifact_key(serialization.serialize(list(range(n))).id))
    storage = _storage("local", tmp_path, monkeypatch)

    resolver = functools.partial(OnStorage, storage, home=tmp_path)

    MADE.clear()
    first = made_doubled_and_counted(n)
    assert first.resolve(resolver()) == 3 * n
    runs = {r.func_name: r for r in resolver().store.runs_of_root(first.id)}
    for name in ("made", "doubled"):
        _delete(storage, artifact_key(runs[name].output_id))
    with pytest.raises(ReusedOutputGone) as refused:
        made_doubled_and_counted(n).resolve(resolver(rerun_from=runs["lengths"].id))
    assert refused.value.run_id == runs["made"].id, str(refused.value)
    assert list(refused.value.gone) == [runs["made"].id, runs["doubled"].id]
    assert made_doubled_and_counted(n).resolve(resolver(rerun_from=refused.value.run_id)) == 3 * n


@pytest.mark.parametrize("where", ["local", "s3"])
def test_a_rerun_that_would_reuse_an_output_gone_from_storage_is_refused_naming_the_run_to_rerun(
        tmp_path, monkeypatch, where):
    """A rerun reuses every run it does not reset with its output (DESIGN.md "rerun_from"): one whose output's bytes
    are gone from storage cannot be, so the rerun is refused before anything is recorded or run, naming that run (of
    the original resolution) and where its bytes were; rerunning from it runs it again and stores them. Was: the
    rerun was recorded and the run taking the output failed with ArtifactMissing ("rerun the run that produced it
    (`sematic-k8s rerun RUN_ID`)"), naming no run."""
    monkeypatch.delenv("SEMATIC_K8S_SERVER", raising=False)
    storage = _storage(where, tmp_path, monkeypatch)
    resolver = functools.partial(OnStorage, storage, home=tmp_path)
    first, runs, key = made_and_summed_once(resolver, 40)
    _delete(storage, key)

    rerun_refused_then_run(resolver, first, runs, 40, f"gone from storage ({str(storage.url).split('?')[0]}/{key})")
    assert storage.exists(key)  # stored again


@sk.func
def made_many(n: int) -> list[list[int]]:
    return [made(i) for i in range(n)]


def _through_503s(monkeypatch: Any) -> tuple[S3Storage, ThrottlingProxy]:
    """A fresh bucket of the real S3 API server, reached through a proxy that answers the HEADs it is told to pick
    503 SlowDown (none until then): (the storage, the proxy)."""
    endpoint, bucket = fresh_bucket(monkeypatch, "gonecheck")
    proxy = ThrottlingProxy(int(endpoint.rsplit(":", 1)[1]), lambda head: head.startswith(b"HEAD "), 0, status=503,
                            code="SlowDown")
    return S3Storage(bucket, "p", endpoint_url=proxy.url), proxy


def test_an_s3_outage_while_cache_hits_are_checked_is_ridden_out_said_once_and_never_taken_for_gone(
        tmp_path, monkeypatch, caplog):
    """S3 answering 503 SlowDown to the HEADs that check 20 stored cache hits' outputs (one wave): while it passes
    within the retry window the check rides it out and the hits are taken; past the window the resolution fails naming
    the storage, as any storage call of a resolution does; either way the outage is said once and never taken for
    "gone" (no func runs again). Was: each of the 16 concurrent HEADs rode it out on its own, saying so 16 times; and
    16 at once through an S3 client's pool of 10 connections had urllib3 say "Connection pool is full" (any check)."""
    monkeypatch.delenv("SEMATIC_K8S_SERVER", raising=False)
    storage, proxy = _through_503s(monkeypatch)

    resolver = functools.partial(OnStorage, storage, home=tmp_path, cache_namespace="ns")

    try:
        MADE.clear()
        first = made_many(20)
        assert first.resolve(resolver()) == [list(range(i)) for i in range(20)] and len(MADE) == 20
        heads = tuple(f"HEAD /{storage.bucket}/{storage.prefix}/{artifact_key(r.output_id)} ".encode()
                      for r in resolver().store.runs_of_root(first.id) if r.func_name == "made")
        proxy.throttle = lambda asked: asked.startswith(heads)  # the check's HEADs alone (a put's HEADs pass)
        caplog.set_level("WARNING", logger="sematic_k8s")
        proxy.left = 8  # more than botocore's own 5 tries of one HEAD: the retry window's retries take the rest
        assert made_many(20).resolve(resolver()) == [list(range(i)) for i in range(20)] and len(MADE) == 20
        assert proxy.throttled == 8 and caplog.text.count("; retrying for up to") <= 1, caplog.text
        assert "gone from storage" not in caplog.text and "Connection pool is full" not in caplog.text

        caplog.clear()
        monkeypatch.setenv("SEMATIC_K8S_RETRY_WINDOW", "2")
        proxy.left = 10**9  # for good: past the window
        third = made_many(20)
        with pytest.raises(S3StorageError) as failed:
            third.resolve(resolver())
        where = str(storage.url).split("?")[0]
        assert "\n" not in str(failed.value) and str(failed.value).startswith(f"S3 head of {where}/artifacts/")
        assert "503" in str(failed.value) and len(MADE) == 20  # nothing ran again
        error = resolver().store.get_resolution(third.id).error  # as any storage failure's: and what to do
        assert error.startswith("infrastructure failure, not the pipeline's: S3StorageError: S3 head of ")
        assert error.endswith(f"(continue the resolution once it is back: rerun_from='{third.id}', "
                              f"rerun_mode='continue' (or `sematic-k8s rerun {third.id} --mode continue`, or its "
                              "dashboard page))"), error
        assert caplog.text.count("; retrying for up to 2 s") == 1, caplog.text
        assert "gone from storage" not in caplog.text
    finally:
        proxy.close()



def test_an_s3_outage_while_a_rerun_checks_its_reused_outputs_is_ridden_out_and_never_refuses_it(
        tmp_path, monkeypatch, caplog):
    """S3 answering 503 SlowDown to the HEADs that check the 19 outputs a rerun reuses (it reruns one of 20 ``made``
    runs, their composition awaits the others): within the retry window the rerun plans and resolves; past it, it
    fails naming the storage, said once, and is never refused as reusing gone outputs (``ReusedOutputGone``): one line
    saying to run the rerun again once storage is back, nothing of the rerun recorded (was: S3's bare words, "S3 head
    of s3://... failed: 503: ...", saying nothing of what to do)."""
    monkeypatch.delenv("SEMATIC_K8S_SERVER", raising=False)
    storage, proxy = _through_503s(monkeypatch)

    resolver = functools.partial(OnStorage, storage, home=tmp_path)

    try:
        MADE.clear()
        first = made_many(20)
        assert first.resolve(resolver()) == [list(range(i)) for i in range(20)] and len(MADE) == 20
        runs = [r for r in resolver().store.runs_of_root(first.id) if r.func_name == "made"]
        heads = tuple(f"HEAD /{storage.bucket}/{storage.prefix}/{artifact_key(r.output_id)} ".encode() for r in runs)
        proxy.throttle = lambda asked: asked.startswith(heads)  # the check's HEADs alone (a put's HEADs pass)
        target = next(r for r in runs if r.inputs)
        caplog.set_level("WARNING", logger="sematic_k8s")
        proxy.left = 8  # more than botocore's own 5 tries of one HEAD: the retry window's retries take the rest
        assert made_many(20).resolve(resolver(rerun_from=target.id)) == [list(range(i)) for i in range(20)]
        assert proxy.throttled == 8 and len(MADE) == 21  # the target alone ran again

        caplog.clear()
        monkeypatch.setenv("SEMATIC_K8S_RETRY_WINDOW", "2")
        proxy.left = 10**9  # for good: past the window
        recorded = {r.id for r in resolver().store.list_resolutions()}
        with pytest.raises(RerunUnplanned) as failed:
            made_many(20).resolve(resolver(rerun_from=target.id))
        _said_unplanned(failed.value, target.id, storage, "S3 head of")
        assert caplog.text.count("; retrying for up to 2 s") == 1, caplog.text
        assert len(MADE) == 21 and {r.id for r in resolver().store.list_resolutions()} == recorded
    finally:
        proxy.close()


def _said_unplanned(e: RerunUnplanned, rerun_from: str, storage: S3Storage, call: str) -> None:
    """``e`` in one line: the rerun of ``rerun_from`` unplanned, its storage, S3's words for ``call``, what to do."""
    where = str(storage.url).split("?")[0]
    said = str(e)
    assert "\n" not in said and isinstance(e.failure, S3StorageError), said
    assert said.startswith(f"rerun_from {rerun_from}: the rerun could not be planned: its storage {where} failed "
                           f"({call} {where}/artifacts/"), said
    assert said.endswith("), so nothing of the rerun was recorded: run the rerun again once storage is back"), said


def test_an_s3_outage_while_a_rerun_reads_its_roots_recorded_inputs_is_said_as_the_rerun_unplanned(
        tmp_path, monkeypatch):
    """A rerun with a callable cache namespace reads its root's recorded inputs (the namespace is computed from the
    root as recorded) before anything of it is recorded: S3 answering that GET 503 past the retry window ends it as
    :class:`RerunUnplanned` (was: S3's bare words), nothing of the rerun recorded, nothing run."""
    monkeypatch.delenv("SEMATIC_K8S_SERVER", raising=False)
    storage, proxy = _through_503s(monkeypatch)

    def resolver(**options: Any) -> sk.LocalResolver:
        return OnStorage(storage, home=tmp_path, cache_namespace=lambda root: f"ns{root.kwargs['n']}", **options)

    try:
        MADE.clear()
        first = made_many(3)
        assert first.resolve(resolver()) == [[], [0], [0, 1]] and len(MADE) == 3
        [root] = [r for r in resolver().store.runs_of_root(first.id) if r.parent_id is None]
        proxy.throttle = lambda asked: asked.startswith(
            f"GET /{storage.bucket}/{storage.prefix}/{artifact_key(root.inputs['n'])} ".encode())
        monkeypatch.setenv("SEMATIC_K8S_RETRY_WINDOW", "2")
        proxy.left = 10**9
        recorded = {r.id for r in resolver().store.list_resolutions()}
        with pytest.raises(RerunUnplanned) as failed:
            made_many(3).resolve(resolver(rerun_from=root.id))
        _said_unplanned(failed.value, root.id, storage, "S3 get of")
        assert proxy.throttled > 0 and len(MADE) == 3
        assert {r.id for r in resolver().store.list_resolutions()} == recorded
    finally:
        proxy.close()


GATE = threading.Event()


@sk.func(cache=True)
def kept(n: int) -> int:
    return n


@sk.func
def failing() -> int:
    GATE.wait(60)
    raise ValueError("the pipeline's own failure")


@sk.func
def gated(n: int) -> int:
    GATE.wait(60)
    return n


@sk.func
def first_made(n: int) -> list[list[int]]:
    return [made(n), made(kept(n + 1))]


@sk.func
def made_after_a_failure(n: int) -> list[Any]:
    return [failing(), made(kept(n + 1)), made(gated(n))]


def test_a_resolution_that_failed_asks_no_storage_of_the_cache_hits_that_become_ready_after(tmp_path, monkeypatch):
    """A run fails while a cached run with a stored hit becomes ready (their outcomes taken together, as a driver takes
    its workers'), S3 answering that hit's HEAD 503 past the retry window: the resolution has failed and nothing more
    starts, so no cache look-up is made nor its output asked of the storage, and the resolution ends with the run's
    own failure. Was: looked up (its hit not resolved) and its HEAD ridden out for the retry window, then the
    resolution ended as an infrastructure failure of storage, the func's failure not said. (The two outcomes are taken
    together: both runs are let go while the loop rides out another hit's HEAD, 503 a few times.)"""
    monkeypatch.delenv("SEMATIC_K8S_SERVER", raising=False)
    storage, proxy = _through_503s(monkeypatch)

    def resolver() -> sk.LocalResolver:
        return OnStorage(storage, home=tmp_path, cache_namespace="ns", max_parallelism=2)

    try:
        MADE.clear()
        first = first_made(30)
        assert first.resolve(resolver()) == [list(range(30)), list(range(31))] and MADE == [30, 31]
        outputs = {r.inputs["n"]: r.output_id for r in resolver().store.runs_of_root(first.id) if r.func_name == "made"}
        assert len(outputs) == 2
        heads = {n: f"HEAD /{storage.bucket}/{storage.prefix}/{artifact_key(out)} ".encode()
                 for n, out in outputs.items()}
        [after_gate] = [heads[n] for n in heads if serialization.serialize(30).id == n]
        [while_failing] = [head for head in heads.values() if head != after_gate]
        ridden = [5 + 3]  # the HEAD the loop rides out while both runs end: botocore's 5 tries, 3 more of the window's

        def picks(asked: bytes) -> bool:
            if asked.startswith(after_gate):
                return True  # for good
            if asked.startswith(while_failing) and ridden[0] > 0:
                ridden[0] -= 1
                GATE.set()  # both gated runs end now, while the loop rides this out
                return True
            return False

        proxy.throttle = picks
        proxy.left = 10**9
        monkeypatch.setenv("SEMATIC_K8S_RETRY_WINDOW", "3")
        GATE.clear()
        with pytest.raises(ResolutionFailed) as failed:
            made_after_a_failure(30).resolve(resolver())
        assert "the pipeline's own failure" in str(failed.value), str(failed.value)
        assert ridden == [0] and proxy.throttled == 8 and MADE == [30, 31]  # the other HEAD never asked
    finally:
        GATE.set()
        proxy.close()


def test_a_rerun_whose_roots_stored_input_is_a_link_says_to_remove_it_not_to_wait_for_storage(tmp_path, monkeypatch):
    """A local storage refuses a key that is a symbolic link (:class:`StorageLinkRefused`): a rerun with a callable
    cache namespace, whose root's recorded input is stored as a link, is unplanned naming the link and saying to remove
    it, then run the rerun again. Was: "run the rerun again once storage is back", untrue (no wait removes a link)."""
    monkeypatch.delenv("SEMATIC_K8S_SERVER", raising=False)
    storage = _storage("local", tmp_path, monkeypatch)
    assert isinstance(storage, LocalStorage)

    def resolver(**options: Any) -> sk.LocalResolver:
        return OnStorage(storage, home=tmp_path, cache_namespace=lambda root: f"ns{root.kwargs['n']}", **options)

    MADE.clear()
    first = made_many(3)
    assert first.resolve(resolver()) == [[], [0], [0, 1]]
    [root] = [r for r in resolver().store.runs_of_root(first.id) if r.parent_id is None]
    key = artifact_key(root.inputs["n"])
    stored = storage.root / key
    moved = tmp_path / "elsewhere"
    stored.rename(moved)
    stored.symlink_to(moved)
    recorded = {r.id for r in resolver().store.list_resolutions()}
    with pytest.raises(RerunUnplanned) as failed:
        made_many(3).resolve(resolver(rerun_from=root.id))
    said = str(failed.value)
    assert f"(storage key {key} is a symbolic link: a local storage reads none; remove it from the storage's " \
           "directory), so nothing of the rerun was recorded: remove it from the storage's directory, then run the " \
           "rerun again" in said, said
    assert "once storage is back" not in said and "\n" not in said
    assert {r.id for r in resolver().store.list_resolutions()} == recorded and len(MADE) == 3


LOCKED_OUT: list[Path] = []


@sk.func
def locking_out(n: int) -> int:
    """Takes its storage's ``artifacts`` away from its process (chmod 000) before its output is stored."""
    LOCKED_OUT[0].chmod(0)
    return n


@sk.func
def locked_out(n: int) -> int:
    return summed(made(locking_out(n)))


def test_a_storage_directory_a_resolution_may_not_write_is_recorded_with_its_fix_not_a_wait(tmp_path, monkeypatch):
    """EACCES, for real (the resolution run as a user other than root, its storage's ``artifacts`` chmod 000 by a run
    of it): the resolution's recorded error says to make the storage readable and writable, then continue it. Was:
    "continue the resolution once it is back", as for an outage (no wait changes a directory's mode)."""
    monkeypatch.delenv("SEMATIC_K8S_SERVER", raising=False)
    home = Path(tempfile.mkdtemp())
    artifacts = home / "storage" / "artifacts"
    try:
        home.chmod(0o777)
        with unprivileged():
            storage = LocalStorage(home / "storage")
            resolver = OnStorage(storage, home=home / "home")
            LOCKED_OUT[:] = [artifacts]
            failed = locked_out(4)
            with pytest.raises(StorageError, match=r"Permission denied \(EACCES\)"):
                failed.resolve(resolver)
            error = resolver.store.get_resolution(failed.id).error
            uid = os.geteuid()
        assert error.startswith("infrastructure failure, not the pipeline's: StorageError: local storage could not "), \
            error
        assert error.endswith(f"; then try again (make {home}/storage and everything under it readable and writable "
                              f"by this process (uid {uid}), each of its "
                              f"directories a directory, its disk healthy, then continue the resolution: "
                              f"{continue_how(failed.id)})"), error
        assert "once it is back" not in error
    finally:
        if artifacts.exists():
            artifacts.chmod(0o755)
        shutil.rmtree(home)

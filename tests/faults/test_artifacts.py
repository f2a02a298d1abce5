"""Bad bytes (DESIGN.md "Faults"): an artifact corrupted on disk or in S3 is detected on read, rewritten when
its value is computed again, and never served as if it were fine."""

from __future__ import annotations

from pathlib import Path

import pytest

import fault_pipelines as fp
import sematic_k8s as sk
from outages import private_s3
from sematic_k8s import serialization
from sematic_k8s.storage.base import artifact_key, artifact_loader, put_artifact
from sematic_k8s.storage.s3 import S3Storage
from sematic_k8s.storage.urls import storage_from_url
from serving import serve


def corrupt_file(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte: same size
    path.write_bytes(bytes(data))


def test_a_corrupt_local_artifact_is_detected_and_rewritten_when_computed_again(tmp_path, monkeypatch):
    monkeypatch.delenv("SEMATIC_K8S_SERVER", raising=False)
    f = fp.pipeline(20)
    assert f.resolve(sk.LocalResolver(home=tmp_path)) == 23
    store = sk.LocalResolver(home=tmp_path).store
    output = store.get_artifact(store.get_run(f.id).output_id)
    path = tmp_path / "storage" / artifact_key(output.id)
    corrupt_file(path)
    loader = artifact_loader(sk.LocalResolver(home=tmp_path).storage)
    with pytest.raises(ValueError, match=f"artifact {output.id} is corrupt"):
        _ = serialization.Value(output.id, output.format, output.type_name, load=loader).value

    assert fp.pipeline(20).resolve(sk.LocalResolver(home=tmp_path)) == 23  # computes 23 again: rewrites it
    assert serialization.Value(output.id, output.format, output.type_name, load=loader).value == 23


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


def test_the_server_never_serves_corrupt_bytes(tmp_path, monkeypatch):
    monkeypatch.delenv("SEMATIC_K8S_SERVER", raising=False)
    with serve(tmp_path) as s, s.client() as c:
        f = fp.pipeline(7)
        assert f.resolve(sk.LocalResolver(home=tmp_path, server=s.url, api_key=s.key)) == 10
        artifact_id = s.store.get_run(f.id).output_id
        assert c.get(f"/api/v1/artifacts/{artifact_id}/data").status_code == 200
        corrupt_file(tmp_path / "storage" / artifact_key(artifact_id))
        r = c.get(f"/api/v1/artifacts/{artifact_id}/data")
        assert r.status_code == 500
        assert r.json()["detail"].startswith(f"artifact {artifact_id} is corrupt")
        assert "rerun the run that produced it" in r.json()["detail"]

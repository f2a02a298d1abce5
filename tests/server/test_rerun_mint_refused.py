"""A rerun's driver token the database refuses to mint (a real PostgreSQL, its ``resolution_tokens`` table locked by
another session, as ``CREATE INDEX`` or an operator's ``LOCK TABLE`` does, past the server's bound on lock waits): the
request is answered 503 in the lock's words (its client sends it again: a new claim), and its claim is recorded failed
at once, in true words naming the mint's failure and what to do; nothing launched, the claim beaten no more. Was: the
claim left held and silent, failed by the sweeper seconds later as "the server that was launching this rerun stopped
...: re-run it", though the server lived."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import psycopg
import pytest

from sematic_k8s.specs import DriverSpec
from sematic_k8s_server.config import RerunConfig, ServerConfig
from serving import record_resolution, serve

REPO = "127.0.0.1:5000/pipelines"
IMAGE = f"{REPO}@sha256:" + "ab" * 32
STORAGE = "s3://sk-mint/artifacts"


def test_a_rerun_whose_token_the_database_refuses_is_recorded_failed_at_once_in_true_words(
        tmp_path: Path, postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEMATIC_K8S_DB_LOCK_TIMEOUT", "1")  # the server's bound on lock waits (in this process)
    launched: list[DriverSpec] = []

    def launch(spec: DriverSpec, env: Mapping[str, str]) -> None:
        launched.append(spec)

    config = ServerConfig(reruns=RerunConfig(image_repositories=(REPO,), storage_url=STORAGE))
    with serve(tmp_path, postgres_url, config=config, rerun_launcher=launch) as s, \
            psycopg.connect(postgres_url.replace("postgresql+psycopg://", "postgresql://")) as locker:
        root = record_resolution(s.url, s.key, kind="cloud", state="failed", image=IMAGE, storage_url=STORAGE)
        locker.execute("LOCK TABLE resolution_tokens IN SHARE MODE")  # reads go on; the token's insert waits
        with s.client() as c:
            r = c.post(f"/api/v1/resolutions/{root}/rerun", json={})
        locker.rollback()
        assert r.status_code == 503 and r.headers["Retry-After"] == "5", r.text
        assert "resolution_tokens is locked by another session" in r.json()["detail"], r.text
        [claim] = [res for res in s.store.list_resolutions() if res.rerun_of == root]
        assert claim.state == "failed", (claim.state, claim.error)  # at once: no sweep needed
        assert claim.error == (
            "the server could not mint its driver's token, so no driver was started: the metadata database's table "
            "resolution_tokens is locked by another session (a migration or maintenance?) for longer than 1 s: re-run "
            "it once that has passed"), claim.error
        assert launched == [] and claim.id not in s.server.claim_beats._held  # nothing launched, beaten no more
        with s.client() as c:  # the lock let go: the same rerun asked again is a new claim, launched
            again = c.post(f"/api/v1/resolutions/{root}/rerun", json={})
        assert again.status_code == 202, again.text
        assert [spec.root_id for spec in launched] == [again.json()["resolution_id"]]

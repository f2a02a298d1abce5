"""A resolution's overview carries, for each run node, what the rule of whether a run started reads (the dashboard's
``started.js``, ``RunRecord.never_started``): its ``notes.waiting``, and whether its error names WorkerNeverStarted
(told by the database without reading the error), on SQLite and PostgreSQL. Caused for real: a worker image missing
from the registry on the Kubernetes cluster model, recorded through the SQL store."""

from __future__ import annotations

from pathlib import Path

import pytest

import sematic_k8s as sk
from sematic_k8s.errors import ResolutionFailed
from sematic_k8s.store import sql_store

kubernetes = pytest.importorskip("kubernetes")

from kube_model import Cluster, NodeSpec, Timing  # noqa: E402
from sematic_k8s_server import overview as ov  # noqa: E402
from sematic_k8s_server import queries  # noqa: E402

MISSING = "127.0.0.1:5000/gone@sha256:" + "ab" * 32


@sk.func(inline=False)
def fetched(n: int) -> int:
    return n


@sk.func
def fetching(n: int) -> int:
    return fetched(n)


def test_a_run_whose_image_was_not_pulled_is_a_node_that_never_started(db_url: str, tmp_path: Path) -> None:
    from sematic_k8s.executors.inline import InlineExecutor
    from sematic_k8s.executors.inline_or_remote import InlineOrRemoteExecutor
    from sematic_k8s.executors.kubernetes import KubernetesExecutor
    from sematic_k8s.resolvers.loop import ResolutionLoop
    from sematic_k8s.specs import ResolutionSettings
    from sematic_k8s.storage.local import LocalStorage
    from sematic_k8s.storage.urls import storage_url

    store = sql_store(db_url)
    storage = LocalStorage(tmp_path / "storage")
    f = fetching(3)
    with Cluster([NodeSpec("node-1", runtime="sim")], timing=Timing()) as cluster:
        cluster.namespace("runs")
        cluster.sim_images.missing.add(MISSING)
        api = cluster.client()
        ex = KubernetesExecutor(storage, storage_url(storage), MISSING, namespace="runs", api_client=api, env={},
                                owner=False, pull_grace=0.5)
        loop = ResolutionLoop(store, storage, InlineOrRemoteExecutor(InlineExecutor(1), ex),
                              ResolutionSettings(root_id=f.id), kind="cloud")
        try:
            with pytest.raises(ResolutionFailed) as err:
                loop.run(f)
        finally:
            api.close()
    rows = queries.overview_rows(store, f.id)
    nodes = {n["id"]: n for n in ov.overview(rows, f.id)["nodes"]}
    failed = nodes[err.value.run_id]
    assert failed["started_at"] is not None  # handed to its executor: it has one
    assert failed["error"] == {"mro": ["WorkerNeverStarted"]}, failed  # was: nothing the rule could read
    assert "error" not in nodes[f.id] and "notes" not in nodes[f.id]  # the root's error is its child's, not its own
    assert [r.never_started() for r in rows if r.id == err.value.run_id] == [True]
    assert store.get_run(err.value.run_id).never_started()  # the same rule on the whole record

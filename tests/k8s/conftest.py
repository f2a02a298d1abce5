"""Fixtures shared by the tests on the cluster model. ``cluster``: one simulated node whose worker containers run the
worker (:func:`model_workers.behave`), with the namespace the test module names (its ``NS``); a module that needs
another cluster (Docker nodes, Pod Security, more pods) defines its own ``cluster``, which ``api`` then uses."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from kubernetes import client

from kube_model import Cluster, NodeSpec, Timing
from model_workers import behave


@pytest.fixture
def cluster(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    """One simulated node, worker containers running the worker; the module's namespace ``NS`` made. No error of the
    model's own at the end."""
    with Cluster([NodeSpec("node-1", runtime="sim")], behaviour=behave(), timing=Timing()) as c:
        c.namespace(request.module.NS)
        yield c
        assert not c.errors, c.errors


@pytest.fixture
def api(cluster: Cluster) -> Iterator[client.ApiClient]:
    """The official client, as the cluster's admin, on the module's ``cluster``."""
    a = cluster.client()
    yield a
    a.close()

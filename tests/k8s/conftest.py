"""Fixtures shared by the tests on the cluster model: each test module defines its own ``cluster``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from kubernetes import client

from kube_model import Cluster


@pytest.fixture
def api(cluster: Cluster) -> Iterator[client.ApiClient]:
    """The official client, as the cluster's admin, on the module's ``cluster``."""
    a = cluster.client()
    yield a
    a.close()

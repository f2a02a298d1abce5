"""The CloudResolver's side of a rerun's callable cache namespace: the root as recorded on the server."""

from __future__ import annotations

from pathlib import Path

import sematic_k8s as sk
from sematic_k8s.storage.local import LocalStorage
from sematic_k8s.store.http import HttpStore
from serving import serve

try:
    import server_pipeline as sp
except ImportError:  # pragma: no cover
    from tests import server_pipeline as sp


def test_rerun_namespace_root_is_the_recorded_root(tmp_path: Path) -> None:
    with serve(tmp_path) as served:
        first = sp.add(4, 5)
        first.resolve(sk.LocalResolver(home=tmp_path, server=served.url, api_key=served.key))
        seen = []
        resolver = sk.CloudResolver(server=served.url, api_key=served.key, storage=f"file://{tmp_path / 'storage'}",
                                    registry="127.0.0.1:5000/unused", rerun_from=first.id,
                                    cache_namespace=lambda root: seen.append(root) or "ns")
        placeholder = sp.add(0, 0)
        store = HttpStore(served.url, served.key)
        root = resolver._namespace_root(store, LocalStorage(tmp_path / "storage"), placeholder, store.get_run(first.id))
        assert (root.func, root.kwargs, root.id) == (sp.add, {"a": 4, "b": 5}, placeholder.id)
        plain = sk.CloudResolver(server=served.url, api_key=served.key, storage=f"file://{tmp_path / 'storage'}",
                                 registry="127.0.0.1:5000/unused", cache_namespace=lambda root: "ns")
        assert plain._namespace_root(None, None, placeholder, None) is placeholder  # not a rerun: the Future itself

"""The secret a database keeps for the drivers that write it directly (``kept_secrets``: their workers' outcome keys
derive from it, sematic_k8s/store/kept.py) is served by no route of a server over that database: whoever could read
it, an API key's holder among them, could sign any attempt's outcome for those drivers."""

from __future__ import annotations

import re
from pathlib import Path

from sematic_k8s.executors.outcome_signing import KEPT_SECRET
from sematic_k8s.storage.base import log_key
from sematic_k8s.storage.local import LocalStorage
from serving import app_routes, record_resolution, serve


def test_no_route_answers_the_secret_its_database_keeps_for_drivers(tmp_path: Path) -> None:
    """Walks the app's GET routes (a route added later too; not the live events' endless stream) with an admin key,
    over a database whose drivers made their secret and a resolution recorded: no answer holds it (its hex, or its
    bytes)."""
    with serve(tmp_path) as served, served.client(served.admin_key) as c:
        secret = served.store.kept_secret(KEPT_SECRET)  # as a driver of this database without a server makes it
        assert served.store.kept_secret(KEPT_SECRET) == secret and len(secret) == 32  # made once, then read
        storage = LocalStorage(served.home / "storage")
        root = record_resolution(served.url, served.key, kind="cloud", state="running", inputs={"x": ("json", b"1")},
                                 storage=storage)
        storage.put(log_key(root), b"hello\n")
        ids = {"artifact_id": "b" * 64, "key_id": "c" * 32, "cache_key": "d" * 64}  # else: the resolution's id
        walked = []
        for template, route in app_routes(served.app.routes):
            if "GET" not in route.methods or template.endswith("/events"):  # events: an endless stream of states
                continue
            path = re.sub(r"\{(\w+)(:\w+)?\}", lambda m: ids.get(m.group(1), root), template)
            r = c.get(path)
            assert secret.hex() not in r.text and secret.hex().upper() not in r.text, template
            assert secret not in r.content, template
            walked.append(template)
    assert "/api/v1/resolutions/{resolution_id}" in walked and len(walked) >= 10, walked

"""An attacker's view of the trust boundary, over real HTTP against a real uvicorn server: what a revoked key, a
driver's token or a client-written record can still reach once the checks in ``test_security.py`` and
``test_hostile_records.py`` have passed. Each test failed before the fix it names."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from serving import Served, record_resolution, serve, wait_for


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    with serve(tmp_path) as s:
        yield s


# -- revocation reaches requests already open ---------------------------------------------------------------

def test_a_revoked_key_gets_no_more_live_events_on_its_open_stream(served: Served) -> None:
    """A key revoked while its ``/events`` stream is open (the dashboard keeps one open for hours): the stream
    sends no event recorded after the revocation and ends; the next request on the same keep-alive connection is
    refused. Was: the stream went on sending every run's and resolution's state change for as long as it stayed
    open."""
    with served.client(key=served.admin_key) as admin:
        alice = admin.post("/api/v1/api-keys", json={"name": "alice"}).json()
    lines: list[str] = []
    ended = threading.Event()
    with httpx.Client(base_url=served.url, headers={"X-API-Key": alice["key"]}, timeout=60) as c:
        def follow() -> None:
            try:
                with c.stream("GET", "/api/v1/events") as r:
                    assert r.status_code == 200
                    for line in r.iter_lines():
                        lines.append(line)
            finally:
                ended.set()

        thread = threading.Thread(target=follow, daemon=True)
        thread.start()
        wait_for(lambda: ": connected" in lines, 10, what="the stream to open")
        before = record_resolution(served.url, served.key, kind="cloud", state="running")
        wait_for(lambda: any(before in line for line in lines), 10, what="an event before the revocation")
        with served.client(key=served.admin_key) as admin:
            assert admin.post(f"/api/v1/api-keys/{alice['id']}/revoke", json={}).json() == {"revoked": 1}
        after = record_resolution(served.url, served.key, kind="cloud", state="running")
        assert ended.wait(20), "the revoked key's stream stayed open"
        assert not any(after in line for line in lines), lines
        assert any("revoked" in line for line in lines), lines  # it says why it ends
        r = c.get(f"/api/v1/resolutions/{before}")  # the same client: its keep-alive connection
        assert r.status_code == 401 and "revoked" in r.json()["detail"]
        thread.join(5)

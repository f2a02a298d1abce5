"""People's changes of a resolution's tags and note are made to the labels as they were read (``labels_version``):
a change held up past its client's timeout (a proxy on loopback holding it back), retried, then delivered after a
newer change of the same labels landed, changes nothing; and no batch (a driver's write) changes them beside their
version (docs/FAULTS.md, "Several writers at once")."""

from __future__ import annotations

import json
import uuid

import pytest

from outages import HoldingProxy
from sematic_k8s.errors import LabelsChanged, ServerError
from sematic_k8s.store import sql_store
from sematic_k8s.store.http import HttpStore
from sematic_k8s.store.records import Batch, ResolutionRecord, utcnow

CHANGES = {  # the change held back, and the newer one made after its retry landed: (what, held body mark, newer)
    "tag": ({"add": ["nightly"]}, b'"add":["nightly"]', {"remove": ["nightly"]}),
    "note": ({"note": "second", "set_note": True}, b'"note":"second"', {"note": "first", "set_note": True}),
}


@pytest.mark.parametrize("kind", sorted(CHANGES))
@pytest.mark.parametrize("db", ["sqlite", "postgresql"])
def test_a_label_change_whose_first_attempt_lands_last_undoes_nothing(tmp_path, db_server, db, kind) -> None:
    """Alice adds the tag ``nightly`` (or edits the note ``first`` to ``second``) through a proxy that holds the first
    attempt of her request until her client's read times out (2 s); its retry lands. Bob, on a client of his own,
    then removes the tag (edits the note back to ``first``): the labels are again what Alice's change was made to.
    Only then does the first attempt of Alice's change reach the server: refused (409, the labels as they now are),
    and Bob's change stays (before: the tag came back, and the note went back to ``second``). The same change sent
    again at once by Alice, knowing Bob's, is made."""
    change, mark, newer = CHANGES[kind]
    server = db_server
    proxy = HoldingProxy(server.port, hold=lambda req: req.startswith(b"POST /api/v1/resolutions/") and mark in req)
    alice = HttpStore(proxy.url, timeout=2.0, retry_window=60)
    bob = HttpStore(server.url)
    try:
        root = uuid.uuid4().hex
        seed = Batch()
        seed.add_resolution(ResolutionRecord(id=root, root_func_path="m:p", state="resolved", created_at=utcnow()))
        bob.write(seed)
        bob.label_resolution(root, note="first", set_note=True)

        read = alice.get_resolution(root)
        done = alice.label_resolution(root, labels_version=read.labels_version, **change)  # held back, retried
        assert proxy.held is not None and mark in proxy.held
        assert (done.tags, done.note, done.labels_version) == ((["nightly"], "first", 2) if kind == "tag"
                                                               else ([], "second", 2))
        seen = bob.get_resolution(root)
        bob.label_resolution(root, labels_version=seen.labels_version, **newer)

        status, body = proxy.release()  # the first attempt of Alice's change arrives last
        assert status == 409, body
        assert "changed since they were read (tags now: none; note now: 'first'): nothing was changed" in \
            json.loads(body)["detail"]
        now = bob.get_resolution(root)
        assert (now.tags, now.note, now.labels_version) == ([], "first", 3)
        with pytest.raises(LabelsChanged):  # Alice's client, still on what she read, is refused the same way
            alice.label_resolution(root, labels_version=read.labels_version, **change)
        again = alice.label_resolution(root, labels_version=now.labels_version, **change)
        assert (again.tags, again.note, again.labels_version) == ((["nightly"], "first", 4) if kind == "tag"
                                                                  else ([], "second", 4))
    finally:
        alice.close()
        bob.close()
        proxy.close()


@pytest.mark.parametrize("db", ["sqlite", "postgresql"])
def test_a_drivers_batch_never_sets_the_labels(tmp_path, db_server, db) -> None:
    """A batch (a driver's write, fenced and numbered as the loop's are) that sets a resolution's tags or note is
    refused whole over HTTP (422, saying where labels are changed) and by the store itself: labels are changed only
    with their version, so no writer overwrites a person's change unseen. The labels and the rest stay as they were."""
    server = db_server
    store = HttpStore(server.url)
    try:
        root = uuid.uuid4().hex
        seed = Batch()
        seed.add_resolution(ResolutionRecord(id=root, root_func_path="m:p", state="running", created_at=utcnow(),
                                             heartbeat_at=utcnow()))
        store.write(seed)
        fence = {root: store.take_over(root)}
        store.label_resolution(root, add=["nightly"], note="people's", set_note=True, labels_version=0)
        for fields in ({"tags": []}, {"note": "the driver's"}, {"tags": ["x"], "note": None}):
            with pytest.raises(ServerError) as refused:
                store.write(Batch(resolution_updates={root: {"image": "img", **fields}}, fence=fence))
            assert refused.value.status == 422
            assert f"of resolution {root}: a resolution's tags and note are people's, changed with its labels (POST " \
                   "/api/v1/resolutions/<id>/labels" in str(refused.value)
        now = store.get_resolution(root)
        assert (now.tags, now.note, now.labels_version, now.image) == (["nightly"], "people's", 1, None)
    finally:
        store.close()
    embedded = sql_store(f"sqlite:///{tmp_path / 'embedded.sqlite3'}")
    with pytest.raises(ValueError, match="sets the note of resolution r1: a resolution's tags and note are people's"):
        embedded.write(Batch(resolution_updates={"r1": {"note": "x"}}))

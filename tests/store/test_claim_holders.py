"""A rerun's claim held by the server process launching its driver (``held_by``): beaten by it
(``SqlStore.beat_claims``), it stays ``created``; its beats stopped, the read that finds it silent for
``liveness.holder_silence`` marks it failed in words saying so; let go once its driver started
(``let_go_of_claim``), it waits for its driver's grace instead. On SQLite and PostgreSQL, on the database's clock."""

from __future__ import annotations

import time

import pytest

from sematic_k8s.store import liveness
from sematic_k8s.store.records import CLAIMED, Batch, utcnow
from sematic_k8s.store.sql import SqlStore

HOLDER, OTHER = "host:1:aaaa", "host:2:bbbb"


@pytest.fixture(autouse=True)
def fast_beats(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEMATIC_K8S_HEARTBEAT_INTERVAL", "0.25")  # a holder gone after 1 s


def _claims(store: SqlStore, *ids: str) -> None:
    now = utcnow()
    store.write(Batch(new_resolutions=[{"id": i, "root_func_path": "m:p", "state": CLAIMED, "created_at": now,
                                        "heartbeat_at": now, "held_by": HOLDER} for i in ids]))


def test_a_held_claim_lives_while_its_holder_beats_and_is_failed_once_it_stops(db_url: str) -> None:
    """``beaten`` is beaten past the holder's silence and stays ``created``; ``dropped`` (its holder's beats stopped)
    is failed by the read that finds it, "the server that was launching this rerun stopped (last heard ...): re-run
    it", with no task copies to delete; a beat of another holder, or after the end, changes nothing."""
    store = SqlStore(db_url, stale_after=60)
    try:
        assert liveness.holder_silence(60) == 1.0
        _claims(store, "beaten", "dropped")
        deadline = time.monotonic() + 3  # three holder silences
        while time.monotonic() < deadline:
            assert store.beat_claims(HOLDER, ["beaten"]) == ["beaten"]
            assert store.beat_claims(OTHER, ["dropped"]) == []  # not its claim: not beaten
            time.sleep(0.25)
        assert store.get_resolution("beaten").state == CLAIMED
        dropped = store.get_resolution("dropped")
        assert dropped.state == "failed", dropped
        assert dropped.error.startswith("the server that was launching this rerun stopped (last heard ")
        assert dropped.error.endswith(" UTC): re-run it"), dropped.error
        assert store.tasks_left() == []
        assert store.beat_claims(HOLDER, ["dropped"]) == []  # the holder back: its beat revives nothing
        assert store.get_resolution("dropped").error == dropped.error
    finally:
        store.close()


def test_a_claim_let_go_once_its_driver_started_waits_for_its_drivers_grace(db_url: str) -> None:
    """Let go by its holder (its driver started), a claim no one beats stays ``created`` past the holder's silence
    (its driver's grace, the heartbeat timeout plus ``CLAIM_GRACE``, counts from then); another holder cannot let
    it go."""
    store = SqlStore(db_url, stale_after=60)
    try:
        _claims(store, "launched")
        assert not store.let_go_of_claim("launched", OTHER)
        assert store.let_go_of_claim("launched", HOLDER)
        time.sleep(2)  # twice the holder's silence
        assert store.get_resolution("launched").state == CLAIMED
        assert store.beat_claims(HOLDER, ["launched"]) == []  # held no more
    finally:
        store.close()

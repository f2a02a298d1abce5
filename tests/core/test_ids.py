"""Run ids: random version-4 UUIDs' 32 hex characters, never handed out twice, across threads and forks."""

from __future__ import annotations

import os
import re
import uuid

from racing import at_once
from sematic_k8s.future import new_id, new_ids

HEX32 = re.compile(r"[0-9a-f]{32}")


def test_ids_are_version_4_uuids() -> None:
    for run_id in [new_id() for _ in range(600)] + list(new_ids(10)):
        assert HEX32.fullmatch(run_id)
        u = uuid.UUID(run_id)
        assert u.version == 4 and u.variant == uuid.RFC_4122


def test_threads_never_get_the_same_id() -> None:
    got = at_once([lambda: [new_id() for _ in range(2000)]] * 8)
    ids = [i for g in got for i in g]
    assert len(set(ids)) == len(ids) == 16000


def test_a_forked_child_does_not_hand_out_its_parents_ids() -> None:
    """Ids are drawn ahead of use: a child forked with some drawn must draw its own, not the ones the parent will
    hand out next."""
    new_id()  # some drawn ahead now
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next ids, to the parent
        try:
            os.write(write, " ".join(new_id() for _ in range(5)).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as f:
        child = f.read().split()
    os.waitpid(pid, 0)
    parent = [new_id() for _ in range(5)]
    assert len(child) == 5 and not set(child) & set(parent)

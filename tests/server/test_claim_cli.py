"""A rerun the server claimed whose driver waits for its image (``settings.waiting``, noted on the claim as
``tests/faults/test_driver_image_pull.py`` causes it), read with the CLI (a process of its own) through a real server:
found by a unique start of its id, as other ids are, and listed as not started yet."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from sematic_k8s import settings
from sematic_k8s.store.records import CLAIMED, Batch, ResolutionRecord, utcnow
from serving import Served, serve

WAITING = ("waiting for the driver's image: the Docker engine could not pull it from 127.0.0.1:5999 "
           "(toomanyrequests: You have reached your pull rate limit.); trying again for up to 120 s")


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    with serve(tmp_path) as s:
        yield s


def _cli(served: Served, home: Path, *args: str) -> str:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(settings.PREFIX)},
           settings.SERVER_ENV: served.url, settings.API_KEY_ENV: served.key or "", settings.HOME_ENV: str(home)}
    done = subprocess.run([sys.executable, "-m", "sematic_k8s.cli", *args], env=env, capture_output=True, timeout=120)
    assert done.returncode == 0, (args, done.stderr.decode())
    return done.stdout.decode()


def test_a_claim_waiting_for_its_driver_is_found_by_a_prefix_and_listed_as_not_started(served: Served,
                                                                                       tmp_path: Path) -> None:
    """``resolutions show``, ``tag`` and ``note`` find the claim by its first 8 characters, and ``resolutions list``
    reads ``created (not started yet: ...)``, cut to one short line. Was: "no run with id ..." (a claim has no root
    run until its driver records it: only its whole id found it), and the list said only ``created``."""
    root = uuid.uuid4().hex
    batch = Batch()  # a claim, as the server's rerun action writes it (no root run yet)
    batch.add_resolution(ResolutionRecord(id=root, root_func_path="pipes:pipeline", state=CLAIMED,
                                          image="127.0.0.1:5999/p@sha256:" + "ab" * 32, settings={"kind": "cloud"},
                                          created_at=utcnow(), heartbeat_at=utcnow()))
    served.store.write(batch)
    assert served.store.note_claim(root, WAITING)
    assert f"Not started yet: {WAITING}" in _cli(served, tmp_path, "resolutions", "show", root[:8])
    assert "slow" in _cli(served, tmp_path, "resolutions", "tag", root[:8], "slow")
    assert "registry down" in _cli(served, tmp_path, "resolutions", "note", root[:8], "registry down")
    listed = [line for line in _cli(served, tmp_path, "resolutions", "list").splitlines() if line.startswith(root)]
    shown = "created (not started yet: waiting for the driver's image: the Doc…)"
    assert len(listed) == 1 and shown in listed[0], listed
    assert "toomanyrequests" not in listed[0], listed

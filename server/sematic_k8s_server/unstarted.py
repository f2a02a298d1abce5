"""The Docker driver containers a launch of this server's left created, never started (the server killed, kill -9,
between the container's create and its start: it holds the rerun's token and the S3 keys as files), removed by the
CloudResolver's own sweep (:func:`sematic_k8s.launchers.docker.sweep_unstarted_drivers`) at the server's start and
before each of its Docker launches, once older than $SEMATIC_K8S_UNSTARTED_DRIVER_GRACE; the tokens of each one's
resolution are revoked at once (:func:`~.auth.revoke_tokens`), unless a driver has recorded that resolution and it
still runs (its token is that driver's)."""

from __future__ import annotations

import logging
import threading

from sematic_k8s.store.records import CLAIMED, ENDED_STATES
from sematic_k8s.store.sql import SqlStore
from sematic_k8s_server import auth

log = logging.getLogger("sematic_k8s_server")


class UnstartedDrivers:
    """The sweep of this machine's driver containers left unstarted, with its revocations, on ``store``."""

    def __init__(self, store: SqlStore) -> None:
        self.store = store

    def sweep(self) -> list[tuple[str, str]]:
        """Remove the driver containers left unstarted now (each said, its tokens revoked); their (name, resolution)."""
        from sematic_k8s.launchers.docker import sweep_unstarted_drivers

        return sweep_unstarted_drivers(self.revoke)

    def start(self) -> None:
        """A sweep on a daemon thread of its own: the server's start does not wait for its Docker engine."""
        threading.Thread(target=self.sweep, daemon=True, name="sk-unstarted-drivers").start()

    def revoke(self, res_id: str) -> int:
        """Revoke the tokens of resolution ``res_id``, whose driver container was never started: not recorded, claimed
        (the launch that was cut) or ended; one a driver recorded and still runs keeps them. How many were revoked."""
        res = self.store.get_resolution(res_id)
        if res is not None and res.state != CLAIMED and res.state not in ENDED_STATES:
            return 0
        revoked = auth.revoke_tokens(self.store.engine, res_id)
        if revoked:
            log.info("revoked %d token(s) of resolution %s: its driver container was never started", revoked, res_id)
        return revoked

"""The Docker driver containers left created, never started, on the engine of a server with ``--rerun-launcher
docker`` (the server killed, kill -9, between a rerun's container's create and its start: it holds the rerun's token
and the S3 keys as files; or a CloudResolver on the same machine killed so), removed by the server after each sweep
of silent resolutions (every few seconds, from its start) through the CloudResolver's own sweep
(:func:`sematic_k8s.launchers.docker.sweep_unstarted_drivers`), once older than $SEMATIC_K8S_UNSTARTED_DRIVER_GRACE;
the tokens of each one's resolution are revoked at once (:func:`~.auth.revoke_tokens`), unless a driver has recorded
that resolution and it still runs (its token is that driver's). The engine out of reach is said once until a pass
succeeds."""

from __future__ import annotations

import logging

from sematic_k8s.store.records import CLAIMED, ENDED_STATES
from sematic_k8s.store.sql import SqlStore
from sematic_k8s_server import auth
from sematic_k8s_server.woken_pass import WokenPass

log = logging.getLogger("sematic_k8s_server")


class UnstartedDrivers(WokenPass):
    """The sweep of this machine's driver containers left unstarted, with its revocations, on ``store``: a pass each
    time it is woken (the sweeper's, after each sweep), on a daemon thread."""

    thread_name = "sk-unstarted-drivers"

    def __init__(self, store: SqlStore) -> None:
        self.store = store
        self._said = False  # a failed pass was logged (once until one succeeds)
        super().__init__()

    def sweep(self) -> list[tuple[str, str]]:
        """Remove the driver containers left unstarted now (each said, its tokens revoked); their (name, resolution)."""
        from sematic_k8s.launchers.docker import sweep_unstarted_drivers

        return sweep_unstarted_drivers(self.revoke)

    def passed(self) -> None:
        self._said = False

    def failed(self, e: Exception) -> None:
        if not self._said:  # the engine may be down a while: the next sweep tries again
            self._said = True
            log.warning("looking for Docker driver containers left unstarted failed (tried again at the next sweep): "
                        "%s", e)

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

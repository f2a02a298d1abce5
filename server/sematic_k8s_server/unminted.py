"""A server-started rerun whose driver's token could not be minted (the database refused its insert, or gave no
connection for it): its claim, recorded already, ends at once in true words (:func:`~.reruns.mint_failed`), through
the claim beats' store (over PostgreSQL, connections of their own: the requests' pool may be what failed, all its
connections in use by slower requests), and is beaten no more; nothing is launched. The request is answered in the
failure's words, true of this route: a lock's 503 says the rerun was recorded failed, not that nothing was."""

from __future__ import annotations

import logging

from sematic_k8s.errors import TableLocked
from sematic_k8s_server import dbfailures
from sematic_k8s_server.problems import ApiError
from sematic_k8s_server.reruns import mint_failed
from sematic_k8s_server.state import Server

log = logging.getLogger("sematic_k8s_server")


def ended(srv: Server, res_id: str, e: BaseException) -> BaseException:
    """End the claim ``res_id`` whose token's mint failed with ``e``; the error the request answers with."""
    recorded = False
    try:
        if isinstance(e, Exception):
            log.warning("rerun %s: its driver's token could not be minted: %s", res_id, dbfailures.words(e))
            srv.end_claim(res_id, mint_failed(e), unpooled=True)
            recorded = True
    except Exception as unrecorded:  # noqa: BLE001 - the store: the claim is left to the sweeper (its holder's silence)
        log.warning("rerun %s: its failed token mint could not be recorded: %s", res_id, dbfailures.words(unrecorded))
    finally:
        srv.claim_beats.let_go(res_id)
    if isinstance(e, TableLocked):  # its own words say nothing of the request was recorded: its claim was
        return ApiError(503, f"{e.cause}, so the rerun's driver token could not be minted and no driver was started"
                             f"{f' (rerun {res_id} recorded failed)' if recorded else ''}: send it again once that "
                             "session lets the lock go (pg_locks names it)", {"Retry-After": "5"},
                        reason="table-locked")
    return e

"""Whether this server can serve now (``/api/v1/ready``, the chart's readiness probe), apart from whether it is alive
(``/api/v1/health``, the liveness probe): a server whose database does not answer is alive, waiting for it, and must
not be restarted for that, but a load balancer should send its requests to a replica that can serve them.

The database is asked ``SELECT 1`` on a connection of its own, outside the pool (a pool whose every connection is in
use by slow requests is not an outage), given :data:`CONNECT_SECONDS` to connect, so that a probe is answered
within the probe's own timeout even when the database's host does not answer at all."""

from __future__ import annotations

import logging
import threading

import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from sematic_k8s.error_records import one_line

log = logging.getLogger("sematic_k8s_server")
CONNECT_SECONDS = 3


class Readiness:
    """``check()``: None when the server can serve, else why not, in one line: the database's error by its class
    alone, as it is answered without a key (its words name the database's host, port and user). Says in the server's
    log when that changes (once, not at every probe), with the database's words."""

    def __init__(self, engine: sa.Engine) -> None:
        if engine.dialect.name == "postgresql":
            self.engine = sa.create_engine(engine.url, poolclass=NullPool,
                                           connect_args={"connect_timeout": CONNECT_SECONDS})
        else:  # SQLite: a file on this machine
            self.engine = engine
        self._lock = threading.Lock()
        self._unready: str | None = None
        self.stopping = False

    def check(self) -> str | None:
        if self.stopping:
            return "the server is stopping"
        with self._lock:  # one look at a time: probes arriving together wait for it
            try:
                with self.engine.connect() as conn:
                    conn.execute(sa.text("SELECT 1"))
                why = None
            except sa.exc.SQLAlchemyError as e:
                orig = getattr(e, "orig", None) or e
                why = f"the metadata database does not answer: {type(orig).__name__} (the server's log says why)"
                said = f"the metadata database does not answer: {one_line(str(orig)) or type(orig).__name__}"
            if why != self._unready:
                if why is None:
                    log.warning("ready again: the metadata database answers")
                else:
                    log.warning("not ready: %s", said)
                self._unready = why
        return why

    def close(self) -> None:
        if self.engine.dialect.name == "postgresql":
            self.engine.dispose()

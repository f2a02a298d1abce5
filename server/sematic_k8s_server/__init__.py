"""The sematic-k8s server: one place where every resolution is recorded, browsed, re-run and canceled.

A thin FastAPI layer over the same :class:`~sematic_k8s.store.sql.SqlStore` the embedded mode uses
(SQLite or PostgreSQL), with artifact bytes and logs read from the same storage the runs wrote to.
It serves the REST API (clients such as the HTTP store record through it), live events for the
dashboard, the dashboard itself, and starts the reruns of cloud resolutions it is asked for (never code a
record names: see :mod:`.reruns`).

Modules, top to bottom (each imports only those below it, never the app):

- :mod:`.cli`: ``sematic-k8s server`` and ``sematic-k8s api-keys``; :mod:`.db`: open and migrate the database.
- :mod:`.app`: :func:`create_app` puts the routers, the :mod:`.guard` and the dashboard together.
- :mod:`.routes`: the endpoints, one router module per resource; :mod:`.guard`: credentials before bodies, the
  size cap, local-mode defences (ASGI middleware in front of everything).
- :mod:`.deps`: what routes share (the :class:`~.state.Server` dependency, the caller, validated ids).
- :mod:`.state`: the per-app :class:`~.state.Server`: store, storage, settings, serialized writes, live events.
- :mod:`.reruns` (what may be re-run, and the bounded launch queue); :mod:`.scopes` (what a resolution's
  token may do); :mod:`.events` (the event bus behind Server-Sent Events); :mod:`.edges`.
- :mod:`.config` (the server's settings), :mod:`.problems` (errors as JSON), :mod:`.schemas`, :mod:`.auth`
  (API keys and resolution tokens), :mod:`.dashboard`.
"""

from sematic_k8s_server.app import create_app

__all__ = ["create_app"]

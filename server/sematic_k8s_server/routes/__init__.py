"""The REST API, one router module per resource; :func:`sematic_k8s_server.app.create_app` includes them.

- :mod:`.health`: liveness and readiness, the only endpoints that need no API key.
- :mod:`.resolutions`: list and read resolutions and their graphs; the rerun and cancel actions.
- :mod:`.runs`, :mod:`.logs`, :mod:`.artifacts`: read runs, their captured output, artifacts and their bytes.
- :mod:`.counts`: a resolution's runs counted by state (what a client following it polls).
- :mod:`.events`: live state changes as Server-Sent Events.
- :mod:`.store`: the rest of the Store interface, for clients recording through the server (the HTTP store).

Route modules import what they share from :mod:`sematic_k8s_server.deps`, never from the app.
"""

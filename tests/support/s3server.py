"""A real S3 API on 127.0.0.1 for the tests: the server at $AWS_ENDPOINT_URL_S3 (CI's, started by infra/up.sh)
when set, else moto's, in-process, for the block."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator


@contextlib.contextmanager
def s3_endpoint() -> Iterator[str]:
    """The S3 endpoint URL: $AWS_ENDPOINT_URL_S3 when set, else a moto server started (and stopped) here."""
    existing = os.environ.get("AWS_ENDPOINT_URL_S3")
    if existing:
        yield existing
        return
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()

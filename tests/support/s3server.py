"""A real S3 API on 127.0.0.1 for the tests: the server at $AWS_ENDPOINT_URL_S3 (CI's, started by infra/up.sh)
when set, else moto's, in-process, for the block."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any


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


def fresh_bucket(monkeypatch: Any, prefix: str) -> tuple[str, str]:
    """A new bucket on CI's S3 server (default 127.0.0.1:9000), with only the S3 settings of a clean machine
    in the environment (nothing of the developer's AWS profile or sematic-k8s settings): (endpoint, bucket)."""
    import uuid

    import boto3
    from botocore.config import Config

    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:9000")
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "SEMATIC_K8S_S3_BUCKET",
                 "SEMATIC_K8S_S3_PREFIX", "SEMATIC_K8S_S3_ENDPOINT", "SEMATIC_K8S_STORAGE_SECRET",
                 "SEMATIC_K8S_SERVICE_ACCOUNT", "SEMATIC_K8S_WORKER_SERVICE_ACCOUNT",
                 "SEMATIC_K8S_NAMESPACE", "SEMATIC_K8S_CONFIG_MAP"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", os.environ.get("AWS_ACCESS_KEY_ID", "test"))
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", os.environ.get("AWS_SECRET_ACCESS_KEY", "test"))
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    bucket = f"{prefix}-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                 config=Config(s3={"addressing_style": "path"})).create_bucket(Bucket=bucket)
    return endpoint, bucket

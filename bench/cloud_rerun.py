"""Rerun time vs a fresh run, on the CloudResolver's container path (``make bench``).

Needs a Docker engine, a registry on 127.0.0.1:5000, an S3 API server and a local base image: reused when they
answer, else started with the repository's ``infra/`` scripts (tests/support/infra.py); says so and exits 0 when they
cannot be had.
"""

from __future__ import annotations

import os
import socket
import sys
import tempfile
import textwrap
import threading
import time
import uuid
from pathlib import Path

PIPELINE = '''
    import time
    import sematic_k8s as sk

    @sk.func(inline=False)
    def step(i: int) -> int:
        time.sleep(0.2)
        return i * i

    @sk.func
    def total(xs: list[int]) -> int:
        return sum(xs)

    @sk.func
    def pipeline(n: int) -> int:
        return total([step(i) for i in range(n)])
'''
N = 6


def _serve(home: Path) -> tuple[str, str]:
    """The server on a free 127.0.0.1 port in a thread; (url, api key)."""
    import uvicorn

    from sematic_k8s.storage.local import LocalStorage
    from sematic_k8s_server import auth
    from sematic_k8s_server.app import create_app
    from sematic_k8s_server.connections import ConnectionLimits, uvicorn_config
    from sematic_k8s_server.db import open_store

    store = open_store(f"sqlite:///{home / 'db.sqlite3'}")
    key = auth.create_key(store.engine, "bench")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    app = create_app(store, LocalStorage(home / "storage"), api_keys_required=True, self_url=url)
    server = uvicorn.Server(uvicorn_config(app, host="127.0.0.1", port=port, limits=ConnectionLimits(),
                                           shutdown_timeout=1, log_level="warning"))  # as the CLI runs it
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.01)
    return url, key


def main() -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "support"))
    import infra

    base_image = infra.cloud_bench_services("cloud rerun")
    if base_image is None:
        return 0
    registry = infra.REGISTRY
    s3 = os.environ["AWS_ENDPOINT_URL_S3"]
    import boto3
    from botocore.config import Config

    import sematic_k8s as sk

    bucket = f"sk-bench-{uuid.uuid4().hex[:10]}"
    boto3.client("s3", endpoint_url=s3, config=Config(s3={"addressing_style": "path"})).create_bucket(Bucket=bucket)
    with tempfile.TemporaryDirectory() as tmp:
        root, home = Path(tmp) / "project", Path(tmp) / "server"
        root.mkdir()
        home.mkdir()
        module = f"bench_pipe_{uuid.uuid4().hex[:8]}"
        (root / f"{module}.py").write_text(textwrap.dedent(PIPELINE))
        sys.path.insert(0, str(root))
        mod = __import__(module)
        url, key = _serve(home)

        def resolver(**kw: object) -> sk.CloudResolver:
            return sk.CloudResolver(server=url, api_key=key, storage=f"s3://{bucket}/a", project_root=str(root),
                                    registry=f"{registry}/sematic-k8s-bench-rerun", poll_interval=0.1,
                                    base_image=base_image,
                                    progress=lambda _: None, **kw)

        timings = {}
        start = time.perf_counter()
        first = mod.pipeline(N)
        first.resolve(resolver())
        timings["fresh run (image build included)"] = time.perf_counter() - start
        start = time.perf_counter()
        mod.pipeline(N).resolve(resolver())
        timings["fresh run (image already pushed)"] = time.perf_counter() - start
        from sematic_k8s.store.http import HttpStore

        target = next(r for r in HttpStore(url, key).runs_of_root(first.id) if r.func_name == "step")
        start = time.perf_counter()
        mod.pipeline(N).resolve(resolver(rerun_from=target.id))
        timings["rerun from one step (recorded digest)"] = time.perf_counter() - start
    print(f"cloud rerun vs fresh run: {N} container steps of 0.2 s, docker executor, server + S3 on 127.0.0.1")
    for name, seconds in timings.items():
        print(f"  {name:40s} {seconds:6.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What a container run costs over a bare container, measured side by side (``make bench``).

In one run, on the image the CloudResolver builds for a one-func project:

- **bare**: ``docker run --rm --network host IMAGE python -c pass`` (the floor: Docker and Python start-up);
- **worker run**: the DockerExecutor running one attempt of a func (``inc(x) = x + 1``) with S3 artifact
  storage, from the container's creation to its outcome in hand, the value and logs stored (what a resolution
  waits for: Docker's create, attach and start, the worker's imports, its storage reads and writes through
  presigned URLs, its line saying the outcome is stored, the executor's read of it and its puts of the value
  and the logs; the container's end and removal follow in the background, as ``docker run --rm``'s does not);
- **driver start-up**: ``docker run ... python -c "import sematic_k8s.driver"``, everything a driver imports
  before it resolves;
- **driver, 1st request**: the same import, then what the driver does first (``driver._main``): its HTTP store
  opened and its resolution asked of the server (here a stub on 127.0.0.1 answering 404, as the server does for
  a resolution not yet recorded), so that nothing the driver needs that soon is left out of the figure by
  being imported later;
- **driver up**: that same container, from ``docker run`` to its first request arriving at the server: the
  driver's start-up as the worker run's figure is a worker's (create to what the resolution waits for in
  hand), without the interpreter's exit after it (its modules torn down, about 20 ms more than a bare
  Python's) and the container's removal, which the two rows above include.

Each is the median of several; the ratios to the bare container are the figures. With ``--importtime`` it
also prints the worker's and the driver's slowest imports inside the image (``python -X importtime``). Needs
Docker, the registry and S3 on 127.0.0.1 (tests/support/infra.py); says so and exits 0 when they cannot be had.
"""

from __future__ import annotations

import argparse
import http.server
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PROJECT = '''
    import sematic_k8s as sk

    @sk.func(inline=False)
    def inc(x: int) -> int:
        print("adding one")
        return x + 1
'''


FIRST_REQUEST = """
import os
import sematic_k8s.driver
from sematic_k8s import settings
from sematic_k8s.store import open_store
assert open_store(settings.home()).get_resolution(os.environ.get("BENCH_RESOLUTION", "0" * 32)) is None
"""


def docker_run(image: str, *command: str, env: dict[str, str] | None = None) -> float:
    """Seconds for ``docker run --rm --network host [-e K=V...] IMAGE COMMAND``."""
    args = [a for k, v in (env or {}).items() for a in ("-e", f"{k}={v}")]
    t0 = time.perf_counter()
    subprocess.run(["docker", "run", "--rm", "--network", "host", *args, image, *command], check=True,
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


class NotRecorded(http.server.BaseHTTPRequestHandler):
    """The server's answer to a GET of a resolution it has not recorded: 404 with a JSON detail. Notes when each
    path was first asked (``time.perf_counter``, the bench's clock)."""

    protocol_version = "HTTP/1.1"
    arrivals: dict[str, float] = {}

    def do_GET(self) -> None:  # noqa: N802 - the http.server name
        self.arrivals.setdefault(self.path, time.perf_counter())
        body = b'{"detail":"no such resolution"}'
        self.send_response(404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def driver_first_request(image: str, server_env: dict[str, str]) -> tuple[float, float]:
    """Seconds from ``docker run`` of the first-request script to its request arriving at the stub server, and to
    the container's end (removed)."""
    resolution = uuid.uuid4().hex
    t0 = time.perf_counter()
    total = docker_run(image, "python", "-c", FIRST_REQUEST, env={**server_env, "BENCH_RESOLUTION": resolution})
    arrived = next(t for path, t in NotRecorded.arrivals.items() if path.endswith(f"/{resolution}"))
    return arrived - t0, total


def slowest_imports(image: str, code: str, count: int) -> list[str]:
    """The ``count`` imports of ``python -c CODE`` in the image with the most cumulative time, importtime's lines."""
    out = subprocess.run(["docker", "run", "--rm", "--network", "host", image, "python", "-X", "importtime",
                          "-c", code], check=True, capture_output=True, text=True).stderr
    return sorted((line for line in out.splitlines() if "|" in line and "cumulative" not in line),
                  key=lambda line: -int(line.split("|")[1]))[:count]


def worker_run(executor, storage, func, module: str) -> float:  # noqa: ANN001 - DockerExecutor, S3Storage, Func
    """Seconds from submitting one attempt (the container created) to its outcome in hand."""
    from sematic_k8s import serialization
    from sematic_k8s.executors.base import Task
    from sematic_k8s.storage.base import artifact_loader, put_artifact

    record = put_artifact(storage, serialization.serialize(41))
    value = serialization.Value(record["id"], record["format"], record["type_name"], load=artifact_loader(storage))
    task = Task(uuid.uuid4().hex, uuid.uuid4().hex, func, {"x": value})
    t0 = time.perf_counter()
    executor.submit(task)
    outcomes = []
    while not outcomes:
        outcomes = executor.wait(60)
    seconds = time.perf_counter() - t0
    outcome = outcomes[0]
    if outcome.output is None:
        raise RuntimeError(f"the worker failed: {outcome.error_info}")
    return seconds


PHASES = """
import os, time
t0 = time.perf_counter()
from sematic_k8s import settings
from sematic_k8s.executors.remote import run_task
from sematic_k8s.specs import TaskSpec
from sematic_k8s.storage.presigned import PresignedStorage
t1 = time.perf_counter()
spec = TaskSpec.from_json(os.environ[settings.TASK_ENV])
storage = PresignedStorage(spec.urls)
t2 = time.perf_counter()
run_task(spec, storage)
t3 = time.perf_counter()
print(f"{t1 - t0:.3f} {t2 - t1:.3f} {t3 - t2:.3f}")
"""


def phases(image: str, storage, func) -> list[float]:  # noqa: ANN001 - S3Storage, Func
    """Inside a worker's container: seconds importing the worker, making its storage (presigned URLs: no
    botocore), and running the task (the user's module, the input read, the outcome write with the value and
    logs in it)."""
    from sematic_k8s import serialization
    from sematic_k8s.settings import STORAGE_ENV, TASK_ENV, worker_env
    from sematic_k8s.specs import TaskSpec, outcome_key, staged_key
    from sematic_k8s.storage.base import artifact_key, put_artifact

    record = put_artifact(storage, serialization.serialize(41))
    run_id = uuid.uuid4().hex
    keys = [("GET", artifact_key(record["id"])), ("PUT", outcome_key(run_id, 1)), ("PUT", staged_key(run_id, 1))]
    spec = TaskSpec(run_id=run_id, root_id=uuid.uuid4().hex, func_path=func.path,
                    source_file=func.source_file, input_ids={"x": record["id"]},
                    input_formats={"x": record["format"]}, attempt=1,
                    urls={f"{m} {k}": storage.presign(m, k, 600) for m, k in keys})
    env = {**worker_env(), TASK_ENV: spec.to_json(), STORAGE_ENV: storage.url}
    args = [a for k, v in env.items() for a in ("-e", f"{k}={v}")]
    out = subprocess.run(["docker", "run", "--rm", "--network", "host", *args, image, "python", "-c", PHASES],
                         check=True, capture_output=True, text=True).stdout.split()
    return [float(x) for x in out[-3:]]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="runs of each kind (the median is reported)")
    parser.add_argument("--importtime", action="store_true", help="also show the worker's slowest imports")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO / "tests" / "support"))
    import infra

    base_image = infra.cloud_bench_services("containers")
    if base_image is None:
        return 0
    from sematic_k8s.executors.docker import DockerExecutor
    from sematic_k8s.packaging.build import ensure_image
    from sematic_k8s.settings import worker_env
    from sematic_k8s.storage.s3 import S3Storage

    bucket = f"sk-bench-{uuid.uuid4().hex[:10]}"
    storage = S3Storage(bucket, "containers")
    storage.client.create_bucket(Bucket=bucket)
    with tempfile.TemporaryDirectory() as tmp:
        module = f"bench_containers_{uuid.uuid4().hex[:8]}"
        (Path(tmp) / f"{module}.py").write_text(textwrap.dedent(PROJECT))
        sys.path.insert(0, tmp)
        func = __import__(module).inc
        image = ensure_image(tmp, f"{infra.REGISTRY}/sematic-k8s-bench-containers", base_image,
                             progress=lambda _: None).digest_ref
        executor = DockerExecutor(storage, storage.url, image, env=worker_env())
        stub = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NotRecorded)
        threading.Thread(target=stub.serve_forever, daemon=True).start()
        server_env = {"SEMATIC_K8S_SERVER": f"http://127.0.0.1:{stub.server_address[1]}"}
        docker_run(image, "python", "-c", "pass")  # warm: the image's layers read once
        worker_run(executor, storage, func, module)
        rows: dict[str, list[float]] = {"bare": [], "worker run": [], "driver start-up": [], "driver, 1st request": [],
                                        "driver up": []}
        split: list[list[float]] = []
        for _ in range(args.repeats):  # interleaved, so that a busy moment touches every kind alike
            rows["bare"].append(docker_run(image, "python", "-c", "pass"))
            rows["worker run"].append(worker_run(executor, storage, func, module))
            rows["driver start-up"].append(docker_run(image, "python", "-c", "import sematic_k8s.driver"))
            up, whole = driver_first_request(image, server_env)
            rows["driver, 1st request"].append(whole)
            rows["driver up"].append(up)
            split.append(phases(image, storage, func))
        executor.close()
        stub.shutdown()
        stub.server_close()
        if args.importtime:
            print("worker's slowest imports in the image (cumulative us):\n"
                  + "\n".join(slowest_imports(image, f"import sematic_k8s.worker, {module}", 12)))
            print("driver's slowest imports in the image (cumulative us):\n"
                  + "\n".join(slowest_imports(image, "import sematic_k8s.driver", 15)))
    bare = statistics.median(rows["bare"])
    print(f"\ncontainers: median of {args.repeats}, interleaved, same image and machine; the floor is "
          "`docker run --rm --network host IMAGE python -c pass`")
    print(f"{'':20} {'seconds':>8} {'vs bare':>8}  each repeat vs its bare (interleaved)")
    for name, times in rows.items():
        each = sorted(t / b for t, b in zip(times, rows["bare"], strict=True))
        print(f"{name:20} {statistics.median(times):>8.2f} {statistics.median(times) / bare:>7.2f}x  "
              f"{each[0]:.2f}-{each[-1]:.2f}x")
    medians = [statistics.median(p[i] for p in split) for i in range(3)]
    print(f"inside a worker's container (median): importing the worker {medians[0]:.2f} s, its storage "
          f"(presigned URLs) {medians[1]:.2f} s, the task (user module, 1 read, 1 write) {medians[2]:.2f} s; the rest "
          "is Docker's create, attach and start, and the executor reading the outcome and storing value and logs")
    return 0


if __name__ == "__main__":
    sys.exit(main())

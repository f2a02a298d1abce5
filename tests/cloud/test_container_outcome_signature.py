"""A Docker worker signs its outcome document with its attempt's key, handed over in its task file (never in its
environment, its container's config or the bucket), and its driver adopts nothing else; a worker of an image that
does not say it signs (one built before: its label, read by digest) is handed no key and its outcome is adopted
unsigned. Real containers on the real engine, a real S3 API (moto); the test, as another writer of the bucket,
replaces an outcome before the driver reads it."""

from __future__ import annotations

import importlib
import json
import logging
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from executor_tasks import outcome_of, submit, value_of
from infra import REGISTRY, docker_client, require_docker
from projects import user_project
from sematic_k8s import serialization
from sematic_k8s.executors.docker import DockerExecutor
from sematic_k8s.labels import RUN_LABEL
from sematic_k8s.settings import API_KEY_ENV, API_KEY_FILE_ENV, worker_env
from sematic_k8s.specs import outcome_key
from sematic_k8s.storage.base import put_artifact
from sematic_k8s.storage.s3 import S3Storage

# main just before workers in containers signed: its packaging builds an image as an older version did (no label)
OLDER = "1ab6f0209f9c7d4ad8e350875afdc7b42224ec87"
PROJECT = '''
import sematic_k8s as sk

@sk.func
def double(x: int) -> int:
    return 2 * x
'''


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Iterator[tuple[Any, str, str]]:
    """The project's module, its image by digest, built by this version's packaging (its label: it signs), and the
    project's root."""
    base_image = require_docker()
    from sematic_k8s.packaging.build import ensure_image

    root = tmp_path_factory.mktemp("project")
    with user_project(root, "signing", PROJECT) as module:
        image = ensure_image(str(root), f"{REGISTRY}/sematic-k8s-test-signing", base_image,
                             progress=lambda _: None).digest_ref
        yield importlib.import_module(module), image, str(root)


@pytest.fixture(scope="module")
def older_image(project, tmp_path_factory) -> str:
    """The same project's image built by the packaging of :data:`OLDER` (its sources from this repository's history,
    in a process of their own): a worker that knows no signing key (its TaskSpec refuses the field), no label."""
    older = tmp_path_factory.mktemp("older")
    tree = subprocess.run(["git", "archive", OLDER, "sematic_k8s", "pyproject.toml"], capture_output=True,
                          cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    if tree.returncode != 0:
        pytest.skip(f"needs this repository's history (commit {OLDER}): {tree.stderr.decode().strip()}")
    subprocess.run(["tar", "-x", "-C", str(older)], input=tree.stdout, check=True)
    build = ("import sys; from sematic_k8s.packaging.build import ensure_image; "
             "print(ensure_image(sys.argv[1], sys.argv[2], sys.argv[3], progress=lambda _: None).digest_ref)")
    made = subprocess.run([sys.executable, "-c", build, project[2], f"{REGISTRY}/sematic-k8s-test-signing-older",
                           require_docker()], capture_output=True, text=True, cwd=str(older), timeout=900,
                          env={**os.environ, "PYTHONPATH": str(older)})
    assert made.returncode == 0, made.stderr[-3000:]
    return made.stdout.strip().splitlines()[-1]


@pytest.fixture
def storage(monkeypatch) -> S3Storage:
    for name, value in (("AWS_ENDPOINT_URL_S3", os.environ.get("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:9000")),
                        ("AWS_ACCESS_KEY_ID", "test"), ("AWS_SECRET_ACCESS_KEY", "test"),
                        ("AWS_DEFAULT_REGION", "us-east-1")):
        monkeypatch.setenv(name, os.environ.get(name, value))
    monkeypatch.delenv(API_KEY_FILE_ENV, raising=False)
    monkeypatch.setenv(API_KEY_ENV, "the resolution's token")
    bucket = f"sk-signing-{uuid.uuid4().hex[:10]}"
    storage = S3Storage(bucket, "artifacts")
    storage.client.create_bucket(Bucket=bucket)
    return storage






def stored_outcome(storage: S3Storage, run_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 120
    while not storage.exists(outcome_key(run_id, 1)):
        assert time.monotonic() < deadline, "the worker stored no outcome"
        time.sleep(0.05)
    return json.loads(storage.get(outcome_key(run_id, 1)))




def test_a_docker_worker_signs_its_outcome_and_one_replaced_in_the_bucket_is_not_adopted(project, storage, caplog):
    """Was: a container's outcome document was adopted unsigned, so the replaced one's 666 became the run's output."""
    caplog.set_level(logging.WARNING, "sematic_k8s")
    module, image, _ = project
    executor = DockerExecutor(storage, storage.url, image, env=worker_env())
    try:
        replaced = submit(executor, storage, module.double, 21)
        doc = stored_outcome(storage, replaced.run_id)  # the worker's; then another writer's move: 666 stored
        forged = put_artifact(storage, serialization.serialize(666))  # under its true id, the worker's bytes dropped
        doc = {**{k: v for k, v in doc.items() if k not in ("payload", "staged")}, "output": forged}
        storage.put(outcome_key(replaced.run_id, 1), json.dumps(doc).encode(), repair=True)
        outcome = outcome_of(executor)

        honest = submit(executor, storage, module.double, 21)
        key = executor.running[honest.run_id].signing_key
        [container] = docker_client().containers.list(all=True, filters={"label": f"{RUN_LABEL}={honest.run_id}"})
        config = json.dumps(container.attrs)  # docker inspect: its env, labels, command
        assert value_of(storage, outcome_of(executor)) == 42
    finally:
        executor.close()
    assert outcome.output is None and outcome.error_info is not None, value_of(storage, outcome)
    assert outcome.error_info["type"] == "OutcomeUnverified", outcome.error_info
    assert "InfrastructureError" in outcome.error_info["mro"]  # the attempt is lost: run again
    said = [r.getMessage() for r in caplog.records if "not adopted" in r.getMessage()]
    assert len(said) == 1 and f"run {replaced.run_id} attempt 1" in said[0], said
    assert len(key) == 64 and key not in config
    assert "signature" in json.loads(storage.get(outcome_key(honest.run_id, 1)))
    assert storage.keys("tasks/") == []  # no task copy (and no key) in the bucket


def test_an_older_images_worker_is_handed_no_key_and_its_outcome_is_adopted_unsigned(project, older_image, storage):
    """An image built before containers' workers signed (no label, read by digest): asked for no signature, its
    worker is handed no key, which it would refuse (its TaskSpec knows no such field: it died before it ran), and its
    unsigned outcome is adopted."""
    module = project[0]
    executor = DockerExecutor(storage, storage.url, older_image, env=worker_env())
    try:
        task = submit(executor, storage, module.double, 21)
        assert value_of(storage, outcome_of(executor)) == 42
        assert executor.running.get(task.run_id) is None
    finally:
        executor.close()
    assert "signature" not in json.loads(storage.get(outcome_key(task.run_id, 1)))

"""The DockerExecutor on its own, with the real engine, registry and S3 API: a worker's outcome is read as soon
as it says it stored it (a line on its stdout), with the value and logs stored as before; a func that prints
that line itself, or a worker that dies after printing it, is still awaited to its real end; every container is
removed, also one that lingers after its outcome was read. A second executor given a resumed attempt (a
restarted driver's) re-attaches to its worker container, running or ended while nobody watched, instead of
starting it again; one that detaches leaves its containers running."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import importlib
import io
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from docker import errors as docker_errors

from executor_tasks import outcome_of, submit
from fd_report import open_fds
from infra import REGISTRY, containers_of, docker_client, require_docker
from named_user import APP_GID, APP_UID, named_user_image
from outages import (
    REGISTRY_NOT_NOW,
    SILENT,
    DroppingProxy,
    RegistryProcess,
    ThrottlingProxy,
    called_in,
    last_layer,
    pulled_from_own_registry,
    registry_answering,
    restarted_in,
)
from projects import user_project
from sematic_k8s import serialization
from sematic_k8s.errors import DockerUnavailable, ImageUserUnknown, ResolutionFailed
from sematic_k8s.executors import docker as docker_executor
from sematic_k8s.executors.base import Outcome, Task
from sematic_k8s.executors.docker import DockerExecutor
from sematic_k8s.labels import RESOLUTION_LABEL
from sematic_k8s.settings import SECRET_FILE_ENVS, STORAGE_KEY_ENVS, TASK_ENV, TASK_FILE_ENV, worker_env
from sematic_k8s.specs import WORKER_STORED_LINE, outcome_key
from sematic_k8s.storage.base import artifact_key, log_key
from sematic_k8s.storage.s3 import S3Storage
from skewed_clock import FAKETIME, skewed
from waiting import wait_for

PROJECT = f'''
    import os
    import threading
    import time
    import uuid

    import sematic_k8s as sk
    from sematic_k8s.settings import STORAGE_ENV
    from sematic_k8s.storage.urls import storage_from_url

    @sk.func(inline=False)
    def inc(x: int) -> int:
        print("adding one")
        return x + 1

    @sk.func(inline=False)
    def claims_early(x: int) -> int:
        print({WORKER_STORED_LINE!r}, flush=True)  # before anything is stored
        time.sleep(1)
        return x * 10

    @sk.func(inline=False)
    def dies_after_claiming(x: int) -> int:
        print({WORKER_STORED_LINE!r}, flush=True)
        print("going down", flush=True)
        os._exit(3)

    @sk.func(inline=False)
    def sleeps(x: int) -> int:
        print("sleeping", flush=True)
        time.sleep(600)
        return x

    @sk.func(inline=False)
    def gated(x: int) -> int:
        """Notes each start (starts/X/...), then returns 2 * x once the object gates/X is there: through storage of
        its own, with keys of its own (a worker is given none; the test's S3 takes any)."""
        os.environ.update(AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test")
        storage = storage_from_url(os.environ[STORAGE_ENV])
        storage.put(f"starts/{{x}}/{{uuid.uuid4().hex}}", b"")
        while not storage.exists(f"gates/{{x}}"):
            time.sleep(0.2)
        return 2 * x

    @sk.func(inline=False)
    def gated_lingers(x: int) -> int:
        """gated's, then a thread that is not a daemon keeps the worker from ending once its outcome is stored."""
        threading.Thread(target=time.sleep, args=(600,)).start()
        return gated.fn(x)

    @sk.func(inline=False, timeout=6)
    def timely(x: int) -> int:
        return x + 1

    @sk.func(inline=False)
    def exits_quietly(x: int) -> int:
        print("leaving without a word", flush=True)
        os._exit(0)

    @sk.func(inline=False)
    def bursts_then_dies(x: int) -> int:
        """A burst of lines on stdout, ended by filling its pipe (widened to 1 MB: all of it unread by the engine's
        stdout copier when it is full), then its last words on stderr, then gone without a result."""
        import fcntl
        fcntl.fcntl(1, 1031, 1 << 20)  # F_SETPIPE_SZ
        os.write(1, b"".join(b"line %06d\\n" % i for i in range(50_000)))
        os.set_blocking(1, False)
        n = 50_000
        while True:  # 341 lines, 4092 bytes: written whole or not at all (PIPE_BUF)
            try:
                os.write(1, b"".join(b"line %06d\\n" % i for i in range(n, n + 341)))
            except BlockingIOError:
                break
            n += 341
        os.set_blocking(1, True)  # (the same pipe as fd 2's once stderr is on stdout's)
        os.write(2, b"last words on stderr\\n")
        os._exit(3)

    @sk.func(inline=False)
    def babbles(x: int) -> int:
        os.write(1, b"not utf-8: \\xff\\xfe\\n")
        os.write(2, b"\\xff\\xfe")
        for i in range(3):
            print(f"\\r{{i}}%", end="", flush=True)
        os.write(1, b"y" * 10_000_000)  # no newline
        return x + 2

    @sk.func(inline=False)
    def closes_its_output(x: int) -> int:
        print("closing", flush=True)
        os.close(1)
        os.close(2)
        return x + 3

    @sk.func(inline=False)
    def leaves_a_child(x: int) -> int:
        import subprocess
        subprocess.Popen(["sleep", "600"])  # holds the container's stdout and stderr
        return x + 4

    @sk.func(inline=False)
    def lingers(x: int) -> int:
        threading.Thread(target=time.sleep, args=(600,)).start()  # not a daemon: the worker does not end
        return x - 1

    @sk.func(inline=False, cpu="4096")  # more CPUs than the machine has: the engine refuses its container
    def greedy(x: int) -> int:
        return x

    @sk.func
    def greedy_beside(x: int) -> list[int]:
        return [inc(x), greedy(x)]

    @sk.func
    def thrice(x: int) -> int:
        return 3 * x

    @sk.func
    def inc_beside(x: int) -> list[int]:
        return [inc(x), thrice(x)]

    @sk.func
    def incs(x: int) -> list[int]:
        return [inc(x), inc(x + 1), inc(x + 2)]
'''


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Iterator[tuple[Any, str]]:
    """The project's module (importable here as in the image) and its image, by digest."""
    base_image = require_docker()
    from sematic_k8s.packaging.build import ensure_image

    root = tmp_path_factory.mktemp("project")
    with user_project(root, "dockerexec", PROJECT) as module:
        image = ensure_image(str(root), f"{REGISTRY}/sematic-k8s-test-docker-executor", base_image,
                             progress=lambda _: None).digest_ref
        yield importlib.import_module(module), image


@pytest.fixture
def storage(monkeypatch) -> S3Storage:
    for name, value in (("AWS_ENDPOINT_URL_S3", os.environ.get("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:9000")),
                        ("AWS_ACCESS_KEY_ID", "test"), ("AWS_SECRET_ACCESS_KEY", "test"),
                        ("AWS_DEFAULT_REGION", "us-east-1")):
        monkeypatch.setenv(name, os.environ.get(name, value))
    bucket = f"sk-dockerexec-{uuid.uuid4().hex[:10]}"
    storage = S3Storage(bucket, "artifacts")
    storage.client.create_bucket(Bucket=bucket)
    return storage


@pytest.fixture
def executor(project, storage) -> Iterator[DockerExecutor]:
    executor = DockerExecutor(storage, storage.url, project[1], env=worker_env())
    yield executor
    executor.close()






def run(executor: DockerExecutor, storage: S3Storage, func: Any, x: int) -> tuple[Task, Outcome]:  # noqa: ANN401
    task = submit(executor, storage, func, x)
    return task, outcome_of(executor)


def stored_value(storage: S3Storage, outcome: Outcome) -> Any:  # noqa: ANN401
    assert outcome.output is not None, outcome.error_info
    return serialization.deserialize(outcome.output["format"], storage.get(artifact_key(outcome.output["id"])))


def test_an_outcome_is_read_when_the_worker_says_it_is_stored_with_its_value_and_logs(project, storage, executor):
    module, image = project
    task, outcome = run(executor, storage, module.inc, 41)
    assert outcome.error_info is None and outcome.output is not None
    assert stored_value(storage, outcome) == 42  # the value is stored before the outcome is recorded
    assert "adding one" in storage.get(log_key(task.run_id)).decode()
    assert outcome.details["executor"] == "docker" and outcome.details["image"] == image
    executor.close()
    assert containers_of(run=task.run_id) == []  # removed once it ended


def sockets() -> int:
    """How many sockets this process holds open."""
    return sum(target.startswith("socket:") for target in open_fds().values())


def test_a_closed_executor_holds_no_connection_to_the_engine(project, storage):
    """An executor's client kept a connection to the engine per container it had followed after close(), until the
    garbage collector found the executor (10-18 sockets a test here; a process running executors one after another
    held them all). Each executor here is kept: what it holds after close() is what close() left open."""
    closed = []
    for x in range(5):
        executor = DockerExecutor(storage, storage.url, project[1], env=worker_env())
        closed.append(executor)
        run(executor, storage, project[0].inc, x)
        executor.close()
        if x == 0:  # the first: the storage's own connections, opened to read the outcome, kept by the test's storage
            before = sockets()
    assert sockets() - before < len(closed) - 1, open_fds()


def test_a_func_printing_the_stored_line_itself_is_awaited_to_its_real_outcome(project, storage, executor):
    task, outcome = run(executor, storage, project[0].claims_early, 4)
    assert outcome.error_info is None, outcome.error_info
    assert stored_value(storage, outcome) == 40


def test_a_worker_dying_after_the_stored_line_is_recorded_as_died_with_its_last_lines(project, storage, executor):
    task, outcome = run(executor, storage, project[0].dies_after_claiming, 1)
    assert outcome.output is None and outcome.error_info is not None
    assert "exited with code 3" in outcome.error_info["message"]
    assert "going down" in outcome.error_info["traceback"]
    assert "going down" in storage.get(log_key(task.run_id)).decode()


def test_a_worker_that_exits_0_without_a_result_is_recorded_as_died_with_its_last_lines(project, storage, executor):
    """os._exit(0) in a worker's func: no outcome, exit code 0. Was: recorded without its last lines (those of a
    worker that exited 0 were never read: its outcome says everything)."""
    task, outcome = run(executor, storage, project[0].exits_quietly, 1)
    assert outcome.output is None and outcome.error_info is not None
    assert outcome.error_info["message"] == "the worker exited with code 0 without a result"
    assert "leaving without a word" in outcome.error_info["traceback"]
    assert "leaving without a word" in storage.get(log_key(task.run_id)).decode()


def test_a_dying_workers_last_lines_are_its_last_words_in_the_order_it_wrote_them(project, storage, executor):
    """A burst of lines on stdout that fills its pipe, then the worker's last words on stderr, then its end without a
    result: its failure's last lines are stdout's last 39 and then those words, as written. Was: the engine logs the
    two streams on two copiers of its own (moby/moby#31706): the words on stderr were logged while stdout's copier
    still had the pipe's megabyte to log, and the last 40 lines were stdout's alone."""
    task, outcome = run(executor, storage, project[0].bursts_then_dies, 1)
    assert outcome.error_info is not None and "exited with code 3" in outcome.error_info["message"]
    last = outcome.error_info["traceback"].splitlines()[-40:]
    assert last[-1] == "last words on stderr", last
    n = int(last[0].split()[-1])
    assert last[:-1] == [f"line {i:06d}" for i in range(n, n + 39)]
    assert storage.get(log_key(task.run_id)).decode().splitlines()[-40:] == last


def test_bytes_that_are_not_text_a_huge_line_and_a_closed_stdout_do_not_hold_a_worker_up(project, storage, executor):
    """Bytes that are not UTF-8 on stdout and stderr, progress written with \\r, a 10 MB line with no newline; a func
    closing fds 1 and 2 (the worker cannot say its outcome is stored: awaited to its end, then read)."""
    task, outcome = run(executor, storage, project[0].babbles, 1)
    assert stored_value(storage, outcome) == 3
    task, outcome = run(executor, storage, project[0].closes_its_output, 1)
    assert stored_value(storage, outcome) == 4
    assert "closing" in storage.get(log_key(task.run_id)).decode()


def test_a_child_a_func_left_running_ends_with_its_container(project, storage, executor):
    """A process the func started and left running, holding the container's stdout and stderr: the outcome is read
    when the worker says it stored it, and the container (the child with it) is gone once the worker exits."""
    task, outcome = run(executor, storage, project[0].leaves_a_child, 1)
    assert stored_value(storage, outcome) == 5
    executor.close()
    assert containers_of(run=task.run_id) == []


def test_a_container_lingering_after_its_outcome_was_read_is_removed(project, storage, executor, monkeypatch):
    monkeypatch.setattr(docker_executor, "STORED_GRACE", 1.0)
    task, outcome = run(executor, storage, project[0].lingers, 5)
    assert outcome.error_info is None, outcome.error_info
    deadline = time.monotonic() + 60
    while containers_of(run=task.run_id) and time.monotonic() < deadline:
        executor.wait(0.5)  # the executor looks after its containers while it is waited on
    assert containers_of(run=task.run_id) == []


def test_a_worker_container_removed_while_it_runs_fails_its_run_and_is_not_awaited_forever(project, storage,
                                                                                           executor):
    """``docker rm -f`` of a running worker (an operator, a clean-up script): its stdout ends, Docker's wait finds
    no container, and the periodic list only sees exited ones; the run must still end, as ContainerRemoved."""
    task = submit(executor, storage, project[0].sleeps, 7)
    deadline = time.monotonic() + 120
    while not (running := [c for c in containers_of(run=task.run_id) if c.status == "running"]):
        assert time.monotonic() < deadline, "the worker did not start"
        executor.wait(0.5)
    running[0].remove(force=True)
    outcomes: list[Outcome] = []
    deadline = time.monotonic() + 60
    while not outcomes and time.monotonic() < deadline:
        outcomes = executor.wait(1)
    assert outcomes, "the removed worker's run never ended"
    assert outcomes[0].output is None and outcomes[0].error_info is not None
    assert outcomes[0].error_info["type"] == "ContainerRemoved"
    assert outcomes[0].error_info["message"] == "the worker's container was removed before it finished"


def starts(storage: S3Storage, x: int) -> int:
    """How many times the gated func started for ``x`` (each start notes itself under starts/X/)."""
    listed = storage.client.list_objects_v2(Bucket=storage.bucket, Prefix=f"{storage.prefix}/starts/{x}/")
    return int(listed.get("KeyCount", 0))


def at_its_gate(executor: DockerExecutor, storage: S3Storage, func: Any, x: int) -> Task:  # noqa: ANN401
    """The task of gated ``func(x)`` submitted, once its worker started and waits at its gate (the executor waited
    on meanwhile)."""
    task = submit(executor, storage, func, x)
    wait_for(lambda: starts(storage, x) or executor.wait(0.2) or None, 120, what="the worker's start")
    return task


def running_worker(executor: DockerExecutor, task: Task) -> Any:  # noqa: ANN401
    """The task's container once it runs (the executor waited on meanwhile)."""
    deadline = time.monotonic() + 120
    while not (running := [c for c in containers_of(run=task.run_id) if c.status == "running"]):
        assert time.monotonic() < deadline, "the worker did not start"
        executor.wait(0.5)
    [container] = running
    return container


def test_a_worker_container_is_given_no_storage_key_and_stores_through_its_urls(project, storage, monkeypatch):
    """The executor is given a driver's pass-through env (``worker_env()``, with the driver's S3 keys set): the
    worker container's ``docker inspect`` shows no key variable and no secret, and its value reaches S3 through its
    presigned URLs. Was: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY plain env of every worker container."""
    secret = f"sk-secret-{uuid.uuid4().hex}"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)  # the driver's key (the test's S3 takes any)
    keyed = S3Storage(storage.bucket, "artifacts")  # signs the worker's URLs with it
    executor = DockerExecutor(keyed, keyed.url, project[1], env=worker_env())
    try:
        x = uuid.uuid4().int % 10**6
        task = submit(executor, keyed, project[0].gated, x)
        attrs = running_worker(executor, task).attrs
        env = dict(e.split("=", 1) for e in attrs["Config"]["Env"])
        assert secret not in json.dumps(attrs)
        assert not set(env) & set(STORAGE_KEY_ENVS) and not set(env) & set(SECRET_FILE_ENVS.values()), sorted(env)
        keyed.put(f"gates/{x}", b"")
        outcome = outcome_of(executor)
        assert outcome.error_info is None, outcome.error_info
        assert stored_value(keyed, outcome) == 2 * x
    finally:
        executor.close()
    assert containers_of(run=task.run_id) == []


def test_a_worker_containers_task_is_a_file_it_removes_and_docker_inspect_shows_no_url(project, storage, executor):
    """The task, with the presigned PUT of the attempt's outcome, is copied into the container as a 0400 file named
    by $SEMATIC_K8S_TASK_FILE; ``docker inspect`` of the running worker shows no URL, and once the worker has read
    the file it is gone from the container. The value still reaches S3. Was: the task in $SEMATIC_K8S_TASK, the URLs
    that let whoever reads them write the attempt's outcome shown by ``docker inspect`` for as long as they last."""
    x = uuid.uuid4().int % 10**6
    task = submit(executor, storage, project[0].gated, x)
    assert executor.running[task.run_id].urls  # presigned: there are URLs to keep out of sight
    container = running_worker(executor, task)
    attrs = container.attrs
    env = dict(e.split("=", 1) for e in attrs["Config"]["Env"])
    assert "Signature=" not in json.dumps(attrs) and TASK_ENV not in env, sorted(env)
    assert env[TASK_FILE_ENV] == docker_executor.TASK_FILE
    wait_for(lambda: starts(storage, x), 120, what="the worker's start")  # its func runs: its task was read
    with pytest.raises(docker_errors.NotFound):
        container.get_archive(docker_executor.TASK_FILE)
    storage.put(f"gates/{x}", b"")
    outcome = outcome_of(executor)
    assert outcome.error_info is None, outcome.error_info
    assert stored_value(storage, outcome) == 2 * x


@pytest.fixture
def named(project) -> Iterator[Any]:
    """Makes images of the project's running as a named user; they are untagged at the end."""
    client, tags = docker_client(), []

    def make(user: str) -> str:
        tags.append(named_user_image(client, project[1], user, f"worker-{uuid.uuid4().hex[:8]}"))
        return tags[-1]
    yield make
    for tag in tags:
        client.images.remove(tag)


def test_a_worker_image_whose_user_is_a_name_reads_its_task_file(project, storage, named):
    """A user's own base image may run as a named user (``USER app``): the task file is given to the uid and gid
    that name has in the image's own /etc/passwd, whom the worker runs as; it reads its task and its value reaches
    S3. Was: a name was taken for root, the 0400 file was root's, and the worker died unable to read it."""
    executor = DockerExecutor(storage, storage.url, named("app"), env=worker_env())
    try:
        task, outcome = run(executor, storage, project[0].inc, 41)
        assert outcome.error_info is None, outcome.error_info
        assert stored_value(storage, outcome) == 42
        assert executor.owner == (APP_UID, APP_GID)
    finally:
        executor.close()
    assert containers_of(run=task.run_id) == []


def test_a_worker_image_whose_user_its_passwd_lacks_is_refused_in_words_and_leaves_no_container(project, storage,
                                                                                                named):
    """``USER ghost``, a name the image's /etc/passwd lacks (the engine would refuse to start it): the launch is
    ImageUserUnknown naming the image, its USER and what to do, and the created container is removed."""
    image = named("ghost")
    executor = DockerExecutor(storage, storage.url, image, env=worker_env())
    try:
        with pytest.raises(ImageUserUnknown, match=f"image {image} runs as USER ghost, but its /etc/passwd has no "
                                                   "user ghost: .* give the image a numeric USER"):
            submit(executor, storage, project[0].inc, 1)
    finally:
        executor.close()
    assert docker_client().containers.list(all=True, filters={"ancestor": image}) == []


def test_a_resumed_attempt_reattaches_to_its_running_worker_instead_of_starting_it_again(project, storage,
                                                                                         executor):
    """The first executor is abandoned while its worker waits at a gate (its driver killed); a second one is given
    the same attempt, resumed: it follows that container to its outcome, and starts none."""
    x = uuid.uuid4().int % 10**6
    task = submit(executor, storage, project[0].gated, x)
    first = running_worker(executor, task)
    wait_for(lambda: starts(storage, x), 120, what="the worker's start")
    second = DockerExecutor(storage, storage.url, project[1], env=worker_env())
    try:
        second.submit(dataclasses.replace(task, resumed=True))
        storage.put(f"gates/{x}", b"")
        outcome = outcome_of(second)
        assert outcome.error_info is None, outcome.error_info
        assert stored_value(storage, outcome) == 2 * x
        assert outcome.details["container"] == first.name and outcome.details["reattached"] is True
    finally:
        second.close()
    assert starts(storage, x) == 1  # started once
    assert containers_of(run=task.run_id) == []


def test_a_resumed_attempt_whose_worker_stored_its_outcome_and_lingers_is_read_from_its_replayed_stdout(
        project, storage, executor):
    """The first executor detaches while its worker waits at its gate; the gate opens, the worker stores its outcome,
    says so and does not end (a thread that is not a daemon). A second executor, given the resumed attempt,
    re-attaches: the container's stdout, replayed from its start, has the "outcome stored" line, and the outcome is
    read at once; so again by a third and a fourth. Was: that replay's start (often all of it) lost, taken in by the
    HTTP client's buffer with the answer's head, so the outcome was read at the worker's end (600 s on), or at its
    func's timeout, or never (2 runs of 3 waited two minutes for it)."""
    x = uuid.uuid4().int % 10**6
    task = submit(executor, storage, project[0].gated_lingers, x)
    first = running_worker(executor, task)
    wait_for(lambda: starts(storage, x), 120, what="the worker's start")
    executor.detach()
    storage.put(f"gates/{x}", b"")
    wait_for(lambda: WORKER_STORED_LINE.encode() in first.logs(), 60, what="the worker's stored line")
    for last in (False, False, True):  # three drivers in turn (the loss came most times, not always)
        second = DockerExecutor(storage, storage.url, project[1], env=worker_env())
        try:
            second.submit(dataclasses.replace(task, resumed=True))
            outcome = outcome_of(second)
            assert outcome.error_info is None, outcome.error_info
            assert stored_value(storage, outcome) == 2 * x and outcome.details["reattached"] is True
            first.reload()
            assert first.status == "running"  # read from its line, not from its end
        finally:
            second.close() if last else second.detach()
    assert starts(storage, x) == 1
    assert containers_of(run=task.run_id) == []


def test_a_worker_that_died_while_no_executor_watched_is_read_and_removed(project, storage, executor):
    """The first executor detaches (its driver exits to be restarted): its worker keeps running; it is then killed
    while nobody watches. The second executor, given the resumed attempt, reads its exit code and last lines."""
    task = submit(executor, storage, project[0].sleeps, 3)
    first = running_worker(executor, task)
    executor.detach()
    assert first.id in [c.id for c in containers_of(run=task.run_id)
                        if c.status == "running"]  # left to the next driver
    wait_for(lambda: b"sleeping" in first.logs(), 120, what="the worker's first line")
    first.kill()
    wait_for(lambda: [c for c in containers_of(run=task.run_id) if c.status == "exited"], 60,
             what="the killed worker's end")
    second = DockerExecutor(storage, storage.url, project[1], env=worker_env())
    try:
        second.submit(dataclasses.replace(task, resumed=True))
        outcome = outcome_of(second)
        assert outcome.output is None and outcome.error_info is not None
        assert "exited with code 137" in outcome.error_info["message"]
        assert "sleeping" in outcome.error_info["traceback"]  # its last log lines
    finally:
        second.close()
    assert containers_of(run=task.run_id) == []


# -- containers the engine refuses -------------------------------------------------------------------------------

MISSING = f"{REGISTRY}/sk-test-nothing-here@sha256:{'0' * 64}"  # neither on the engine nor in the registry


def assert_never_started(outcome: Outcome, *words: str) -> None:
    """The outcome of a worker whose container the engine refused: CreateContainerError (WorkerNeverStarted)."""
    info = outcome.error_info
    assert outcome.output is None and info is not None
    assert info["type"] == "CreateContainerError" and "WorkerNeverStarted" in info["mro"], info
    assert info["message"].startswith("the worker's container could not be created: the Docker engine ")
    for w in words:
        assert w in info["message"], info["message"]


def test_a_container_the_engine_refuses_to_create_fails_its_run_and_the_next_runs_go_on(project, storage, executor):
    """A func asking for more CPUs than the engine's machine has: the engine refuses the create (400 "Range of CPUs
    is from 0.01 to N"). Its run fails in the engine's words with what to do; the executor goes on with the next
    run. Was: the docker SDK's APIError raised out of launch."""
    task, outcome = run(executor, storage, project[0].greedy, 1)
    assert_never_started(outcome, "refused it (Range of CPUs is from 0.01 to",
                         "the func's cpu=4096 is outside that range: ask for an amount within it")
    assert outcome.details["executor"] == "docker" and outcome.details["image"] == project[1]
    assert containers_of(run=task.run_id) == []
    task, outcome = run(executor, storage, project[0].inc, 1)
    assert stored_value(storage, outcome) == 2


def test_an_image_the_engine_cannot_pull_fails_its_run_in_words(project, storage):
    """An image by a digest its registry does not have: neither created nor pulled (404 "manifest unknown")."""
    executor = DockerExecutor(storage, storage.url, MISSING, env=worker_env())
    try:
        task, outcome = run(executor, storage, project[0].inc, 1)
    finally:
        executor.close()
    assert_never_started(outcome, f"does not have image {MISSING} and could not pull it (manifest for ",
                         "push it to its registry, or check that the engine can reach that registry")
    assert containers_of(run=task.run_id) == []


def waiting_for_image(executor: DockerExecutor, task: Task) -> str:
    """What the executor says the task's run waits for, once its image's first pull try failed (that try runs off
    the caller's thread: the engine may spend a while on it); no outcome meanwhile."""
    def said() -> str | None:
        assert executor.wait(0.2) == []
        why = executor.waiting.get(task.run_id) or ""
        return why if why.startswith("waiting for its image") else None  # not a try's progress ("pulling its image")
    return wait_for(said, 150, what="the run to wait for its image")


@pytest.fixture
def unpulled(project, tmp_path) -> Iterator[tuple[RegistryProcess, str]]:
    """The project's image pushed to a registry of the test's own, then taken off the engine by that name: a worker
    of it must be pulled. (The registry, its image by digest.)"""
    with pulled_from_own_registry(tmp_path, project[1], "sk-test-pull", "worker") as pulled:
        yield pulled


def test_a_worker_waits_for_its_image_while_its_registry_is_down_for_a_few_seconds(project, storage, unpulled):
    """The image's registry is stopped when the worker's image must be pulled: the engine cannot reach it (its 500
    "dial tcp ...: connect: connection refused"). The run waits for it (``waiting`` says so) while other work goes on,
    the pull tried again; the registry started again a few seconds later, the image is pulled and the run resolves.
    Was: the run failed at once, as CreateContainerError, where Kubernetes waits ``pull_grace``."""
    registry, image = unpulled
    registry.stop()
    executor = DockerExecutor(storage, storage.url, image, env=worker_env())
    try:
        task = submit(executor, storage, project[0].inc, 41)
        why = waiting_for_image(executor, task)  # it does not fail
        failed = why.partition("; pulling: ")[0]  # a later try's progress, if one is under way
        assert why.startswith(f"waiting for its image: the Docker engine could not pull {image} (") and \
            "connection refused" in why and failed.endswith("trying again for up to 120 s"), why
        with restarted_in(registry, 3):
            outcome = outcome_of(executor)
        assert stored_value(storage, outcome) == 42
        assert executor.waiting == {}
    finally:
        executor.close()
    assert containers_of(run=task.run_id) == []


def test_a_funcs_timeout_counts_from_its_workers_launch_not_while_it_waits_for_its_image(project, storage,
                                                                                        unpulled):
    """A func with a 6 s timeout whose image's registry is down for 9 s: it waits for its image, then runs and
    resolves; its timeout counts from its launch, as on Kubernetes from its container's start (and as before, when
    the pull was made inside the launch)."""
    registry, image = unpulled
    registry.stop()
    executor = DockerExecutor(storage, storage.url, image, env=worker_env())
    try:
        task = submit(executor, storage, project[0].timely, 1)
        waiting_for_image(executor, task)
        with restarted_in(registry, 9):
            outcome = outcome_of(executor)
        assert stored_value(storage, outcome) == 2
    finally:
        executor.close()


def test_a_worker_whose_registry_stays_down_past_the_pull_grace_never_started_in_the_engines_words(
        project, storage, unpulled):
    """The registry stays stopped: past the executor's ``pull_grace`` (3 s here) the run fails as
    CreateContainerError (WorkerNeverStarted) in the engine's words, saying how long it was tried."""
    registry, image = unpulled
    registry.stop()
    executor = DockerExecutor(storage, storage.url, image, env=worker_env(), pull_grace=3)
    try:
        task, outcome = run(executor, storage, project[0].inc, 1)
    finally:
        executor.close()
    assert_never_started(outcome, f"does not have image {image} and could not pull it for ", "connection refused",
                         "push it to its registry, or check that the engine can reach that registry")
    assert executor.waiting == {}
    assert containers_of(run=task.run_id) == []


@pytest.fixture
def unconfigured(project, tmp_path) -> Iterator[tuple[RegistryProcess, str]]:
    """The project's image with a label of its own (a configuration new to the engine, layers it has) pushed to a
    registry of the test's own, then taken off the engine whole: a worker of it must be pulled, its configuration
    downloaded (a blob's request, after the manifest's). (The registry, its image by digest.)"""
    with pulled_from_own_registry(tmp_path, project[1], "sk-test-pull-config", "worker", whole=True) as pulled:
        yield pulled


@pytest.mark.parametrize(("fixture", "answer"), [
    ("unpulled", "503"), ("unpulled", "429"), ("unpulled", "429-json"), ("unconfigured", "503"),
    ("unconfigured", "429")])
def test_a_worker_waits_for_its_image_while_its_registry_answers_not_now_for_a_few_seconds(project, storage, request,
                                                                                           fixture, answer):
    """A proxy before the image's registry answers the engine's requests for its manifest and blobs (``unpulled``),
    or for its blobs only (``unconfigured``: the manifest's passed, its configuration's refused) itself, until 3 s
    after the first pull failed: 503, a bare 429 with Retry-After, or Docker Hub's 429 ("toomanyrequests", its error
    JSON). The engine's words for it are a wait, not a refusal (``waiting`` says them: for a blob, those of its
    pull's stream, "error pulling image configuration: download failed after attempts=N: ...", after its own tries);
    once the proxy passes them, the image is pulled and the run resolves. Was: the bare 429 failed the run at once
    (its words, "error parsing HTTP 429 response body", were not known as a registry's "not now"); a blob's, the
    SDK's pull dropped them and said "No such image: <ref>", taken as a refusal."""
    registry, ref = request.getfixturevalue(fixture)
    not_now = REGISTRY_NOT_NOW[answer]
    paths = (b"/blobs/",) if fixture == "unconfigured" else (b"/manifests/", b"/blobs/")
    with registry_answering(registry, ref, not_now, paths=paths) as (proxy, image):
        executor = DockerExecutor(storage, storage.url, image, env=worker_env())
        try:
            task = submit(executor, storage, project[0].inc, 41)
            why = waiting_for_image(executor, task)  # it does not fail
            print(f"the engine's words for a {answer} ({fixture}): {why}")
            blob = "error pulling image configuration: download failed after attempts=" if len(paths) == 1 else ""
            assert why.startswith(f"waiting for its image: the Docker engine could not pull {image} ({blob}"), why
            assert why.partition("; pulling: ")[0].endswith(f"{not_now.words}); trying again for up to 120 s"), why
            with called_in(3, proxy.passing):
                outcome = outcome_of(executor)
            assert stored_value(storage, outcome) == 42
            assert executor.waiting == {} and proxy.throttled >= 1
        finally:
            executor.close()
    assert containers_of(run=task.run_id) == []


def test_a_worker_waiting_for_its_first_pull_try_is_noted_with_its_progress_and_a_layer_the_engine_retries(
        project, storage, tmp_path):
    """Through the resolution loop: ``inc`` (a worker) from an image of a few layers (one of 20 MB), its last layer's
    blob answered 503 by a proxy before its registry: the engine's first pull try downloads the others and retries
    that layer (its stream's "Retrying in N seconds", ~75 s in all before the try fails). While the try is under way,
    the run's note ``waiting`` names the pull, its layers and MB, and the retry; once the proxy passes the blob, the
    image is pulled, the run resolves and its note is gone. Was: nothing was noted until the first try failed, a
    minute or more later."""
    from sematic_k8s.executors.inline import InlineExecutor
    from sematic_k8s.executors.inline_or_remote import InlineOrRemoteExecutor
    from sematic_k8s.resolvers.loop import ResolutionLoop
    from sematic_k8s.specs import ResolutionSettings
    from sematic_k8s.store import sql_store

    store = sql_store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    f = project[0].inc_beside(5)
    raised: list[BaseException] = []
    seen: list[str] = []

    def retrying() -> str | None:
        why = str(next((r.notes.get("waiting") or "" for r in store.runs_of_root(f.id) if r.func_name == "inc"), ""))
        if why and why not in seen:
            seen.append(why)
        # all 20 MB and the retry: the engine downloads the new layers at once, the small one's 503 (its retry) comes
        # while the 20 MB do, and a note made then (their words change every 5 s at most) says fewer MB
        return why if " 20 of 20 MB; the engine retries a layer (" in why else None

    def resolve(loop: ResolutionLoop) -> None:
        try:
            loop.run(f)
        except BaseException as e:  # noqa: BLE001 - asserted below
            raised.append(e)

    with pulled_from_own_registry(tmp_path, project[1], "sk-test-pull-progress", "worker", layered=True,
                                  big_mb=20) as (registry, ref), \
            registry_answering(registry, ref, REGISTRY_NOT_NOW["503"], paths=(last_layer(registry, ref),)) as (
                proxy, image):
        executor = DockerExecutor(storage, storage.url, image, env=worker_env())
        loop = ResolutionLoop(store, storage, InlineOrRemoteExecutor(InlineExecutor(2), executor),
                              ResolutionSettings(root_id=f.id, max_parallelism=2), kind="cloud")
        resolution = threading.Thread(target=resolve, args=(loop,), daemon=True)
        resolution.start()
        try:
            why = wait_for(retrying, 60, what="inc's note to say the engine retries a layer of its image")
            print("\n".join(seen))
            name, _, digest = image.partition("@sha256:")
            assert re.fullmatch(r"pulling its image \(\d+ of \d+ layers, 20 of 20 MB; the engine retries a layer "
                                r"\(\d+ failed downloads?\)\): " + re.escape(f"{name}@sha256:{digest[:12]}"), why), why
            assert len(digest) == 64 and why.index("layers") < 40, why  # its progress before the image, in the CLI
            assert not any(s.startswith("waiting for its image") for s in seen), seen  # still its first try
            proxy.passing()
            resolution.join(120)
            assert not resolution.is_alive() and raised == [], raised
        finally:
            if resolution.is_alive():
                store.request_cancel(f.id)
                resolution.join(150)
            executor.close()
    runs = {r.func_name: r for r in store.runs_of_root(f.id)}
    assert runs["inc"].state == "resolved" and "waiting" not in runs["inc"].notes, runs["inc"]
    assert proxy.throttled >= 1


@pytest.mark.parametrize("answer", ["503", "429", "silent"])
def test_a_worker_whose_registry_answers_not_now_past_the_pull_grace_never_started_in_the_engines_words(
        project, storage, unpulled, answer):
    """The proxy answers 503 (or a bare 429) to every request for the image, or takes them and never answers (the
    engine waits for such a registry without end: its pull is ended once it made no progress for the grace, or a
    minute): past the executor's ``pull_grace`` (3 s here), not at once, the run fails as CreateContainerError in the
    engine's words (ours for the silence), saying how long it was tried. Was: the silent registry held the pull, and
    the driver's loop with it, for ever."""
    registry, ref = unpulled
    not_now = SILENT if answer == "silent" else REGISTRY_NOT_NOW[answer]
    with registry_answering(registry, ref, not_now) as (proxy, image):
        executor = DockerExecutor(storage, storage.url, image, env=worker_env(), pull_grace=3)
        try:
            task, outcome = run(executor, storage, project[0].inc, 1)
        finally:
            executor.close()
    assert_never_started(outcome, f"does not have image {image} and could not pull it for ", f"({not_now.words}",
                         "push it to its registry, or check that the engine can reach that registry")
    assert proxy.throttled >= (1 if answer == "silent" else 2)  # tried again; a silent try took the whole grace
    assert executor.waiting == {}
    assert containers_of(run=task.run_id) == []


def test_a_run_whose_registry_is_silent_holds_up_neither_the_other_runs_nor_its_cancel(project, storage, unpulled,
                                                                                      tmp_path):
    """Through the resolution loop: ``inc`` (a worker) from an image whose registry takes the engine's requests and
    never answers (SILENT: each pull try is silent for a minute before it is ended), beside ``thrice`` (inline: in the
    driver, its code there). ``thrice`` resolves while ``inc`` still waits for its image; a cancel of the resolution
    then ends it at once, ``inc`` recorded canceled, its silent try left to end by itself. Was: each pull try ran
    inside the launch, on the loop: no other run was launched or recorded, and no cancel seen, for a minute a try."""
    from sematic_k8s.errors import ResolutionCanceled
    from sematic_k8s.executors.inline import InlineExecutor
    from sematic_k8s.executors.inline_or_remote import InlineOrRemoteExecutor
    from sematic_k8s.resolvers.loop import ResolutionLoop
    from sematic_k8s.specs import ResolutionSettings
    from sematic_k8s.store import sql_store

    registry, ref = unpulled
    store = sql_store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    f = project[0].inc_beside(5)
    raised: list[BaseException] = []

    def runs() -> dict[str, Any]:
        return {r.func_name: r for r in store.runs_of_root(f.id)}

    def resolve(loop: ResolutionLoop) -> None:
        try:
            loop.run(f)
        except BaseException as e:  # noqa: BLE001 - asserted below
            raised.append(e)

    with registry_answering(registry, ref, SILENT) as (proxy, image):
        executor = DockerExecutor(storage, storage.url, image, env=worker_env())  # a try silent for PULL_SILENCE
        loop = ResolutionLoop(store, storage, InlineOrRemoteExecutor(InlineExecutor(2), executor),
                              ResolutionSettings(root_id=f.id, max_parallelism=2), kind="cloud")
        resolution = threading.Thread(target=resolve, args=(loop,), daemon=True)
        resolution.start()
        try:
            wait_for(lambda: "thrice" in runs() and runs()["thrice"].state == "resolved", 30,
                     what="thrice to resolve while inc waits for its image")
            wait_for(lambda: proxy.throttled >= 1, 30, what="the engine's request for inc's image held silent")
            assert runs()["inc"].state not in ("resolved", "failed", "canceled")
            store.request_cancel(f.id)
            resolution.join(20)
            assert not resolution.is_alive(), "the cancel was not honoured while the pull try hung"
            assert len(raised) == 1 and isinstance(raised[0], ResolutionCanceled), raised
            assert runs()["inc"].state == "canceled" and runs()["thrice"].state == "resolved"
        finally:
            if resolution.is_alive():
                store.request_cancel(f.id)
                resolution.join(150)
            executor.close()
    assert containers_of(f.id) == []


@pytest.fixture
def no_python(project) -> Iterator[str]:
    """The project's image with no python on its PATH: its containers are created, but the engine cannot start
    the worker's command."""
    client = docker_client()
    tag = f"sk-test-no-python:{uuid.uuid4().hex[:8]}"
    client.images.build(fileobj=io.BytesIO(f"FROM {project[1]}\nENV PATH=/nowhere\n".encode()), tag=tag, rm=True)
    yield tag
    client.images.remove(tag, force=True)


def test_a_container_the_engine_refuses_to_start_fails_its_run_and_is_removed(project, storage, no_python):
    """The engine creates the container but refuses its start (400 'exec: "python": executable file not found in
    $PATH'): its run fails saying so and what the image needs, and the created container is removed. Was: the
    APIError raised out of launch, the container left created."""
    executor = DockerExecutor(storage, storage.url, no_python, env=worker_env())
    try:
        task, outcome = run(executor, storage, project[0].inc, 1)
    finally:
        executor.close()
    assert_never_started(outcome, 'refused to start it (', 'exec: "python": executable file not found in $PATH',
                         f"image {no_python} cannot run the worker (`python -m sematic_k8s.worker`): it needs python")
    assert docker_client().containers.list(all=True, filters={"ancestor": no_python}) == []


def test_a_refused_container_fails_its_run_and_its_resolution_in_words(project, storage, tmp_path):
    """Through the resolution loop: the refused run is recorded failed with the engine's words, and the resolution
    fails as ResolutionFailed naming it, as for any failed run (its sibling canceled), recorded failed with those
    words; no container of it is left. Was: the raw APIError out of the loop."""
    from sematic_k8s.executors.inline import InlineExecutor
    from sematic_k8s.executors.inline_or_remote import InlineOrRemoteExecutor
    from sematic_k8s.resolvers.loop import ResolutionLoop
    from sematic_k8s.specs import ResolutionSettings
    from sematic_k8s.store import sql_store

    store = sql_store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    f = project[0].greedy_beside(5)
    executor = DockerExecutor(storage, storage.url, project[1], env=worker_env())
    loop = ResolutionLoop(store, storage, InlineOrRemoteExecutor(InlineExecutor(1), executor),
                          ResolutionSettings(root_id=f.id, max_parallelism=2), kind="cloud")
    with pytest.raises(ResolutionFailed) as err:
        loop.run(f)
    runs = {r.func_name: r for r in store.runs_of_root(f.id)}
    assert err.value.run_id == runs["greedy"].id and err.value.error["type"] == "CreateContainerError"
    assert runs["greedy"].state == "failed" and "Range of CPUs" in runs["greedy"].error["message"]
    assert runs["inc"].state in ("resolved", "canceled")  # as beside any failed run
    resolution = store.get_resolution(f.id)
    assert resolution is not None and resolution.state == "failed" and "Range of CPUs" in (resolution.error or "")
    assert containers_of(f.id) == []


def test_an_engine_that_stops_answering_at_a_launch_is_docker_unavailable_not_a_run_failure(project, storage,
                                                                                            monkeypatch):
    """$DOCKER_HOST is a proxy before the engine's socket, closed before a launch: an outage, not the run's doing,
    so DockerUnavailable (an infrastructure error) naming the engine and what it was doing, and no run recorded as
    failed. Was: requests' ConnectionError raised out of launch."""
    engine = (os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock").removeprefix("unix://")
    if "://" in engine:
        pytest.skip(f"the engine is not on a Unix socket here ({engine})")
    proxy = DroppingProxy(engine)
    monkeypatch.setenv("DOCKER_HOST", f"tcp://127.0.0.1:{proxy.port}")
    executor = DockerExecutor(storage, storage.url, project[1], env=worker_env())
    proxy.close()
    with pytest.raises(DockerUnavailable, match=f"the Docker engine at tcp://127.0.0.1:{proxy.port} stopped "
                                                "answering while starting the worker of run "):
        submit(executor, storage, project[0].inc, 1)
    assert executor.finished == []


# -- an engine that stops answering while workers run ------------------------------------------------------------

@pytest.fixture
def engine_proxy(monkeypatch) -> Iterator[DroppingProxy]:
    """$DOCKER_HOST a proxy before the engine's socket (never the engine itself: others share it), restored after."""
    engine = (os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock").removeprefix("unix://")
    if "://" in engine:
        pytest.skip(f"the engine is not on a Unix socket here ({engine})")
    proxy = DroppingProxy(engine)
    monkeypatch.setenv("DOCKER_HOST", f"tcp://127.0.0.1:{proxy.port}")
    yield proxy
    proxy.close()


def test_a_worker_followed_through_an_engine_cut_for_a_few_seconds_is_read_and_run_once(project, storage,
                                                                                       engine_proxy):
    """The engine's connections are cut (and new ones refused) for a few seconds while a worker waits at its gate,
    which opens meanwhile; the worker stores its outcome and ends while the engine does not answer. The executor
    rides the cut out (its follow attached again once the engine answers): the outcome is read, the worker started
    once, its container removed. Was: requests' ConnectionError raised out of wait()."""
    x = uuid.uuid4().int % 10**6
    executor = DockerExecutor(storage, storage.url, project[1], env=worker_env())
    try:
        task = at_its_gate(executor, storage, project[0].gated, x)
        engine_proxy.drop()

        def back() -> None:
            storage.put(f"gates/{x}", b"")  # its outcome stored while the engine's connections are cut
            wait_for(lambda: storage.exists(outcome_key(task.run_id, 1)), 60, what="the worker's outcome")
            engine_proxy.drop(False)
        restore = threading.Timer(2, back)
        restore.start()
        outcome = outcome_of(executor)
        restore.join()
        assert engine_proxy.dropped > 0  # the cut met the executor's connections
        assert outcome.error_info is None, outcome.error_info
        assert stored_value(storage, outcome) == 2 * x
    finally:
        executor.close()
    assert starts(storage, x) == 1
    assert containers_of(run=task.run_id) == []


def test_a_worker_that_stores_its_outcome_during_an_engine_cut_and_lingers_is_read_once_the_engine_answers(
        project, storage, engine_proxy):
    """As above, but the worker does not end once its outcome is stored (a thread that is not a daemon): only its
    "outcome stored" line, printed while the engine's connections were cut, says it is done. Its follow, attached
    again with the container's stdout from its start, reads that line: the outcome is read at once, not at the
    worker's end (600 s on). Was: missed most times (the attach's first bytes, read by the HTTP client with the
    answer's head, were never seen: a replayed stdout lost its start), the run left running."""
    x = uuid.uuid4().int % 10**6
    executor = DockerExecutor(storage, storage.url, project[1], env=worker_env())
    try:
        task = at_its_gate(executor, storage, project[0].gated_lingers, x)
        engine_proxy.drop()
        storage.put(f"gates/{x}", b"")  # its outcome stored while the engine's connections are cut
        wait_for(lambda: storage.exists(outcome_key(task.run_id, 1)), 60, what="the worker's outcome")
        time.sleep(1)  # its line printed meanwhile
        engine_proxy.drop(False)
        outcome = outcome_of(executor)
        assert engine_proxy.dropped > 0
        assert outcome.error_info is None, outcome.error_info
        assert stored_value(storage, outcome) == 2 * x
        [container] = containers_of(run=task.run_id)
        assert container.status == "running"  # read from its line, not from its end
    finally:
        executor.close()
    assert starts(storage, x) == 1
    assert containers_of(run=task.run_id) == []


def test_an_engine_lost_while_a_worker_runs_is_docker_unavailable_in_words_and_close_says_what_is_left(
        project, storage, engine_proxy, monkeypatch, caplog):
    """The proxy closes (connections cut, new ones refused) for good while a worker waits at its gate: past the
    retry window, wait() raises DockerUnavailable naming the engine and what to do, and close() raises nothing but
    says which containers it left and how to remove them. Was: requests' ConnectionError out of wait()."""
    x = uuid.uuid4().int % 10**6
    executor = DockerExecutor(storage, storage.url, project[1], env=worker_env())
    monkeypatch.setenv("SEMATIC_K8S_RETRY_WINDOW", "3")
    task = at_its_gate(executor, storage, project[0].gated, x)
    engine_proxy.close()
    where = f"the Docker engine at tcp://127.0.0.1:{engine_proxy.port}"
    with pytest.raises(DockerUnavailable, match=f"^{where} stopped answering while .+ \\(Connection refused\\): "
                                                "is it running\\? Start it, or set \\$DOCKER_HOST to one that is"):
        wait_for(lambda: executor.wait(0.5), 120, what="the lost engine's error")
    executor.close()
    left = [r.getMessage() for r in caplog.records if "may be left on it" in r.getMessage()]
    assert left and f"remove them with `docker rm -f $(docker ps -aq --filter label={RESOLUTION_LABEL}=" in left[0]
    monkeypatch.setenv("DOCKER_HOST", f"unix://{engine_proxy.target_port}")
    [container] = containers_of(run=task.run_id)  # the engine was never asked to remove it
    storage.put(f"gates/{x}", b"")
    container.remove(force=True)


def test_a_driver_that_loses_the_engine_leaves_its_worker_to_the_restarted_driver_which_reads_it_once(
        project, storage, engine_proxy, monkeypatch, tmp_path):
    """The resolution loop as a driver runs it (``detach_on_outage``: it exits 75 to be started again): the engine
    lost for good while the step waits at its gate ends the run with DockerUnavailable, the resolution left running
    and its worker container too; the restarted driver, the engine back, re-attaches to that container: the step
    starts once and the resolution resolves to its value. Was: requests' ConnectionError out of the loop."""
    from sematic_k8s.executors.inline import InlineExecutor
    from sematic_k8s.executors.inline_or_remote import InlineOrRemoteExecutor
    from sematic_k8s.resolvers.loop import ResolutionLoop
    from sematic_k8s.specs import ResolutionSettings
    from sematic_k8s.store import sql_store

    store = sql_store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    x = uuid.uuid4().int % 10**6
    f = project[0].gated(x)

    def driver() -> ResolutionLoop:
        executor = DockerExecutor(storage, storage.url, project[1], env=worker_env())
        loop = ResolutionLoop(store, storage, InlineOrRemoteExecutor(InlineExecutor(1), executor),
                              ResolutionSettings(root_id=f.id, max_parallelism=2), kind="cloud")
        loop.detach_on_outage = True
        return loop

    first, raised = driver(), []
    monkeypatch.setenv("SEMATIC_K8S_RETRY_WINDOW", "3")

    def run_first() -> None:
        try:
            first.run(f)
        except Exception as e:  # noqa: BLE001 - looked at below
            raised.append(e)
    thread = threading.Thread(target=run_first)
    thread.start()
    wait_for(lambda: starts(storage, x), 120, what="the step's start")
    engine_proxy.close()
    thread.join(120)
    assert not thread.is_alive(), "the driver kept waiting on a lost engine"
    assert len(raised) == 1 and isinstance(raised[0], DockerUnavailable), raised
    assert str(raised[0]).startswith(f"the Docker engine at tcp://127.0.0.1:{engine_proxy.port} stopped answering ")
    resolution = store.get_resolution(f.id)
    assert resolution is not None and resolution.state not in ("failed", "resolved")  # left to the restarted one
    monkeypatch.setenv("DOCKER_HOST", f"unix://{engine_proxy.target_port}")  # the engine back
    [container] = [c for c in docker_client().containers.list(filters={"label": f"{RESOLUTION_LABEL}={f.id}"})]
    storage.put(f"gates/{x}", b"")
    assert driver().run(f) == 2 * x
    assert starts(storage, x) == 1  # started once: re-attached, not started again
    assert docker_client().containers.list(all=True, filters={"id": container.id}) == []


DRIVER_SCRIPT = ("import os, time\nprint('one', flush=True)\nwhile not os.path.exists('/tmp/gate'):\n"
                 "    time.sleep(0.1)\nprint('two', flush=True)\nraise SystemExit({code})")


@contextlib.contextmanager
def gated_container(image: str, engine_proxy: DroppingProxy, auto_remove: bool = False,
                    code: int = 3) -> Iterator[tuple[Any, Any]]:
    """A container labelled as the driver of a new resolution, made on the engine itself (not through the proxy): it
    prints "one", waits for /tmp/gate, prints "two", exits ``code``. Yields it and its DriverSpec. Unlike
    start_driver's, it is kept once ended (removed here): its exit code is there whenever a follower, which may be
    waiting out the retry's backoff, asks for it again (unless ``auto_remove``, as start_driver's)."""
    import docker

    from sematic_k8s.labels import run_labels
    from sematic_k8s.specs import DriverSpec, ResolutionSettings

    direct = docker.DockerClient(base_url=f"unix://{engine_proxy.target_port}")
    root_id = uuid.uuid4().hex
    container = direct.containers.run(image, entrypoint=["python", "-c", DRIVER_SCRIPT.format(code=code)],
                                      detach=True, auto_remove=auto_remove,
                                      labels=run_labels(root_id, root_id, "driver", "driver"),
                                      name=f"sk-driver-{root_id[:12]}-test")
    try:
        yield container, DriverSpec(None, "s3://unused", image, resolution=ResolutionSettings(root_id=root_id))
    finally:
        with contextlib.suppress(docker_errors.NotFound):
            container.remove(force=True)


@contextlib.contextmanager
def gated_driver(image: str, engine_proxy: DroppingProxy, auto_remove: bool = False) -> Iterator[tuple[Any, Any]]:
    """:func:`gated_container` (exit 3), with the DriverContainer that follows it through the proxy ($DOCKER_HOST)
    in this process."""
    from sematic_k8s.launchers.docker import DriverContainer

    with gated_container(image, engine_proxy, auto_remove) as (container, spec):
        yield container, DriverContainer(spec)


def test_a_closed_driver_follower_holds_no_connection_to_the_engine(project):
    """A CloudResolver's follower of its driver container kept the connections of its wait and its log after close(),
    until the garbage collector found it (a process resolving one pipeline after another held them all). Each
    follower here is kept: what it holds after close() is what close() left open."""
    from sematic_k8s.labels import run_labels
    from sematic_k8s.launchers.docker import DriverContainer
    from sematic_k8s.specs import DriverSpec, ResolutionSettings

    engine, closed, held = docker_client(), [], 0
    for _ in range(4):
        root_id = uuid.uuid4().hex
        container = engine.containers.run(project[1], entrypoint=["python", "-c", "print('done')"], detach=True,
                                          labels=run_labels(root_id, root_id, "driver", "driver"))
        try:
            before = sockets()  # the test's own client's not counted: only what the follower opened and left
            driver = DriverContainer(DriverSpec(None, "s3://unused", project[1],
                                                resolution=ResolutionSettings(root_id=root_id)))
            closed.append(driver)
            assert wait_for(driver.ended, 120, what="the driver's end").exit_code == 0
            wait_for(lambda: not driver.streamer.is_alive(), 60, what="the end of the driver's log")  # noqa: B023
            driver.close()
            held += sockets() - before
        finally:
            container.remove(force=True)
    assert held < len(closed), open_fds()


def test_a_driver_followed_through_an_engine_cut_for_a_few_seconds_ends_as_it_did(project, engine_proxy):
    """The engine's connections are cut (and new ones refused) for a few seconds while a CloudResolver follows its
    driver container; the driver ends once the engine answers again. Its end is read as it was (its exit code, its
    log lines once each). Was: the wait's ConnectionError taken for "exited before it could be followed" (the
    resolution failed by its follower while its driver ran), the log's follow ended at the cut."""
    with gated_driver(project[1], engine_proxy) as (container, driver):
        wait_for(lambda: "one" in driver.lines, 120, what="the driver's first line")
        engine_proxy.drop()
        time.sleep(2)  # the cut lasts a few seconds
        engine_proxy.drop(False)
        assert engine_proxy.dropped > 0  # the cut met the follower's connections
        assert driver.ended() is None  # it runs still
        container.exec_run(["touch", "/tmp/gate"])
        end = wait_for(driver.ended, 120, what="the driver's end")
    assert (end.how, end.exit_code, end.last_logs) == ("exited with code 3", 3, "one\ntwo")


def test_a_driver_that_ends_and_removes_itself_during_an_engine_cut_ends_with_its_exit_code(project, engine_proxy):
    """The driver container removes itself when it exits (``auto_remove``, as start_driver's) and ends while the
    engine's connections are cut: it is gone when its follower asks for its exit code again. That code is read from
    the engine's "die" event of it, so its end is "exited with code 3" (its lines printed during the cut are lost with
    it). Was: "exited before it could be followed", the exit code unknown."""
    with gated_driver(project[1], engine_proxy, auto_remove=True) as (container, driver):
        wait_for(lambda: "one" in driver.lines, 120, what="the driver's first line")
        engine_proxy.drop()
        container.exec_run(["touch", "/tmp/gate"])  # on the engine itself
        wait_for(lambda: not container.client.containers.list(all=True, filters={"id": container.id}), 60,
                 what="the driver's removal")
        engine_proxy.drop(False)
        assert engine_proxy.dropped > 0
        end = wait_for(driver.ended, 120, what="the driver's end")
    assert (end.how, end.exit_code) == ("exited with code 3", 3)
    assert end.last_logs.startswith("one")


SKEWED_FOLLOWER = """
import json, os, sys, time
from sematic_k8s.launchers.docker import DriverContainer
from sematic_k8s.specs import DriverSpec, ResolutionSettings

image, root_id, out = sys.argv[1:]
driver = DriverContainer(DriverSpec(None, "s3://unused", image, resolution=ResolutionSettings(root_id=root_id)))
while "one" not in driver.lines:
    time.sleep(0.1)
with open(out + ".following", "w") as f:
    f.write(str(time.time()))
while (end := driver.ended()) is None:
    time.sleep(0.1)
with open(out + ".tmp", "w") as f:
    json.dump([end.how, end.exit_code], f)
os.rename(out + ".tmp", out)
"""


@pytest.mark.skipif(FAKETIME is None, reason="libfaketime is not installed (apt-get install faketime)")
def test_a_followers_clock_behind_the_engines_still_reads_the_exit_code_of_a_driver_gone_during_a_cut(
        project, engine_proxy, tmp_path):
    """As above, in a CloudResolver's process whose wall clock is an hour behind the engine's (libfaketime, for
    real), the driver exiting 76 (another driver took over). The "die" event is read up to the engine's own time:
    its end is "exited with code 76". Was: read up to the follower's clock, an hour before the engine's, the engine
    gave no event: "exited before it could be followed", the exit code unknown (its resolution then recorded as a
    driver that died)."""
    skew = skewed("-1h")
    out = tmp_path / "end.json"
    with gated_container(project[1], engine_proxy, auto_remove=True, code=76) as (container, spec):
        env = {**os.environ, **skew,
               "PYTHONPATH": os.pathsep.join(p for p in (skew["PYTHONPATH"], os.environ.get("PYTHONPATH")) if p)}
        with open(tmp_path / "stderr", "wb") as err:
            follower = subprocess.Popen([sys.executable, "-c", SKEWED_FOLLOWER, project[1], spec.root_id, str(out)],
                                        env=env, stderr=err)
        try:
            following = tmp_path / "end.json.following"
            wait_for(lambda: following.exists() or follower.poll() is not None, 120, what="the follower's first line")
            assert following.exists(), (tmp_path / "stderr").read_text()
            engine_now = container.client.info()["SystemTime"]
            behind = datetime.datetime.fromisoformat(engine_now).timestamp() - float(following.read_text())
            assert 3500 < behind < 3700, behind  # the follower's clock is an hour behind the engine's
            engine_proxy.drop()
            container.exec_run(["touch", "/tmp/gate"])  # on the engine itself
            wait_for(lambda: not container.client.containers.list(all=True, filters={"id": container.id}), 60,
                     what="the driver's removal")
            engine_proxy.drop(False)
            assert engine_proxy.dropped > 0
            wait_for(lambda: out.exists() or follower.poll() is not None, 120, what="the driver's end")
            assert out.exists(), (tmp_path / "stderr").read_text()
        finally:
            follower.kill()
            follower.wait()
    assert json.loads(out.read_text()) == ["exited with code 76", 76]


def test_a_driver_followed_through_a_lasting_engine_loss_is_docker_unavailable_saying_how_to_follow_it(
        project, engine_proxy, monkeypatch):
    """The proxy closes for good while a CloudResolver follows its driver container: past the retry window its
    follower's ended() raises DockerUnavailable naming the engine, that the driver may still run and how to follow
    it; never an end of the driver (the resolution is left to it). Was: "exited before it could be followed"."""
    monkeypatch.setenv("SEMATIC_K8S_RETRY_WINDOW", "3")
    with gated_driver(project[1], engine_proxy) as (container, driver):
        wait_for(lambda: "one" in driver.lines, 120, what="the driver's first line")
        engine_proxy.close()
        where = f"the Docker engine at tcp://127.0.0.1:{engine_proxy.port}"
        with pytest.raises(DockerUnavailable) as err:
            wait_for(driver.ended, 120, what="the lost engine's error")
        assert str(err.value).startswith(f"{where} stopped answering while following "), str(err.value)
        assert f"driver container {container.name} of resolution " in str(err.value)
        assert f"may still run, its resolution left to it: follow it with `docker logs -f {container.name}`" in str(
            err.value)
        container.reload()  # on the engine itself: the driver runs on
        assert container.status == "running"


def test_a_driver_launch_whose_engine_connection_is_cut_is_docker_unavailable_in_words(project, engine_proxy):
    """The engine creates the driver's container but its answer never reaches the CloudResolver (the connection cut
    before it): DockerUnavailable naming the engine and the resolution. Was: requests' ConnectionError."""
    import docker

    from sematic_k8s.launchers.docker import start_driver
    from sematic_k8s.specs import DriverSpec, ResolutionSettings

    direct = docker.DockerClient(base_url=f"unix://{engine_proxy.target_port}")
    root_id = uuid.uuid4().hex
    spec = DriverSpec(None, "s3://unused", project[1], resolution=ResolutionSettings(root_id=root_id))
    engine_proxy.lose_answer(f"POST /v{direct.api.api_version}/containers/create".encode())
    try:
        with pytest.raises(DockerUnavailable, match=f"^the Docker engine at tcp://127.0.0.1:{engine_proxy.port} "
                                                    f"stopped answering while starting the driver of resolution "
                                                    f"{root_id} "):
            start_driver(spec, {})
        assert engine_proxy.lost == 1
    finally:
        for c in direct.containers.list(all=True, filters={"label": f"{RESOLUTION_LABEL}={root_id}"}):
            c.remove(force=True)


def test_a_worker_whose_first_pull_try_failed_is_noted_with_the_next_tries_progress_beside_the_failure(
        project, storage, tmp_path):
    """A worker's image of a few layers (one of 20 MB), a proxy before its registry answering 503 to its manifest:
    the first pull try fails at once and the run waits. Then the proxy answers 503 to its last layer's blob only: the
    next try downloads the others while the engine retries that layer. The run's ``waiting`` keeps the first try's
    failure and adds that try's progress ("...; trying again for up to 120 s; pulling: D of N layers, 20 of 20 MB;
    the engine retries a layer (K failed downloads)"); the proxy passing, the run resolves. Was: only the failure, no
    progress."""
    with pulled_from_own_registry(tmp_path, project[1], "sk-test-pull-progress-again", "worker", layered=True,
                                  big_mb=20) as (registry, ref), \
            registry_answering(registry, ref, REGISTRY_NOT_NOW["503"], paths=(b"/manifests/",)) as (proxy, image):
        last = last_layer(registry, ref)
        executor = DockerExecutor(storage, storage.url, image, env=worker_env())
        try:
            task = submit(executor, storage, project[0].inc, 41)
            failed = waiting_for_image(executor, task).partition("; pulling: ")[0]
            proxy.throttle = lambda head: last in head.split(b"\r\n", 1)[0]

            def pulling() -> str | None:
                assert executor.wait(0.2) == []
                why = executor.waiting.get(task.run_id) or ""
                return why if "; the engine retries a layer (" in why else None

            why = wait_for(pulling, 60, what="the run's note to give the next try's progress")
            assert why.startswith(f"{failed}; pulling: "), (failed, why)
            assert re.search(r"; pulling: \d+ of \d+ layers, \d+ of 20 MB; the engine retries a layer \(\d+ failed "
                             r"downloads?\)$", why), why
            proxy.passing()
            assert stored_value(storage, outcome_of(executor)) == 42
            assert executor.waiting == {}
        finally:
            executor.close()


def noted(executor: DockerExecutor, task: Task, words: str) -> str:
    """The task's run's note, once it has ``words``; no outcome meanwhile."""
    def said() -> str | None:
        ended = executor.wait(0.2)
        assert ended == [], [(o.error_info or {}).get("message") for o in ended]
        why = executor.waiting.get(task.run_id) or ""
        return why if words in why else None
    return wait_for(said, 60, what=f"the run's note to say {words!r}")


@pytest.fixture
def retried_layer(project, tmp_path) -> Iterator[tuple[ThrottlingProxy, str]]:
    """The project's image with a layer of its own, pushed to a registry of the test's own behind a proxy that answers
    503 to that layer's blob (the engine retries it itself, about 75 s, before its pull fails): (the proxy, the image
    by digest through it)."""
    with pulled_from_own_registry(tmp_path, project[1], "sk-test-pull-deadline", "worker", layered=True) as (
            registry, ref), registry_answering(registry, ref, REGISTRY_NOT_NOW["503"],
                                               paths=(last_layer(registry, ref),)) as (proxy, image):
        yield proxy, image


def test_runs_whose_layer_the_engine_retries_fail_each_at_its_own_pull_grace_and_their_try_is_abandoned(
        project, storage, retried_layer, monkeypatch):
    """A layer answered 503, which the engine retries itself for about 75 s within one pull try, a 3 s
    ``pull_grace``: the engine's retry is each waiting run's first failure (the retry's, in the pull's stream, for a
    run waiting then; its coming, for one that came later), and each run fails at its own grace's end while the
    shared try goes on (one that came later waits on), in the engine's words of the try under way; once no run
    waits, the try is abandoned (its thread ends, the engine's pull with it). The executor is not asked (its
    ``wait``) between the retry and the second run's coming, as a driver's loop busy elsewhere, or starved on a loaded
    machine, may not. Was: the grace began at the first failed try, and a run was failed only once a try ended: about
    150 s here; then, a run's grace began when the executor first looked after the retry, here at the second's
    coming: both failed together, at the second's grace."""
    from sematic_k8s import docker_pull_progress

    monkeypatch.setattr(docker_pull_progress, "PULL_PROGRESS_EVERY", 0.0)  # the note says the retry within the grace
    proxy, image = retried_layer
    executor = DockerExecutor(storage, storage.url, image, env=worker_env(), pull_grace=3)
    try:
        first = submit(executor, storage, project[0].inc, 1)
        wait_for(lambda: "; the engine retries a layer (" in (executor.waiting.get(first.run_id) or ""), 60,
                 what="the run's note to say the engine retries a layer")  # read only: the executor not asked
        pulling = executor.pulls.current  # the shared try under way (private: its end is what is asserted)
        time.sleep(1.5)  # the second's grace ends that much after the first's
        second = submit(executor, storage, project[0].inc, 2)
        outcome = outcome_of(executor)
        assert outcome.run_id == first.run_id and second.run_id in executor.waiting, (outcome, executor.waiting)
        assert pulling is not None and pulling.is_alive()  # the try goes on for the second
        later = outcome_of(executor)
        assert later.run_id == second.run_id
    finally:
        executor.close()
    for ended in (outcome, later):
        assert_never_started(ended, f"does not have image {image} and could not pull it for ", " s (pulling: ",
                             "; the engine retries a layer (", " failed download",
                             "push it to its registry, or check that the engine can reach that registry")
    pulling.join(30)
    assert not pulling.is_alive(), "the try no run waits for was not abandoned"
    assert executor.waiting == {} and containers_of(run=first.run_id) == containers_of(run=second.run_id) == []


def test_a_run_whose_try_ended_unseen_counts_its_grace_from_the_engines_retry_in_that_try(project, storage,
                                                                                         retried_layer):
    """A layer answered 503, which the engine retries within the pull try ("Retrying in 5 seconds", then 10), then,
    while it counts down its second retry, a bare 429, which ends the try (about 15 s after its first retry), an 8 s
    ``pull_grace``. The executor is not asked (its ``wait``) during the whole try, as a driver's loop busy elsewhere,
    or starved on a loaded machine, may not: its first look once the try ended fails the run, past its grace counted
    from the engine's first retry in that try, in the engine's words of the failed try. Was: counted from that try's
    last line, a second or so before its end: the run waited a whole grace more, another try started."""
    proxy, image = retried_layer
    executor = DockerExecutor(storage, storage.url, image, env=worker_env(), pull_grace=8)
    try:
        task = submit(executor, storage, project[0].inc, 1)
        pulling = executor.pulls.current  # the try under way (private: read, never asked by the executor meanwhile)
        assert pulling is not None
        wait_for(lambda: "(2 failed downloads)" in pulling.progress.words(now=True), 60,
                 what="the engine to retry the layer a second time")
        proxy.answering(429, headers={"Retry-After": "2"})
        pulling.join(60)
        assert not pulling.is_alive() and pulling.error is not None, "the try did not end at the 429"
        outcomes = executor.wait(0)  # the executor's first look since the try began
        assert [o.run_id for o in outcomes] == [task.run_id], (outcomes, executor.waiting)
    finally:
        executor.close()
    assert_never_started(outcomes[0], f"does not have image {image} and could not pull it for ",
                         f"({REGISTRY_NOT_NOW['429'].words})",
                         "push it to its registry, or check that the engine can reach that registry")
    assert executor.waiting == {} and containers_of(run=task.run_id) == []


def test_a_layers_download_that_failed_before_its_first_byte_holds_no_run_past_its_grace():
    """The engine's pull stream as a layer's download fails before its first byte (a 503 to its blob): its failed
    read's "Downloading" line of no bytes (``progressDetail`` {} when no size was known, else the size alone), then
    its "Retrying in N seconds". The engine's stream most often replaces the first line by the second before sending
    it, not always (a loaded machine): the real engine's lines, which cannot be timed from here, are given to
    ``PullProgress`` as its stream gives them. That try is not moving: a run past its
    grace fails (``past_grace``), and the note keeps "the engine retries a layer", each failure counted once; a line
    with bytes still is a download under way. Was: any "Downloading" line was a move, every waiting run held for
    ``PULL_STALL`` (10 s) past its grace: in ~25 runs of the test above on a loaded machine, once, runs due 1.5 s
    apart failed together ("could not pull it for 10 s" and "for 8 s")."""
    from sematic_k8s.docker_pull_progress import PullProgress
    from sematic_k8s.docker_pull_wait import past_grace

    layer = "48012343fd52"
    progress = PullProgress(f"127.0.0.1:5000/img@sha256:{'0' * 64}")
    for status, detail in (("Pulling fs layer", {}), ("Downloading", {}), ("Retrying in 5 seconds", {}),
                           ("Retrying in 1 second", {}), ("Downloading", {"total": 2_000_000}),
                           ("Retrying in 10 seconds", {})):
        progress.seen({"status": status, "progressDetail": detail, "id": layer})
        assert not progress.moving(), (status, detail)
        assert status != "Retrying in 10 seconds" or progress.words(now=True) == (
            "0 of 1 layers, 0 of 2 MB; the engine retries a layer (2 failed downloads)"), progress.words(now=True)
    assert past_grace(time.monotonic() - 3, 3, progress)  # failing for its whole grace: the run fails
    progress.seen({"status": "Downloading", "progressDetail": {"current": 65536, "total": 2_000_000}, "id": layer})
    assert progress.moving() and not past_grace(time.monotonic() - 3, 3, progress)  # bytes came: it waits on


def test_an_executor_closed_while_its_images_try_is_under_way_abandons_that_try(project, storage, retried_layer):
    """The executor closed (its resolution canceled, its driver ending) while the engine retries a layer of its
    image: the try is abandoned, the engine's pull with it. Was: left to go on for the engine's tries (about 75 s),
    its result read by no one."""
    proxy, image = retried_layer
    executor = DockerExecutor(storage, storage.url, image, env=worker_env())
    try:
        task = submit(executor, storage, project[0].inc, 1)
        noted(executor, task, "; the engine retries a layer (")
        pulling = executor.pulls.current  # private: its end is what is asserted
    finally:
        executor.close()
    assert pulling is not None
    pulling.join(30)
    assert not pulling.is_alive(), "the try was not abandoned"
    assert containers_of(run=task.run_id) == []


def test_an_executor_closed_while_its_images_try_is_silent_abandons_that_try(project, storage, unpulled,
                                                                              monkeypatch):
    """The executor closed while its image's registry holds the engine's request silent (the engine sends not even
    its answer's head), the silence limit far past the test (600 s): the try is abandoned at once, its connection to
    the engine closed (the engine's pull ends with it). Was: abandon() was asked only at a line of the pull's
    stream: a silent try went on to its silence limit (the grace, at most a minute), its result read by no one."""
    from sematic_k8s import docker_pull

    monkeypatch.setattr(docker_pull, "PULL_SILENCE", 600.0)
    monkeypatch.setattr(docker_executor, "PULL_SILENCE", 600.0, raising=False)  # where an executor read it itself
    registry, ref = unpulled
    with registry_answering(registry, ref, SILENT) as (proxy, image):
        executor = DockerExecutor(storage, storage.url, image, env=worker_env())
        try:
            task = submit(executor, storage, project[0].inc, 1)
            wait_for(lambda: proxy.throttled >= 1, 60, what="the engine's request for the image held silent")
            pulling = executor.pulls.current  # private: its end is what is asserted
            assert pulling is not None and pulling.is_alive() and task.run_id in executor.waiting
        finally:
            executor.close()
        pulling.join(30)
        assert not pulling.is_alive(), "the silent try was not abandoned"
        assert isinstance(pulling.error, docker_pull.PullAbandoned), pulling.error
    assert containers_of(run=task.run_id) == []


def test_a_pull_abandoned_while_the_engine_has_not_accepted_its_connection_ends_at_once(monkeypatch):
    """$DOCKER_HOST an engine that does not accept connections (a listener of the test's own, its backlog full: the
    connection of the pull's try is still being made), ``PROBE_TIMEOUT`` far past the test (600 s): the try,
    abandoned at its first ask, ends at once (PullAbandoned), its connect not waited for; once the engine accepts
    that connection, it is closed with no request sent. Was: the abandonment waited for the connect up to
    PROBE_TIMEOUT (10 s), then left it to a timeout of PULL_SILENCE + PROBE_TIMEOUT (70 s)."""
    import docker

    from sematic_k8s import docker_engine, docker_pull

    monkeypatch.setattr(docker_engine, "PROBE_TIMEOUT", 600.0)
    engine = socket.create_server(("127.0.0.1", 0), backlog=0)
    engine.settimeout(60)
    port = engine.getsockname()[1]
    filler = socket.create_connection(("127.0.0.1", port))  # the backlog's one place taken: later connects wait
    client = docker.DockerClient(base_url=f"tcp://127.0.0.1:{port}", version="1.41")  # no version asked of it
    abandoned: list[BaseException] = []

    def pull() -> None:
        try:
            docker_pull.pull(client, "127.0.0.1:1/sk-test-never:latest", abandon=lambda: True)
        except BaseException as e:  # noqa: BLE001 - asserted below
            abandoned.append(e)

    puller = threading.Thread(target=pull, daemon=True)
    try:
        puller.start()
        puller.join(60)
        assert not puller.is_alive(), "the abandoned try waited for its connection to the engine"
        assert len(abandoned) == 1 and isinstance(abandoned[0], docker_pull.PullAbandoned), abandoned
        engine.accept()[0].close()  # the engine accepts: the filler, then the try's connection, made late
        late, _ = engine.accept()
        with late:
            late.settimeout(60)
            assert late.recv(65536) == b"", "a request was sent on the abandoned try's connection"
    finally:
        filler.close()
        engine.close()
        client.close()


def test_many_runs_waiting_for_one_image_have_their_notes_written_only_when_their_words_change(
        project, storage, retried_layer, tmp_path, monkeypatch):
    """Through the resolution loop, three workers waiting for one image whose layer the engine retries (a countdown,
    "Retrying in N seconds", a line a second, before each new download): each run's note is written when what it
    tells changes (layers, MB, a failed download; here with the words free to change at every read,
    PULL_PROGRESS_EVERY 0), never with the engine's countdown. Counted: the store's writes of each run's note, at most
    a few more than the 503s the proxy answered. Was: every read whose countdown moved (a write a second a run here;
    every 5 s otherwise, whatever the number of runs)."""
    from sematic_k8s import docker_pull_progress
    from sematic_k8s.executors.inline import InlineExecutor
    from sematic_k8s.executors.inline_or_remote import InlineOrRemoteExecutor
    from sematic_k8s.resolvers.loop import ResolutionLoop
    from sematic_k8s.specs import ResolutionSettings
    from sematic_k8s.store import sql_store

    monkeypatch.setattr(docker_pull_progress, "PULL_PROGRESS_EVERY", 0.0)
    proxy, image = retried_layer
    store = sql_store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    f = project[0].incs(5)
    written: dict[str, list[str]] = {}  # run id -> its notes' "waiting", as written
    write = type(store).write

    def counted(self: Any, batch: Any, **kw: Any) -> Any:  # noqa: ANN401 - the store's own write, waiting notes counted
        for run_id, fields in {**batch.new_runs, **batch.run_updates}.items():
            if "waiting" in (fields.get("notes") or {}):
                written.setdefault(run_id, []).append(fields["notes"]["waiting"])
        return write(self, batch, **kw)

    monkeypatch.setattr(type(store), "write", counted)
    executor = DockerExecutor(storage, storage.url, image, env=worker_env())
    loop = ResolutionLoop(store, storage, InlineOrRemoteExecutor(InlineExecutor(2), executor),
                          ResolutionSettings(root_id=f.id, max_parallelism=4), kind="cloud")
    def resolve() -> None:
        with contextlib.suppress(BaseException):  # canceled at the end
            loop.run(f)

    resolution = threading.Thread(target=resolve, daemon=True)
    resolution.start()
    try:
        wait_for(lambda: len(written) == 3 and proxy.throttled >= 8, 90,
                 what="three runs noted as waiting while the engine failed the layer's download four times")
        throttled, counts = proxy.throttled, {run_id: len(notes) for run_id, notes in written.items()}
        print(f"{throttled} 503s; notes written: {counts}; one run's: {next(iter(written.values()))}")
        assert all(n <= 3 + throttled for n in counts.values()), (throttled, written)
        for notes in written.values():
            assert all(a != b for a, b in zip(notes, notes[1:], strict=False)), notes  # never the same words again
    finally:
        store.request_cancel(f.id)
        resolution.join(60)
        executor.close()
    assert not resolution.is_alive()


def test_an_engines_times_are_read_in_every_form_it_gives_them() -> None:
    """The engine's RFC 3339 times (a container's Created, ``docker info``'s SystemTime): nanoseconds, "Z" or a zone's
    offset, read by hand as Python 3.10 (the oldest this package supports) would not; nothing, or no time, is 0."""
    from sematic_k8s.launchers.docker import _timestamp

    utc = 1796400714  # 2026-12-04T16:11:54Z
    assert _timestamp("2026-12-04T16:11:54.904952837Z") == utc
    assert _timestamp("2026-12-04T16:11:54Z") == _timestamp("2026-12-04T16:11:54") == utc
    assert _timestamp("2026-12-04T17:11:54.1+01:00") == _timestamp("2026-12-04T15:11:54-01:00") == utc
    assert _timestamp(None) == _timestamp("") == _timestamp("yesterday") == 0

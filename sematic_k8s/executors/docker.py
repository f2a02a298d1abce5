"""Run each Run attempt in a Docker container on this machine (host network), from an image by digest.

The executor follows each container's stdout from before its start (one thread per container; the worker's
stderr is on it too, :data:`~sematic_k8s.specs.WORKER_ONE_STREAM_COMMAND`: its last lines in the order written): the
worker's line saying that its outcome is stored (:data:`~sematic_k8s.specs.WORKER_STORED_LINE`) has the outcome read
at once, a tenth of a second before Docker reports the container's end; a worker that dies without that line
is read when Docker reports its end (exit code, and the last log lines). A container is removed in the
background once it has ended (one whose outcome was read and that has not ended STORED_GRACE seconds later is
stopped); when it is stopped (canceled, or past its func's timeout); and when the executor closes, which also
removes every other worker container of the resolution. Workers get no credential: their presigned URLs (in the
task) are all they store and read through; neither a key nor the driver's token is in their environment. The task
itself is copied into the created container, before it starts, as a 0400 file of the image's user
(:data:`TASK_FILE`, named by $SEMATIC_K8S_TASK_FILE) that the worker removes once read: ``docker inspect`` shows
no URL, and one that lets its holder write the attempt's outcome is not left in an exited container. The task carries
the key the worker signs its outcome with (:mod:`.outcome_signing`) where the image's label says its worker signs.

A restarted driver (a newer one that took the resolution over) finds the worker containers of its resolution
by their labels (one list, at its first resumed attempt) and re-attaches to the newest container of each
resumed attempt, running or ended while no driver watched: it is followed as one started here (its stdout
read from its beginning, then Docker's wait), never started a second time. :meth:`DockerExecutor.detach`
(a driver that exits to be restarted, or that was replaced) leaves its containers to that driver.

A worker whose image the engine cannot pull because its registry does not answer (the engine's 500 "dial tcp ...:
connection refused", or a 5xx or 429 from the registry) waits for it, as a pod in ImagePullBackOff does: the pull is
tried again now and then (with backoff; :attr:`~DockerExecutor.waiting` says so) for ``pull_grace`` seconds from its
first failure, then the run fails as CreateContainerError in the engine's words. A registry that answers that it does
not have the image, or refuses it (manifest unknown, 404, unauthorized), fails the run at once. Each pull try runs on
a thread of its own (:mod:`.docker_image_wait`, what waits: one try per image, shared by every run waiting for it),
never on the caller's: a try the engine spends a minute on (a registry silent for
:data:`~sematic_k8s.docker_pull.PULL_SILENCE`, a 5xx to a layer it retries) holds up no other run, and a run canceled
meanwhile ends at once (its try, no run waiting for it, abandoned within :data:`~sematic_k8s.docker_pull.PULL_TICK`, a
silent one too). While a run's first try is under way, :attr:`~DockerExecutor.waiting` says how far it got, from
the engine's stream (:class:`~sematic_k8s.docker_pull_progress.PullProgress`: layers, MB, a layer it retries), the
words changed every few seconds at most; gone once the run is launched.

An engine that stops answering while workers run (restarted, its connection cut) is ridden out for the retry window,
as the store and storage are: every request but a launch's goes through :meth:`DockerExecutor._engine`, and a follow
whose connection was cut attaches again once the engine answers. Past the window it is DockerUnavailable, raised by
:meth:`~DockerExecutor.ended` (a driver then exits 75, leaving its containers to its restart).
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, TypeVar

from sematic_k8s.docker_engine import (
    attach_stdout,
    docker_client,
    engine_calls,
    engine_retried,
    stdout_frames,
    unanswered,
)
from sematic_k8s.docker_pull_wait import PULL_GRACE, pull_failing
from sematic_k8s.docker_secrets import SECRETS_DIR, image_user, secret_archive
from sematic_k8s.errors import DockerUnavailable
from sematic_k8s.executors import outcome_signing
from sematic_k8s.executors.base import Task
from sematic_k8s.executors.docker_create import ImageAbsent, Refused, cpus, memory_bytes
from sematic_k8s.executors.docker_image_wait import ImageWait, Unpulled
from sematic_k8s.executors.remote import LOG_TAIL, Ended, RemoteExecutor
from sematic_k8s.labels import ATTEMPT_LABEL, RESOLUTION_LABEL, ROLE_LABEL, RUN_LABEL, run_labels
from sematic_k8s.settings import SAY_STORED_ENV, SECRET_FILE_ENVS, TASK_FILE_ENV, worker_env
from sematic_k8s.specs import WORKER_ONE_STREAM_COMMAND, WORKER_STORED_LINE, DriverSpec, TaskSpec
from sematic_k8s.storage.base import Storage

LIST_INTERVAL = 0.25  # seconds between lists of ended containers while no waiting thread says one ended
TASK_FILE = f"/{SECRETS_DIR}/task"  # a worker's TaskSpec in its container ($SEMATIC_K8S_TASK_FILE)
STORED_GRACE = 30.0  # seconds a container whose outcome was read may take to end by itself before it is stopped
_STORED = WORKER_STORED_LINE.encode()
T = TypeVar("T")

log = logging.getLogger("sematic_k8s.docker")


class DockerExecutor(RemoteExecutor):
    """One container per run attempt, each followed by a thread that reads its stdout and then blocks on
    Docker's wait; ended containers are also found, now and then, with one labelled list call."""

    presigns = True
    signs = True  # where its image's worker can (workers_sign): the key goes in its task file, as its URLs do

    def __init__(self, storage: Storage, storage_url: str, image: str, *, env: dict[str, str] | None = None,
                 client: Any = None, pull_grace: float = PULL_GRACE, secret: bytes | None = None) -> None:
        super().__init__(storage, storage_url, secret=secret)

        self.client = client or docker_client(max_pool_size=64)  # a connection per waiting thread
        self._own_client = client is None  # closed with the executor (a client given is its giver's)
        self.image = image
        # workers reach storage through presigned URLs: never a secret in their environment (docker inspect)
        self.env = {k: v for k, v in (env or {}).items() if k not in SECRET_FILE_ENVS}
        self.containers: dict[str, Any] = {}  # run id -> container
        self._removals: list[threading.Thread] = []
        self._wake = threading.Event()  # set when a container ends (a thread per container waits on Docker)
        self._exits: deque[tuple[str, str, bool]] = deque()  # (run id, container id, stored: not yet ended)
        self._stored_at: dict[str, float] = {}  # run id -> monotonic time its outcome was said to be stored
        self._followers: list[threading.Thread] = []
        self._listed_at = 0.0  # monotonic time of the last list of ended containers
        self.root_id = ""
        self.found: dict[tuple[str, str], dict[str, Any]] | None = None  # (run id, attempt) -> a container there
        self.reattached: set[str] = set()  # container ids found again, not started here
        self.owner: tuple[int, int] | None = None  # the image's user (uid, gid), who alone may read a task file
        self.lost: DockerUnavailable | None = None  # the engine stopped answering for longer than the retry window
        self.left: set[str] = set()  # containers not removed for it (named when the executor closes)
        self.pulls = ImageWait(self.client, image, pull_grace, self._wake)  # the runs waiting for their image

    @classmethod
    def from_spec(cls, spec: DriverSpec, storage: Storage, secret: bytes | None = None) -> DockerExecutor:
        """A driver's executor: containers from the spec's image, with the driver's pass-through env (no key), and
        the spec's ``executor_settings["pull_grace"]`` when it has one; their keys derived from its ``secret``."""
        return cls(storage, spec.storage_url, spec.image, env=worker_env(), secret=secret,
                   pull_grace=float(spec.executor_settings.get("pull_grace", PULL_GRACE)))

    def image_signs(self, task: Task) -> bool | None:
        """Whether the image's worker signs its outcome: its label, from the engine (else its registry), read as the
        first worker starts (an engine that does not answer: DockerUnavailable, as at its launch)."""
        return outcome_signing.image_signs(self.image, lambda: self._engine_labels(task.run_id))

    def _engine_labels(self, run_id: str) -> dict[str, str] | None:
        """The image's labels as the engine has them; None when it does not have the image (not pulled yet)."""
        import docker.errors

        try:
            with engine_calls(f"starting the worker of run {run_id} (reading its image's labels)"):
                attrs = self.client.api.inspect_image(self.image)
        except docker.errors.NotFound:
            return None
        return dict((attrs.get("Config") or {}).get("Labels") or {})

    def launch(self, spec: TaskSpec, task: Task, env: dict[str, str]) -> None:
        """Create, fill and start the attempt's container. One the engine refuses (a limit out of its range, an
        image it cannot find or pull, a command it cannot start) fails only its run, as CreateContainerError in the
        engine's words with what to do, no container left; an image not on the engine is pulled on a thread of its own
        and one whose registry does not answer is waited for (:attr:`waiting`, :meth:`_pull_again`), the run launched
        from :meth:`ended` once it is there; an engine that does not answer is DockerUnavailable."""
        self.root_id = spec.root_id
        self._start(Unpulled(spec, task, env))

    def _start(self, launch: Unpulled, failed: BaseException | None = None,
               failing_since: float | None = None) -> bool:
        """Launch it, unless the pull try it waited for ``failed`` (that try's error, failing since ``failing_since``,
        monotonic: :func:`~sematic_k8s.docker_pull_wait.pull_failing`'s, the engine's first retry of a layer in it, else
        its silence's start or last line); False when it waits for its image (a pull try under way, or due)."""
        import docker.errors

        spec, task = launch.spec, launch.task
        with engine_calls(f"starting the worker of run {spec.run_id}"):
            try:
                if isinstance(failed, docker.errors.APIError):
                    raise Refused("pull", failed)
                if failed is not None:
                    raise failed  # the engine did not answer the pull: DockerUnavailable, by engine_calls
                self._launch(spec, task, launch.env)
            except ImageAbsent:  # not on this engine yet: pulled once, as `docker run` does, off the caller's thread
                self.pulls.unpulled[spec.run_id] = launch
                self._pull_again()
                return False
            except Refused as e:
                ended = self.pulls.refused(launch, e, failing_since)
                if ended is None:  # it waits for its image
                    return False
                self.finished.append(ended)
        return True

    def _deadline(self, task: Task, ran: float) -> None:
        """Count the func's timeout from its worker's launch: not while it waits for its image."""
        if task.run_id not in self.pulls.unpulled:
            super()._deadline(task, ran)

    @property
    def waiting(self) -> dict[str, str]:
        """Run id -> what its worker waits for (:meth:`ImageWait.notes`: its image, with its pull try's progress or
        its failure), noted on the run."""
        return self.pulls.notes()

    def _pull_again(self) -> None:
        """Read the image's pull try: once it ended, launch the runs that waited for it again, in the order they came,
        with its result (pulled, each is started; failed, each waits again, or fails in the engine's words at a
        refusal); fail each run past its grace (:meth:`ImageWait.past_grace`); abandon a try no run waits for any
        more; start the next one once it is due (backoff between the tries) while runs wait."""
        pull = self.pulls.ended_try()
        if pull is not None:
            for run_id in list(self.pulls.unpulled):
                launch = self.pulls.unpulled.pop(run_id, None)
                if launch is None:  # launched already, by a try started and ended meanwhile (its image gone again)
                    continue
                try:  # else back in unpulled: it waits again
                    started = self._start(launch, pull.error, pull_failing(None, pull.progress))
                except BaseException:  # the engine stopped answering (DockerUnavailable): still waiting
                    self.pulls.unpulled.setdefault(run_id, launch)
                    raise
                if started:
                    self._deadline(launch.task, 0.0)
        self.finished.extend(self.pulls.past_grace())
        self.pulls.next_try()

    def _launch(self, spec: TaskSpec, task: Task, env: dict[str, str]) -> None:
        import docker.errors

        labels = {**run_labels(spec.root_id, spec.run_id, task.func.name, "worker"), ATTEMPT_LABEL: str(spec.attempt)}
        limits: dict[str, Any] = {}
        if task.func.memory:
            limits["mem_limit"] = memory_bytes(task.func.memory)
        if task.func.cpu:
            limits["nano_cpus"] = int(cpus(task.func.cpu) * 1e9)
        api = self.client.api  # create and start, without the SDK's inspect in between (a round trip less)
        name = f"sk-{spec.run_id[:12]}-{spec.attempt}-{int(time.time() * 1000) % 100000}"
        def create() -> dict[str, Any]:
            return dict(api.create_container(
                self.image, list(WORKER_ONE_STREAM_COMMAND), detach=True, labels=labels,
                environment={**self.env, **env, TASK_FILE_ENV: TASK_FILE, SAY_STORED_ENV: "1"},  # says when stored
                name=name, host_config=api.create_host_config(network_mode="host", **limits)))
        try:
            created = create()
        except docker.errors.ImageNotFound:
            raise ImageAbsent from None
        except docker.errors.APIError as e:
            raise Refused("create", e) from None
        stdout, stage = None, "create"
        try:  # its task, presigned URLs and all, as a file of the image's user alone (removed once read)
            self.owner = self.owner or image_user(self.client, self.image, created["Id"])
            api.put_archive(created["Id"], "/", secret_archive({TASK_FILE: spec.to_json()}, self.owner))
            try:  # attached before the start, as `docker run` does: nothing it prints is missed
                stdout = attach_stdout(self.client, created["Id"])
            except docker.errors.APIError:
                stdout = None  # its end is still awaited
            stage = "start"
            api.start(created["Id"])
        except BaseException as e:
            if stdout is not None:
                stdout.close()
            api.remove_container(created["Id"], force=True)
            if isinstance(e, docker.errors.APIError):
                raise Refused(stage, e) from None
            raise
        container = self.containers[spec.run_id] = self.client.containers.prepare_model({"Id": created["Id"],
                                                                                         "Name": name})
        self._start_following(spec.run_id, container.id, stdout)

    def reattach(self, spec: TaskSpec, task: Task) -> float | None:
        """Follow the newest container of this attempt that a driver before this one started, if it is still
        there; how long ago it was created (None: there is none)."""
        self.root_id = spec.root_id
        if self.found is None:
            self.found = self._engine("looking for the resolution's worker containers",
                                      lambda: self._find_workers(spec.root_id))
        entry = self.found.pop((spec.run_id, str(spec.attempt)), None)
        if entry is None:
            return None
        name = ((entry.get("Names") or [""])[0] or "").lstrip("/")
        self.containers[spec.run_id] = self.client.containers.prepare_model({"Id": entry["Id"], "Name": name})
        self.reattached.add(entry["Id"])
        stdout = self._engine(f"re-attaching to the worker of run {spec.run_id}", lambda: self._attach(entry["Id"]))
        self._start_following(spec.run_id, entry["Id"], stdout)
        log.info("re-attached to worker container %s (run %s attempt %d, %s)", name, spec.run_id, spec.attempt,
                 entry.get("State") or "state unknown")
        return max(0.0, time.time() - float(entry.get("Created") or time.time()))

    def _find_workers(self, root_id: str) -> dict[tuple[str, str], dict[str, Any]]:
        """The resolution's worker containers (list entries), the newest of each (run id, attempt)."""
        listed = self._worker_entries(root_id)
        ours = {c.id for c in self.containers.values()}
        found: dict[tuple[str, str], dict[str, Any]] = {}
        for entry in sorted(listed, key=lambda c: c.get("Created") or 0):
            labels = entry.get("Labels") or {}
            key = (labels.get(RUN_LABEL) or "", labels.get(ATTEMPT_LABEL) or "")
            if all(key) and entry["Id"] not in ours:
                found[key] = entry
        return found

    def _worker_entries(self, root_id: str) -> list[dict[str, Any]]:
        """The list entries of ``root_id``'s worker containers, running or not."""
        return list(self.client.api.containers(all=True, filters={"label": [f"{RESOLUTION_LABEL}={root_id}",
                                                                             f"{ROLE_LABEL}=worker"]}))

    def _start_following(self, run_id: str, container_id: str, stdout: Any) -> None:  # noqa: ANN401 - attach_stdout's
        follower = threading.Thread(target=self._follow, args=(run_id, container_id, stdout), daemon=True,
                                    name="sk-docker-follow")
        follower.start()
        self._followers = [t for t in self._followers if t.is_alive()] + [follower]

    def _follow(self, run_id: str, container_id: str, stdout: Any) -> None:  # noqa: ANN401 - attach_stdout's
        """Read one container's stdout to its end, waking :meth:`ended` when the worker says its outcome is
        stored; then block on Docker's wait for the container and wake :meth:`ended` again (no polling delay). A
        connection to the engine that is cut meanwhile (a restart, a blip) is made again: its stdout read again from
        its start once the engine answers, within the retry window (past it: :attr:`lost`, raised by ended)."""
        import docker.errors

        try:
            while True:
                self._read(run_id, container_id, stdout)
                try:
                    self.client.api.wait(container_id, timeout=None)
                    break
                except Exception as e:  # noqa: BLE001 - removed (or the engine went away): _waited finds out which
                    if isinstance(e, docker.errors.NotFound) or not unanswered(e):
                        break
                stdout = self._engine(f"following the worker of run {run_id}", lambda: self._attach(container_id))
        except DockerUnavailable:
            pass  # kept in lost
        self._exits.append((run_id, container_id, False))
        self._wake.set()

    def _read(self, run_id: str, container_id: str, stdout: Any) -> None:  # noqa: ANN401 - attach_stdout's
        """Read an attached stdout to its end (the container's, or its connection's), noting the stored line."""
        seen = b""
        try:
            for chunk in stdout_frames(stdout) if stdout is not None else ():
                seen = seen[-len(_STORED):] + chunk
                if _STORED in seen:  # printed by the func itself? Then no outcome is there yet: awaited
                    seen = b""
                    self._exits.append((run_id, container_id, True))
                    self._wake.set()
        except Exception:  # noqa: BLE001 - its connection cut: the wait that follows tells
            pass
        finally:
            if stdout is not None:
                stdout.close()

    def _attach(self, container_id: str) -> Any:  # noqa: ANN401 - attach_stdout's
        """The container's stdout from its start, then as it prints; None for one that ended (the engine refuses)
        or is gone: read when its wait returns."""
        import docker.errors

        try:
            return attach_stdout(self.client, container_id)
        except docker.errors.APIError:
            return None

    def _engine(self, doing: str, call: Callable[[], T]) -> T:
        """``call()`` through :func:`engine_retried`; its :class:`DockerUnavailable` kept in :attr:`lost`. Once
        lost, a call is tried once."""
        try:
            return engine_retried(doing, call, 0.0 if self.lost is not None else None)
        except DockerUnavailable as e:
            self.lost = self.lost or e
            raise

    def ended(self, timeout: float) -> list[Ended]:
        deadline = time.monotonic() + timeout
        while True:
            if self.lost is not None:  # met by a thread following a worker
                raise self.lost
            self._pull_again()
            self._wake.clear()  # before looking: an end after this wakes the wait below
            if not self._exits and self.containers and time.monotonic() - self._listed_at >= LIST_INTERVAL:
                self._listed_at = time.monotonic()  # now and then a look at all, in case a wait failed
                exited = self._engine("looking for ended worker containers", lambda: self.client.api.containers(
                    all=True, filters={"label": f"{RESOLUTION_LABEL}={self.root_id}",  # the values of one filter: OR
                                       "status": ["exited", "dead"]}))
                for c in exited:  # plain list entries: each is inspected below, if it is still there
                    run_id = (c.get("Labels") or {}).get(RUN_LABEL)
                    if run_id in self.containers and self.containers[run_id].id == c["Id"]:
                        self._exits.append((run_id, c["Id"], False))
            done = self._waited()
            self._stop_lingering()
            if done or time.monotonic() >= deadline:
                return done
            self._wake.wait(min(LIST_INTERVAL, max(0.0, deadline - time.monotonic())))

    def _waited(self) -> list[Ended]:
        """The containers whose worker said its outcome is stored (read without an inspect), and those whose
        wait returned since the last call: each of these read with one inspect, unless its outcome was read."""
        import docker.errors

        done = []
        while self._exits:
            run_id, container_id, stored = self._exits.popleft()
            known = self.containers.get(run_id)
            if known is None or known.id != container_id:
                continue  # stopped (canceled, timed out) or already seen
            if stored:
                self._stored_at[run_id] = time.monotonic()
                done.append(Ended(run_id, None, details=self._details(known), stored=True))
                continue
            if run_id not in self.running:  # its outcome was read: only the container is left to remove
                self._drop(run_id, known)
                continue
            try:
                container = self._engine(f"reading the end of the worker of run {run_id}",
                                         functools.partial(self.client.containers.get, container_id))
            except docker.errors.NotFound:  # removed behind our back (`docker rm -f`) before it ended
                self.containers.pop(run_id)
                self._stored_at.pop(run_id, None)
                done.append(Ended(run_id, None, "ContainerRemoved", details=self._details(known)))
                continue
            if container.status in ("exited", "dead"):
                done.append(self._ended(run_id, container))
        return done

    def _ended(self, run_id: str, container: Any) -> Ended:
        state = container.attrs.get("State", {})
        reason = "OOMKilled" if state.get("OOMKilled") else None
        # its last lines tell why it died when its outcome is missing, even with exit code 0 (os._exit(0) in its func)
        logs = self._engine(f"reading the end of the worker of run {run_id}",
                            lambda: container.logs(tail=LOG_TAIL)).decode(errors="replace")
        self._drop(run_id, container)
        return Ended(run_id, state.get("ExitCode"), reason, state.get("Error") or None, logs,
                     self._details(container))

    def _details(self, container: Any) -> dict[str, Any]:  # noqa: ANN401 - a docker Container
        details = {"executor": "docker", "container": container.name, "image": self.image}
        return {**details, "reattached": True} if container.id in self.reattached else details

    def _drop(self, run_id: str, container: Any) -> None:  # noqa: ANN401 - a docker Container
        """Forget a container and remove it while the resolution goes on (close() waits for that)."""
        del self.containers[run_id]
        self._stored_at.pop(run_id, None)
        removal = threading.Thread(target=self._remove, args=(container,), daemon=True, name="sk-docker-rm")
        removal.start()
        self._removals = [t for t in self._removals if t.is_alive()] + [removal]

    def _stop_lingering(self) -> None:
        """Remove the containers whose outcome was read STORED_GRACE seconds ago and that have not ended."""
        now = time.monotonic()
        for run_id, at in list(self._stored_at.items()):
            if run_id in self.running:  # the outcome it announced was not there: it is awaited as any other
                continue
            if run_id not in self.containers:
                del self._stored_at[run_id]
            elif now - at >= STORED_GRACE:
                self._drop(run_id, self.containers[run_id])

    def close(self) -> None:
        """:meth:`_remove_all`, then close the connections to the engine of the client it made (one per container it
        followed: they stayed open until the garbage collector found the executor)."""
        try:
            self._remove_all()
        finally:
            if self._own_client:
                self.client.close()  # still usable: a later request opens a connection again

    def _remove_all(self) -> None:
        """Stop what runs, read what ended, remove every container of the resolution; on an engine that does not
        answer (past the retry window), say which containers are left and how to remove them, and raise nothing."""
        try:
            super().close()
            deadline = time.monotonic() + 10  # the containers whose outcome was read: a moment to end by themselves
            for follower in self._followers:
                follower.join(max(0.0, deadline - time.monotonic()))
            self._waited()
            for run_id, container in list(self.containers.items()):
                self._drop(run_id, container)
            for removal in self._removals:
                removal.join(60)
            self._remove_leftovers()
        except DockerUnavailable as e:
            self.lost = self.lost or e
            self.left.update(c.id for c in self.containers.values())
        if self.left and self.lost is not None:
            log.warning("%s; %d worker container(s) of resolution %s may be left on it: once it answers, remove "
                        "them with `docker rm -f $(docker ps -aq --filter label=%s=%s)`", self.lost, len(self.left),
                        self.root_id, RESOLUTION_LABEL, self.root_id)

    def _remove_leftovers(self) -> None:
        """Remove the resolution's other worker containers: those of earlier drivers that no resumed attempt
        re-attached to (an older attempt, a run that ended while no driver watched)."""
        if not self.root_id:
            return
        listed = self._engine("looking for the resolution's worker containers",
                              lambda: self._worker_entries(self.root_id))
        for entry in listed:
            self._remove(self.client.containers.prepare_model({"Id": entry["Id"]}))

    def _remove(self, container: Any) -> None:  # noqa: ANN401 - a docker Container
        """Remove a container (stopping it first), whether or not it is still there; one the engine cannot be asked
        to remove is left (:attr:`left`, named when the executor closes)."""
        try:
            self._engine(f"removing worker container {container.name or container.id}", lambda: _remove(container))
        except DockerUnavailable:
            self.left.add(container.id)

    def detach(self) -> None:
        """Stop following and leave every container as it is: the driver that resumes the resolution (this one
        restarted, or the newer one that took it over) re-attaches to them, reads and removes them."""
        self.running.clear()
        self.deadlines.clear()
        self.containers.clear()
        self.pulls.unpulled.clear()
        self.pulls.abandon()
        for removal in self._removals:
            removal.join(60)

    def where(self, run_id: str) -> dict[str, Any]:
        container = self.containers.get(run_id)
        return self._details(container) if container is not None else {}

    def tail(self, run_id: str) -> str:
        container = self.containers.get(run_id)
        if container is None:
            return ""
        try:
            return container.logs(tail=LOG_TAIL).decode(errors="replace")
        except Exception:  # noqa: BLE001 - gone already: nothing to show
            return ""

    def stop(self, run_id: str) -> None:
        """Remove the run's container; DockerUnavailable when the engine stops answering (once it was lost
        already, the container is left: named when the executor closes)."""
        self.pulls.forget(run_id)
        container = self.containers.pop(run_id, None)
        if container is None:
            return
        if self.lost is not None:
            self._remove(container)
            return
        self._engine(f"stopping the worker of run {run_id}", lambda: _remove(container))


def _remove(container: Any) -> None:
    """Remove a container (stopping it first), whether or not it is still there."""
    import docker.errors

    try:
        container.remove(force=True)
    except docker.errors.NotFound:
        pass

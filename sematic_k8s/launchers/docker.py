"""Start a driver in a Docker container on this machine (host network), and follow it.

The CloudResolver's driver gets the Docker socket mounted so that its DockerExecutor can start workers
beside it: a developer-machine path, started by the developer. A driver the server starts (local development
only) never gets the socket (``docker_socket=False``): its runs execute as processes in its own container.

The driver's secrets in the env given (``settings.SECRET_FILE_ENVS``: ``$SEMATIC_K8S_API_KEY``, its resolution's
token; ``$SEMATIC_K8S_SERVER_AUTH``, the user info of its server URL when it has one; the S3 keys ``AWS_*``) are
never put in the container's environment, where ``docker inspect`` would show them: each is copied into the created
container as a file readable by the image's user alone, named by its ``*_FILE`` variable
(``$SEMATIC_K8S_API_KEY_FILE``, ``$SEMATIC_K8S_AWS_SECRET_ACCESS_KEY_FILE``, ...).

A driver's image the engine does not have is pulled; while its registry does not answer (the engine's 500 "dial tcp
...: connection refused", a 5xx or 429), the pull is tried again with backoff for ``pull_grace`` seconds (the spec's
``executor_settings["pull_grace"]``, as for its workers; 120 s, from the first failure: a failed try, or the engine
retrying a layer), ``progress`` told so, and told again as the pull goes on, in a worker's words
(:func:`~sematic_k8s.docker_pull_wait.pull_waiting`, :func:`~sematic_k8s.docker_pull_progress.pull_note`: "pulling the
driver's image (D of N layers, X of Y MB; the engine retries a layer (K failed downloads)): REF" while no try failed;
then the failure, "...; trying again for up to 120 s", with "; pulling: PROGRESS" while a later try is under way);
past it (a try under way that downloads nothing abandoned), or at once for a registry that refuses it (manifest
unknown, unauthorized), :class:`~sematic_k8s.errors.ImageUnpulled` in the engine's words. Given ``ended`` (the
server's, for a rerun it claimed), the launch asks it every ``PULL_TICK`` at most while it waits (during a try, a
silent one too, which it then abandons, and between tries) and once more right before the container's create: its
resolution ended meanwhile (canceled), no container is created (:class:`~sematic_k8s.errors.DriverUnneeded`).
Given ``pulling`` (the server's too), it is told as the pull begins, before any try's outcome: a try may be silent for
up to ``PULL_SILENCE`` before its failure says anything, and the server answers its rerun's request meanwhile; and
told again, while no try failed, the first try's progress as it changes ("pulling the driver's image (D of N layers,
X of Y MB): REF", at most every ``PULL_PROGRESS_EVERY``: a healthy pull of a large image). Without ``pulling`` (the
CloudResolver's launch), ``progress`` is told those words instead: its display shows them on the user's console.

The container runs the driver under :mod:`sematic_k8s.driver_relay` (its first process), which gives the driver one
pipe for stdout and stderr (the engine's log keeps no order across a container's two streams) and ends a dying
driver's unended last line while the container still runs: the engine's follow of the log would often end without it
(an image made before the relay runs its driver alone).
The container removes itself when it exits (``auto_remove``): no finished driver is left behind. Whoever
follows it (:class:`DriverContainer`, for the CloudResolver) streams its log as it runs, so its last lines
are known even after it is gone (once the follow read the rest of it, however far behind it was), and reads its exit
code from Docker's wait, or, when it was gone before the wait was asked (it ended while the engine did not answer),
from the engine's "die" event of it. A driver that nobody followed (a detached resolution) and that was killed leaves
its worker containers, exited or still running: :func:`remove_ended_workers` removes those of resolutions that ended.
A launch cut between the container's create and its start (its process killed) leaves it created, never started, its
secret files in it: :func:`remove_unstarted_drivers` removes it once it is that old, through
:func:`sweep_unstarted_drivers` (the CloudResolver's and the server's one sweep), which has its token revoked too.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import datetime
import functools
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from sematic_k8s.docker_engine import docker_client, engine_calls, engine_retried
from sematic_k8s.docker_pull_progress import pull_note, registry_of
from sematic_k8s.docker_pull_wait import PULL_GRACE, pull_waiting
from sematic_k8s.docker_secrets import SECRETS_DIR, image_user, secret_archive
from sematic_k8s.errors import DockerUnavailable, DriverUnneeded
from sematic_k8s.labels import RESOLUTION_LABEL, ROLE_LABEL, run_labels
from sematic_k8s.launchers import LOG_TAIL, DriverEnd
from sematic_k8s.settings import (
    API_KEY_ENV,
    SECRET_FILE_ENVS,
    SERVER_AUTH_ENV,
    STORAGE_KEY_ENVS,
    UNSTARTED_DRIVER_GRACE_ENV,
    seconds,
)
from sematic_k8s.specs import DOCKER_DRIVER_COMMAND, DriverSpec

log = logging.getLogger("sematic_k8s")
LOG_QUIET = 10.0  # seconds an ended driver's log follower may read nothing before its last lines are taken as they are
UNSTARTED_GRACE = 300.0  # seconds a driver container may stay created, never started, before it is taken as left
UNREAD = "(the rest of the driver's log did not arrive from the Docker engine: these may not be its last lines)"
SIGNALS = {137: "killed (SIGKILL, or out of memory)", 143: "terminated (SIGTERM)"}
DOCKER_SOCKET = "/var/run/docker.sock"
TOKEN_FILE = f"/{SECRETS_DIR}/api-key"
SERVER_AUTH_FILE = f"/{SECRETS_DIR}/server-auth"  # the user info of the server URL, when it had one
SECRET_FILES = {API_KEY_ENV: TOKEN_FILE, SERVER_AUTH_ENV: SERVER_AUTH_FILE,  # each secret variable -> its file
                **{name: f"/{SECRETS_DIR}/{name.lower()}" for name in STORAGE_KEY_ENVS}}


def start_driver(spec: DriverSpec, env: Mapping[str, str], *, docker_socket: bool = True,
                 progress: Callable[[str], None] | None = None, stop: threading.Event | None = None,
                 ended: Callable[[], bool] | None = None, pulling: Callable[[str], None] | None = None) -> None:
    """The launcher of ``backends.LAUNCHERS["docker"]``: a detached container named after the resolution. Its image,
    when the engine does not have it, is pulled (``pulling``, else ``progress``, told so as the pull begins, "pulling
    the driver's image: REF", whatever becomes of it, then its first try's progress while no try failed), waited for
    while its registry does not answer (``progress`` told so, else the log; ``stop`` set ends the wait; ``ended()``
    saying its resolution ended too, and then no container is created): see the module's docstring."""
    import docker

    root_id = spec.root_id or ""
    env = dict(env)
    secrets: dict[str, str] = {}  # file in the container -> its text
    for var, file_var in SECRET_FILE_ENVS.items():
        value = env.pop(var, None)
        if value:
            secrets[SECRET_FILES[var]], env[file_var] = value, SECRET_FILES[var]
    client = docker_client()
    kwargs: dict[str, Any] = dict(
        command=list(DOCKER_DRIVER_COMMAND), detach=True, network_mode="host", auto_remove=True, environment=env,
        labels=run_labels(root_id, root_id, "driver", "driver"), name=f"sk-driver-{root_id[:12]}-{os.urandom(3).hex()}",
        volumes={DOCKER_SOCKET: {"bind": DOCKER_SOCKET}} if docker_socket else {})
    if docker_socket:  # images run as a non-root user: let it reach the socket through the socket's group
        try:
            kwargs["group_add"] = [str(os.stat(DOCKER_SOCKET).st_gid)]
        except OSError:
            pass
    with engine_calls(f"starting the driver of resolution {root_id}"):  # not repeated: a container is made
        try:
            container = client.containers.create(spec.image, **kwargs)
        except docker.errors.ImageNotFound:
            grace = float(spec.executor_settings.get("pull_grace", PULL_GRACE))

            logged = False

            def waiting(said: str, pulling: str) -> None:
                nonlocal logged
                failed = (f"waiting for the driver's image: the Docker engine could not pull it from "
                          f"{registry_of(spec.image)} ({said}); trying again for up to {grace:g} s") if said else ""
                words = pull_note("the driver's", spec.image, pulling, failed)
                if progress is not None:
                    progress(words)
                elif not logged:  # the log says it once
                    log.warning("resolution %s: %s", root_id, words)
                    logged = True

            def healthy(pulled: str, told: Callable[[str], None]) -> None:  # the first try's progress, none failed
                told(pull_note("the driver's", spec.image, pulled))

            told = pulling if pulling is not None else progress  # the server's claim, else the CloudResolver's
            if told is not None:  # the server's: its request answered if nothing more comes soon
                healthy("", told)
            pulled = pull_waiting(client, spec.image, grace=grace, waiting=waiting, stop=stop, ended=ended,
                                  pulling=None if told is None else functools.partial(healthy, told=told))
            if not pulled or (ended is not None and ended()):  # it ended while its image was waited for
                raise DriverUnneeded(root_id) from None
            container = client.containers.create(spec.image, **kwargs)
        try:
            if secrets:
                container.put_archive("/", secret_archive(secrets, image_user(client, spec.image, container.id)))
            container.start()
        except BaseException:
            with contextlib.suppress(docker.errors.NotFound):  # a start that failed: the engine removed it already
                container.remove(force=True)
            raise


def remove_ended_workers(ended: Callable[[str], bool], client: Any = None) -> list[LeftWorker]:
    """Remove the worker containers of the resolutions for which ``ended(resolution id)`` says yes, whatever their
    state (exited, dead, never started, and still running: a resolution that ended has no driver to read them, a
    driver that comes back is refused its writes); those removed. A resolution that has not ended keeps them all: a
    driver may follow them still. One gone meanwhile, or being removed already (409: by its driver, or
    ``auto_remove``, between the listing and this remove), is passed over: the others are removed all the same."""
    client = client or docker_client()
    listed = client.api.containers(all=True, filters={"label": f"{ROLE_LABEL}=worker"})
    by_resolution: dict[str, list[LeftWorker]] = {}
    for entry in listed:
        root_id = (entry.get("Labels") or {}).get(RESOLUTION_LABEL)
        if root_id and entry.get("State") != "removing":
            by_resolution.setdefault(root_id, []).append(LeftWorker(entry["Id"], _name(entry), root_id,
                                                                    entry.get("State") or "unknown"))
    removed: list[LeftWorker] = []
    for root_id, left in by_resolution.items():
        if not ended(root_id):
            continue
        # a running one: killed, then removed; 409: "removal ... already in progress" (its driver's, auto_remove)
        removed.extend(worker for worker in left if _removed(client, worker.id, force=True))
    return removed


def remove_unstarted_drivers(grace: float, client: Any = None) -> list[tuple[str, str]]:
    """Remove the driver containers created more than ``grace`` seconds ago (by the engine's clock) and never started:
    the launch that made each was cut between its create and its start (its process killed), nothing will start it, and
    it holds its resolution's token and the storage keys as files. Not forced: one started meanwhile is left. The
    (name, resolution id) of those removed."""
    client = client or docker_client()
    listed = client.api.containers(all=True, filters={"label": f"{ROLE_LABEL}=driver", "status": "created"})
    if not listed:
        return []
    now = _timestamp(client.info().get("SystemTime")) or int(time.time())
    removed = []
    for entry in listed:
        if now - int(entry.get("Created") or now) < grace:
            continue  # a launch under way: its start comes
        if _removed(client, entry["Id"], force=False):  # 409: started meanwhile (or being removed): its own now
            removed.append((_name(entry), (entry.get("Labels") or {}).get(RESOLUTION_LABEL) or "?"))
    return removed


def _removed(client: Any, container_id: str, *, force: bool) -> bool:
    """Remove a container a sweep found; False when it is gone already (404) or its engine refuses for a state it
    came to meanwhile (409: started, or being removed already). Another error is raised."""
    import docker.errors

    try:
        client.api.remove_container(container_id, force=force)
    except docker.errors.NotFound:
        return False
    except docker.errors.APIError as e:
        if e.status_code == 409:
            return False
        raise
    return True


def _name(entry: dict[str, Any]) -> str:
    """A listed container's name (its id's first 12 characters when it has none)."""
    return ((entry.get("Names") or [""])[0]).lstrip("/") or entry["Id"][:12]


def sweep_unstarted_drivers(revoke: Callable[[str], object] | None = None, client: Any = None) -> list[tuple[str, str]]:
    """The one sweep of driver containers left created, never started (the CloudResolver's, once its driver started;
    the server's, after each sweep of silent resolutions): :func:`remove_unstarted_drivers` with
    $SEMATIC_K8S_UNSTARTED_DRIVER_GRACE, each removed named in a warning, then ``revoke(resolution id)`` told (its
    driver's token, minted for that launch alone, revoked at once; a failure of it logged). The engine's failure is
    raised (each caller says it its way). The (name, resolution id) of those removed."""
    removed = remove_unstarted_drivers(seconds(UNSTARTED_DRIVER_GRACE_ENV, UNSTARTED_GRACE), client)
    for name, root_id in removed:
        log.warning("driver container %s of resolution %s was created but never started (the launch that made it was "
                    "cut short: its process killed): removed", name, root_id)
        if revoke is None or root_id == "?":
            continue
        try:
            revoke(root_id)
        except Exception as e:  # noqa: BLE001 - the token is refused once its resolution ends, or expires
            log.warning("could not revoke the token of resolution %s, whose driver container %s was never started: %s",
                        root_id, name, e)
    return removed


@dataclasses.dataclass(frozen=True)
class LeftWorker:
    """A worker container left by the driver of a resolution that ended: its id, name, resolution and state."""

    id: str
    name: str
    root_id: str
    state: str


class DriverContainer:
    """Follows the driver container of ``spec``'s resolution: waits for its exit code and streams its log
    (last :data:`LOG_TAIL` lines) on two threads, from the moment it is created.

    Its requests to the engine go through :func:`~sematic_k8s.docker_engine.engine_retried`, as the
    DockerExecutor's do: an engine that stops answering for a while (restarted, its connection cut) is ridden out
    (the wait asked again, the log followed again from where it was cut, no line twice); past the retry window,
    :meth:`ended` raises :class:`DockerUnavailable` saying that the driver may still run and how to follow it."""

    def __init__(self, spec: DriverSpec, client: Any = None) -> None:

        self.client = client or docker_client()
        self._own_client = client is None  # closed by close() (a client given is its giver's)
        self.root_id = spec.root_id or ""
        self.lines: collections.deque[str] = collections.deque(maxlen=LOG_TAIL)
        self.received = 0  # bytes of its log read so far
        self.exit_code: int | None = None
        self.lost: DockerUnavailable | None = None  # the engine stopped answering for longer than the retry window
        self.gone = threading.Event()
        found = engine_retried(f"looking for the driver container of resolution {self.root_id}",
                               lambda: self.client.containers.list(all=True, filters={"label": [
                                   f"{RESOLUTION_LABEL}={self.root_id}", f"{ROLE_LABEL}=driver"]}))
        if not found:
            self.gone.set()  # exited (and removed itself) already
            return
        self.container = found[0]
        threading.Thread(target=self._wait, daemon=True, name=f"sk-driver-wait-{self.root_id[:8]}").start()
        self.streamer = threading.Thread(target=self._stream, daemon=True, name=f"sk-driver-log-{self.root_id[:8]}")
        self.streamer.start()

    def _wait(self) -> None:
        try:
            self.exit_code = engine_retried(f"following driver container {self.container.name}", self._exit_code)
        except DockerUnavailable as e:
            self.lost = e
        except Exception:  # noqa: BLE001 - the engine's answer to the wait: the exit code is unknown
            pass
        finally:
            self.gone.set()

    def _exit_code(self) -> int | None:
        """Its exit code, from Docker's wait; for one that ended and removed itself (``auto_remove``) before the wait
        was asked (again, after a cut), from the engine's "die" event of it (the engine keeps its latest events:
        None when that one is gone from them). The events are read up to the engine's own time (``docker info``'s
        SystemTime), never this machine's: the engine filters them by its clock, and a CloudResolver's clock behind
        it by more than a second would read none (the exit code unknown: a driver that exited 76, another driver
        having taken over, taken for one that died)."""
        import docker.errors

        try:
            return int(self.container.wait()["StatusCode"])
        except docker.errors.NotFound:
            events = self.client.api.events(since=_timestamp(self.container.attrs.get("Created")) - 1,
                                            until=(_timestamp(self.client.info().get("SystemTime"))
                                                   or int(time.time())) + 1, decode=True,
                                            filters={"container": self.container.id, "event": "die"})
            codes = [((e.get("Actor") or {}).get("Attributes") or {}).get("exitCode") for e in events]
            return next((int(code) for code in reversed(codes) if code is not None), None)

    def _stream(self) -> None:
        """Its log from its start, followed again from the byte where a cut connection left it (read from the
        start, what arrived already skipped) until the container is gone."""
        import docker.errors

        partial = b""
        while True:
            try:
                stream = engine_retried(f"following the log of driver container {self.container.name}",
                                        lambda: self.container.logs(stream=True, follow=True))
            except (DockerUnavailable, docker.errors.APIError):  # lost (the wait says so), removed: keep what came
                break
            skip = self.received
            try:
                for chunk in stream:
                    chunk, skip = chunk[skip:], max(0, skip - len(chunk))
                    self.received += len(chunk)
                    partial += chunk
                    *complete, partial = partial.split(b"\n")
                    self.lines.extend(line.decode(errors="replace") for line in complete)
            except Exception:  # noqa: BLE001 - its connection cut mid-stream: followed again below
                pass
            if self.gone.wait(0.5):  # the container ended (or the engine was lost): nothing more to read
                break
        if partial:
            self.lines.append(partial.decode(errors="replace"))

    def ended(self) -> DriverEnd | None:
        """None while the driver runs; else how it ended, with the last lines of its whole log (see :meth:`_read_out`).
        The engine lost past the retry window: :class:`DockerUnavailable`."""
        if not self.gone.is_set():
            return None
        if self.lost is not None:
            name = self.container.name
            raise DockerUnavailable(f"{self.lost}. The driver container {name} of resolution {self.root_id} may "
                                    f"still run, its resolution left to it: follow it with `docker logs -f {name}` "
                                    f"once the engine answers, or with `sematic-k8s resolutions show {self.root_id}` "
                                    "and the dashboard")
        read = self._read_out() if hasattr(self, "streamer") else True
        code = self.exit_code
        how = ("exited before it could be followed" if code is None
               else f"exited with code {code}" + (f": {SIGNALS[code]}" if code in SIGNALS else ""))
        return DriverEnd(how, code, "\n".join([*self.lines, *([] if read else [UNREAD])]))

    def _read_out(self) -> bool:
        """Wait for the log's follower to read the rest of the ended driver's log: the engine sends all of it once the
        container ended, however far behind the follower is (a driver that wrote fast, a slow path to the engine, a
        busy process), and its last lines are the log's. Waited for as long as the follower reads on (it stops
        within the client's timeout of a silent engine), at most :data:`LOG_QUIET` seconds without a byte, or that
        long in all when the exit code is unknown (the container may run on). Whether it read all of it."""
        while True:
            before = self.received
            self.streamer.join(LOG_QUIET)
            if not self.streamer.is_alive():
                return True
            if self.received == before or self.exit_code is None:
                log.warning("resolution %s: %s", self.root_id, UNREAD)
                return False

    def cleanup(self) -> None:
        """Remove the dead driver's worker containers (a driver removes its own when it ends normally)."""
        import docker.errors

        workers = engine_retried(f"looking for the worker containers of resolution {self.root_id}",
                                 lambda: self.client.containers.list(all=True, filters={"label": [
                                     f"{RESOLUTION_LABEL}={self.root_id}", f"{ROLE_LABEL}=worker"]}))
        for c in workers:
            try:
                engine_retried(f"removing worker container {c.name}", functools.partial(c.remove, force=True))
            except docker.errors.NotFound:
                pass

    def close(self) -> None:
        """Close the connections to the engine of the client it made (the wait's and the log's stayed open until the
        garbage collector found this follower). A request still under way keeps its own until it ends; the client
        stays usable (a later request opens a connection again)."""
        if self._own_client:
            self.client.close()


_RFC3339 = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.\d+)?(Z|[+-]\d\d:\d\d)?$")


def _timestamp(at: str | None) -> int:
    """The Unix time of an engine's RFC 3339 time ("2026-12-04T16:11:54.904952837Z", or with the engine's zone's
    offset, "...+01:00", as ``docker info``'s SystemTime may be; its whole seconds), 0 when there is none or it is
    not one. Read by hand: Python 3.10's ``fromisoformat`` takes neither the "Z" nor nanoseconds."""
    found = _RFC3339.match(at or "")
    if found is None:
        return 0
    when = datetime.datetime.fromisoformat(found[1]).replace(tzinfo=datetime.timezone.utc)
    zone = found[2]
    if zone in (None, "Z"):
        return int(when.timestamp())
    offset = int(zone[1:3]) * 3600 + int(zone[4:6]) * 60
    return int(when.timestamp()) - (offset if zone[0] == "+" else -offset)

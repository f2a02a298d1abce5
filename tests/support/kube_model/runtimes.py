"""Container runtimes under the model's kubelet: the real Docker engine, and a simulated one.

:class:`DockerRuntime` runs each container with the Docker SDK on the host network (the only network here),
named ``k8s_<container>_<pod>_<ns>_<uid>_<restart>`` and labelled with the cluster's id so that they are found
and removed when the cluster stops. Images are used when present locally, else pulled, but only from a registry
on 127.0.0.1 (nothing else is reachable). Memory limits are real (an overrun is Docker's OOMKilled).

:class:`SimRuntime` runs no container: each one follows a :class:`Script` (run for a while, print logs, exit with
a code, be OOM-killed, never exit) chosen per pod by a behaviour, or runs the container's command for real in a
subprocess (``process=True``), or calls a Python function in a thread (``func``), whose threads are cut off from
every side effect once its end is reported (:mod:`~kube_model.cutoff`). A subprocess's stdout and stderr
are two pipes, logged by two copiers into one file as containerd's CRI logger does (:mod:`~kube_model.crilog`):
its log's order across the streams is theirs, not the process's, as on a node.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import datetime
import os
import re
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kube_model import crilog
from kube_model.cutoff import ContainerKilled, Life

MIN_MEMORY = 6 * 1024 * 1024  # the smallest memory limit a container runtime starts a container with (Docker: 6MB)
LOCAL_REGISTRY = re.compile(r"^(127\.0\.0\.1|localhost)(:\d+)?/")
REFERENCE = re.compile(r"^[a-z0-9]+(?:[._-][a-z0-9]+)*(?::\d+)?(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*"
                       r"(?::[\w][\w.-]{0,127})?(?:@sha256:[a-f0-9]{64})?$")


class PullError(Exception):
    """The image could not be pulled (message as the kubelet reports it)."""


@dataclass
class ImageInfo:
    image_id: str
    user: str = ""  # the image's USER ("" means root)
    size: int = 0
    arch: str = ""  # the image's CPU architecture ("" means any)


@dataclass
class ContainerSpec:
    """What the kubelet asks a runtime to run."""

    docker_name: str
    image: str
    command: list[str] | None
    args: list[str] | None
    env: dict[str, str]
    working_dir: str | None = None
    user: str | None = None
    mounts: list[tuple[str, str, bool]] = field(default_factory=list)  # (host path, container path, read only)
    groups: list[int] = field(default_factory=list)  # supplementary groups (the pod's fsGroup, supplementalGroups)
    memory_limit: int | None = None
    nano_cpus: int | None = None
    labels: dict[str, str] = field(default_factory=dict)
    read_only: bool = False
    cap_drop: list[str] = field(default_factory=list)
    cap_add: list[str] = field(default_factory=list)
    no_new_privileges: bool = False
    termination_log: str | None = None  # host file bound at the container's terminationMessagePath
    pod: dict[str, Any] = field(default_factory=dict)
    container: dict[str, Any] = field(default_factory=dict)


@dataclass
class Exit:
    code: int
    oom: bool = False
    started_at: str = ""
    finished_at: str = ""
    message: str = ""  # what the container wrote to its termination log


def valid_reference(image: str) -> bool:
    return bool(REFERENCE.match(image))


def _ts(when: float | None = None) -> str:
    return datetime.datetime.fromtimestamp(when or time.time(), datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def tail_text(text: str, tail: int | None = None) -> str:
    if tail is not None:
        lines = text.splitlines(keepends=True)
        text = "".join(lines[-tail:]) if tail > 0 else ""
    return text


class DockerRuntime:
    """Containers in the shared Docker engine (host network), run by the docker SDK on worker threads."""

    kind = "docker"

    def __init__(self, cluster_id: str, workers: int = 32) -> None:
        import docker

        self.docker = docker.from_env(version="auto", timeout=120)
        self.cluster_id = cluster_id
        self.pool = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="kmodel-docker")
        self.waiters = concurrent.futures.ThreadPoolExecutor(256, thread_name_prefix="kmodel-wait")

    async def _run(self, fn: Callable[..., Any], *args: Any, pool: Any = None) -> Any:
        return await asyncio.get_running_loop().run_in_executor(pool or self.pool, fn, *args)

    async def image(self, image: str) -> ImageInfo | None:
        import docker.errors

        def look() -> ImageInfo | None:
            try:
                img = self.docker.images.get(image)
            except docker.errors.ImageNotFound:
                return None
            except docker.errors.APIError:
                return None
            return _info(img)
        return await self._run(look)

    async def pull(self, image: str) -> ImageInfo:
        import docker.errors

        if not LOCAL_REGISTRY.match(image):
            host = image.split("/")[0] if "/" in image and ("." in image.split("/")[0] or ":" in image.split("/")[0]) \
                else "registry-1.docker.io"
            raise PullError(f'rpc error: code = Unknown desc = failed to pull and unpack image "{image}": failed to '
                            f'resolve reference "{image}": failed to do request: Head "https://{host}/v2/": dial '
                            f"tcp: lookup {host}: no such host")

        def pull() -> ImageInfo:
            repo, tag = image, None
            if "@" not in image:
                last = image.rsplit("/", 1)
                if ":" in last[-1]:
                    repo, tag = image.rsplit(":", 1)
            try:
                self.docker.images.pull(repo, tag=tag)
            except docker.errors.NotFound as e:
                raise PullError(f'rpc error: code = NotFound desc = failed to pull and unpack image "{image}": failed '
                                f'to resolve reference "{image}": {image}: not found') from e
            except docker.errors.APIError as e:
                raise PullError(f'rpc error: code = Unknown desc = failed to pull and unpack image "{image}": '
                                f'{e.explanation or e}') from e
            return _info(self.docker.images.get(image))
        return await self._run(pull)

    async def create(self, spec: ContainerSpec) -> Any:
        import docker.types

        def create() -> Any:
            mounts = [docker.types.Mount(target, source, type="bind", read_only=ro)
                      for source, target, ro in spec.mounts]
            if spec.termination_log:
                mounts.append(docker.types.Mount(spec.container.get("terminationMessagePath")
                                                 or "/dev/termination-log", spec.termination_log, type="bind"))
            kwargs: dict[str, Any] = {}
            if spec.command:
                kwargs["entrypoint"] = spec.command
                kwargs["command"] = spec.args or []
            elif spec.args:
                kwargs["command"] = spec.args
            if spec.memory_limit:
                kwargs["mem_limit"] = spec.memory_limit
                kwargs["memswap_limit"] = spec.memory_limit
            if spec.nano_cpus:
                kwargs["nano_cpus"] = spec.nano_cpus
            if spec.no_new_privileges:
                kwargs["security_opt"] = ["no-new-privileges"]
            if spec.groups:
                kwargs["group_add"] = [str(g) for g in spec.groups]
            return self.docker.containers.create(
                spec.image, name=spec.docker_name, environment=spec.env, network_mode="host", detach=True,
                working_dir=spec.working_dir or None, user=spec.user or None, mounts=mounts,
                labels={**spec.labels, "kube-model.cluster": self.cluster_id}, read_only=spec.read_only,
                cap_drop=spec.cap_drop or None, cap_add=spec.cap_add or None, **kwargs)
        return await self._run(create)

    async def start(self, handle: Any) -> str:
        await self._run(handle.start)
        return "docker://" + handle.id

    async def wait(self, handle: Any, spec: ContainerSpec) -> Exit:
        def wait() -> Exit:
            while True:
                try:
                    result = handle.wait(timeout=3600)
                    break
                except Exception:  # noqa: BLE001 - read timeout: keep waiting
                    handle.reload()
                    if handle.status in ("exited", "dead"):
                        result = {"StatusCode": handle.attrs["State"].get("ExitCode", 1)}
                        break
            handle.reload()
            state = handle.attrs.get("State") or {}
            if int(result.get("StatusCode", 1)) == 137 and not state.get("OOMKilled") and spec.memory_limit:
                state = {**state, "OOMKilled": self._late_oom(handle)}  # the flag can lag the exit
            message = ""
            if spec.termination_log and os.path.exists(spec.termination_log):
                with open(spec.termination_log, errors="replace") as f:
                    message = f.read(4096)
            return Exit(int(result.get("StatusCode", 1)), bool(state.get("OOMKilled")),
                        _docker_ts(state.get("StartedAt")), _docker_ts(state.get("FinishedAt")), message)
        return await self._run(wait, pool=self.waiters)

    def _late_oom(self, handle: Any) -> bool:
        """Docker sets a container's OOMKilled flag asynchronously: look again for a moment, and at its events."""
        for _ in range(5):
            time.sleep(0.2)
            try:
                handle.reload()
                if (handle.attrs.get("State") or {}).get("OOMKilled"):
                    return True
                now = datetime.datetime.now(datetime.timezone.utc)
                if any(True for _ in self.docker.events(since=now - datetime.timedelta(hours=1), until=now,
                                                        decode=True, filters={"container": handle.id,
                                                                              "event": "oom"})):
                    return True
            except Exception:  # noqa: BLE001 - the container is gone: trust the exit code only
                return False
        return False

    async def stop(self, handle: Any, grace: int) -> None:
        def stop() -> None:
            with contextlib.suppress(Exception):
                handle.stop(timeout=max(0, int(grace)))
        await self._run(stop)

    async def logs(self, handle: Any, *, tail: int | None = None, timestamps: bool = False,
                   since: float | None = None) -> bytes:
        def logs() -> bytes:
            kwargs: dict[str, Any] = {"stdout": True, "stderr": True, "timestamps": timestamps,
                                      "tail": tail if tail is not None else "all"}
            if since:
                kwargs["since"] = int(since)
            return bytes(handle.logs(**kwargs))
        return await self._run(logs)

    async def remove(self, handle: Any) -> None:
        def remove() -> None:
            with contextlib.suppress(Exception):
                handle.remove(force=True)
        await self._run(remove)

    def cleanup(self) -> None:
        """Remove every container of this cluster (only ours: selected by the cluster id label)."""
        try:
            ours = self.docker.api.containers(all=True, filters={"label": f"kube-model.cluster={self.cluster_id}"})
            for c in ours:  # the low-level list: no inspect of containers going away meanwhile
                with contextlib.suppress(Exception):
                    self.docker.api.remove_container(c["Id"], force=True)
        finally:
            self.pool.shutdown(wait=False, cancel_futures=True)
            self.waiters.shutdown(wait=False, cancel_futures=True)


def _info(img: Any) -> ImageInfo:
    digests = img.attrs.get("RepoDigests") or []
    return ImageInfo(digests[0] if digests else img.id, (img.attrs.get("Config") or {}).get("User") or "",
                     int(img.attrs.get("Size") or 0), img.attrs.get("Architecture") or "")


def _docker_ts(value: str | None) -> str:
    if not value or value.startswith("0001"):
        return _ts()
    return value.split(".")[0].rstrip("Z") + "Z"


# -- simulated ---------------------------------------------------------------------------------------------


@dataclass
class Script:
    """How a simulated container behaves.

    ``run``: seconds it runs; then it exits with ``exit_code`` (137 and OOMKilled with ``oom``), having printed
    ``logs`` and written ``message`` to its termination log. ``forever``: it never exits by itself (a classic
    sidecar). ``process``: run the container's command for real in a subprocess (``python`` is this
    interpreter; ``extra_env`` is added, e.g. PYTHONPATH). ``func``: call ``func(ctx)`` in a thread; its return
    value is the exit code; once the container is reported ended (its return, a stop's 143 or 137), its threads
    can do nothing that lands (:mod:`~kube_model.cutoff`). ``ignore_sigterm``: a stop waits out the whole grace
    period (else a SIGTERM ends it at once, as a Python process without a handler of its own: 143).
    """

    run: float = 0.0
    exit_code: int = 0
    oom: bool = False
    logs: str = ""
    message: str = ""
    forever: bool = False
    process: bool = False
    extra_env: dict[str, str] = field(default_factory=dict)
    func: Callable[[SimContext], int] | None = None
    ignore_sigterm: bool = False


Behaviour = Callable[[dict[str, Any], dict[str, Any]], Script]


def default_behaviour(pod: dict[str, Any], container: dict[str, Any]) -> Script:
    return Script()


def host_path(path: str, mounts: list[tuple[str, str, bool]]) -> str:
    """Where ``path`` in a container is on the host, through its ``mounts`` (the longest that holds it); ``path``
    itself when none does. A simulated container's process has no mount namespace: it reads its volumes there."""
    for host, target, _ in sorted(mounts, key=lambda m: -len(m[1])):
        if path == target or path.startswith(target.rstrip("/") + "/"):
            return os.path.normpath(os.path.join(host, os.path.relpath(path, target)))
    return path


@dataclass
class SimContext:
    """What a ``func`` script gets: the container's env, its pod and container, a log writer, a stop flag."""

    env: dict[str, str]
    pod: dict[str, Any]
    container: dict[str, Any]
    stopped: threading.Event
    lines: list[tuple[float, str]]
    spec: ContainerSpec | None = None
    life: Life | None = None

    def log(self, text: str) -> None:
        if self.life is not None and self.life.ended:  # a dead container's output: none
            raise ContainerKilled(f"container {self.life.name} ended: log refused")
        for line in text.splitlines(keepends=True):
            self.lines.append((time.time(), line if line.endswith("\n") else line + "\n"))

    def read(self, path: str) -> str:
        """The file at ``path`` in the container (a mounted volume's), read as its user would: PermissionError when
        its owner, group and mode keep that user (uid, gid and supplementary groups) out; FileNotFoundError when no
        mount holds it."""
        found = host_path(path, self.spec.mounts if self.spec else [])
        if found == path:
            raise FileNotFoundError(path)
        user = (self.spec.user if self.spec else None) or "0"
        uid, _, gid = user.partition(":")
        groups = {int(gid or 0), *(self.spec.groups if self.spec else [])}
        st = os.stat(found)
        bits = 0o400 if st.st_uid == int(uid) else 0o040 if st.st_gid in groups else 0o004
        if int(uid) != 0 and not st.st_mode & bits:
            raise PermissionError(13, "Permission denied", path)
        with open(found) as f:
            return f.read()


@dataclass
class SimImages:
    """The simulated image store: images known to a registry (``missing`` ones are not), their USER."""

    users: dict[str, str] = field(default_factory=dict)
    arch: dict[str, str] = field(default_factory=dict)
    missing: set[str] = field(default_factory=set)
    present: set[str] = field(default_factory=set)
    pull_seconds: float = 0.0


class SimHandle:
    def __init__(self, spec: ContainerSpec, script: Script) -> None:
        self.spec, self.script = spec, script
        self.lines: list[tuple[float, str]] = []
        self.done: asyncio.Future[Exit] | None = None
        self.stop_requested = asyncio.Event()
        self.proc: asyncio.subprocess.Process | None = None
        self.stopped_flag = threading.Event()
        self.started = ""
        self.log_path: str | None = None
        self.copiers: list[asyncio.Future[None]] = []  # a process's log copiers, one per stream (see crilog)
        self.pipes: tuple[int, ...] = ()  # the inodes of its stdout's and stderr's pipes
        self.life: Life | None = None  # a func's: its threads cut off at its end


def _container_processes(session: int, pipes: tuple[int, ...]) -> list[int]:
    """The processes of a container run as processes of this host: those of its ``session`` (the main process's),
    and any other holding one of its log ``pipes`` (a child that made a session of its own). This process holds the
    pipes' read ends: not one of them."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                sid = int(f.read().rpartition(")")[2].split()[3])
        except (OSError, ValueError, IndexError):  # gone meanwhile
            continue
        if sid == session or _holds(int(entry), pipes):
            found.append(int(entry))
    return found


def _holds(pid: int, pipes: tuple[int, ...]) -> bool:
    """Whether process ``pid`` holds one of ``pipes`` (inodes) open."""
    links = {f"pipe:[{inode}]" for inode in pipes}
    try:
        return any(os.readlink(f"/proc/{pid}/fd/{fd}") in links for fd in os.listdir(f"/proc/{pid}/fd"))
    except OSError:  # gone meanwhile, or not ours to look at
        return False


def _kill_container(session: int, pipes: tuple[int, ...]) -> None:
    """Kill every process of the container (on a node, its PID namespace's end with its main process), until none
    holds its log pipes: both copiers then reach the pipes' end."""
    while pids := _container_processes(session, pipes):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        if not any(_holds(pid, pipes) for pid in pids):
            return
        time.sleep(0.01)


def _copier(loop: asyncio.AbstractEventLoop, log: crilog.Log, fd: int, stream: str) -> asyncio.Future[None]:
    """A thread of its own copying one stream's pipe to ``log`` (not the pool's: it lasts the container's life)."""
    done: asyncio.Future[None] = loop.create_future()

    def run() -> None:
        try:
            log.copy(fd, stream)
        finally:
            with contextlib.suppress(RuntimeError):  # the loop closed: the cluster stopped
                loop.call_soon_threadsafe(lambda: done.done() or done.set_result(None))
    threading.Thread(target=run, name=f"kmodel-log-{stream}", daemon=True).start()
    return done


class SimRuntime:
    """Scripted containers: no Docker, for large fan-outs; optionally the real command in a subprocess."""

    kind = "sim"

    def __init__(self, images: SimImages, behaviour: Callable[[], Behaviour], workdir: str) -> None:
        self.images, self.behaviour, self.workdir = images, behaviour, workdir
        self.pool = concurrent.futures.ThreadPoolExecutor(16, thread_name_prefix="kmodel-sim")

    async def image(self, image: str) -> ImageInfo | None:
        if image in self.images.present:
            return self._info(image)
        return None

    def _info(self, image: str) -> ImageInfo:
        return ImageInfo("sim://" + image, self.images.users.get(image, ""), 0, self.images.arch.get(image, ""))

    async def pull(self, image: str) -> ImageInfo:
        if self.images.pull_seconds:
            await asyncio.sleep(self.images.pull_seconds)
        if image in self.images.missing:
            raise PullError(f'rpc error: code = NotFound desc = failed to pull and unpack image "{image}": failed to '
                            f'resolve reference "{image}": {image}: not found')
        self.images.present.add(image)
        return self._info(image)

    async def create(self, spec: ContainerSpec) -> SimHandle:
        if spec.memory_limit is not None and spec.memory_limit < MIN_MEMORY:  # as Docker's daemon refuses it
            raise RuntimeError("Error response from daemon: Minimum memory limit allowed is 6MB")
        return SimHandle(spec, self.behaviour()(spec.pod, spec.container))

    async def start(self, handle: SimHandle) -> str:
        loop = asyncio.get_running_loop()
        handle.done = loop.create_future()
        handle.started = _ts()
        script = handle.script
        if script.process:
            argv = list(handle.spec.command or []) + list(handle.spec.args or [])
            if argv and argv[0] in ("python", "python3"):
                argv[0] = sys.executable
            env = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp"),
                   **{k: host_path(v, handle.spec.mounts) for k, v in handle.spec.env.items()}, **script.extra_env}
            os.makedirs(self.workdir, exist_ok=True)
            handle.log_path = os.path.join(self.workdir, f"{handle.spec.docker_name}.log")
            log = crilog.Log(handle.log_path)
            (out_r, out_w), (err_r, err_w) = os.pipe(), os.pipe()
            try:  # its own session: the container's other processes are killed when it ends (its PID namespace's)
                handle.proc = await asyncio.create_subprocess_exec(*argv, env=env, stdout=out_w, stderr=err_w,
                                                                   cwd=handle.spec.working_dir or self.workdir,
                                                                   start_new_session=True)
            except BaseException:
                for fd in (out_r, err_r):
                    os.close(fd)
                log.close()
                raise
            finally:
                os.close(out_w)
                os.close(err_w)
            handle.pipes = (os.fstat(out_r).st_ino, os.fstat(err_r).st_ino)
            handle.copiers = [_copier(loop, log, fd, stream) for fd, stream in ((out_r, "stdout"), (err_r, "stderr"))]
            asyncio.ensure_future(self._watch_process(handle, log))
        elif script.func is not None:
            life = handle.life = Life(handle.spec.docker_name)
            ctx = SimContext(dict(handle.spec.env), handle.spec.pod, handle.spec.container, handle.stopped_flag,
                             handle.lines, handle.spec, life)

            def call() -> int:
                life.enter()
                try:
                    try:
                        return int(script.func(ctx) or 0)  # type: ignore[misc]
                    except Exception as e:  # noqa: BLE001 - a crashing container
                        ctx.log(f"{type(e).__name__}: {e}")
                        return 1
                except ContainerKilled:  # it ended meanwhile: its exit was reported, this code is not
                    return 137
                finally:
                    life.leave()
            fut = loop.run_in_executor(self.pool, call)
            fut.add_done_callback(lambda f: self._finish(handle, f.result() if not f.cancelled() else 137))
        else:
            if script.logs:
                SimContext({}, {}, {}, handle.stopped_flag, handle.lines).log(script.logs)
            if not script.forever:
                loop.call_later(script.run, self._finish, handle, 137 if script.oom else script.exit_code,
                                script.oom)
        return f"sim://{handle.spec.docker_name}"

    async def _watch_process(self, handle: SimHandle, log: crilog.Log) -> None:
        """The container's end: its main process's exit, its other processes killed (its session's, and any holding
        its log pipes: a child in a session of its own would keep the copiers, so the container, going; on a node the
        PID namespace's end kills it), its log copied to the end."""
        assert handle.proc is not None
        code = await handle.proc.wait()
        await asyncio.to_thread(_kill_container, handle.proc.pid, handle.pipes)
        try:
            await asyncio.gather(*handle.copiers)
        finally:
            log.close()
        self._finish(handle, code if code >= 0 else 128 - code)

    def _finish(self, handle: SimHandle, code: int, oom: bool = False) -> None:
        if handle.done is not None and not handle.done.done():
            if handle.life is not None:  # before its end is known: nothing its threads do from now on lands
                handle.life.end()
            handle.done.set_result(Exit(code, oom, handle.started, _ts(), handle.script.message))

    async def wait(self, handle: SimHandle, spec: ContainerSpec) -> Exit:
        assert handle.done is not None
        return await handle.done

    async def stop(self, handle: SimHandle, grace: int) -> None:
        if handle.done is None or handle.done.done():
            return
        handle.stopped_flag.set()
        if handle.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                handle.proc.send_signal(signal.SIGTERM if grace > 0 else signal.SIGKILL)
            try:
                await asyncio.wait_for(asyncio.shield(handle.done), grace)
            except asyncio.TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    handle.proc.kill()
            return
        if grace <= 0:
            self._finish(handle, 137)  # SIGKILL
        elif handle.script.ignore_sigterm:
            await asyncio.sleep(grace)
            self._finish(handle, 137)
        else:
            self._finish(handle, 143)  # SIGTERM, handled

    async def logs(self, handle: SimHandle, *, tail: int | None = None, timestamps: bool = False,
                   since: float | None = None) -> bytes:
        if handle.log_path:
            return crilog.read(handle.log_path, tail=tail, timestamps=timestamps, since=since)
        lines = [(t, line) for t, line in handle.lines if since is None or t >= since]
        out = [(f"{_ts(t)} " if timestamps else "") + line for t, line in lines]
        return tail_text("".join(out), tail).encode(errors="surrogateescape")  # a Script's "\udcff": the byte 0xff

    async def remove(self, handle: SimHandle) -> None:
        if handle.log_path:
            with contextlib.suppress(OSError):
                os.remove(handle.log_path)

    def cleanup(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        shutil.rmtree(self.workdir, ignore_errors=True)

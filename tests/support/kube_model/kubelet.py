"""The kubelet: runs the pods bound to its node in a runtime and reports their status as a real kubelet does.

Status shapes follow https://kubernetes.io/docs/concepts/workloads/pods/pod-lifecycle/ and the kubelet's
status manager: ``containerStatuses`` sorted by container name, ``initContainerStatuses`` in spec order (native
sidecars are init containers with ``restartPolicy: Always``,
https://kubernetes.io/docs/concepts/workloads/pods/sidecar-containers/), waiting reasons ContainerCreating,
PodInitializing, ErrImagePull / ImagePullBackOff (alternating, with a growing back-off,
https://kubernetes.io/docs/concepts/containers/images/#imagepullbackoff), CreateContainerConfigError,
CrashLoopBackOff; terminated reasons Completed, Error, OOMKilled; the pod conditions PodReadyToStartContainers,
Initialized, ContainersReady, Ready, and DisruptionTarget on eviction
(https://kubernetes.io/docs/concepts/scheduling-eviction/node-pressure-eviction/). Admission on the node rejects
pods that do not fit (OutOfcpu, OutOfmemory, OutOfpods), do not match it (NodeAffinity) or do not tolerate one of its
NoExecute taints (TaintToleration: the scheduler's cache had not seen it, or the pod named its node itself) with phase
Failed, as pkg/kubelet/lifecycle/predicate.go's generalFilter (resources and affinity first, taints last).
``activeDeadlineSeconds`` counts from ``status.startTime``, set when the kubelet admits the pod (before any
image pull). Events use the kubelet's reasons: Scheduled is the scheduler's; Pulling, Pulled, Failed, BackOff,
Created, Started, Killing, FailedMount, FailedCreatePodSandBox, Evicted, DeadlineExceeded, OutOf*.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kube_model import podenv
from kube_model.admission import pod_usage
from kube_model.errors import bad_request
from kube_model.meta import amount, stamp
from kube_model.podlogs import LogOptions
from kube_model.runtimes import ContainerSpec, Exit, ImageInfo, PullError, valid_reference
from kube_model.scheduler import node_affinity_matches, tolerates

if TYPE_CHECKING:
    from kube_model.cluster import Cluster
    from kube_model.config import NodeSpec

KUBELET = "kubelet"
FALLBACK_LINES, FALLBACK_BYTES = 80, 2048


@dataclass
class CState:
    """One container's state as the kubelet tracks it."""

    spec: dict[str, Any]
    kind: str  # init, sidecar, regular
    state: dict[str, Any] = field(default_factory=dict)
    last_state: dict[str, Any] = field(default_factory=dict)
    restart_count: int = 0
    ready: bool = False
    started: bool = False
    image_id: str = ""
    container_id: str = ""
    handle: Any = None
    previous: Any = None
    exit: Exit | None = None
    running: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[Any] | None = None

    @property
    def name(self) -> str:
        return self.spec["name"]

    def as_status(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "state": self.state, "lastState": self.last_state,
                               "ready": self.ready, "restartCount": self.restart_count, "image": self.spec["image"],
                               "imageID": self.image_id, "started": self.started}
        if self.container_id:
            out["containerID"] = self.container_id
        return out


class PodWorker:
    """Drives one pod: admission, sandbox, volumes, init containers, containers, ending, termination."""

    def __init__(self, kubelet: Kubelet, pod: dict[str, Any]) -> None:
        self.kubelet, self.cluster = kubelet, kubelet.cluster
        self.pod = pod
        meta = pod["metadata"]
        self.ns, self.name, self.uid = meta["namespace"], meta["name"], meta["uid"]
        self.spec = pod["spec"]
        self.phase = "Pending"
        self.reason: str | None = None
        self.message: str | None = None
        self.start_time: str | None = None
        self.ready_to_start = False
        self.initialized = False
        self.completed = False
        self.terminating = False
        self.finished = asyncio.Event()
        self.disruption: dict[str, Any] | None = None
        self.transitions: dict[str, tuple[str, str]] = {}
        self.containers: dict[str, CState] = {}
        inits = self.spec.get("initContainers") or []
        for c in inits:
            self.containers[c["name"]] = CState(c, "sidecar" if c.get("restartPolicy") == "Always" else "init")
        for c in self.spec.get("containers") or []:
            self.containers[c["name"]] = CState(c, "regular")
        waiting = "PodInitializing" if inits else "ContainerCreating"
        for cs in self.containers.values():
            cs.state = {"waiting": {"reason": "PodInitializing" if cs.kind == "regular" and inits else
                                    "ContainerCreating" if cs.kind != "regular" else waiting}}
        self.root = os.path.join(self.cluster.workdir, "pods", self.uid)
        self.volumes: dict[str, str] = {}
        self.task: asyncio.Task[Any] | None = None
        self.deadline_handle: asyncio.TimerHandle | None = None

    # -- status -----------------------------------------------------------------------------------------

    def _condition(self, kind: str, ok: bool, reason: str | None = None, message: str | None = None
                   ) -> dict[str, Any]:
        status = "True" if ok else "False"
        prior = self.transitions.get(kind)
        if prior is None or prior[0] != status:
            self.transitions[kind] = (status, stamp())
        cond: dict[str, Any] = {"type": kind, "status": status, "lastProbeTime": None,
                                "lastTransitionTime": self.transitions[kind][1]}
        if reason:
            cond["reason"] = reason
        if message:
            cond["message"] = message
        return cond

    def status(self, current: dict[str, Any]) -> dict[str, Any]:
        regular = [c for c in self.containers.values() if c.kind == "regular"]
        init = [c for c in self.containers.values() if c.kind != "regular"]
        conds = []
        if self.disruption is not None:
            conds.append(self.disruption)
        conds.append(self._condition("PodReadyToStartContainers", self.ready_to_start))
        incomplete = [c.name for c in init if c.kind == "init" and not (c.exit and c.exit.code == 0)]
        conds.append(self._condition("Initialized", self.initialized or not incomplete,
                                     None if self.initialized or not incomplete else "ContainersNotInitialized",
                                     None if self.initialized or not incomplete else
                                     f"containers with incomplete status: [{' '.join(incomplete)}]"))
        unready = [c.name for c in regular + [c for c in init if c.kind == "sidecar"] if not c.ready]
        if self.completed or self.phase in ("Succeeded", "Failed"):
            ready = self._condition("Ready", False, "PodCompleted")
            cready = self._condition("ContainersReady", False, "PodCompleted")
        else:
            msg = f"containers with unready status: [{' '.join(unready)}]" if unready else None
            ready = self._condition("Ready", not unready, "ContainersNotReady" if unready else None, msg)
            cready = self._condition("ContainersReady", not unready, "ContainersNotReady" if unready else None, msg)
        conds += [ready, cready]
        for c in (current.get("conditions") or []):
            if c.get("type") not in {x["type"] for x in conds}:
                conds.append(c)
        st: dict[str, Any] = {"phase": self.phase, "conditions": conds, "hostIP": "127.0.0.1",
                              "hostIPs": [{"ip": "127.0.0.1"}], "podIP": "127.0.0.1", "podIPs": [{"ip": "127.0.0.1"}],
                              "qosClass": current.get("qosClass")}
        if self.start_time:
            st["startTime"] = self.start_time
        if self.reason:
            st["reason"] = self.reason
        if self.message:
            st["message"] = self.message
        if init:
            st["initContainerStatuses"] = [c.as_status() for c in init]
        if regular and self.start_time:
            st["containerStatuses"] = [c.as_status() for c in sorted(regular, key=lambda c: c.name)]
        return {k: v for k, v in st.items() if v is not None}

    def write(self) -> None:
        if self.kubelet.lost:  # its node is cut off: nothing it sees reaches the API server
            return

        def edit(pod: dict[str, Any]) -> None:
            pod["status"] = self.status(pod.get("status") or {})
        stored = self.cluster.api.mutate("pods", self.ns, self.name, edit, share_spec=True)
        if stored is not None:
            self.pod = stored

    def event(self, type_: str, reason: str, message: str, container: CState | None = None) -> None:
        if self.kubelet.lost:
            return
        path = None
        if container is not None:
            kind = "containers" if container.kind == "regular" else "initContainers"
            path = f"spec.{kind}{{{container.name}}}"
        self.cluster.recorder.legacy(self.pod, type_, reason, message, KUBELET, self.kubelet.node.name, path)

    # -- the pod's life ---------------------------------------------------------------------------------

    def start(self) -> None:
        self.task = asyncio.ensure_future(self.run())

    async def run(self) -> None:
        try:
            rejected = self.kubelet.admit(self.pod, self.uid)
            if rejected is not None:
                reason, message = rejected
                self.phase, self.reason, self.message = "Failed", reason, f"Pod was rejected: {message}"
                self.event("Warning", reason, message)
                self.write()
                return
            self.start_time = stamp()
            self.write()
            deadline = self.spec.get("activeDeadlineSeconds")
            if deadline:
                self.deadline_handle = asyncio.get_running_loop().call_later(float(deadline), self.on_deadline)
            if not await self.sandbox() or not await self.mount():
                return
            self.ready_to_start = True
            self.write()
            if not await self.run_init():
                return
            self.initialized = True
            for c in self.containers.values():
                if c.kind == "regular" and (c.state.get("waiting") or {}).get("reason") == "PodInitializing":
                    c.state = {"waiting": {"reason": "ContainerCreating"}}
            self.write()
            regular = [c for c in self.containers.values() if c.kind == "regular"]
            for c in regular:
                c.task = asyncio.ensure_future(self.supervise(c))
            await asyncio.gather(*(c.task for c in regular if c.task), return_exceptions=True)
            if self.terminating:
                return
            await self.stop_sidecars()
            self.completed = True
            ok = all(c.exit is not None and c.exit.code == 0 for c in regular)
            self.phase = "Succeeded" if ok else "Failed"
            self.write()
        except asyncio.CancelledError:
            pass
        finally:
            if self.deadline_handle is not None and self.phase in ("Succeeded", "Failed"):
                self.deadline_handle.cancel()
            self.finished.set()

    async def sandbox(self) -> bool:
        delay = self.cluster.timing.sandbox_retry
        while self.kubelet.node.sandbox_error and not self.terminating:
            self.event("Warning", "FailedCreatePodSandBox",
                       f"Failed to create pod sandbox: {self.kubelet.node.sandbox_error}")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10 * self.cluster.timing.sandbox_retry)
        return not self.terminating

    async def mount(self) -> bool:
        delay = self.cluster.timing.volume_retry
        while not self.terminating:
            missing = podenv.missing_sources(self.pod, self.kubelet.lookup(self.ns))
            if not missing:
                break
            for volume, why in missing:
                self.event("Warning", "FailedMount", f'MountVolume.SetUp failed for volume "{volume}" : {why}')
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.cluster.timing.volume_retry_cap)
        if self.terminating:
            return False
        if self.kubelet.runtime.kind in ("docker", "sim"):  # sim: a func script reads them (SimContext.read)
            sa = (self.spec.get("serviceAccountName") or "default")
            self.volumes = podenv.write_volumes(
                self.pod, self.root, self.kubelet.lookup(self.ns),
                lambda: self.cluster.tokens.issue_for_account(self.ns, sa), self.cluster.ca_pem,
                self.cluster.shared_dir)
        return True

    async def run_init(self) -> bool:
        for c in [c for c in self.containers.values() if c.kind != "regular"]:
            if self.terminating:
                return False
            if c.kind == "sidecar":
                c.task = asyncio.ensure_future(self.supervise(c))
                waiter = asyncio.ensure_future(c.running.wait())
                await asyncio.wait([waiter, c.task], return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
                if not c.running.is_set():
                    return False
                continue
            c.task = asyncio.ensure_future(self.supervise(c))
            await asyncio.gather(c.task, return_exceptions=True)
            if self.terminating:
                return False
            if c.exit is None or c.exit.code != 0:
                self.phase = "Failed"
                self.completed = True
                self.write()
                await self.stop_sidecars()
                return False
        return True

    # -- one container ----------------------------------------------------------------------------------

    def restart_policy(self, c: CState) -> str:
        if c.kind == "sidecar":
            return "Always"
        return self.spec.get("restartPolicy", "Always")

    async def supervise(self, c: CState) -> None:
        crash_delay = self.cluster.timing.crash_backoff
        while not self.terminating:
            info = await self.ensure_image(c)
            if info is None:
                return
            try:
                cspec = self.container_spec(c, info)
            except podenv.ConfigError as e:
                c.state = {"waiting": {"reason": "CreateContainerConfigError", "message": str(e)}}
                self.event("Warning", "Failed", f"Error: {e}", c)
                self.write()
                await asyncio.sleep(self.cluster.timing.config_retry)
                continue
            if info.arch and info.arch != self.kubelet.node.arch:  # an image built for another platform
                exit_ = Exit(1, False, stamp(), stamp(), "")
                c.handle = _ExecFormat(f"exec {(c.spec.get('command') or ['/entrypoint'])[0]}: exec format error\n")
                c.container_id = f"{self.kubelet.runtime.kind}://exec-format-{c.name}"
                self.event("Normal", "Created", f"Created container: {c.name}", c)
                self.event("Normal", "Started", f"Started container {c.name}", c)
            else:
                try:
                    handle = await self.kubelet.runtime.create(cspec)
                except Exception as e:  # noqa: BLE001 - the runtime refused it
                    c.state = {"waiting": {"reason": "CreateContainerError", "message": str(e)}}
                    self.event("Warning", "Failed", f"Error: {e}", c)
                    self.write()
                    await asyncio.sleep(self.cluster.timing.config_retry)
                    continue
                if c.handle is not None:
                    if c.previous is not None:
                        await self.kubelet.runtime.remove(c.previous)
                    c.previous = c.handle
                c.handle = handle
                self.event("Normal", "Created", f"Created container: {c.name}", c)
                c.container_id = await self.kubelet.runtime.start(handle)
                self.event("Normal", "Started", f"Started container {c.name}", c)
                c.state = {"running": {"startedAt": stamp()}}
                c.started = c.ready = True
                c.running.set()
                if not self.terminating:
                    if c.kind == "regular" and self.phase == "Pending":
                        self.phase = "Running"
                    self.write()
                exit_ = await self.kubelet.runtime.wait(handle, cspec)
            c.exit = exit_
            message = exit_.message
            if not message and c.spec.get("terminationMessagePolicy") == "FallbackToLogsOnError" and exit_.code != 0:
                message = tail_bytes(await self.logs_of(c.handle, FALLBACK_LINES), FALLBACK_BYTES)
            reason = "OOMKilled" if exit_.oom else ("Completed" if exit_.code == 0 else "Error")
            term: dict[str, Any] = {"exitCode": exit_.code, "reason": reason, "startedAt": exit_.started_at,
                                    "finishedAt": exit_.finished_at, "containerID": c.container_id}
            if message:
                term["message"] = message
            c.state = {"terminated": term}
            c.ready = False
            c.started = False
            policy = self.restart_policy(c)
            again = not self.terminating and (policy == "Always" or (policy == "OnFailure" and exit_.code != 0))
            if c.kind == "sidecar" and self.completed:
                again = False
            if not again:
                self.write()
                return
            c.last_state = {"terminated": term}
            c.state = {"waiting": {"reason": "CrashLoopBackOff",
                                   "message": f"back-off {crash_delay:g}s restarting failed container={c.name} "
                                              f"pod={podenv.pod_ref(self.pod)}"}}
            self.event("Warning", "BackOff", f"Back-off restarting failed container {c.name} in pod "
                                             f"{podenv.pod_ref(self.pod)}", c)
            self.write()
            await asyncio.sleep(crash_delay)
            crash_delay = min(crash_delay * 2, self.cluster.timing.crash_backoff_cap)
            c.restart_count += 1
            c.running.clear()

    async def ensure_image(self, c: CState) -> ImageInfo | None:
        image = c.spec["image"]
        if not valid_reference(image):
            c.state = {"waiting": {"reason": "InvalidImageName",
                                   "message": f'Failed to apply default image tag "{image}": couldn\'t parse image '
                                              f'name "{image}": invalid reference format'}}
            self.event("Warning", "InspectFailed", c.state["waiting"]["message"], c)
            self.event("Warning", "Failed", "Error: InvalidImageName", c)
            self.write()
            await self._forever()
            return None
        policy = c.spec.get("imagePullPolicy", "IfNotPresent")
        info = await self.kubelet.runtime.image(image)
        if info is not None and policy != "Always":
            self.event("Normal", "Pulled", f'Container image "{image}" already present on machine', c)
            c.image_id = info.image_id
            return info
        if info is None and policy == "Never":
            message = f'Container image "{image}" is not present with pull policy of Never'
            c.state = {"waiting": {"reason": "ErrImageNeverPull", "message": message}}
            self.event("Warning", "ErrImageNeverPull", message, c)
            self.write()
            await self._forever()
            return None
        delay = self.cluster.timing.image_pull_backoff
        while not self.terminating:
            self.event("Normal", "Pulling", f'Pulling image "{image}"', c)
            began = time.monotonic()
            try:
                info = await self.kubelet.runtime.pull(image)
            except PullError as e:
                self.event("Warning", "Failed", f'Failed to pull image "{image}": {e}', c)
                self.event("Warning", "Failed", "Error: ErrImagePull", c)
                c.state = {"waiting": {"reason": "ErrImagePull", "message": str(e)}}
                self.write()
                await asyncio.sleep(self.cluster.timing.pull_error_shown)
                if self.terminating:
                    return None
                c.state = {"waiting": {"reason": "ImagePullBackOff",
                                       "message": f'Back-off pulling image "{image}": ErrImagePull: {e}'}}
                self.event("Normal", "BackOff", f'Back-off pulling image "{image}"', c)
                self.event("Warning", "Failed", "Error: ImagePullBackOff", c)
                self.write()
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.cluster.timing.image_pull_backoff_cap)
                continue
            took = time.monotonic() - began
            ms = f"{took * 1000:.0f}ms"
            self.event("Normal", "Pulled", f'Successfully pulled image "{image}" in {ms} ({ms} including waiting). '
                                           f"Image size: {info.size} bytes.", c)
            c.image_id = info.image_id
            return info
        return None

    async def _forever(self) -> None:
        while not self.terminating:
            await asyncio.sleep(1)

    def container_spec(self, c: CState, info: ImageInfo) -> ContainerSpec:
        lookup = self.kubelet.lookup(self.ns)
        env = podenv.environment(self.pod, c.spec, lookup, self.kubelet.service_env(self.pod),
                                 self.kubelet.node.allocatable())
        user = podenv.run_as(self.pod, c.spec, info.user)
        env.setdefault("HOSTNAME", self.name)
        command = [podenv.expand(x, env) for x in c.spec.get("command") or []] or None
        args = [podenv.expand(x, env) for x in c.spec.get("args") or []] or None
        limits = (c.spec.get("resources") or {}).get("limits") or {}
        sc = c.spec.get("securityContext") or {}
        caps = sc.get("capabilities") or {}
        tlog = None
        if self.kubelet.runtime.kind == "docker":
            os.makedirs(os.path.join(self.root, "termination"), exist_ok=True)
            tlog = os.path.join(self.root, "termination", f"{c.name}-{c.restart_count}")
            open(tlog, "w").close()
            os.chmod(tlog, 0o666)
        return ContainerSpec(
            docker_name=f"k8s_{c.name}_{self.name}_{self.ns}_{self.uid[:8]}_{c.restart_count}", image=c.spec["image"],
            command=command, args=args, env=env, working_dir=c.spec.get("workingDir"), user=user,
            mounts=podenv.mounts(c.spec, self.volumes, podenv.read_only_volumes(self.pod)),
            groups=podenv.groups(self.pod),
            memory_limit=amount("memory", limits["memory"]) if "memory" in limits else None,
            nano_cpus=amount("cpu", limits["cpu"]) * 1_000_000 if "cpu" in limits else None,
            labels={"io.kubernetes.pod.name": self.name, "io.kubernetes.pod.namespace": self.ns,
                    "io.kubernetes.pod.uid": self.uid, "io.kubernetes.container.name": c.name},
            read_only=bool(sc.get("readOnlyRootFilesystem")), cap_drop=list(caps.get("drop") or []),
            cap_add=list(caps.get("add") or []), no_new_privileges=sc.get("allowPrivilegeEscalation") is False,
            termination_log=tlog, pod=self.pod, container=c.spec)

    async def logs_of(self, handle: Any, tail: int | None = None, timestamps: bool = False,
                      since: float | None = None) -> bytes:
        """The log's raw bytes (invalid UTF-8 as written)."""
        if handle is None:
            return b""
        if isinstance(handle, _ExecFormat):
            return handle.text.encode()
        return await self.kubelet.runtime.logs(handle, tail=tail, timestamps=timestamps, since=since)

    # -- endings ----------------------------------------------------------------------------------------

    async def stop_sidecars(self) -> None:
        """After the main containers end, the kubelet stops sidecars (in reverse order)."""
        self.completed = True
        for c in reversed([c for c in self.containers.values() if c.kind == "sidecar"]):
            if c.handle is not None and c.state.get("running") is not None:
                self.event("Normal", "Killing", f"Stopping container {c.name}", c)
                await self.kubelet.runtime.stop(c.handle, int(self.spec.get("terminationGracePeriodSeconds", 30)))
            if c.task is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await asyncio.wait_for(asyncio.shield(c.task), 5)
                if not c.task.done():
                    c.task.cancel()

    async def kill(self, grace: int) -> None:
        """Stop every running container (SIGTERM, SIGKILL after ``grace``) and wait for their endings."""
        self.terminating = True
        running = [c for c in self.containers.values() if c.state.get("running") is not None and c.handle is not None]
        for c in running:
            self.event("Normal", "Killing", f"Stopping container {c.name}", c)
        await asyncio.gather(*(self.kubelet.runtime.stop(c.handle, grace) for c in running), return_exceptions=True)
        for c in self.containers.values():
            if c.task is None:
                continue
            if c in running:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await asyncio.wait_for(asyncio.shield(c.task), grace + 10)
            if not c.task.done():
                c.task.cancel()
        if self.task is not None and not self.task.done():
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task

    def _all_succeeded(self) -> bool:
        regular = [c for c in self.containers.values() if c.kind == "regular"]
        return bool(regular) and all(c.exit is not None and c.exit.code == 0 for c in regular)

    def on_deadline(self) -> None:
        if self.phase in ("Succeeded", "Failed") or self.terminating:
            return
        asyncio.ensure_future(self._deadline())

    async def _deadline(self) -> None:
        message = "Pod was active on the node longer than the specified deadline"
        self.event("Normal", "DeadlineExceeded", message)
        await self.kill(int(self.spec.get("terminationGracePeriodSeconds", 30)))
        self.phase, self.reason, self.message = "Failed", "DeadlineExceeded", message
        self.completed = True
        self.write()

    async def evict(self, message: str, grace: int = 0) -> None:
        """Node-pressure eviction: DisruptionTarget, containers killed, phase Failed, reason Evicted."""
        if self.phase in ("Succeeded", "Failed"):
            return
        self.disruption = {"type": "DisruptionTarget", "status": "True", "lastProbeTime": None,
                           "lastTransitionTime": stamp(), "reason": "TerminationByKubelet", "message": message}
        self.write()
        self.event("Warning", "Evicted", message)
        await self.kill(grace)
        self.phase, self.reason, self.message = "Failed", "Evicted", message
        self.completed = True
        self.write()

    async def terminate(self, grace: int) -> None:
        """The pod was deleted: stop it, report its last status, then remove it from the API."""
        if not self.terminating:
            await self.kill(grace)
            if self.phase not in ("Succeeded", "Failed"):
                self.phase = "Succeeded" if self._all_succeeded() else "Failed"
            self.completed = True
            self.write()
        self.cluster.api.remove("pods", self.ns, self.name)

    async def cleanup(self) -> None:
        if self.task is not None and not self.task.done():
            self.terminating = True
            await self.kill(0)
        if self.deadline_handle is not None:
            self.deadline_handle.cancel()
        for c in self.containers.values():
            for h in (c.handle, c.previous):
                if h is not None and not isinstance(h, _ExecFormat):
                    await self.kubelet.runtime.remove(h)
        shutil.rmtree(self.root, ignore_errors=True)


class _ExecFormat:
    """A container that could not start: its binary is for another CPU architecture."""

    def __init__(self, text: str) -> None:
        self.text = text


def tail_bytes(data: bytes, limit: int) -> str:
    return data[-limit:].decode(errors="replace")


class Kubelet:
    """One node's kubelet: a :class:`PodWorker` per pod bound to the node."""

    def __init__(self, cluster: Cluster, node: NodeSpec, runtime: Any) -> None:
        self.cluster, self.node, self.runtime = cluster, node, runtime
        self.workers: dict[str, PodWorker] = {}
        self.admitted: dict[str, dict[str, int]] = {}  # pod uid -> requests, for node-level admission
        self.lost = False  # cut off from the API server (Cluster.lose_node): it neither hears nor reports

    def lookup(self, ns: str) -> podenv.Lookup:
        return lambda kind, name: self.cluster.store.get(kind, ns, name)

    def service_env(self, pod: dict[str, Any]) -> dict[str, str]:
        host, port = "127.0.0.1", str(self.cluster.tls_port or self.cluster.port)
        return {"KUBERNETES_SERVICE_HOST": host, "KUBERNETES_SERVICE_PORT": port,
                "KUBERNETES_SERVICE_PORT_HTTPS": port, "KUBERNETES_PORT": f"tcp://{host}:{port}",
                "KUBERNETES_PORT_443_TCP": f"tcp://{host}:{port}", "KUBERNETES_PORT_443_TCP_PROTO": "tcp",
                "KUBERNETES_PORT_443_TCP_ADDR": host, "KUBERNETES_PORT_443_TCP_PORT": port}

    def admit(self, pod: dict[str, Any], uid: str) -> tuple[str, str] | None:
        """Node-level admission: (reason, message) when the pod cannot run here."""
        stored = self.cluster.store.get("nodes", "", self.node.name)
        labels = ((stored or {}).get("metadata") or {}).get("labels") or dict(self.node.labels)
        spec = pod.get("spec") or {}
        if not node_affinity_matches(spec, labels):
            return "NodeAffinity", "Predicate NodeAffinity failed: node(s) didn't match Pod's node affinity/selector"
        usage = pod_usage(pod)
        wanted = {"cpu": usage["requests.cpu"], "memory": usage["requests.memory"], "pods": 1}
        alloc = self.node.allocatable()
        for resource in ("cpu", "memory", "pods"):
            used = sum(u.get(resource, 0) for u in self.admitted.values())
            used += amount(resource, self.node.reserved.get(resource, 0))
            capacity = amount(resource, alloc[resource])
            if used + wanted[resource] > capacity:
                return f"OutOf{resource}", (f"Node didn't have enough resource: {resource}, requested: "
                                            f"{wanted[resource]}, used: {used}, capacity: {capacity}")
        taints = ((stored or {}).get("spec") or {}).get("taints") if stored else self.node.taints
        if any(t.get("effect") == "NoExecute" and not tolerates(spec.get("tolerations") or [], t)
               for t in [*(taints or []), *self.node.late_taints]):  # the only effect the kubelet checks
            return "TaintToleration", ("Predicate TaintToleration failed: node(s) had taints that the pod didn't "
                                       "tolerate")
        self.admitted[uid] = wanted
        return None

    def on_pod(self, pod: dict[str, Any] | None, uid: str, deleted: bool) -> None:
        if self.lost:
            return
        worker = self.workers.get(uid)
        if deleted or pod is None:
            self.admitted.pop(uid, None)
            if worker is not None:
                del self.workers[uid]
                asyncio.ensure_future(worker.cleanup())
            return
        phase = (pod.get("status") or {}).get("phase")
        if worker is None:
            if phase in ("Succeeded", "Failed"):
                return
            worker = PodWorker(self, pod)
            self.workers[uid] = worker
            if pod["metadata"].get("deletionTimestamp"):
                asyncio.ensure_future(worker.terminate(0))
                return
            worker.start()
            return
        worker.pod = pod
        if phase in ("Succeeded", "Failed"):
            self.admitted.pop(uid, None)
        if pod["metadata"].get("deletionTimestamp") and not getattr(worker, "_deleting", False):
            worker._deleting = True  # type: ignore[attr-defined]
            grace = int(pod["metadata"].get("deletionGracePeriodSeconds") or 0)
            asyncio.ensure_future(worker.terminate(grace))

    async def logs(self, pod: dict[str, Any], container: str, options: LogOptions) -> bytes:
        """The container's log as the kubelet's containerLogs gives it: raw bytes, ``limitBytes`` of them at most."""
        name = pod["metadata"]["name"]
        worker = self.workers.get(pod["metadata"]["uid"])
        cs = worker.containers.get(container) if worker else None
        if options.previous:
            if cs is None or cs.previous is None:
                raise bad_request(f'previous terminated container "{container}" in pod "{name}" not found')
            handle = cs.previous
        else:
            if cs is None or cs.handle is None:
                why = ((cs.state.get("waiting") or {}).get("reason") if cs else None) or "ContainerCreating"
                raise bad_request(f'container "{container}" in pod "{name}" is waiting to start: {why}')
            handle = cs.handle
        data = await worker.logs_of(handle, options.tail, options.timestamps, options.since)  # type: ignore[union-attr]
        return data if options.limit_bytes is None else data[:options.limit_bytes]

"""The resolution loop: one code path that drives a Future graph to values, for every resolver.

It wires the pure :mod:`sematic_k8s.graph` to a Store (metadata), a Storage (artifact bytes) and
an Executor (where func bodies run). Writes are batched: one store transaction per loop turn; a batch is kept
(and grows) until the store has taken it. The loop heartbeats (:mod:`~sematic_k8s.resolvers.heartbeat`); its
cache look-ups are :mod:`~sematic_k8s.resolvers.cache_hits`'s.

Infrastructure failures (:class:`~sematic_k8s.errors.InfrastructureError`: the server, storage, a worker's
node) are never pinned on a func: a run attempt that met one is tried again (up to :data:`INFRA_RETRIES`
times, beside the func's own ``retries``; not a full disk, which does not pass by itself: a worker's DiskFull ends
the resolution, as does S3 refusing a worker's presigned request for good, PresignedRequestRefused; nor S3 refusing
a worker's presigned URLs' keys, whose attempt is run once more with URLs presigned afresh, a second refusal ending
the resolution: StorageKeysRefused), and one in the loop's own work ends the
resolution as such, to be continued once the service is back (or its cause fixed). A driver that will be
restarted (``detach_on_outage``) instead leaves the resolution and its workers as they are when a transient one
reaches it (:func:`transient`), so that its next start resumes them.
"""

from __future__ import annotations

import heapq
import logging
import time
from collections import deque
from typing import Any

from sematic_k8s import caching, graph, limits
from sematic_k8s.error_records import clipped_error, error_info
from sematic_k8s.errors import (
    CancelRequested,
    DatabaseLocked,
    DiskFull,
    DriverReplaced,
    FuncError,
    InfrastructureError,
    PresignedRequestRefused,
    ResolutionCanceled,
    ResolutionEnded,
    ResolutionFailed,
    RunInterrupted,
    StopsForAFix,
    StorageKeysRefused,
)
from sematic_k8s.executors.base import Executor, Outcome, Task
from sematic_k8s.executors.interrupts import BodyGuard
from sematic_k8s.func import Func
from sematic_k8s.future import Future
from sematic_k8s.graph import CANCELED, CREATED, FAILED, RESOLVED, RUNNING, SCHEDULED
from sematic_k8s.resolvers import collector
from sematic_k8s.resolvers.cache_hits import CacheHits, source_changed
from sematic_k8s.resolvers.heartbeat import Heartbeat
from sematic_k8s.resolvers.planning import Planner, value_id
from sematic_k8s.resolvers.recorder import Recorder
from sematic_k8s.serialization import Value
from sematic_k8s.specs import ResolutionSettings
from sematic_k8s.storage.base import Storage, append_attempt_logs
from sematic_k8s.store.base import Store
from sematic_k8s.store.records import CLAIMED, ResolutionRecord, RunRecord, utcnow

log = logging.getLogger("sematic_k8s")


def transient(exc: BaseException) -> bool:
    """An infrastructure failure that may pass (the server, storage or the Kubernetes API unreachable or busy),
    as opposed to the pipeline's failure or a refusal that a restart would meet again."""
    if isinstance(exc, InfrastructureError):
        return bool(getattr(exc, "transient", True))
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return True
    status = getattr(exc, "status", None)  # the kubernetes client's ApiException, urllib3's errors
    module = type(exc).__module__
    if module.startswith("kubernetes"):
        return status in (0, 429, 500, 502, 503, 504)
    return module.startswith("urllib3")


def _lasted(kinds: set[str]) -> str:
    """What to do about an infrastructure failure (of the classes named ``kinds``) that every attempt of a run met:
    the most derived InfrastructureError's ``lasted`` words."""
    found: list[type[InfrastructureError]] = [InfrastructureError]
    while True:
        sub = next((c for c in found[-1].__subclasses__() if c.__qualname__ in kinds), None)
        if sub is None:
            return found[-1].lasted
        found.append(sub)


SETTLE = 0.002  # seconds to wait for quick runs before writing what happened so far (batches writes)
FLUSH_INTERVAL = 0.5  # seconds: the longest recorded state may lag while runs keep completing
CANCEL_POLL = 1.0  # seconds: how often a flush asks the store whether the resolution was asked to cancel
WAITING_CHECK = 1.0  # seconds between reads of what workers wait for (the executor's ``waiting``)
MAX_NESTING = 1000  # compositions nested in one another, at most (as Python's own recursion limit)
INFRA_RETRIES = 3  # extra attempts of a run whose attempt met an infrastructure failure
INFRA_RETRY_DELAY = 2.0  # seconds before the first of them (doubled each time)
INFRASTRUCTURE = InfrastructureError.__qualname__
ENDS_AT_ONCE = {c.__qualname__: c for c in (DiskFull, PresignedRequestRefused)}  # a worker's, ending the resolution
KEYS_REFUSED = StorageKeysRefused.__qualname__


class ResolutionLoop:
    """Resolves one pipeline (a fresh one, or a rerun of a recorded one): planned by a
    :class:`~sematic_k8s.resolvers.planning.Planner`, then driven here."""

    def __init__(self, store: Store, storage: Storage, executor: Executor, settings: ResolutionSettings | None = None,
                 *, kind: str, image: str | None = None, build_hash: str | None = None,
                 recorded: dict[str, Any] | None = None, inline_limit: int = 0) -> None:
        self.store, self.storage, self.executor = store, storage, executor
        self.kind = kind
        self.settings = settings or ResolutionSettings()
        self.max_parallelism = self.settings.max_parallelism
        self.image, self.build_hash = image, build_hash
        self.extra_settings = recorded or {}  # recorded on the Resolution (e.g. how a cloud rerun reaches it)
        self.graph = graph.Graph()
        # inline artifacts only where every func runs in this process: workers elsewhere read storage
        self.recorder = Recorder(store, storage, inline_limit=inline_limit if getattr(executor, "in_process", False)
                                 else 0)
        self.planner = Planner(store, self.recorder, self.graph, self.settings)
        self.cache = CacheHits(store, self.recorder, self.graph)
        self.attempts: dict[str, int] = {}
        self.pending: deque[graph.Node] = deque()
        self.timers: list[tuple[float, int, graph.Node]] = []
        self.in_flight = 0
        self.failure: tuple[str, dict] | None = None
        self.resumed: set[str] = set()  # runs a restarted driver found running
        self.root_id = ""
        self.cancel_checked = time.monotonic()
        self.cancel_asked = False
        self.task_inputs: dict[str, dict[str, Value]] = {}
        self.failed_exc: BaseException | None = None
        self.last_flush = time.monotonic()
        self.waiting: dict[str, str] = {}  # run id -> what its worker waits for, as last noted on the run
        self.waiting_checked = float("-inf")
        self.infra_retries: dict[str, int] = {}  # run id -> attempts retried after infrastructure failures
        self.keys_refused: set[str] = set()  # run ids whose worker's presigned URLs S3 refused once already
        self.heartbeat: Heartbeat | None = None
        self.guard: BodyGuard | None = None  # lets the heartbeat thread interrupt a body run on this thread
        self.cancel_watched = 0.0  # when the heartbeat thread last asked about a cancel while a body ran here
        # workers in other processes start only once their runs are recorded as running (see _launch)
        self.record_before_launch = not getattr(executor, "in_process", False)
        self.launching: list[Task] = []
        self.detach_on_outage = False  # a driver that will be restarted: see the module's docstring

    # -- entry ------------------------------------------------------------------------------------

    def run(self, root: Future) -> Any:
        """Resolve ``root`` and return its value; on a rerun ``root`` names the pipeline to rerun."""
        preset = self.settings.root_id
        existing = self.store.get_resolution(preset) if preset else None
        if existing is not None and existing.state == CLAIMED:  # the server's rerun action's claim: record it anew
            existing = None
        if existing is not None and existing.state in graph.TERMINAL:
            raise ValueError(f"resolution {existing.id} already ended ({existing.state}): nothing to resume")
        if existing is not None:  # before reading its runs: no earlier driver's write lands after that
            self._take_over(existing.id)
            self.cancel_asked = self.store.cancel_requested(existing.id)  # asked while no driver ran: still asked
        plan = self.planner.plan(root, existing)  # a driver restarted: pick up where it stopped
        self.root_id = plan.root_id
        self.cache.forced, self.resumed = plan.forced, plan.resumed
        self.attempts.update(plan.attempts)
        namespace = self.settings.cache_namespace
        recorded = plan.recorded_root() if callable(namespace) and plan.recorded_root is not None else None
        # a rerun: the namespace is computed from the root as recorded
        self.cache.namespace = caching.resolve_namespace(namespace, root if recorded is None else recorded)
        if existing is None:
            self._record_resolution(root, plan.recorded)
        self.graph.add(plan.nodes)
        busy_flush = None if self.record_before_launch else self._flush_while_busy  # see _submit
        self.heartbeat = Heartbeat(self.store, self.root_id, fence=self.recorder.fence, flush=busy_flush,
                                   lag=FLUSH_INTERVAL, watch=self._watch_cancel, watch_every=CANCEL_POLL / 2)
        self.heartbeat.last = float("-inf")  # the first batch carries a beat
        self._flush()  # record the resolution before running anything: watchers (the server's API) see it at once
        if existing is None:  # recorded (inserts only, which overwrite nothing): now this process is its driver
            self._take_over(self.root_id)
        self.guard = BodyGuard()
        self.guard.open()
        self.heartbeat.start()
        detached = False
        try:
            try:
                self._loop()
                if self.cancel_asked or self.store.cancel_requested(self.root_id):  # an accepted cancel wins
                    raise self._canceled()
            except DriverReplaced:  # the newer driver records it, and re-attached to the workers: leave them be
                detached = True
                raise
            except BaseException as e:
                if self.detach_on_outage and transient(e):
                    detached = True
                    log.warning("resolution %s: %s: %s; leaving it to a restarted driver", self.root_id,
                                type(e).__name__, e)
                    raise
                instead = self._abort(e)
                if isinstance(instead, DriverReplaced):  # taken over meanwhile: the workers are the newer driver's now
                    detached = True
                if instead is not None:  # or its failed end recorded canceled: ResolutionCanceled
                    raise instead from e
                raise
            finally:
                detach = getattr(self.executor, "detach", None) if detached else None
                (detach or self.executor.close)()
            return self._finish()
        except StopsForAFix as e:  # raised on saying how to continue the resolution (what met it knew no resolution)
            e.resolution_id = self.root_id
            raise
        finally:
            self.heartbeat.stop()
            self.guard.close()

    def _take_over(self, resolution_id: str) -> None:
        """Become the resolution's only writer (fencing): every batch this loop and its heartbeat write from now on
        carries the epoch the store gave, and is refused (``DriverReplaced``) once another driver took it over."""
        self.recorder.fence[resolution_id] = self.store.take_over(resolution_id)

    def _record_resolution(self, root: Future, settings_extra: dict[str, Any]) -> None:
        now = utcnow()
        settings = {"kind": self.kind, "cache_namespace": self.cache.namespace,
                    "max_parallelism": self.max_parallelism, **self.extra_settings, **settings_extra}
        # as the server takes them (before anything is recorded): every listing of the resolution carries them
        limits.check_json("the resolution's settings", settings, "give it a shorter cache_namespace, or fewer "
                          "executor_settings")
        self.recorder.batch.add_resolution(ResolutionRecord(
            id=self.root_id, root_func_path=root.func.path, state=RUNNING, created_at=now, heartbeat_at=now,
            settings=settings, rerun_of=settings_extra.get("rerun_of"), image=self.image, build_hash=self.build_hash,
        ))

    def _loop(self) -> None:
        root = self.graph.nodes[self.root_id]
        while True:
            self._advance()
            self._launch()
            if self.cancel_asked:
                raise self._canceled()
            if root.state in graph.TERMINAL or (self.failure and self.in_flight == 0):
                return
            if self.in_flight == 0 and not self.timers:
                raise RuntimeError(f"resolution {self.root_id} is stuck: nothing is running or ready")
            outcomes = self.executor.wait(SETTLE)
            if not outcomes:  # about to block: record what happened so far first
                self._flush()
                timeout = max(0.0, self.timers[0][0] - time.monotonic()) if self.timers else CANCEL_POLL
                outcomes = self.executor.wait(min(timeout, CANCEL_POLL))
            elif time.monotonic() - self.last_flush > FLUSH_INTERVAL:
                self._flush()
            self._note_waiting(outcomes)
            for outcome in outcomes:
                self._on_outcome(outcome)
            now = time.monotonic()
            while self.timers and self.timers[0][0] <= now:
                _, _, node = heapq.heappop(self.timers)
                if self.failure:
                    continue
                self._submit(node)
            self._launch()

    def _canceled(self) -> ResolutionCanceled:
        return ResolutionCanceled(f"resolution {self.root_id} was canceled", resolution_id=self.root_id,
                                  run_id=None, error=None)

    def _advance(self) -> None:
        """Finish compositions and dispatch ready runs until nothing changes."""
        while True:
            finishable = self.graph.pop_finishable()
            ready = self.graph.pop_ready()
            if not finishable and not ready and not (self.pending and self.in_flight < self.max_parallelism):
                return
            for node in finishable:
                if node.state == RUNNING:
                    self._finish_composition(node)
            self.pending.extend(ready)
            if ready and not self.failure:  # failed: nothing starts, so nothing looked up (nor asked of storage)
                self.cache.look_up(ready, self._cache_hit)
            while self.pending and self.in_flight < self.max_parallelism and not self.failure:
                node = self.pending.popleft()
                if node.state == CREATED:
                    self._start(node)
            if self.failure:
                self.pending.clear()
                return

    # -- state changes ----------------------------------------------------------------------------

    def _transition(self, run_id: str | None, state: str, output: Value | None = None, /,
                    **fields: Any) -> list[str]:
        """The one way runs change state: their graph nodes (only along ``graph.TRANSITIONS``) and their
        records in the next batch, together. Returns the ids of the runs that changed.

        RESOLVED takes the run's ``output`` (the third argument); FAILED also fails the compositions above the
        run (recorded as NestedRunFailed); CANCELED with ``run_id=None`` cancels every run that has not ended.
        """
        if state == RESOLVED:
            if run_id is None or output is None:
                raise ValueError("a resolved run needs its id and output")
            if output.origin is None:
                output.origin = run_id  # named if it does not load later
            self.graph.resolve(run_id, output)
            self.task_inputs.pop(run_id, None)  # what a run in progress needs goes once it resolved
            self.attempts.pop(run_id, None)  # (a late outcome of it is ignored by its state alone)
            self.cache.resolved(run_id)  # a later run with its cache key looks the key up again
            fields = {"output_id": output.id, "ended_at": utcnow(), **fields}
            changed = [run_id]
        elif run_id is None:
            if state != CANCELED:
                raise ValueError(f"only cancel applies to every unfinished run, not {state}")
            changed = self.graph.cancel_unfinished()
        elif state == FAILED:
            changed = self.graph.fail(run_id)
        else:
            self.graph.set_state(run_id, state)
            changed = [run_id]
        if state in (FAILED, CANCELED):
            fields.setdefault("ended_at", utcnow())
        nested = {"state": FAILED, "ended_at": fields.get("ended_at"), "error": {
            "type": "NestedRunFailed", "message": f"nested run {run_id} failed", "traceback": ""}}
        for changed_id in changed:
            if state == FAILED and changed_id != run_id:
                self.recorder.batch.update_run(changed_id, **nested)
            else:
                self.recorder.batch.update_run(changed_id, state=state, **fields)
        return changed

    # -- running ----------------------------------------------------------------------------------

    def _start(self, node: graph.Node) -> None:
        func: Func = node.func
        prepared = self.cache.prepared.pop(node.run_id, None)
        if prepared is not None:
            inputs = prepared[0]
        else:
            try:
                inputs = {k: self.recorder.materialize(s) for k, s in self.graph.inputs(node).items()}
            except InfrastructureError:
                raise  # storage, not the func: the resolution ends as an infrastructure failure
            except Exception as e:
                self._fail(node, e)
                return
        fields: dict[str, Any] = {"inputs": {k: v.id for k, v in inputs.items()}}
        if func.cache:
            hit = self.cache.find(node, inputs, prepared[1] if prepared else None, fields)
            if hit is not None:
                self._cache_hit(node, *hit, fields)
                return
        self.recorder.batch.update_run(node.run_id, **fields)
        self.task_inputs[node.run_id] = inputs
        self._submit(node)

    def _note_waiting(self, outcomes: list[Outcome]) -> None:
        """Note on each run what its worker waits for (capacity, quota: the executor's ``waiting``) while it does,
        so that ``runs show`` and the dashboard say why a running run has not started. Read every WAITING_CHECK
        seconds, and when a waiting run ends (its note is dropped before its outcome is recorded)."""
        now = time.monotonic()
        if now - self.waiting_checked < WAITING_CHECK and not (
                self.waiting and any(o.run_id in self.waiting for o in outcomes)):
            return
        self.waiting_checked = now
        waiting = dict(getattr(self.executor, "waiting", None) or {})
        for run_id in self.waiting.keys() | waiting.keys():
            why = waiting.get(run_id)
            if why != self.waiting.get(run_id):
                notes = dict(self.recorder.notes.get(run_id, {}))
                self.recorder.batch.update_run(run_id, notes={**notes, "waiting": why} if why else notes)
        self.waiting = waiting

    def _cache_hit(self, node: graph.Node, hit: RunRecord, output_id: str, fields: dict[str, Any]) -> None:
        """Resolve a run by its cache hit, its record updated: the hit's output, the run it came from, a note."""
        changed = source_changed(node.func, hit)
        now = utcnow()
        output = self.cache.output(output_id)
        output.origin = output.origin or hit.id
        self._transition(node.run_id, RESOLVED, output,
                         **fields, cached_from=hit.id, started_at=now, ended_at=now,
                         notes=self.recorder.note(node.run_id, cache={"hit": hit.id, "source_changed": changed}))

    def _submit(self, node: graph.Node) -> None:
        attempt = self.attempts.get(node.run_id, 0) + 1
        self.attempts[node.run_id] = attempt
        inputs = self.task_inputs[node.run_id]
        self._transition(node.run_id, RUNNING, attempts=attempt, **({"started_at": utcnow()} if attempt == 1 else {}))
        self.in_flight += 1
        resumed = node.run_id in self.resumed
        self.resumed.discard(node.run_id)
        task = Task(node.run_id, self.root_id, node.func, inputs, attempt, resumed)
        if self.record_before_launch:
            self.launching.append(task)
        elif self.heartbeat is None:
            self._execute(task)
        else:  # an in-process executor may run the body here: the heartbeat's thread writes the records meanwhile
            self.heartbeat.busy()
            try:
                self._execute(task)
            finally:
                self.heartbeat.back()

    def _execute(self, task: Task) -> None:
        """Hand ``task`` to the executor, which may run its body here (an inline func): one that a cancel interrupted
        (RunInterrupted, see :meth:`_watch_cancel`) keeps the lines it printed, and cancels the resolution."""
        try:
            self.executor.submit(task)
        except RunInterrupted as e:
            if e.logs:
                try:
                    append_attempt_logs(self.storage, task.run_id, task.attempt, e.logs)
                except Exception as err:  # noqa: BLE001 - the cancel goes on: its lines are what is lost
                    log.warning("run %s: the lines it printed before it was interrupted were not stored: %s: %s",
                                task.run_id, type(err).__name__, err)
            raise ResolutionCanceled(
                f"resolution {self.root_id} was canceled: {task.func.name} (run {task.run_id}) was interrupted",
                resolution_id=self.root_id, run_id=task.run_id, error=None) from None

    def _watch_cancel(self) -> None:
        """The heartbeat thread's look, every half CANCEL_POLL, while a func body runs on this loop's thread (which
        asks the store nothing meanwhile): once the body has run CANCEL_POLL seconds, the store is asked every
        CANCEL_POLL seconds whether the resolution was asked to cancel, and a cancel interrupts the body."""
        since = self.guard.running_since() if self.guard is not None else None
        now = time.monotonic()
        if since is None or now - max(since, self.cancel_watched) < CANCEL_POLL or not self.root_id:
            return
        self.cancel_watched = now
        if self.store.cancel_requested(self.root_id):
            self.cancel_asked = True
            if self.guard is not None and self.guard.interrupt():
                log.warning("resolution %s was asked to cancel: interrupting the func running on the resolving thread",
                            self.root_id)

    def _launch(self) -> None:
        """Start the tasks held back until their runs were recorded as running: a worker outside this process
        (a container, a pod) is never started before its record, so a restarted driver finds and re-attaches to
        it instead of losing track of it."""
        if self.launching:
            self._flush()
            tasks, self.launching = self.launching, []
            for task in tasks:
                self._execute(task)

    def _on_outcome(self, o: Outcome) -> None:
        node = self.graph.nodes.get(o.run_id)
        if node is None or self.attempts.get(o.run_id) != o.attempt or node.state != RUNNING:
            return  # a late outcome (timed out, or canceled): already accounted for
        self.in_flight -= 1
        if o.logs:
            header = f"--- attempt {o.attempt} ---\n" if node.func.retries else ""
            append_attempt_logs(self.storage, o.run_id, o.attempt, header + o.logs)  # once, as a worker's
        if o.details:
            self.recorder.batch.update_run(o.run_id, notes=self.recorder.note(o.run_id, executor=o.details))
        if o.error is not None or o.error_info is not None:
            self._on_error(node, o)
            return
        self.keys_refused.discard(o.run_id)
        try:
            if o.output is not None:  # a remote worker stored and type-checked the output
                self._on_stored_output(node, o.output)
            elif o.expansion is not None:  # a remote composition returned (pickled) Futures
                self._on_value(node, self.recorder.stored_value(o.expansion["id"], o.expansion["format"]).value)
            else:
                self._on_value(node, o.value)
        except InfrastructureError:
            raise
        except Exception as e:
            self._fail(node, e)

    def _on_stored_output(self, node: graph.Node, artifact: dict[str, Any]) -> None:
        self._transition(node.run_id, RESOLVED, self.recorder.stored_artifact(artifact), error=None)

    def _on_error(self, node: graph.Node, o: Outcome) -> None:
        func: Func = node.func
        exc = o.error
        info = clipped_error(o.error_info) if o.error_info else error_info(exc)  # type: ignore[arg-type]
        kinds = set(info.get("mro", ()))
        ends = next((ENDS_AT_ONCE[k] for k in info.get("mro", ()) if k in ENDS_AT_ONCE), None)
        if ends is not None:  # a worker's storage disk full, its presigned request refused for good (a bucket
            # deleted, a body too large): it does not pass by itself, so no attempt is tried again; the resolution
            # ends as when the loop's own write meets a full disk (see run), the words on the run too
            self.recorder.batch.update_run(node.run_id, error=info)
            raise ends.said(str(info.get("message", "")))
        if KEYS_REFUSED in kinds and node.run_id in self.keys_refused:  # refused again, URLs presigned afresh: the
            # driver's keys are the dead ones; it does not pass by itself, so the resolution ends as on a full disk
            self.recorder.batch.update_run(node.run_id, error=info)
            raise StorageKeysRefused.said(str(info.get("message", "")))
        once_more = KEYS_REFUSED in kinds  # once: the next attempt's URLs are presigned with the driver's keys of now,
        if once_more:  # whatever is left of the infrastructure retries
            self.keys_refused.add(node.run_id)
        elif INFRASTRUCTURE not in kinds:  # the attempt's URLs passed: a later refusal is another rotation's
            self.keys_refused.discard(node.run_id)
        infra = self.infra_retries.get(node.run_id, 0)
        if once_more or INFRASTRUCTURE in kinds and infra < INFRA_RETRIES:  # not the func's doing: try it again
            self.infra_retries[node.run_id] = infra + 1
            delay = INFRA_RETRY_DELAY * 2 ** infra
            log.warning("%s (run %s): infrastructure failure on attempt %d: %s: %s; retrying in %.3gs", func.name,
                        node.run_id, o.attempt, info.get("type"), info.get("message"), delay)
            self._transition(node.run_id, SCHEDULED, error=info)
            heapq.heappush(self.timers, (time.monotonic() + delay, id(node), node))
            return
        user_attempt = o.attempt - infra  # the func's own retries count its attempts, not infrastructure's
        retry = (user_attempt <= func.retries and "FuncError" not in kinds
                 and any(c.__qualname__ in kinds for c in func.retry_on))
        if not retry:
            if INFRASTRUCTURE in kinds:  # its words said it may pass: say it did not, and what to do now
                info = {**info, "message": f"{info.get('message', '')}; tried {o.attempt} times: {_lasted(kinds)}"}
            self._fail(node, exc, info)
            return
        delay = func.retry_delay(user_attempt)
        log.warning("%s (run %s) failed on attempt %d/%d: %s; retrying in %.3gs", func.name, node.run_id,
                    user_attempt, func.retries + 1, o.error_info["message"] if o.error_info else exc, delay)
        self._transition(node.run_id, SCHEDULED, error=info)
        heapq.heappush(self.timers, (time.monotonic() + delay, id(node), node))

    def _on_value(self, node: graph.Node, value: Any) -> None:
        futures: list[Future] = []
        template, has_refs = graph.template_of(value, futures.append)
        if not has_refs:
            node.func.check_output(value)
            self._transition(node.run_id, RESOLVED, self.recorder.value(value, node.func.name), error=None)
            return
        depth = self._depth(node)
        if depth >= MAX_NESTING:  # a func calling itself with no case that returns a value: say so, not plan forever
            self._fail(node, FuncError(f"{node.func.name} (run {node.run_id}) is {depth} compositions deep, the most "
                                       "a pipeline may nest: does a func call itself without a case that returns a "
                                       "value? Give it one that stops"))
            return
        with collector.paused():  # the library's bulk work: see collector
            children = self.planner.nodes_for(futures, node.run_id)
            out_template = graph.map_leaves(template, self.recorder.value)
            self.recorder.batch.update_run(node.run_id, output_ref=graph.to_json(out_template, value_id))
            self.graph.expand(node.run_id, out_template, children)

    def _depth(self, node: graph.Node) -> int:
        """How many compositions ``node`` is nested in (those in this graph: a rerun's reused runs have no node)."""
        depth, nodes, parent = 0, self.graph.nodes, node.parent_id
        while parent is not None and parent in nodes:
            depth, parent = depth + 1, nodes[parent].parent_id
        return depth

    @collector.paused()
    def _finish_composition(self, node: graph.Node) -> None:
        try:
            out = self.recorder.materialize(self.graph.output_structure(node))
            if node.func is not None:
                node.func.check_output(out.value)
        except InfrastructureError:
            raise
        except Exception as e:
            self._fail(node, e)
            return
        self._transition(node.run_id, RESOLVED, out)

    # -- failure ----------------------------------------------------------------------------------

    def _fail(self, node: graph.Node, exc: BaseException | None, info: dict | None = None) -> None:
        info = info or (error_info(exc) if exc is not None else {"type": "Error", "message": "failed",
                                                                   "traceback": ""})
        self._transition(node.run_id, FAILED, error=info)
        if self.failure is None:
            self.failure = (node.run_id, info)
            self.failed_exc = exc
            self.timers.clear()

    def _abort(self, exc: BaseException) -> DriverReplaced | ResolutionCanceled | None:
        """Interrupted (Ctrl-C, or an internal error): record the end, then cancel what is left. Unless another
        driver took the resolution over meanwhile (returned): then nothing is recorded nor canceled. A failed end
        recorded canceled (a cancel accepted since the loop last looked won), or a write refused because another
        process recorded the end canceled meanwhile, returns the ResolutionCanceled to raise instead of ``exc`` (its
        cause)."""
        now = utcnow()
        unfinished = self._transition(None, CANCELED, ended_at=now)
        if isinstance(exc, ResolutionEnded):  # ended by another process: nothing of this one's may be recorded
            self.recorder.discard()
            self.executor.cancel(unfinished)
            return self._recorded_canceled(None, refused=exc)
        state = CANCELED if isinstance(exc, (KeyboardInterrupt, ResolutionCanceled)) else FAILED
        if isinstance(exc, StopsForAFix):  # its words say how to continue the resolution (see run)
            exc.resolution_id = self.root_id
        if isinstance(exc, DatabaseLocked):  # recording the end would wait as long for the same lock: it is left
            self.executor.cancel(unfinished)  # running, and marked dead by a read once its heartbeat is old
            return None
        error = f"{type(exc).__name__}: {exc}"
        if isinstance(exc, InfrastructureError):
            advice = exc.advice(self.root_id)
            error = f"infrastructure failure, not the pipeline's: {error}" + ("" if advice in error else f" ({advice})")
        self.recorder.batch.resolution_updates[self.root_id] = {"state": state, "ended_at": now,
                                                                "error": limits.text_field(error)}
        refused = None
        try:
            self._flush()
        except DriverReplaced as replaced:
            return replaced
        except (InfrastructureError, ResolutionEnded) as e:  # said in words: its traceback would add nothing
            refused = e if isinstance(e, ResolutionEnded) else None  # ended by another process meanwhile
            log.warning("could not record the end of resolution %s: %s: %s", self.root_id, type(e).__name__, e)
        except Exception:
            log.exception("could not record the end of resolution %s", self.root_id)
        self.executor.cancel(unfinished)
        return self._recorded_canceled(error, refused=refused) if state == FAILED else None

    def _finish(self) -> Any:
        root = self.graph.nodes[self.root_id]
        now = utcnow()
        if root.state == RESOLVED:
            self.recorder.batch.resolution_updates[self.root_id] = {"state": RESOLVED, "ended_at": now, "error": None}
            try:
                self._flush()
            except CancelRequested:  # accepted since the loop last looked: it wins, recorded as any cancel
                canceled = self._canceled()
                raise self._abort(canceled) or canceled from None
            except ResolutionEnded as e:  # ended by another process meanwhile: canceled, if so recorded
                instead = self._recorded_canceled(None, refused=e)
                if instead is None:
                    raise
                raise instead from e
            return root.output.value
        self._transition(None, CANCELED, ended_at=now)
        run_id, info = self.failure or (None, {"type": "Error", "message": "unknown failure", "traceback": ""})
        func_name = self.graph.nodes[run_id].func.name if run_id and self.graph.nodes[run_id].func else "?"
        said = f": {info['message']}" if info.get("message") else ""  # a bare MemoryError() says nothing more
        message = f"resolution {self.root_id} failed: {func_name} (run {run_id}) raised {info['type']}{said}"
        self.recorder.batch.resolution_updates[self.root_id] = {"state": FAILED, "ended_at": now,
                                                                "error": limits.text_field(message)}
        # it failed elsewhere (a worker): its recorded traceback is the only one; else Python shows the func's
        # exception, the cause, with its traceback: once, from the user's code
        tb = f"\n\n{info.get('traceback', '')}".rstrip() if self.failed_exc is None else ""
        failure = f"{func_name} (run {run_id}) raised {info['type']}{said}{tb}"
        try:
            self._flush()
        except ResolutionEnded as e:  # ended by another process meanwhile: canceled, if so recorded
            instead = self._recorded_canceled(failure, run_id, info, refused=e)
            if instead is None:
                raise
            raise instead from self.failed_exc
        raise (self._recorded_canceled(failure, run_id, info)
               or ResolutionFailed(message + tb, resolution_id=self.root_id, run_id=run_id, error=info)
               ) from self.failed_exc

    def _recorded_canceled(self, failure: str | None, run_id: str | None = None, info: dict | None = None, *,
                           refused: ResolutionEnded | None = None) -> ResolutionCanceled | None:
        """What to raise once a write of the resolution was answered (``failure``: what failed, in words, when that
        write was a failed end; else None), when the resolution is recorded canceled: by the store over that failed
        end (``Store.write``'s ``canceled``: a cancel accepted since the loop last looked won), or by another process
        before the write, which was ``refused`` for it (this process frozen past the heartbeat timeout while a cancel
        was accepted, a reader marking it dead "...; canceled as asked"). None when it was recorded otherwise. The
        one judgement of every end this loop meets."""
        if (self.root_id not in self.recorder.canceled) if refused is None else refused.state != CANCELED:
            return None  # (a DriverReplaced's state is "replaced")
        if failure is None:
            return self._canceled()
        return ResolutionCanceled.over_failure(failure, resolution_id=self.root_id, run_id=run_id, error=info)

    def _flush_while_busy(self) -> None:
        """The heartbeat thread's write of the pending records while this loop runs a long func body itself."""
        if self.heartbeat is not None:
            self.heartbeat.carry(self.recorder.batch)
        self.recorder.write()

    def _flush(self) -> None:
        """Write the pending records (with a heartbeat when one is due), then, every CANCEL_POLL, ask whether the
        resolution was asked to cancel: not after a write that recorded its end (a driver's token stops working
        then: the question would be refused)."""
        self.last_flush = time.monotonic()
        if self.heartbeat is not None and self.heartbeat.due():
            self.heartbeat.carry(self.recorder.batch)
        ending = "ended_at" in self.recorder.batch.resolution_updates.get(self.root_id, {})
        self.recorder.write()
        if self.last_flush - self.cancel_checked >= CANCEL_POLL and self.root_id and not ending:
            self.cancel_checked = self.last_flush
            self.cancel_asked = self.cancel_asked or self.store.cancel_requested(self.root_id)

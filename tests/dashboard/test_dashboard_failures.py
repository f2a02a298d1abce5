"""Failed and stopped runs as a user meets them, in headless Chromium and the CLI, against ``sematic-k8s server
--local`` as a process of its own, each failure caused for real: a func raising an error whose message has several
lines (a LocalResolver recording through the server), a run stopped part way by an infrastructure failure (its S3
storage, a moto server, stopped under it), and a worker pod (on the Kubernetes cluster model) waiting for capacity
the cluster does not have, then canceled from the CLI. Each run's page says what happened in plain words, whether
it started, and what became of its log; the CLI's ``logs`` says the same."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

import sematic_k8s as sk
from browser_pages import open_run
from outages import S3Server, ServerProcess
from sematic_k8s.errors import ResolutionCanceled, ResolutionFailed
from sematic_k8s.settings import SERVER_ENV
from sematic_k8s.store.http import HttpStore

WAIT_MS = 30_000
STORAGE_DOWN = threading.Event()  # set by `upload` once it stopped the S3 server the test gave it
S3_TO_STOP: list[S3Server] = []
IMAGE = "127.0.0.1:5000/p@sha256:" + "cd" * 32
SHOTS = Path(os.environ.get("SEMATIC_K8S_SHOTS", "/tmp/sematic-k8s-shots"))  # screenshots to look at
SHOTS.mkdir(parents=True, exist_ok=True)


def _cli(server: ServerProcess, *args: str) -> str:
    """``sematic-k8s ARGS`` against the server, in a process of its own; its stdout and stderr."""
    env = {**os.environ, SERVER_ENV: server.url}
    proc = subprocess.run([sys.executable, "-m", "sematic_k8s.cli", *args], env=env, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout + proc.stderr


def _tab(page: Any, name: str) -> Any:
    page.get_by_test_id(f"tab-{name}").click()
    return page.get_by_test_id(f"tabpane-{name}")


def _timeline_row(page: Any, server: ServerProcess, root_id: str, run_id: str) -> Any:
    """The row of ``run_id`` in its resolution's timeline."""
    from playwright.sync_api import expect

    page.goto(f"{server.url}/#/resolutions/{root_id}")
    page.get_by_test_id("view-timeline").click()
    row = page.locator(f'[data-testid="timeline-row"][data-id="{run_id}"]')
    expect(row).to_have_count(1, timeout=WAIT_MS)
    return row


def _field(shown: str, name: str) -> str:
    """The value of a field in ``sematic-k8s runs show``'s table."""
    m = re.search(rf"^{name}\s+(.*)$", shown, re.M)
    assert m, shown
    return m.group(1).strip()


def _child(server: ServerProcess, root_id: str) -> Any:
    store = HttpStore(server.url, None)
    try:
        [run] = [r for r in store.runs_of_root(root_id) if r.id != root_id]
    finally:
        store.close()
    return run


def _k8s_loop(cluster: Any, server: ServerProcess, store: HttpStore, root_id: str, image: str = IMAGE,
              **settings: Any) -> tuple[Any, Any]:
    """A client of the cluster model and a cloud resolution loop recording through the server, its funcs' workers
    pods in the model's namespace "runs", their logs in the server's storage."""
    from sematic_k8s.executors.inline import InlineExecutor
    from sematic_k8s.executors.inline_or_remote import InlineOrRemoteExecutor
    from sematic_k8s.executors.kubernetes import KubernetesExecutor
    from sematic_k8s.resolvers.loop import ResolutionLoop
    from sematic_k8s.specs import ResolutionSettings
    from sematic_k8s.storage.local import LocalStorage
    from sematic_k8s.storage.urls import storage_url

    cluster.namespace("runs")
    api = cluster.client()
    storage = LocalStorage(server.home / "storage")
    ex = KubernetesExecutor(storage, storage_url(storage), image, namespace="runs", api_client=api, env={},
                            owner=False, **settings)
    return api, ResolutionLoop(store, storage, InlineOrRemoteExecutor(InlineExecutor(1), ex),
                               ResolutionSettings(root_id=root_id), kind="cloud")


@sk.func
def validate(rows: int) -> int:
    print(f"validating {rows} rows")
    raise ValueError("column 'price' has 3 negative values:\n  row 17: -4.0\n  row 92: -1.5\n  row 311: -0.01")


@sk.func
def checked(rows: int) -> int:
    return validate(rows)


def test_an_error_message_of_several_lines_keeps_them_on_its_run_page(page: Any, server: ServerProcess) -> None:
    """A short message of several lines is shown as written, one row a line, its indents kept (was: run together on
    one line, "values: row 17: -4.0 row 92: -1.5 ...")."""
    from playwright.sync_api import expect

    f = checked(400)
    with pytest.raises(ResolutionFailed) as err:
        f.resolve(sk.LocalResolver(home=server.home, server=server.url))  # its logs where the server reads
    open_run(page, server.url, err.value.run_id, WAIT_MS)
    message = page.get_by_test_id("run-error").locator("p.error")
    expect(message).to_contain_text("ValueError: column 'price' has 3 negative values")
    assert message.evaluate("(e) => e.innerText") == ("ValueError: column 'price' has 3 negative values:\n"
                                                      "  row 17: -4.0\n  row 92: -1.5\n  row 311: -0.01")
    expect(_tab(page, "logs")).to_contain_text("validating 400 rows")


@sk.func
def upload(n: int) -> list[int]:
    print("made the list", flush=True)
    S3_TO_STOP[0].stop()  # the storage goes away while the func runs: its value cannot be stored
    STORAGE_DOWN.set()
    return list(range(n))


@sk.func
def uploading(n: int) -> list[int]:
    return upload(n)


def test_a_run_stopped_by_an_infrastructure_failure_says_so_and_that_it_ran(page: Any, server: ServerProcess) -> None:
    """S3 stops answering while a func runs: the run, canceled as its resolution fails, says it was stopped while it
    ran and why (the resolution's infrastructure failure); its page and ``sematic-k8s logs`` say its log was not
    recorded, never that it did not run (was: "(no logs: it never ran)", and nothing said why it was canceled)."""
    from playwright.sync_api import expect

    from sematic_k8s.executors.inline import InlineExecutor
    from sematic_k8s.resolvers.loop import ResolutionLoop
    from sematic_k8s.specs import ResolutionSettings
    from sematic_k8s.storage.s3 import S3Storage

    s3 = S3Server()
    s3.start()
    S3_TO_STOP[:] = [s3]
    s3.client().create_bucket(Bucket="failures")
    storage = S3Storage("failures", client=s3.client(), retry_window=2)
    store = HttpStore(server.url, None)
    f = uploading(5)
    try:
        with pytest.raises(Exception, match="cannot reach S3"):
            ResolutionLoop(store, storage, InlineExecutor(1), ResolutionSettings(root_id=f.id), kind="local").run(f)
    finally:
        store.close()
        s3.stop()
    assert STORAGE_DOWN.is_set()
    run = _child(server, f.id)
    assert run.state == "canceled"
    open_run(page, server.url, run.id, WAIT_MS)
    expect(page.get_by_test_id("run-canceled")).to_contain_text(
        "Canceled while it ran; its resolution failed: infrastructure failure, not the pipeline's: S3StorageError: "
        f"cannot reach S3 at {s3.endpoint}")
    logs = _tab(page, "logs")
    expect(logs).to_contain_text("(no logs recorded: it was stopped before its attempt ended")
    expect(logs).not_to_contain_text("never")
    said = _cli(server, "logs", run.id)
    assert "it was stopped before its attempt ended" in said and "never" not in said, said


@sk.func(inline=False, cpu="64")
def huge(n: int) -> int:
    return n


@sk.func
def fan(n: int) -> int:
    return huge(n)


def test_a_worker_waiting_for_capacity_then_canceled_never_started(page: Any, server: ServerProcess) -> None:
    """A worker pod the cluster has no room for: while it waits, its resolution's header says a run has not started
    and why (was: only "0/2 resolved"), and its run's page says it has not started (no start time, no duration
    ticking, no "ran in the resolver's process"); canceled from the CLI, it says it was canceled
    before it started and what it waited for, and so do its log and ``sematic-k8s logs``."""
    pytest.importorskip("kubernetes")
    from playwright.sync_api import expect

    from kube_model import Cluster, NodeSpec, Timing

    store = HttpStore(server.url, None)
    f = fan(7)
    ended: list[BaseException] = []

    def resolve() -> None:
        try:
            loop.run(f)
        except BaseException as e:  # noqa: BLE001 - kept for the test to look at
            ended.append(e)

    with Cluster([NodeSpec("node-1", runtime="sim")], timing=Timing()) as cluster:
        api, loop = _k8s_loop(cluster, server, store, f.id)
        thread = threading.Thread(target=resolve, daemon=True)
        thread.start()
        try:
            run = cluster.wait(lambda: [r for r in store.runs_of_root(f.id)
                                        if r.func_name == "huge" and r.notes.get("waiting")], timeout=30)[0]
            page.goto(f"{server.url}/#/resolutions/{f.id}")  # its resolution's page says so too, in its header
            expect(page.get_by_test_id("resolution-not-started")).to_contain_text(
                "1 run not started: waiting for capacity: 0/1 nodes are available", timeout=WAIT_MS)
            open_run(page, server.url, run.id, WAIT_MS)
            expect(page.get_by_test_id("run-waiting")).to_contain_text("Not started: waiting for capacity")
            timings = _tab(page, "details").get_by_test_id("timings")
            expect(timings).to_contain_text("Started\nnot yet", use_inner_text=True)
            expect(timings).to_contain_text("Duration\n—", use_inner_text=True)
            expect(page.get_by_test_id("executor")).to_have_text("nowhere yet: its worker has not started")
            expect(_tab(page, "logs")).to_contain_text("(no output yet: it has not started)")
            shown = _cli(server, "runs", "show", run.id)  # as the page says it (was: its submission, a duration)
            assert _field(shown, "started_at") == "not started" and _field(shown, "duration") == "not started"
            assert _field(shown, "submitted_at") != "-", shown
            row = _timeline_row(page, server, f.id, run.id)  # it waits: no "ran" bar (was one, growing)
            expect(row).to_have_attribute("data-started", "false")
            expect(row.get_by_test_id("timeline-bar")).to_have_count(0)
            expect(row.get_by_test_id("timeline-waited")).to_have_count(1)
            open_run(page, server.url, run.id, WAIT_MS)

            _cli(server, "cancel", f.id)
            thread.join(60)
        finally:
            store.request_cancel(f.id) if thread.is_alive() else None
            thread.join(30)
            store.close()
            api.close()
    assert ended and isinstance(ended[0], ResolutionCanceled), ended
    page.reload()
    expect(page.get_by_test_id("run-state")).to_have_text("canceled", timeout=WAIT_MS)
    expect(page.get_by_test_id("resolution-not-started")).to_have_count(0)
    expect(page.get_by_test_id("run-canceled")).to_have_text(
        "Canceled before it started, while waiting for capacity: 0/1 nodes are available: 1 Insufficient cpu. "
        "preemption: 0/1 nodes are available: 1 No preemption victims found for incoming pod; its resolution was "
        "canceled")
    expect(_tab(page, "logs")).to_contain_text("(no logs: it never started)")
    timings = _tab(page, "details").get_by_test_id("timings")
    expect(timings).to_contain_text("Started\nnever", use_inner_text=True)
    expect(timings).to_contain_text("Duration\n—", use_inner_text=True)
    expect(page.get_by_test_id("executor")).to_have_text("nowhere: its worker never started")
    assert "it never started" in _cli(server, "logs", run.id)
    shown = _cli(server, "runs", "show", run.id)
    assert _field(shown, "started_at") == "never" and _field(shown, "duration") == "never", shown
    listed = _cli(server, "runs", "list", "--root-id", f.id)
    assert re.search(rf"^{run.id}\s+huge\s+canceled\s.*\snever$", listed, re.M), listed
    row = _timeline_row(page, server, f.id, run.id)
    expect(row.get_by_test_id("timeline-bar")).to_have_count(0)
    expect(row.get_by_test_id("timeline-waited")).to_have_attribute("title", re.compile(r"^huge: never ran; waited"))
    # the resolution's cancel is a notice of when, not an error (was: "ResolutionCanceled: resolution ... was
    # canceled" in the red error box)
    expect(page.get_by_test_id("resolution-canceled")).to_have_text(re.compile(
        r"^Canceled at .+, as asked \(sematic-k8s cancel, the dashboard or the API\)\.$"))
    expect(page.get_by_test_id("resolution-error")).to_have_count(0)
    page.screenshot(path=str(SHOTS / "canceled-waiting-timeline.png"))


@sk.func(inline=False)
def pulled(n: int) -> int:
    return n


@sk.func
def pulling(n: int) -> int:
    return pulled(n)


def test_a_worker_whose_image_cannot_be_pulled_never_started(page: Any, server: ServerProcess) -> None:
    """A worker image missing from the registry (ErrImagePull, ImagePullBackOff on the cluster model): its run fails
    in the executor's words, and its page says it never started: no start time or run time (was: started when it
    was submitted, and "ran" the 3 s it waited for the pull), and its log is missing because of that (was: "it
    printed nothing"); ``sematic-k8s logs`` says the same. Its long message of one line, folded, is "1 line" (was
    "1 lines")."""
    pytest.importorskip("kubernetes")
    from playwright.sync_api import expect

    from kube_model import Cluster, NodeSpec, Timing

    missing = "127.0.0.1:5000/gone@sha256:" + "ef" * 32
    store = HttpStore(server.url, None)
    f = pulling(2)
    with Cluster([NodeSpec("node-1", runtime="sim")], timing=Timing()) as cluster:
        cluster.sim_images.missing.add(missing)
        api, loop = _k8s_loop(cluster, server, store, f.id, image=missing, pull_grace=1)
        try:
            with pytest.raises(ResolutionFailed) as err:
                loop.run(f)
        finally:
            store.close()
            api.close()
    open_run(page, server.url, err.value.run_id, WAIT_MS)
    expect(page.get_by_test_id("run-error")).to_contain_text("the worker's image could not be pulled")
    message = page.get_by_test_id("run-error").get_by_test_id("run-error-message")  # long: folded
    expect(message.locator("summary")).to_have_text(re.compile(r"the whole message \(1 line, \d+ characters\)"))
    expect(_tab(page, "logs")).to_contain_text("(no logs: it never started)")
    timings = _tab(page, "details").get_by_test_id("timings")
    expect(timings).to_contain_text("Started\nnever", use_inner_text=True)
    expect(timings).to_contain_text("Duration\n—", use_inner_text=True)
    assert "it never started" in _cli(server, "logs", err.value.run_id)
    shown = _cli(server, "runs", "show", err.value.run_id)  # was: its submission as its start, 3 s as its duration
    assert _field(shown, "started_at") == "never" and _field(shown, "duration") == "never", shown
    listed = _cli(server, "runs", "list", "--root-id", f.id)  # a listing's error excerpt carries its classes
    assert re.search(rf"^{err.value.run_id}\s+pulled\s+failed\s.*\snever$", listed, re.M), listed
    row = _timeline_row(page, server, f.id, err.value.run_id)  # was: a "ran" bar the length of the pull's wait
    expect(row).to_have_attribute("data-started", "false")
    expect(row.get_by_test_id("timeline-bar")).to_have_count(0)
    expect(row.get_by_test_id("timeline-waited")).to_have_count(1)
    page.screenshot(path=str(SHOTS / "image-pull-timeline.png"))


@sk.func
def chatty(n: int) -> int:
    print(f"counted {n} rows")
    return n


@sk.func
def chatting(n: int) -> int:
    return chatty(n)


def test_a_local_resolvers_log_kept_in_its_own_home_is_said_to_be_there(page: Any, server: ServerProcess,
                                                                        tmp_path: Path) -> None:
    """A LocalResolver recording through a server over another home keeps its logs in its own home: the run's page,
    the API and ``sematic-k8s logs`` through the server say its log is kept where it ran (was: "it printed
    nothing", false); the CLI names the file under that home, where the log is. The record names no path."""
    from playwright.sync_api import expect

    elsewhere = tmp_path / "laptop"
    f = chatting(5)
    assert f.resolve(sk.LocalResolver(home=elsewhere, server=server.url)) == 5
    run = _child(server, f.id)
    open_run(page, server.url, run.id, WAIT_MS)
    expect(_tab(page, "logs").get_by_test_id("run-logs")).to_have_text(
        "(no logs here: its resolution's LocalResolver recorded through a server and keeps its runs' logs in its own "
        "home, where it ran; this server's storage has none)")
    page.screenshot(path=str(SHOTS / "log-in-resolver-home.png"))
    said = _cli(server, "logs", run.id)
    assert "has no logs here: its resolution's LocalResolver recorded through a server" in said, said
    assert "printed nothing" not in said
    import httpx
    answer = httpx.get(f"{server.url}/api/v1/runs/{run.id}/logs")
    assert answer.status_code == 200 and answer.text == "" and answer.headers["X-Log-Kept"] == "resolver-home"
    assert f"(there: storage/logs/{run.id}.log under that home)" in said, said
    assert "counted 5 rows" in (elsewhere / "storage" / "logs" / f"{run.id}.log").read_text()  # it is there


CLAIM_WAITING = ("waiting for the driver's image: the Docker engine could not pull it from 127.0.0.1:5999 "
                 "(toomanyrequests: You have reached your pull rate limit.); trying again for up to 120 s")


def _claim_waiting(server: ServerProcess, waiting: str) -> str:
    """A resolution the server's rerun action claimed (no root run yet), its launch noted ``waiting``
    (``settings.waiting``, as ``tests/faults/test_driver_image_pull.py`` causes it); its id."""
    from sematic_k8s.store.records import CLAIMED, Batch, ResolutionRecord, utcnow
    from sematic_k8s.store.sql import SqlStore

    root, batch = uuid.uuid4().hex, Batch()
    batch.add_resolution(ResolutionRecord(id=root, root_func_path="pipes:pipeline", state=CLAIMED, image=IMAGE,
                                          settings={"kind": "cloud"}, created_at=utcnow(), heartbeat_at=utcnow()))
    store = SqlStore(f"sqlite:///{server.home / 'db.sqlite3'}")
    try:
        store.write(batch)
        assert store.note_claim(root, waiting)
    finally:
        store.close()
    return root


def test_a_rerun_whose_driver_waits_for_its_image_says_so_in_its_header(page: Any, server: ServerProcess) -> None:
    """A resolution the server's rerun action claimed, its launch waiting for the driver's image (the note it writes
    on the claim, ``settings.waiting``, as ``tests/faults/test_driver_image_pull.py`` causes it): its page's header
    says it has not started and why (was: only ``created``); ``sematic-k8s resolutions show`` says the same."""
    from playwright.sync_api import expect

    root = _claim_waiting(server, CLAIM_WAITING)
    waiting = CLAIM_WAITING
    page.goto(f"{server.url}/#/resolutions/{root}")
    expect(page.get_by_test_id("resolution-waiting")).to_have_text(f"Not started yet: {waiting}", timeout=WAIT_MS)
    assert f"Not started yet: {waiting}" in _cli(server, "resolutions", "show", root)


def test_a_rerun_whose_driver_waits_for_its_image_says_so_in_the_list(page: Any, server: ServerProcess) -> None:
    """The pipelines list showed a claimed rerun whose launch waits for its driver's image as only ``created``. Now
    its row says "not started yet: ..." beside its state, cut to one short line as ``sematic-k8s resolutions list``
    says it, the whole words in its title."""
    from playwright.sync_api import expect

    from sematic_k8s.cli.output import WAITING_CHARS

    root = _claim_waiting(server, CLAIM_WAITING)
    page.goto(f"{server.url}/#/")
    said = page.locator(f'[data-testid="resolution-row"][data-id="{root}"] [data-testid="resolution-waiting"]')
    cut = CLAIM_WAITING[:WAITING_CHARS - 1] + "\u2026"
    expect(said).to_have_text(f"not started yet: {cut}", timeout=WAIT_MS)
    expect(said).to_have_attribute("title", CLAIM_WAITING)
    assert f"created (not started yet: {cut})" in _cli(server, "resolutions", "list")


@contextlib.contextmanager
def _rerun_list(browser: Any, tmp_path: Path, not_now: Any, pull_grace: float = 60
                ) -> Iterator[tuple[Any, Any, str, Any]]:
    """A local-mode server whose reruns start Docker drivers (``pull_grace`` for their image, a minute by default),
    their idle image in a registry of the test's own behind a proxy answering the engine's requests for its manifest
    and blobs ``not_now`` (``registry_answering``, as ``tests/faults/test_driver_image_pull.py`` causes it), a
    resolution recorded with that image, and the pipelines list open on it, live: (the server, the page, that
    resolution's id, the proxy). The driver containers of its reruns are removed after (the proxy passing first: a
    request it still holds goes on)."""
    from playwright.sync_api import expect

    from browser_pages import VIEWPORT, new_page
    from idle_driver import IDLE_DRIVER_REPO, idle_driver_image
    from infra import docker_client, require_docker
    from outages import pulled_from_own_registry, registry_answering
    from sematic_k8s.labels import RESOLUTION_LABEL
    from sematic_k8s_server.config import RerunConfig, ServerConfig
    from serving import record_resolution, serve

    require_docker()
    client = docker_client()
    idle_driver_image(client)
    storage = "s3://sk-driver-pull/artifacts"
    with pulled_from_own_registry(tmp_path, f"{IDLE_DRIVER_REPO}:latest", "sk-test-idle-driver", "latest",
                                  whole=True) as (registry, ref), \
            registry_answering(registry, ref, not_now) as (proxy, image):
        reruns = RerunConfig(launcher="docker", allow_docker=True, image_repositories=(image.partition("@")[0],),
                             storage_url=storage, executor_settings={"pull_grace": pull_grace})
        with serve(tmp_path, api_keys_required=False, config=ServerConfig(reruns=reruns)) as s, \
                new_page(browser, viewport=VIEWPORT) as page:
            root = record_resolution(s.url, "", kind="cloud", image=image, storage_url=storage, executor="docker")
            try:
                page.goto(f"{s.url}/#/")
                expect(page.locator(f'[data-testid="resolution-row"][data-id="{root}"]')).to_have_count(
                    1, timeout=WAIT_MS)
                expect(page.get_by_test_id("live-status")).to_have_attribute("data-mode", "live", timeout=WAIT_MS)
                yield s, page, root, proxy
            finally:
                proxy.passing()
                for res in s.store.list_resolutions():
                    if res.rerun_of == root:
                        for container in client.api.containers(all=True,
                                                               filters={"label": f"{RESOLUTION_LABEL}={res.id}"}):
                            client.api.remove_container(container["Id"], force=True)


def test_a_reruns_wait_for_its_drivers_image_and_its_clearing_show_live(browser: Any, tmp_path: Path) -> None:
    """A rerun asked of a server whose reruns start Docker drivers, its driver's image pulled through a proxy
    answering Docker Hub's 429 (as ``tests/faults/test_driver_image_pull.py`` causes it): the pipelines list, open
    before, shows its row "not started yet: waiting for the driver's image..." without a reload; its page, once the
    proxy passes and the driver starts, drops the note without a reload. Was: the server wrote the note, and its
    clearing, straight to the store, no live event: the list and the page showed them only after a reload or
    another event."""
    from playwright.sync_api import expect

    from outages import REGISTRY_NOT_NOW

    not_now = REGISTRY_NOT_NOW["429-json"]
    with _rerun_list(browser, tmp_path, not_now) as (s, page, root, proxy):
        with s.client() as c:
            r = c.post(f"/api/v1/resolutions/{root}/rerun", json={})
            assert r.status_code == 202, r.text
            new_id = r.json()["resolution_id"]
            assert c.get(f"/api/v1/resolutions/{new_id}").json()["state"] == "created"  # it waits
        said = page.locator(f'[data-testid="resolution-row"][data-id="{new_id}"] '
                            '[data-testid="resolution-waiting"]')
        expect(said).to_contain_text("not started yet: waiting for the driver's image", timeout=WAIT_MS)
        page.goto(f"{s.url}/#/resolutions/{new_id}")
        note = page.get_by_test_id("resolution-waiting")
        expect(note).to_contain_text(f"from 127.0.0.1:{proxy.port} ({not_now.words})", timeout=WAIT_MS)
        proxy.passing()
        expect(note).to_have_count(0, timeout=90_000)  # its driver started: the note gone, no reload


def test_a_reruns_row_shows_live_as_soon_as_it_is_asked(browser: Any, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A rerun whose driver's image comes from a registry holding its answers back (HELD: its launch notes no wait; the
    pull's silence limit and grace far past the test, 600 s): the pipelines list, open before, shows its row
    (``created``, no note) without a reload while the request for the rerun is still unanswered; once the proxy passes,
    the rerun is answered with that row's id. Was: the claim's record told no live event: its row showed only at a
    reload, or once its launch noted a wait, failed, or its driver recorded it (here, none of those)."""
    from playwright.sync_api import expect

    from outages import HELD
    from sematic_k8s import docker_pull
    from waiting import wait_for

    monkeypatch.setattr(docker_pull, "PULL_SILENCE", 600.0)
    with _rerun_list(browser, tmp_path, HELD, 600) as (s, page, root, proxy), ThreadPoolExecutor(1) as pool:
        def ask() -> Any:
            with s.client() as c:
                return c.post(f"/api/v1/resolutions/{root}/rerun", json={}, timeout=120)

        asked = pool.submit(ask)
        try:
            row = page.locator(f'[data-testid="resolution-row"]:not([data-id="{root}"])')
            expect(row).to_have_count(1, timeout=WAIT_MS)
            expect(row.locator('[data-testid="resolution-waiting"]')).to_have_count(0)
            new_id = row.get_attribute("data-id")
            wait_for(lambda: proxy.throttled >= 1 or asked.done(), 60, what="the launch's pull held by the registry")
            assert not asked.done(), "the rerun was answered before its row showed"  # unanswered: its pull held
            proxy.passing()
            answered = asked.result(120)
            assert answered.status_code == 202 and answered.json()["resolution_id"] == new_id, answered.text
        finally:
            proxy.passing()  # a request still held goes on: answered once its driver started (removed after)

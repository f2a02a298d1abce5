"""A Docker driver's image whose registry does not answer the engine's pull: a registry of the test's own (never the
shared one: others pull from it) stopped, or a proxy before it answering 503 or 429 to the pull, for a few seconds,
or past a small ``pull_grace``. The CloudResolver's launcher (``start_driver``) waits for it, saying so; the server's
rerun answers at once and its launch waits in the background; past the grace, both fail in the engine's words. Was:
the launch failed at once (the engine's 500, in the SDK's words; for a bare 429, until the engine's words for it
were known)."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import re
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from docker import errors as docker_errors

from idle_driver import IDLE_DRIVER_REPO, idle_driver_image
from infra import docker_client, require_docker
from outages import (
    CUT,
    HELD,
    REGISTRY_NOT_NOW,
    SILENT,
    PausingProxy,
    RegistryProcess,
    called_in,
    last_layer,
    pulled_from_own_registry,
    registry_answering,
    restarted_in,
)
from sematic_k8s import docker_pull, docker_pull_progress, launchers, settings
from sematic_k8s.cli import cli
from sematic_k8s.errors import ImageUnpulled
from sematic_k8s.labels import RESOLUTION_LABEL
from sematic_k8s.launchers.docker import start_driver
from sematic_k8s.progress import display
from sematic_k8s.specs import DriverSpec, ResolutionSettings
from sematic_k8s_server import reruns
from sematic_k8s_server.config import RerunConfig, ServerConfig
from sematic_k8s_server.db import open_store
from serving import Served, record_resolution, serve, wait_for

STORAGE = "s3://sk-driver-pull/artifacts"


@pytest.fixture
def pushed(tmp_path) -> Iterator[tuple[RegistryProcess, str]]:
    """The idle driver image, with a label of its own, pushed to a registry of the test's own, then taken off the
    engine (its driver must be pulled): (the registry, running; the image by digest there). Its manifest is new to
    the engine: the engine keeps the manifests it pulled by digest (its content store) and does not ask a registry
    for one it has, whatever the host it is pulled from, so a pull of the plain idle image, pulled before, would
    pass a throttling registry untouched."""
    require_docker()
    idle_driver_image(docker_client())
    with pulled_from_own_registry(tmp_path, f"{IDLE_DRIVER_REPO}:latest", "sk-test-idle-driver", "latest",
                                  whole=True) as pulled:
        yield pulled


@pytest.fixture
def unpulled(pushed) -> tuple[RegistryProcess, str]:
    """``pushed``, its registry stopped."""
    pushed[0].kill()
    return pushed


def drivers_of(root_id: str) -> list[dict[str, Any]]:
    """The driver containers of ``root_id`` as the engine lists them (no inspect of each: a container being created
    is listed a moment before it can be inspected)."""
    return docker_client().api.containers(all=True, filters={"label": f"{RESOLUTION_LABEL}={root_id}"})


def remove_drivers(root_id: str) -> None:
    client = docker_client()
    for container in drivers_of(root_id):
        with contextlib.suppress(docker_errors.NotFound):  # removed by itself meanwhile
            client.api.remove_container(container["Id"], force=True)


@contextlib.contextmanager
def layer_refused(tmp_path: Path, answer: str) -> Iterator[tuple[Any, str]]:
    """The idle driver image with a layer of its own, in a registry of the test's own, before a proxy answering the
    engine's requests for that layer with ``answer`` (a key of REGISTRY_NOT_NOW, or "cut": its download cut midway):
    (the proxy, the image by digest as the engine is to pull it)."""
    require_docker()
    idle_driver_image(docker_client())
    not_now = CUT if answer == "cut" else REGISTRY_NOT_NOW[answer]
    with pulled_from_own_registry(tmp_path, f"{IDLE_DRIVER_REPO}:latest", "sk-test-idle-driver", "latest",
                                  layered=True) as (registry, ref), \
            registry_answering(registry, ref, not_now, paths=(last_layer(registry, ref),)) as answering:
        yield answering


def spec_of(image: str, **executor_settings: Any) -> DriverSpec:
    return DriverSpec(root=None, storage_url=STORAGE, image=image, executor_settings=executor_settings,
                      resolution=ResolutionSettings(root_id=uuid.uuid4().hex))


def healthy(line: str) -> bool:
    """Whether the launcher's ``line`` is of its first try while none failed: the pull's start ("pulling the driver's
    image: REF"), that try's progress ("pulling the driver's image (D of N layers, X of Y MB): REF"); not the engine's
    retry of a layer, nor a failure."""
    return line.startswith("pulling the driver's image") and "; the engine retries " not in line


def failing(said: list[str]) -> list[str]:
    """What the launcher said once its pull began failing: ``said`` past the first try's own lines (the first of them
    the pull's start, said at once)."""
    assert said and said[0].startswith("pulling the driver's image: "), said
    return said[next((i for i, line in enumerate(said) if not healthy(line)), len(said)):]


def waited(said: list[str]) -> str:
    """What the launcher said first of its wait (its first failure's words): whatever it said after is a wait too (a
    later try's failure, or the progress of the try under way: "...; pulling: ...")."""
    line, *more = failing(said)
    assert all(m.startswith("waiting for the driver's image: the Docker engine could not pull it from ")
               for m in more), said
    return line


def test_a_docker_driver_waits_for_its_image_while_its_registry_is_down_for_a_few_seconds(unpulled):
    """The launcher (through ``launchers.start_driver``, as the CloudResolver calls it, its progress display told)
    says that it waits for the driver's image (the registry, the engine's words, for how long), tries the pull
    again, and starts the driver once the registry is back."""
    registry, image = unpulled
    spec, said = spec_of(image), []
    try:
        with restarted_in(registry, 3):
            launchers.start_driver(spec, {}, progress=said.append)
        line = waited(said)
        assert line.startswith(f"waiting for the driver's image: the Docker engine could not pull it from "
                               f"{registry.host} (")
        assert "connection refused" in line and line.endswith("trying again for up to 120 s"), line
        [driver] = drivers_of(spec.root_id or "")
        assert driver["State"] in ("created", "running", "exited")
    finally:
        remove_drivers(spec.root_id or "")


def test_a_docker_driver_whose_registry_stays_down_past_its_pull_grace_fails_in_the_engines_words(unpulled):
    """``executor_settings["pull_grace"]`` (3 s here, as for its workers): past it, ImageUnpulled in one line, the
    engine's words saying for how long it was tried and what to do; no container."""
    registry, image = unpulled
    spec, said = spec_of(image, pull_grace=3), []
    try:
        with pytest.raises(ImageUnpulled) as failed:
            start_driver(spec, {}, docker_socket=False, progress=said.append)
        words = str(failed.value)
        assert re.match(rf"the Docker engine does not have image {re.escape(image)} and could not pull it for \d+ s \(",
                        words), words
        assert "connection refused" in words and "\n" not in words, words
        assert words.endswith("push it to its registry, or check that the engine can reach that registry")
        assert len(failing(said)) == 1 and said[-1].endswith("trying again for up to 3 s"), said
        assert drivers_of(spec.root_id or "") == []
    finally:
        remove_drivers(spec.root_id or "")


@pytest.mark.parametrize("answer", REGISTRY_NOT_NOW)
def test_a_docker_driver_waits_for_its_image_while_its_registry_answers_not_now_for_a_few_seconds(pushed, answer):
    """A proxy before the image's registry answers the engine's requests for its manifest and blobs itself for a few
    seconds: 503, 500, 502 or 504; a bare 429 with Retry-After, or Docker Hub's (its error JSON, "toomanyrequests").
    The launcher says once that it waits, in the engine's words, and starts the driver once the proxy passes them.
    Was: the bare 429 was ImageUnpulled at once."""
    registry, ref = pushed
    words = REGISTRY_NOT_NOW[answer].words
    with registry_answering(registry, ref, REGISTRY_NOT_NOW[answer]) as (proxy, image):
        spec, said = spec_of(image), []
        try:
            with called_in(3, proxy.passing):
                launchers.start_driver(spec, {}, progress=said.append)
            line = waited(said)
            print(f"the launcher's words for a {answer}: {line}")
            assert line == (f"waiting for the driver's image: the Docker engine could not pull it from 127.0.0.1:"
                            f"{proxy.port} ({words}); trying again for up to 120 s"), line
            [driver] = drivers_of(spec.root_id or "")
            assert driver["State"] in ("created", "running", "exited") and proxy.throttled >= 1
        finally:
            remove_drivers(spec.root_id or "")


@pytest.mark.parametrize("answer", ["503", "429", "silent"])
def test_a_docker_driver_whose_registry_answers_not_now_past_its_pull_grace_fails_in_the_engines_words(pushed,
                                                                                                      answer,
                                                                                                      monkeypatch):
    """The proxy answers 503 (or a bare 429) to every request for the image, or takes them and never answers: past
    the ``pull_grace`` (3 s), not at once, ImageUnpulled in the engine's words (ours for the silence: the engine waits
    for such a registry without end), saying for how long it was tried; no container. The silence limit set far
    past the grace (600 s): the grace ends the silent try (its pull asks whether to go on every half second). Was:
    the silent registry held the launch for ever."""
    monkeypatch.setattr(docker_pull, "PULL_SILENCE", 600.0)
    registry, ref = pushed
    not_now = SILENT if answer == "silent" else REGISTRY_NOT_NOW[answer]
    words = not_now.words
    with registry_answering(registry, ref, not_now) as (proxy, image):
        spec = spec_of(image, pull_grace=3)
        try:
            with pytest.raises(ImageUnpulled) as failed:
                start_driver(spec, {}, docker_socket=False)
            assert re.match(rf"the Docker engine does not have image {re.escape(image)} and could not pull it for "
                            rf"\d+ s \({re.escape(words)}", str(failed.value)), str(failed.value)
            assert str(failed.value).endswith("): push it to its registry, or check that the engine can reach that "
                                              "registry"), str(failed.value)
            assert proxy.throttled >= (1 if answer == "silent" else 2)  # a silent try took the whole grace
            assert drivers_of(spec.root_id or "") == []
        finally:
            remove_drivers(spec.root_id or "")


@pytest.mark.parametrize("answer", ["503", "429"])
def test_a_docker_driver_waits_for_its_image_while_its_registry_answers_503_or_429_to_its_blobs(tmp_path, answer):
    """The idle driver image with a label of its own (its configuration new to the engine), its blobs' requests
    answered 503 or a bare 429 by the proxy (its manifest's passed) until 3 s after the first pull failed: the
    launcher waits, in the words of the engine's pull stream, and starts the driver. Was: ImageUnpulled at once,
    "No such image" (the SDK's pull dropped the stream's error)."""
    require_docker()
    idle_driver_image(docker_client())
    words = REGISTRY_NOT_NOW[answer].words
    with pulled_from_own_registry(tmp_path, f"{IDLE_DRIVER_REPO}:latest", "sk-test-idle-driver", "latest",
                                  whole=True) as (registry, ref), \
            registry_answering(registry, ref, REGISTRY_NOT_NOW[answer], paths=(b"/blobs/",)) as (proxy, image):
        spec, said, passing = spec_of(image), [], threading.Timer(3, proxy.passing)

        def waiting(line: str) -> None:  # the first pull failed (the engine's own tries of a 503 take 4 s)
            said.append(line)
            if not healthy(line) and len(failing(said)) == 1:
                passing.start()

        try:
            launchers.start_driver(spec, {}, progress=waiting)
            line = waited(said)
            print(f"the launcher's words for a {answer} to a blob: {line}")
            assert "(error pulling image configuration: download failed after attempts=" in line, line
            assert f"{words}); trying again for up to 120 s" in line, line
            [driver] = drivers_of(spec.root_id or "")
            assert driver["State"] in ("created", "running", "exited") and proxy.throttled >= 1
        finally:
            passing.cancel()
            remove_drivers(spec.root_id or "")


@pytest.mark.parametrize("answer", ["429", "429-json", "503", "cut"])
def test_a_docker_driver_waits_for_its_image_while_its_registry_refuses_a_layer(tmp_path, answer):
    """The idle driver image with a layer of its own, the request for that layer's blob answered by the proxy (the
    manifest's and the configuration's passed) with a bare 429, Docker Hub's 429 (its error JSON), or a 503 until
    the launcher first says that it waits: for a 429, in the words of the engine's pull stream, the try failed; for a
    503, which the engine retries itself (about 75 s before the try fails), as soon as it does, with the try's
    progress as a worker's note gives it ("pulling the driver's image (D of N layers; the engine retries a layer (1
    failed download)): REF"). The driver starts once the layer passes; whatever more is said is that progress. The
    same for the layer's download cut midway (``cut``: the registry's answer, its connection closed after half its
    body), which the engine retries as the 503. Was: the 503's wait said nothing until the try failed, about 75 s,
    then no progress; the cut was not caused."""
    with layer_refused(tmp_path, answer) as (proxy, image):
        spec, said = spec_of(image), []

        def waiting(line: str) -> None:  # the first pull failed (or the engine retries): the layer passes from now on
            said.append(line)
            if not healthy(line):
                proxy.passing()

        try:
            launchers.start_driver(spec, {}, progress=waiting)
            print(f"the launcher's words for a {answer} to a layer: {said}")
            line, *more = failing(said)
            if answer in ("503", "cut"):
                name, _, digest = image.partition("@sha256:")
                short = re.escape(f"{name}@sha256:{digest[:12]}")
                assert re.fullmatch(r"pulling the driver's image \(\d+ of \d+ layers(, \d+ of \d+ MB)?; the engine "
                                    r"retries a layer \(1 failed download\)\): " + short, line), line
                assert all(m.startswith("pulling the driver's image (") for m in more), more
            else:
                assert line == (f"waiting for the driver's image: the Docker engine could not pull it from 127.0.0.1:"
                                f"{proxy.port} ({REGISTRY_NOT_NOW[answer].words}); trying again for up to 120 s"), line
                assert all(m.startswith("waiting for the driver's image: ") for m in more), more
            [driver] = drivers_of(spec.root_id or "")
            assert driver["State"] in ("created", "running", "exited") and proxy.throttled >= 1
        finally:
            remove_drivers(spec.root_id or "")


@pytest.mark.parametrize("answer", ["503", "cut"])
def test_a_docker_driver_whose_layer_the_engine_retries_fails_at_its_pull_grace_in_words(tmp_path, answer):
    """The proxy answers 503 to the layer for good (or cuts its download midway, every time), a 3 s ``pull_grace``:
    the engine's retry is the first failure, and the launch ends at the grace's end while the engine still retries
    (the try abandoned, the engine's pull with it), ImageUnpulled naming the try's progress; no container. Was:
    ImageUnpulled only once the engine's own tries of the layer ended, about 75 s, whatever the grace."""
    with layer_refused(tmp_path, answer) as (proxy, image):
        spec, said = spec_of(image, pull_grace=3), []
        try:
            with pytest.raises(ImageUnpulled) as failed:
                start_driver(spec, {}, docker_socket=False, progress=said.append)
            words = str(failed.value)
            assert re.match(rf"the Docker engine does not have image {re.escape(image)} and could not pull it for "
                            r"\d+ s \(pulling: \d+ of \d+ layers(, \d+ of \d+ MB)?; the engine retries a layer "
                            r"\(\d+ failed downloads?\)\): push it to its registry", words), words
            assert failing(said) and failing(said)[0].startswith("pulling the driver's image ("), said
            assert drivers_of(spec.root_id or "") == []
        finally:
            remove_drivers(spec.root_id or "")


def test_a_docker_driver_launch_stopped_while_its_registry_is_silent_ends_at_once_in_words(pushed, monkeypatch):
    """The proxy takes the engine's requests for the image and never answers (the engine then sends not even its
    answer's head), a minute's ``pull_grace``, the silence limit far past it (600 s); the launch's ``stop`` (a
    server's, stopping) set once the proxy holds the request: ImageUnpulled at once in our words for the silence,
    which say how long the try was silent: less than the grace, so the try was ended at the stop, not at a limit of
    its own; no container. Was: the stop was asked only at a line of the pull's stream, none came: the launch
    went on until the try's silence limit (the grace, at most a minute), a server's stop held that long."""
    monkeypatch.setattr(docker_pull, "PULL_SILENCE", 600.0)
    registry, ref = pushed
    with registry_answering(registry, ref, SILENT) as (proxy, image):
        spec, stop = spec_of(image, pull_grace=60), threading.Event()
        setter = threading.Thread(target=lambda: (wait_for(lambda: proxy.throttled >= 1, 60, what="the held request"),
                                                  stop.set()), daemon=True)
        setter.start()
        try:
            with pytest.raises(ImageUnpulled) as failed:
                start_driver(spec, {}, docker_socket=False, stop=stop)
            words = str(failed.value)
            silent = re.match(rf"the Docker engine does not have image {re.escape(image)} and could not pull it "
                              r"(for \d+ s )?\(the pull made no progress for (\d+) s: its registry does not answer\): "
                              "push it to its registry", words)
            assert silent and int(silent[2]) < 60, words
            assert stop.is_set() and drivers_of(spec.root_id or "") == []
        finally:
            setter.join(60)
            remove_drivers(spec.root_id or "")


@contextlib.contextmanager
def following(s: Served, seen: list[tuple[dict, dict]]) -> Iterator[None]:
    """Follow the server's live events over HTTP (all of them) while in the block, as the dashboard does: each
    resolution event appended to ``seen`` with the resolution as read at once after it (the page re-reads it)."""
    stop, ready = threading.Event(), threading.Event()

    def listen() -> None:
        with s.client() as c, c.stream("GET", "/api/v1/events", timeout=30) as r:
            lines = r.iter_lines()
            next(lines)  # ": connected": subscribed
            ready.set()
            try:
                for line in lines:  # a keepalive at least every 15 s: stop is asked between lines
                    if stop.is_set():
                        return
                    if line.startswith("data: ") and (event := json.loads(line[6:]))["type"] == "resolution":
                        seen.append((event, c.get(f"/api/v1/resolutions/{event['id']}").json()))
            except httpx.TransportError:  # the server stopped: once the block ended, the stream's end
                if not stop.is_set():
                    raise

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    assert ready.wait(15), "the event stream did not open"
    try:
        yield
    finally:
        stop.set()


@contextlib.contextmanager
def rerun_server(tmp_path: Path, image: str, pull_grace: float, seen: list[tuple[dict, dict]] | None = None,
                 db_url: str | None = None) -> Iterator[tuple[Served, str]]:
    """A server (over ``db_url``: by default SQLite) whose reruns start Docker drivers (``pull_grace`` for their
    image), and a resolution recorded with ``image`` there to re-run: (the server, that resolution's id). ``seen``:
    its live events followed from before that resolution was recorded (:func:`following`)."""
    config = RerunConfig(launcher="docker", allow_docker=True, image_repositories=(image.partition("@")[0],),
                         storage_url=STORAGE, executor_settings={"pull_grace": pull_grace})
    with serve(tmp_path, db_url, config=ServerConfig(reruns=config)) as s, \
            (following(s, seen) if seen is not None else contextlib.nullcontext()):
        yield s, record_resolution(s.url, s.key, kind="cloud", image=image, storage_url=STORAGE,
                                   executor="docker")


@contextlib.contextmanager
def rerun(tmp_path: Path, image: str, registry: RegistryProcess, pull_grace: float,
          seen: list[tuple[dict, dict]] | None = None) -> Iterator[tuple[Any, str]]:
    """A server whose reruns start Docker drivers (``pull_grace`` for their image); a rerun of a resolution recorded
    with ``image`` asked of it: (the server, the new resolution's id), once it answered 202 (the resolution still
    claimed then: its launch waits for its image), within 30 s (the client's timeout: a request held longer fails the
    test). ``seen``: its live events followed from before the rerun was asked (:func:`following`)."""
    with rerun_server(tmp_path, image, pull_grace, seen) as (s, root):
        with s.client() as c:
            r = c.post(f"/api/v1/resolutions/{root}/rerun", json={}, timeout=30)
            assert r.status_code == 202, r.text
            new_id = r.json()["resolution_id"]
            assert c.get(f"/api/v1/resolutions/{new_id}").json()["state"] == "created"  # answered while it waits
        try:
            yield s, new_id
        finally:
            remove_drivers(new_id)


def test_a_server_rerun_answers_at_once_and_its_driver_starts_once_the_registry_is_back(tmp_path, unpulled):
    """The rerun's answer does not wait for the registry (its pull_grace is a minute here): it comes while the
    registry is down; the driver is started in the background once the registry answers again, the resolution still
    claimed for it."""
    registry, image = unpulled
    with rerun(tmp_path, image, registry, 60) as (s, new_id):
        registry.start()
        wait_for(lambda: drivers_of(new_id), 60, what="the rerun's driver container")
        with s.client() as c:
            assert c.get(f"/api/v1/resolutions/{new_id}").json()["state"] == "created"


@pytest.mark.parametrize("database", ["sqlite", "postgres"])
def test_a_server_reruns_claim_is_told_live_as_it_is_recorded_before_its_launch_says_anything(tmp_path, pushed,
                                                                                                monkeypatch, request,
                                                                                                database):
    """The rerun's driver image comes from a registry whose answers to its manifest and blobs are held back (HELD: no
    word of failure, so its launch notes nothing) until the proxy passes, the pull's silence limit and grace far past
    the test (600 s): while the request for the rerun is still unanswered, its launch's pull held, a follower of the
    live events is told the new resolution (``created``, its one event so far: read after it, it re-runs the resolution
    asked and notes no wait); once the proxy passes, the rerun is answered 202 with that id and its driver started. Was:
    the claim told nothing when it was recorded: the list showed its row only once its launch noted a wait, failed, or
    its driver recorded it, or at a reload (here, none of those: it never showed). On PostgreSQL the event goes
    through the database (``NOTIFY``), as every event does there, to every server process's followers. The request's
    answer window (``ANSWER_WINDOW``, after which a pull with nothing said is noted and answered) is set past the test
    too: the claim's event is the only one before the proxy passes."""
    monkeypatch.setattr(docker_pull, "PULL_SILENCE", 600.0)
    monkeypatch.setattr(reruns, "ANSWER_WINDOW", 600.0)
    db_url = request.getfixturevalue("postgres_url") if database == "postgres" else None
    registry, ref = pushed
    seen: list[tuple[dict, dict]] = []
    new_id = ""
    with registry_answering(registry, ref, HELD) as (proxy, image), \
            rerun_server(tmp_path, image, 600, seen, db_url) as (s, root), ThreadPoolExecutor(1) as pool:
        def ask() -> httpx.Response:
            with s.client() as c:
                return c.post(f"/api/v1/resolutions/{root}/rerun", json={}, timeout=120)

        asked = pool.submit(ask)
        try:
            told = wait_for(lambda: [(e, r) for e, r in seen if e["id"] != root], 60, what="the claim told live")
            wait_for(lambda: proxy.throttled >= 1 or asked.done(), 60, what="the launch's pull held by the registry")
            assert not asked.done(), asked.result().text  # unanswered: its launch waits on the pull
            [(event, read)] = told
            new_id = event["id"]
            assert event == {"type": "resolution", "id": new_id, "root_id": new_id, "state": "created"}, event
            assert read["state"] == "created" and read["rerun_of"] == root, read
            assert "waiting" not in read["settings"], read  # no note of a wait: this event is the claim's own
            proxy.passing()
            answered = asked.result(120)
            assert answered.status_code == 202 and answered.json()["resolution_id"] == new_id, answered.text
            wait_for(lambda: drivers_of(new_id), 60, what="the rerun's driver container")
            assert [e for e, _ in seen if e["id"] == new_id] == [event], seen  # started: no note, nothing more told
        finally:
            proxy.passing()  # a request still held goes on: its driver started, then removed
            with contextlib.suppress(Exception):
                new_id = new_id or asked.result(120).json()["resolution_id"]
            if new_id:
                remove_drivers(new_id)


def test_a_server_rerun_through_a_throttling_registry_waits_saying_so_then_starts_its_driver(tmp_path, pushed,
                                                                                              monkeypatch):
    """The rerun's driver image is pulled through a proxy answering Docker Hub's 429 (its error JSON, Retry-After)
    to its manifest and blobs: the rerun is answered 202 at once, its resolution ``created`` with what it waits for
    noted on it (``settings.waiting``, shown by ``sematic-k8s resolutions show`` and the dashboard); once the proxy
    passes, the driver is started, once, and the note is gone. Was: the claim showed only ``created`` (the wait was
    in the server's log alone), and ``resolutions show`` found no such run (a claim has no root run yet). The note
    and its clearing are told live (a resolution event, the claim re-read after it says so): was, no event, so the
    dashboard showed them only once something else changed."""
    registry, ref = pushed
    not_now = REGISTRY_NOT_NOW["429-json"]
    seen: list[tuple[dict, dict]] = []
    with registry_answering(registry, ref, not_now) as (proxy, image), \
            rerun(tmp_path, image, registry, 60, seen) as (s, new_id):
        told = lambda: [read for event, read in seen if event["id"] == new_id]  # noqa: E731
        wait_for(lambda: any("waiting" in read["settings"] for read in told()), 30, what="the note told live")
        with s.client() as c:
            res = c.get(f"/api/v1/resolutions/{new_id}").json()
        assert res["state"] == "created", res
        assert res["settings"]["waiting"] == (f"waiting for the driver's image: the Docker engine could not pull it "
                                              f"from 127.0.0.1:{proxy.port} ({not_now.words}); trying again for up "
                                              "to 60 s"), res
        monkeypatch.setenv(settings.SERVER_ENV, s.url)
        monkeypatch.setenv(settings.API_KEY_ENV, s.key or "")
        shown = CliRunner().invoke(cli, ["resolutions", "show", new_id])  # no root run yet: by its whole id
        assert shown.exit_code == 0 and f"Not started yet: {res['settings']['waiting']}" in shown.output, \
            shown.output
        proxy.passing()
        wait_for(lambda: drivers_of(new_id), 60, what="the rerun's driver container")
        with s.client() as c:
            res = wait_for(lambda: "waiting" not in (r := c.get(f"/api/v1/resolutions/{new_id}").json())["settings"]
                           and r, 30, what="the claim's note gone")
        assert res["state"] == "created" and len(drivers_of(new_id)) == 1 and proxy.throttled >= 1, res
        wait_for(lambda: (last := told()[-1:]) and "waiting" not in last[0]["settings"], 30,
                 what="the note's clearing told live")
        assert {event["state"] for event, _ in seen if event["id"] == new_id} == {"created"}, seen


def test_a_server_rerun_whose_registry_stays_down_is_recorded_failed_in_the_launchers_words(tmp_path, unpulled):
    """Past the pull_grace (3 s), the claimed resolution is recorded failed in the launcher's words (the engine's),
    as a launch that fails at once is; no driver container. Its end is told live (was: not, the dashboard showed it
    ``created`` until something else changed)."""
    registry, image = unpulled
    seen: list[tuple[dict, dict]] = []
    with rerun(tmp_path, image, registry, 3, seen) as (s, new_id):
        with s.client() as c:
            res = wait_for(lambda: (r := c.get(f"/api/v1/resolutions/{new_id}").json())["state"] != "created" and r,
                           60, what="the claimed resolution's end")
        assert res["state"] == "failed", res
        assert re.match("could not start the rerun's driver with the docker launcher: ImageUnpulled: the Docker "
                        rf"engine does not have image {re.escape(image)} and could not pull it for \d+ s", res["error"])
        assert "connection refused" in res["error"], res["error"]
        assert drivers_of(new_id) == []
        ended = wait_for(lambda: [(e, r) for e, r in seen if e["id"] == new_id and e["state"] == "failed"], 30,
                         what="the claim's end told live")
        assert ended[0][1]["error"] == res["error"], ended


def test_a_server_that_stops_while_a_reruns_driver_waits_for_its_image_records_the_rerun_failed(tmp_path, unpulled):
    """The server stops while the launch waits (its pull_grace a minute): the wait ends, and the claim is recorded
    failed in the launcher's words before the server's store closes, not left ``created`` (nor the server's exit held
    for the grace)."""
    registry, image = unpulled
    with rerun(tmp_path, image, registry, 60) as (_, new_id):
        pass
    store = open_store(f"sqlite:///{tmp_path / 'db.sqlite3'}")
    try:
        res = store.get_resolution(new_id)
    finally:
        store.close()
    assert res.state == "failed" and "ImageUnpulled" in res.error and "connection refused" in res.error, res


def test_a_server_rerun_canceled_while_its_driver_waits_for_its_image_never_starts_it(tmp_path, unpulled, caplog):
    """Canceled through the server's API while its launch waits (its pull_grace a minute), then the registry back: the
    launch ends without a driver container (the record read between pull attempts, and before the create), the
    resolution canceled as a claim is ("canceled before its driver recorded it"). Was: its driver started once the
    image came."""
    caplog.set_level(logging.INFO, logger="sematic_k8s_server")
    registry, image = unpulled
    with rerun(tmp_path, image, registry, 60) as (s, new_id):
        with s.client() as c:
            r = c.post(f"/api/v1/resolutions/{new_id}/cancel")
            assert r.status_code == 202 and r.json()["state"] == "canceled", r.text
            registry.start()
            ended = wait_for(lambda: [m for m in caplog.messages if m.startswith(f"rerun {new_id}: ")
                                      and ("driver started" in m or "not started" in m)], 60,
                             what="the end of the rerun's launch (the server's log)")
            assert drivers_of(new_id) == [], ended
            res = c.get(f"/api/v1/resolutions/{new_id}").json()
        assert res["state"] == "canceled" and res["error"] == "canceled before its driver recorded it", res


def test_a_server_rerun_canceled_while_its_pull_is_silent_ends_its_launch_at_once(tmp_path, pushed, monkeypatch,
                                                                                   caplog):
    """The rerun's driver image behind a proxy answering 503 to it (its first try fails at once: the rerun answered
    202), then holding its requests silent; a ten-minute ``pull_grace``, the silence limit as far (600 s). Canceled
    through the server while the proxy holds the try's request: the launch ends without a driver (the server's log
    says so, no launcher failure), its claim canceled as the cancel left it, long before the try's silence limit or
    the grace (waited for a minute at most). Was: ``ended()`` was read only between the pull's tries, so the launch
    and its queue slot waited on until the silent try ended: at the grace, ten minutes."""
    monkeypatch.setattr(docker_pull, "PULL_SILENCE", 600.0)
    caplog.set_level(logging.INFO, logger="sematic_k8s_server")
    registry, ref = pushed
    with registry_answering(registry, ref, REGISTRY_NOT_NOW["503"]) as (proxy, image), \
            rerun(tmp_path, image, registry, 600) as (s, new_id):
        proxy.silent()
        wait_for(lambda: proxy.held >= 1, 60, what="a pull try's request held silent by the proxy")
        with s.client() as c:
            _cancel_ends_its_launch(c, new_id, caplog)
            assert proxy.held >= 1 and drivers_of(new_id) == []
            res = c.get(f"/api/v1/resolutions/{new_id}").json()
        assert res["state"] == "canceled" and res["error"] == "canceled before its driver recorded it", res


def _cancel_ends_its_launch(c: httpx.Client, new_id: str, caplog: pytest.LogCaptureFixture) -> None:
    """Cancel rerun ``new_id`` through the server (client ``c``), then wait (a minute at most) for its launch to end
    without a driver, as the server's log says."""
    r = c.post(f"/api/v1/resolutions/{new_id}/cancel")
    assert r.status_code == 202 and r.json()["state"] == "canceled", r.text
    ended = wait_for(lambda: [m for m in caplog.messages if m.startswith(f"rerun {new_id}: ") and any(
        w in m for w in ("driver started", "driver not started", "launcher failed"))], 60,
                     what="the end of the rerun's launch (the server's log)")
    assert ended == [f"rerun {new_id}: driver not started: resolution {new_id} ended while its driver waited "
                     "for its image: the driver is not started"], ended


def test_a_server_rerun_whose_first_pull_try_is_silent_is_answered_at_once_saying_it_pulls(tmp_path, pushed,
                                                                                            monkeypatch, caplog):
    """The rerun's driver image behind a proxy that holds every request for it silent from the first (a registry
    that takes the request and never answers: no try fails, the engine says nothing); a ten-minute ``pull_grace``,
    the silence limit as far (600 s). The rerun is answered 202 with the claim's id within the client's 30 s (its
    launch pulling for ``ANSWER_WINDOW``), the claim noted "pulling the driver's image: REF" while the proxy holds
    that first try's request; a cancel through the server then ends the launch with no driver. Was: the request was
    answered only when that try ended, at its silence limit (ten minutes here; a minute by default): the client
    timed out with no id to cancel."""
    monkeypatch.setattr(docker_pull, "PULL_SILENCE", 600.0)
    caplog.set_level(logging.INFO, logger="sematic_k8s_server")
    registry, ref = pushed
    with registry_answering(registry, ref, SILENT) as (proxy, image), \
            rerun(tmp_path, image, registry, 600) as (s, new_id):
        wait_for(lambda: proxy.held >= 1, 60, what="the first pull try's request held silent by the proxy")
        with s.client() as c:
            res = c.get(f"/api/v1/resolutions/{new_id}").json()
            assert res["state"] == "created", res
            assert res["settings"]["waiting"] == docker_pull_progress.pull_note("the driver's", image, ""), res
            assert proxy.throttled == proxy.held and drivers_of(new_id) == []  # no try answered, none failed
            _cancel_ends_its_launch(c, new_id, caplog)
            assert drivers_of(new_id) == []
            res = c.get(f"/api/v1/resolutions/{new_id}").json()
        assert res["state"] == "canceled" and res["error"] == "canceled before its driver recorded it", res


@contextlib.contextmanager
def slow_layer(tmp_path: Path) -> Iterator[tuple[PausingProxy, RegistryProcess, str]]:
    """The idle driver image with a 40 MB layer of its own, in a registry of the test's own, behind a proxy pausing
    that layer's blob's answer after 15 MB until its ``resume()`` (a registry serving a large image slowly: the first
    pull try goes on, none fails): (the proxy, the registry, the image by digest through the proxy). The pulled image
    is taken off the engine after."""
    require_docker()
    idle_driver_image(docker_client())
    with pulled_from_own_registry(tmp_path, f"{IDLE_DRIVER_REPO}:latest", "sk-test-idle-driver", "latest",
                                  layered=True, big_mb=40) as (registry, ref):
        repo, _, digest = ref.partition("/")[2].partition("@")
        manifest = httpx.get(f"http://{registry.host}/v2/{repo}/manifests/{digest}", headers={
            "Accept": "application/vnd.docker.distribution.manifest.v2+json"}).json()
        big = manifest["layers"][-2]["digest"].encode()  # the 40 MB one, before the last (a file of its own)
        proxy = PausingProxy(registry.port, big, 15_000_000)
        image = f"127.0.0.1:{proxy.port}/{ref.partition('/')[2]}"
        try:
            yield proxy, registry, image
        finally:
            proxy.resume()
            proxy.close()
            with contextlib.suppress(docker_errors.ImageNotFound):
                docker_client().images.remove(image)


def counted(image: str) -> re.Pattern[str]:
    """The words of the first try's progress while its 40 MB layer is paused, a worker's words (the one code path,
    ``docker_pull_progress.pull_note``)."""
    return re.compile(r"^pulling the driver's image \(\d+ of \d+ layers, \d+ of 40 MB\): "
                      + re.escape(docker_pull_progress.short_image(image)) + "$")


def test_a_cloud_resolvers_docker_driver_whose_first_pull_try_goes_on_slowly_shows_its_progress(tmp_path):
    """The CloudResolver's launch (``launchers.start_driver`` told the resolver's display, here its plain lines on a
    stream: not a terminal) of a driver whose image has a 40 MB layer paused by a proxy after 15 MB: the console shows
    "pulling the driver's image: REF" as the pull begins, then that try's progress in the words the rerun's claim is
    noted with ("pulling the driver's image (D of N layers, X of 40 MB): REF") while the try is still under way; once
    the proxy lets the blob go on, the driver starts, once. Was: nothing at all until a try failed or the engine
    retried a layer (the launcher told the resolver only of failures, and its display dropped the launcher's lines)."""
    with slow_layer(tmp_path) as (proxy, _, image):
        spec, console = spec_of(image), io.StringIO()
        shown = display(stream=console)
        launch = threading.Thread(target=launchers.start_driver, args=(spec, {}), kwargs={"progress": shown},
                                  daemon=True)
        launch.start()
        try:
            said = wait_for(lambda: [line for line in console.getvalue().splitlines() if counted(image).match(line)],
                            30, what="the console to show the first try's progress")
            assert proxy.paused == 1 and drivers_of(spec.root_id or "") == [] and launch.is_alive(), said
            lines = console.getvalue().splitlines()
            assert lines[0] == f"pulling the driver's image: {docker_pull_progress.short_image(image)}", lines
            assert all(healthy(line) for line in lines), lines  # none failed, the engine retried nothing
            proxy.resume()
            launch.join(60)
            assert not launch.is_alive(), "the launch did not end once the layer went on"
            [driver] = drivers_of(spec.root_id or "")
            assert driver["State"] in ("created", "running", "exited") and proxy.paused == 1
        finally:
            proxy.resume()
            launch.join(60)
            remove_drivers(spec.root_id or "")


def test_a_server_rerun_whose_first_pull_try_goes_on_slowly_notes_its_progress_then_starts_its_driver(tmp_path):
    """The rerun's driver image has a 40 MB layer of its own, its blob's answer paused by a proxy after 15 MB (a
    registry serving a large image slowly: the first try goes on, none fails). The rerun is answered 202, the claim
    noted "pulling the driver's image: REF", then that try's progress in the same words as a worker's ("pulling the
    driver's image (D of N layers, X of 40 MB): REF") while the try is still under way; once the proxy lets the blob
    go on, the driver starts, once, and the note is gone. Was: "pulling the driver's image: REF" alone, no layer or
    MB count, until a try failed or the engine retried a layer."""
    with slow_layer(tmp_path) as (proxy, registry, image), \
            rerun(tmp_path, image, registry, 60) as (s, new_id), s.client() as c:
        note = lambda: c.get(f"/api/v1/resolutions/{new_id}").json()["settings"].get("waiting")  # noqa: E731
        said = wait_for(lambda: (w := note()) and counted(image).match(w) and w, 30,
                        what="the claim's note with its first try's progress")
        assert proxy.paused == 1 and drivers_of(new_id) == [], said  # the first try still under way
        proxy.resume()
        wait_for(lambda: drivers_of(new_id), 60, what="the rerun's driver container")
        wait_for(lambda: note() is None, 30, what="the claim's note gone")
        res = c.get(f"/api/v1/resolutions/{new_id}").json()
        assert res["state"] == "created" and len(drivers_of(new_id)) == 1 and proxy.paused == 1, res


def test_a_server_rerun_whose_image_its_registry_refuses_is_answered_502_in_the_engines_words(tmp_path, pushed):
    """A rerun of an image by a digest its registry does not have (its pull refused at once, "manifest unknown"):
    the request is answered 502 in the launcher's words, the claim recorded failed in the same, no driver; not a
    202 of a launch that pulls (the refusal comes within ``ANSWER_WINDOW``)."""
    registry, ref = pushed
    repository = ref.partition("@")[0]
    image = f"{repository}@sha256:{'0' * 64}"
    config = RerunConfig(launcher="docker", allow_docker=True, image_repositories=(repository,),
                         storage_url=STORAGE, executor_settings={"pull_grace": 600})
    with serve(tmp_path, config=ServerConfig(reruns=config)) as s, s.client() as c:
        root = record_resolution(s.url, s.key, kind="cloud", image=image, storage_url=STORAGE, executor="docker")
        r = c.post(f"/api/v1/resolutions/{root}/rerun", json={}, timeout=30)
        assert r.status_code == 502 and r.json()["reason"] == "launcher-failed", r.text
        detail = r.json()["detail"]
        assert detail.startswith("could not start the rerun's driver with the docker launcher: ImageUnpulled: the "
                                 f"Docker engine does not have image {image} and could not pull it ("), detail
        assert "manifest unknown" in detail, detail
        [claim] = [res for res in c.get("/api/v1/resolutions").json()["items"] if res["id"] != root]
        assert claim["state"] == "failed" and claim["error"] == detail, claim
        assert drivers_of(claim["id"]) == []

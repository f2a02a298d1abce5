"""Faults of the CloudResolver's image work, caused for real: a registry of the test's own (never the shared one)
killed and started again during a push, a proxy before it answering 503 or 429 (with Retry-After) to a layer upload
or to the manifest, dropping connections; a recorded image deleted from the registry before a rerun reuses it; the
Docker engine's connection cut mid-build (a proxy before its socket, never the engine itself)."""

from __future__ import annotations

import io
import os
import re
import shutil
import socket
import tarfile
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import infra
from outages import DroppingProxy, RegistryProcess, ThrottlingProxy
from sematic_k8s.errors import DockerUnavailable, PushError, RegistryUnavailable
from sematic_k8s.packaging import compute_context, ensure_image
from sematic_k8s.packaging import push as push_module
from sematic_k8s.packaging.build import registry_digest, registry_platform
from sematic_k8s.packaging.push import image_in_registry, interrupted, push_image
from sematic_k8s.registry import manifest_digest
from sematic_k8s.settings import RETRY_WINDOW_ENV


@pytest.fixture(scope="module")
def base_image() -> str:
    return infra.require_docker()


@pytest.fixture(scope="module")
def client(base_image: str) -> Any:
    return infra.docker_client()


@pytest.fixture
def registry(tmp_path: Path, base_image: str) -> Iterator[RegistryProcess]:
    """A registry of this test's own, started; killed at the end."""
    if shutil.which("docker-registry") is None:
        message = "docker-registry (Debian's package) is not installed: the test needs a registry of its own"
        if infra.in_ci():
            pytest.fail(message)
        pytest.skip(message)
    reg = RegistryProcess(tmp_path)
    reg.start()
    yield reg
    reg.kill()


@pytest.fixture
def window(monkeypatch: pytest.MonkeyPatch) -> Callable[[float], None]:
    """Sets the retry window ($SEMATIC_K8S_RETRY_WINDOW) to so many seconds."""
    return lambda seconds: monkeypatch.setenv(RETRY_WINDOW_ENV, f"{seconds:g}")


def tiny_image(client: Any, repo: str) -> str:
    """A new one-layer image (200 kB of random bytes, `docker import`ed: nothing pulled) tagged ``repo:TAG``; TAG."""
    data = os.urandom(200_000)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("blob.bin")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    tag = uuid.uuid4().hex[:12]
    client.api.import_image_from_data(buf.getvalue(), repository=repo, tag=tag)
    return tag


def pushing(head: bytes, what: str) -> bool:
    """Whether a request's head is ``what``: a layer upload's start, or the manifest's PUT."""
    line = head.split(b"\r\n", 1)[0]
    return line.startswith({"layer": b"POST /v2/", "manifest": b"PUT /v2/"}[what]) and \
        (what == "layer") == (b"/blobs/uploads/" in line)


class KillAt:
    """A proxy's ``throttle`` that never answers itself: at the first request it is asked about that ``pushing``
    picks, it kills the registry (the request goes on to a dead registry: its connection is cut), and starts it again
    ``down`` seconds later."""

    def __init__(self, registry: RegistryProcess, what: str, down: float) -> None:
        self.registry, self.what, self.down, self.killed = registry, what, down, False
        self.restart: threading.Timer | None = None

    def __call__(self, head: bytes) -> bool:
        if not self.killed and pushing(head, self.what):
            self.killed = True
            self.registry.kill()
            self.restart = threading.Timer(self.down, self.registry.start)
            self.restart.start()
        return False

    def wait(self) -> None:
        """Until the registry was started again (so that the test's end stops that process, whatever happened)."""
        if self.restart is not None:
            self.restart.join()


# -- a push meeting a registry that fails for a while ---------------------------------------------------------


@pytest.mark.parametrize("fault", ["503 to the manifest", "429 to a layer", "503 to a layer",
                                   "killed at the manifest", "dropping connections"])
def test_a_push_rides_out_a_registry_failing_for_a_while_and_says_so(fault, registry, client, window):
    """The engine gives up at once on a manifest PUT that fails (503, a cut connection: the registry killed, started
    again 2 s later), on any 429, and on a registry whose connections are dropped: the push is made again, saying why,
    and lands. A 503 to a layer upload the engine retries itself: said as a line, not shown as a countdown."""
    window(60)
    throttle: Callable[[bytes], bool] = lambda head: False  # noqa: E731
    times, status = 0, 503
    if fault.startswith(("503", "429")):
        status, what = int(fault[:3]), fault.rsplit(" ", 1)[1]
        throttle, times = (lambda head: pushing(head, what)), 2 if what == "manifest" else 1
    elif fault == "killed at the manifest":
        throttle, times = KillAt(registry, "manifest", down=2.0), 1  # asked while times are left: never answers
    proxy = ThrottlingProxy(registry.port, throttle, times, status=status, code="", headers={"Retry-After": "1"})
    dropping = DroppingProxy(proxy.port)
    repo = f"127.0.0.1:{dropping.port}/sk-test-push"
    tag = tiny_image(client, repo)
    if fault == "dropping connections":
        dropping.drop()
        threading.Timer(2.0, dropping.drop, args=(False,)).start()
    lines: list[str] = []
    try:
        ref = push_image(client, repo, tag, progress=lines.append)
    finally:
        if isinstance(throttle, KillAt):
            throttle.wait()
        client.images.remove(f"{repo}:{tag}")
        proxy.close()
        dropping.close()
    host = f"127.0.0.1:{dropping.port}"
    assert manifest_digest(f"{registry.host}/sk-test-push", tag) == ref.split("@")[1]  # in the registry, by its tag
    said = [line for line in lines if line.startswith("registry: ")]
    cut = "EOF|connection reset by peer|server closed idle connection"  # which one: when the proxy cut it
    dropped = rf"{host} dropped the connection to the push of {repo}:{tag} \(.*({cut})\); " \
              rf"pushing again, for up to 60 s in all"
    expected = {"503 to the manifest": rf"{host} answered 503 Service Unavailable to the push of {repo}:{tag} "
                                       rf"\(received unexpected HTTP status: 503 Service Unavailable\); pushing again, "
                                       rf"for up to 60 s in all",
                "429 to a layer": rf"{host} answered 429 Too Many Requests to the push of {repo}:{tag} \(.*429.*\); "
                                  rf"pushing again, for up to 60 s in all",
                "503 to a layer": rf"{host} did not take layer [0-9a-f]{{12}}; the Docker engine tries again in 5 "
                                  rf"seconds",
                "killed at the manifest": dropped, "dropping connections": dropped}[fault]
    assert said and all(re.fullmatch(f"registry: {expected}", line) for line in said), lines
    assert not any("Retrying in" in line for line in lines), lines  # the engine's countdown is not passed on
    if fault.startswith(("503", "429")):
        assert proxy.throttled == times


@pytest.mark.parametrize("said", [
    'Get "http://127.0.0.1:33137/v2/": EOF',
    'Get "http://127.0.0.1:33137/v2/": http: server closed idle connection',  # a CI run's second try: was a PushError
    'Put "http://127.0.0.1:5000/v2/x/blobs/uploads/u": write tcp 127.0.0.1:1->127.0.0.1:5000: use of closed network '
    'connection',
    'Put "http://127.0.0.1:5000/v2/x/manifests/t": read tcp 127.0.0.1:1->127.0.0.1:5000: read: connection reset '
    'by peer',
])
def test_the_engines_words_for_a_dropped_connection_are_a_push_made_again(said):
    """Which of the engine's words pass is decided on its exact text; a connection dropped by a proxy comes in
    several (which one depends on when it is cut, so the test above meets them at random)."""
    passing = interrupted(said)
    assert passing is not None and passing.did == "dropped the connection", said


@pytest.mark.parametrize("fault", ["503", "429", "stopped"])
def test_a_registry_that_keeps_failing_is_one_plain_error_once_the_window_is_over(fault, registry, client, window):
    """503 or 429 to every manifest PUT, or the registry stopped: after the retry window, one error naming the
    registry, what it answered and what to do; the lines said meanwhile why the push was made again."""
    window(2)
    proxy = ThrottlingProxy(registry.port, lambda head: pushing(head, "manifest"), 10_000,
                            status=int(fault) if fault.isdigit() else 503, code="", headers={"Retry-After": "1"})
    repo = f"127.0.0.1:{proxy.port}/sk-test-push"
    tag = tiny_image(client, repo)
    if fault == "stopped":
        registry.kill()
    lines: list[str] = []
    try:
        with pytest.raises(RegistryUnavailable) as caught:
            push_image(client, repo, tag, progress=lines.append)
    finally:
        client.images.remove(f"{repo}:{tag}")
        proxy.close()
    host = f"127.0.0.1:{proxy.port}"
    did, said, fix = {
        "503": ("answered 503 Service Unavailable", "received unexpected HTTP status: 503 Service Unavailable",
                "it is failing or overloaded (its log says why): try again once it answers"),
        "429": ("answered 429 Too Many Requests", ".*429.*",
                "it limits how many requests it takes: try again later, or raise its limit"),
        "stopped": ("dropped the connection", ".*(EOF|connection reset by peer)",  # the proxy takes it; no registry
                    "is it running, and reachable from the Docker engine at that address? Start it (or set the "
                    "registry to one that is), then try again")}[fault]
    assert isinstance(caught.value, PushError)
    assert re.fullmatch(rf"push of {re.escape(repo)}:{tag} failed: the registry {host} {did}, still after 2 s of tries "
                        rf"\(the Docker engine said: {said}\); {re.escape(fix)}", str(caught.value)), str(caught.value)
    assert any(line.startswith(f"registry: {host} {did} to the push of {repo}:{tag}") for line in lines), lines


def test_a_refusal_no_retry_changes_is_a_push_error_at_once(registry, client, window):
    """403 to the manifest PUT (a registry refusing the push: no credentials, no right to that repository): one
    PushError at once, naming the registry and what to check, not retried for the window."""
    window(600)  # were it retried, the test would not end soon
    proxy = ThrottlingProxy(registry.port, lambda head: pushing(head, "manifest"), 1, status=403, code="")
    repo = f"127.0.0.1:{proxy.port}/sk-test-push"
    tag = tiny_image(client, repo)
    try:
        with pytest.raises(PushError) as caught:
            push_image(client, repo, tag, progress=lambda _: None)
    finally:
        client.images.remove(f"{repo}:{tag}")
        proxy.close()
    host = f"127.0.0.1:{proxy.port}"
    assert not isinstance(caught.value, RegistryUnavailable) and proxy.throttled == 1
    assert re.fullmatch(rf"push of {re.escape(repo)}:{tag} failed: .*403.*; is the registry {host} running and "
                        rf"reachable from the Docker engine, and does it take its credentials "
                        rf"\(`docker login {host}`\)\?",
                        str(caught.value)), str(caught.value)


@pytest.mark.parametrize(("what", "lasting"), [("manifest", False), ("manifest", True), ("layer", True)])
def test_a_registry_that_stops_answering_mid_push_is_pushed_again_then_said_not_blamed_on_the_engine(
        what, lasting, registry, client, window, monkeypatch):
    """A registry that hangs (SIGSTOPped, a proxy that stopped forwarding: its port accepts, nothing answers) at the
    manifest's PUT or a layer's upload: the Docker engine waits on it, saying nothing, for as long as it takes. The
    push is given up once its engine said nothing for PUSH_SILENCE while the engine answers, said as the registry's
    ("did not answer in time"), and made again; lasting past the window, RegistryUnavailable naming the registry
    and what to check. Was: silent for the build client's 900 s, then DockerUnavailable "the Docker engine ... stopped
    answering while pushing ...: is it running?" (the engine was fine). While the registry is silent, that is said
    every SILENCE_SAID_EVERY seconds (was: nothing, for up to 300 s)."""
    window(60 if not lasting else 4)
    monkeypatch.setattr(push_module, "PUSH_SILENCE", 2.0)
    monkeypatch.setattr(push_module, "SILENCE_SAID_EVERY", 0.5)
    proxy = ThrottlingProxy(registry.port, lambda head: pushing(head, what), 10_000 if lasting else 1, status=0)
    repo = f"127.0.0.1:{proxy.port}/sk-test-push"
    tag = tiny_image(client, repo)
    lines: list[str] = []
    try:
        if lasting:
            with pytest.raises(RegistryUnavailable) as caught:
                push_image(client, repo, tag, progress=lines.append)
        else:
            ref = push_image(client, repo, tag, progress=lines.append)
    finally:
        client.images.remove(f"{repo}:{tag}")
        proxy.close()
    host = f"127.0.0.1:{proxy.port}"
    said = r"nothing, for 2 s after '[^']+', waiting on the registry"
    silent = [line for line in lines if " has not answered for " in line]
    again = [line for line in lines if line.startswith("registry: ") and line not in silent]
    assert silent and all(re.fullmatch(rf"registry: {host} has not answered for (0\.5|1|1\.5|2) s \(giving up at 2 s\)",
                                       line) for line in silent), lines
    assert again and all(re.fullmatch(rf"registry: {host} did not answer in time to the push of {repo}:{tag} "
                                      rf"\({said}\); pushing again, for up to {4 if lasting else 60} s in all", line)
                         for line in again), lines
    assert proxy.held >= 1
    if not lasting:
        assert proxy.held == 1
        assert manifest_digest(f"{registry.host}/sk-test-push", tag) == ref.split("@")[1]
        return
    assert re.fullmatch(rf"push of {re.escape(repo)}:{tag} failed: the registry {host} did not answer in time, still "
                        rf"after 4 s of tries \(the Docker engine said: {said}\); is it running, and reachable from "
                        rf"the Docker engine at that address\? Start it \(or set the registry to one that is\), then "
                        rf"try again", str(caught.value)), str(caught.value)


# -- a rerun whose recorded image is gone from the registry ---------------------------------------------------


def small_project(root: Path) -> Path:
    (root / "gonepipe").mkdir(parents=True)
    (root / "gonepipe" / "__init__.py").write_text(f'NONCE = "{uuid.uuid4().hex}"\n')
    return root


def delete_manifest(registry: RegistryProcess, repo_name: str, digest: str) -> None:
    """What an operator's clean-up (or the registry's garbage collection after it) does: the manifest is gone."""
    answer = httpx.delete(f"http://{registry.host}/v2/{repo_name}/manifests/{digest}", timeout=30)
    assert answer.status_code == 202, answer.text


def test_a_recorded_image_gone_from_the_registry_is_built_and_pushed_again(registry, client, base_image, tmp_path):
    """The build hash matches the recorded image's, but its manifest was deleted from the registry: the image is
    built and pushed again, said in one line, rather than reused (its pull would fail: "manifest unknown")."""
    root = small_project(tmp_path / "project")
    repo = f"{registry.host}/sk-test-gone"
    first = ensure_image(root, repo, base_image, progress=lambda _: None)
    delete_manifest(registry, "sk-test-gone", first.digest)
    assert manifest_digest(repo, first.digest) is None
    lines: list[str] = []
    try:
        again = ensure_image(root, repo, base_image, recorded=(first.context_hash, first.digest_ref),
                             progress=lines.append)
    finally:
        client.images.remove(f"{repo}:{first.context_hash}")  # the registry's port is this test's alone
    assert again.built and again.context_hash == first.context_hash
    assert manifest_digest(repo, again.digest) == again.digest  # what the driver pulls is there
    assert f"registry: the recorded image {first.digest_ref} is no longer in the registry (deleted, or " \
           "garbage-collected): building it again" in lines
    assert not any("reusing" in line for line in lines), lines


class NoDocker:
    """A docker client that must not be used."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"docker was used ({name}) although nothing had to be built")


@pytest.mark.parametrize("fault", ["503 twice", "stopped"])
def test_a_recorded_image_is_looked_for_in_its_registry_and_one_that_does_not_answer_is_said(
        fault, registry, client, base_image, tmp_path, window):
    """The recorded image's registry answers 503 (Retry-After: 1) twice: asked again, the image is there and reused,
    nothing built. A registry that does not answer: one error naming it, what happened and what to do."""
    window(2 if fault == "stopped" else 30)
    tag = tiny_image(client, f"{registry.host}/sk-test-recorded")
    try:
        digest = push_image(client, f"{registry.host}/sk-test-recorded", tag, progress=lambda _: None).split("@")[1]
    finally:
        client.images.remove(f"{registry.host}/sk-test-recorded:{tag}")
    proxy = ThrottlingProxy(registry.port, lambda head: head.startswith(b"HEAD /v2/sk-test-recorded/manifests/"), 2,
                            status=503, code="", headers={"Retry-After": "1"})
    root = small_project(tmp_path / "project")
    repo = f"127.0.0.1:{proxy.port}/sk-test-recorded"  # the resolver's own repository: only its images are reused
    recorded = (compute_context(root, base_image).context_hash, f"{repo}@{digest}")
    if fault == "stopped":
        registry.kill()
    lines: list[str] = []
    try:
        if fault == "stopped":
            with pytest.raises(RegistryUnavailable) as caught:
                ensure_image(root, repo, base_image, recorded=recorded, progress=lines.append,
                             client=NoDocker())
        else:
            image = ensure_image(root, repo, base_image, recorded=recorded, progress=lines.append,
                                 client=NoDocker())
    finally:
        proxy.close()
    if fault == "stopped":  # the proxy takes the connection, then finds no registry behind it
        assert re.fullmatch(rf"the registry 127\.0\.0\.1:{proxy.port} did not answer \(.+\) when asked whether image "
                            rf"{re.escape(recorded[1])} is still there, still after 2 s of tries: is it running, and "
                            r"reachable from here at that address\? Start it \(or set the registry to one that is\), "
                            "then try again", str(caught.value)), str(caught.value)
    else:
        assert image.digest_ref == recorded[1] and not image.built and proxy.throttled == 2
        assert f"image: reusing recorded {recorded[1]}" in lines


# -- the Docker engine gone mid-build ------------------------------------------------------------------------


def test_an_engine_whose_connection_is_cut_mid_build_is_docker_unavailable_in_words(base_image, tmp_path,
                                                                                    monkeypatch):
    """$DOCKER_HOST is a proxy before the engine's socket, closed (its connections cut, new ones refused) while a
    build step runs: DockerUnavailable naming the engine, what it was doing and what to do (was: urllib3's
    ProtocolError "Connection broken: IncompleteRead")."""
    engine = (os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock").removeprefix("unix://")
    if "://" in engine:
        pytest.skip(f"the engine is not on a Unix socket here ({engine})")
    proxy = DroppingProxy(engine)
    monkeypatch.setenv("DOCKER_HOST", f"tcp://127.0.0.1:{proxy.port}")
    nonce = uuid.uuid4().hex[:8]

    def said(line: str) -> None:
        if line.startswith("Step ") and f"sleep 60 # {nonce}" in line:
            threading.Timer(1.0, proxy.close).start()

    root = small_project(tmp_path / "project")
    with pytest.raises(DockerUnavailable) as caught:
        ensure_image(root, f"{infra.REGISTRY}/sk-test-engine-cut", base_image, progress=said,
                     setup=[f"sleep 60 # {nonce}"])
    tag = f"{infra.REGISTRY}/sk-test-engine-cut:{compute_context(root, base_image, setup=[f'sleep 60 # {nonce}']).tag}"
    assert str(caught.value) == (f"the Docker engine at tcp://127.0.0.1:{proxy.port} stopped answering while building "
                                 f"{tag} (the connection was cut mid-answer): is it running? Start it, or set "
                                 "$DOCKER_HOST to one that is, then try again"), str(caught.value)


# -- a registry whose answer is cut off mid-line ------------------------------------------------------------


def test_a_registry_whose_answers_are_cut_off_is_registry_unavailable_not_a_traceback(window):
    """A registry (a loopback server here) that answers every request with half a status line and closes: the
    check of a recorded image is asked again for the retry window, then one RegistryUnavailable naming the registry;
    the look-ups of a tag's digest and an image's platform find nothing (the image is built). Before: http.client's
    BadStatusLine (not an OSError) reached the caller of resolve() as a traceback."""
    window(1)
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    asked: list[bytes] = []

    def answer() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:  # closed: the test is over
                return
            with conn:
                asked.append(conn.recv(65536).split(b"\r\n", 1)[0])
                conn.sendall(b"HTTP/1.1 50\r\n")

    threading.Thread(target=answer, daemon=True).start()
    repo = f"127.0.0.1:{server.getsockname()[1]}/sk-test-garbled"
    try:
        with pytest.raises(RegistryUnavailable) as caught:
            image_in_registry(repo, "sha256:" + "0" * 64, client=NoDocker())
        assert registry_digest(repo, "t", client=NoDocker()) is None
        assert registry_platform(repo, "t") is None
    finally:
        server.close()
    assert re.fullmatch(rf"the registry {re.escape(repo.split('/')[0])} did not answer \(BadStatusLine: HTTP/1\.1 50\) "
                        rf"when asked whether image {re.escape(repo)}@sha256:0+ is still there, still after 1 s of "
                        r"tries: .*", str(caught.value)), str(caught.value)
    assert sum(line.startswith(b"HEAD /v2/sk-test-garbled/manifests/sha256") for line in asked) >= 2  # asked again

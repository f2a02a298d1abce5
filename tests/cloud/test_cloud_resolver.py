"""CloudResolver on one machine: real dockerd, registry, S3 API and server; a driver container
launching one worker container per non-inline run."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from botocore.config import Config
from click.testing import CliRunner
from docker import errors as docker_errors

import sematic_k8s as sk
from infra import REGISTRY, docker_client, require_docker
from projects import user_project
from sematic_k8s import settings
from sematic_k8s.cli import cli
from sematic_k8s.errors import ServerError, StorageError
from sematic_k8s.specs import outcome_key
from sematic_k8s_server import auth
from sematic_k8s_server.config import RerunConfig, ServerConfig
from serving import free_port, serve, wait_for

PIPELINE = '''
    import os
    import sematic_k8s as sk

    VERSION = 1

    @sk.func(inline=False)
    def square(x: int) -> int:
        print(f"squaring {x} in {os.environ.get('HOSTNAME', 'a container')}")
        return x * x * VERSION

    @sk.func(inline=False, cache=True)
    def offset(n: int) -> int:
        print("computing offset")
        return 1000 + n

    @sk.func(inline=False)
    def explode(x: int) -> int:
        print("about to explode \\x1b]52;c;ZXZpbA==\\x07\\x1b[31mred\\x1b[0m\\u202e")  # clipboard, colour, RLO
        raise RuntimeError(f"exploded on {x}")

    @sk.func
    def add_all(xs: list[int], base: int) -> int:
        return base + sum(xs)

    @sk.func
    def pipeline(n: int) -> int:
        return add_all([square(i) for i in range(n)], offset(n))

    @sk.func
    def failing() -> int:
        return add_all([explode(1)], 0)
'''


@pytest.fixture(scope="module")
def infra() -> str:
    return require_docker()


@pytest.fixture
def s3_env(monkeypatch) -> str:
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", os.environ.get("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:9000"))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", os.environ.get("AWS_ACCESS_KEY_ID", "test"))
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", os.environ.get("AWS_SECRET_ACCESS_KEY", "test"))
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    bucket = f"sk-cloud-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL_S3"], region_name="us-east-1",
                 config=Config(s3={"addressing_style": "path"})).create_bucket(Bucket=bucket)
    return f"s3://{bucket}/artifacts"


@pytest.fixture
def project(tmp_path):
    """A user project with one pipeline module, importable here as in the image."""
    root = tmp_path / "project"
    with user_project(root, "cloudpipe", PIPELINE) as module:
        yield root, module


def load(module: str):
    __import__(module)
    return sys.modules[module]


@contextlib.contextmanager
def _seen(label: str, key: Callable[[Any], str]) -> Iterator[dict[str, dict]]:
    """The attributes (inspect) of every container with ``label``, by ``key(container)``, taken by a thread watching
    for them while the block runs: a resolution's containers are removed once they ended."""
    seen: dict[str, dict] = {}
    done = threading.Event()

    def watch() -> None:
        docker = docker_client()
        while not done.is_set():
            try:  # the list inspects each container: one removed meanwhile is NotFound; look again
                for c in docker.containers.list(all=True, filters={"label": label}):
                    seen.setdefault(key(c), c.attrs)
            except docker_errors.NotFound:
                pass
            done.wait(0.05)
    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        done.set()
        thread.join(10)


def drivers_seen() -> contextlib.AbstractContextManager[dict[str, dict]]:
    """Driver containers' attributes by resolution id, while the block runs (a driver removes itself when it
    exits)."""
    return _seen("sematic-k8s/role=driver", lambda c: c.labels.get("sematic-k8s/resolution-id", ""))


def containers_seen() -> contextlib.AbstractContextManager[dict[str, dict]]:
    """The attributes of every container of a resolution (driver or worker) by container id, while the block
    runs."""
    return _seen("sematic-k8s/resolution-id", lambda c: c.id)


KEYED_PIPELINE = '''
    import time
    import sematic_k8s as sk

    @sk.func(inline=False)
    def slow_square(x: int) -> int:
        time.sleep(2)  # long enough for the test's watcher to inspect its container
        return x * x

    @sk.func
    def total(xs: list[int]) -> int:
        return sum(xs)

    @sk.func
    def pipeline(n: int) -> int:
        return total([slow_square(i) for i in range(n)])
'''


def test_no_container_shows_an_s3_key_and_the_pipeline_still_stores_to_s3(infra, s3_env, tmp_path, monkeypatch):
    """A CloudResolver's Docker driver and the driver the server's Docker launcher starts for a rerun each get the
    S3 keys as 0400 files ($SEMATIC_K8S_AWS_*_FILE), never as variables; worker containers get none at all (their
    presigned URLs are all they store through). ``docker inspect`` of each container shows no secret key, and both
    resolutions store to the real S3. Was: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY plain env of every one.
    (A presigned URL names its signer's access key id, not a secret, by SigV4's design.) A worker's task, and so its
    presigned URLs, is a file too ($SEMATIC_K8S_TASK_FILE): no container shows a URL (was: $SEMATIC_K8S_TASK)."""
    from sematic_k8s.storage.base import artifact_key
    from sematic_k8s.storage.urls import storage_from_url

    secret = f"sk-secret-{uuid.uuid4().hex}"  # moto takes any key: this one cannot be mistaken
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    storage = storage_from_url(s3_env)
    with user_project(tmp_path / "project", "keyedpipe", KEYED_PIPELINE) as module, \
            rerunning_server(tmp_path, s3_env) as server, containers_seen() as seen:
        f = load(module).pipeline(2)
        assert f.resolve(project_resolver(server, s3_env, infra, tmp_path)) == 1
        rerun = server_rerun(server, storage, f.id)
        assert rerun is not True and rerun.state == "resolved", rerun
    for root_id in (f.id, rerun.id):
        output = server.store.get_run(root_id).output_id
        assert storage.exists(artifact_key(output)) and server.store.get_artifact(output).summary == 1
    ours = {c: a for c, a in seen.items() if a["Config"]["Labels"].get("sematic-k8s/resolution-id") in (f.id, rerun.id)}
    roles = sorted((a["Config"]["Labels"]["sematic-k8s/resolution-id"] == f.id, a["Config"]["Labels"][
        "sematic-k8s/role"]) for a in ours.values())
    assert roles == [(False, "driver"), (True, "driver"), (True, "worker"), (True, "worker")], roles
    for attrs in ours.values():
        env = dict(e.split("=", 1) for e in attrs["Config"]["Env"])
        assert secret not in json.dumps(attrs) and "Signature=" not in json.dumps(attrs), attrs["Name"]
        assert not set(env) & set(settings.STORAGE_KEY_ENVS), (attrs["Name"], sorted(env))
        if attrs["Config"]["Labels"]["sematic-k8s/role"] == "driver":
            assert env["SEMATIC_K8S_AWS_SECRET_ACCESS_KEY_FILE"] and env["SEMATIC_K8S_AWS_ACCESS_KEY_ID_FILE"]
        else:
            assert [name for name in env if name.endswith("_FILE")] == [settings.TASK_FILE_ENV], sorted(env)
            # its driver (its image's label: it signs) handed it a key in that file; it signed its outcome with it
            run_id = attrs["Config"]["Labels"]["sematic-k8s/run-id"]
            assert "signature" in json.loads(storage.get(outcome_key(run_id, 1))), run_id


def test_cloud_pipeline_rerun_cache_and_code_edit(infra, s3_env, project, tmp_path):
    root, module = project
    mod = load(module)
    lines: list[str] = []
    (tmp_path / "server").mkdir()
    reruns = RerunConfig(launcher="docker", allow_docker=True, image_repositories=(f"{REGISTRY}/sk-test-cloud",),
                         storage_url=s3_env)  # local development: the server may start drivers in containers
    with serve(tmp_path / "server", config=ServerConfig(reruns=reruns)) as server:
        def resolver(**kw) -> sk.CloudResolver:
            return sk.CloudResolver(server=server.url.replace("//", "//ann:s3cret@"), api_key=server.key,
                                    storage=s3_env,
                                    registry=f"{REGISTRY}/sk-test-cloud", base_image=infra,
                                    project_root=str(root), poll_interval=0.2, progress=lines.append, **kw)

        # 1. a fresh run builds and pushes an image, then runs in containers
        f = mod.pipeline(3)
        with drivers_seen() as seen:  # the driver removes itself when it exits: look at it while it runs
            assert f.resolve(resolver(cache_namespace="ci")) == 1003 + 0 + 1 + 4
        first = server.store.get_resolution(f.id)
        assert first.state == "resolved" and "@sha256:" in first.image and first.build_hash
        runs = server.store.runs_of_root(f.id)
        squares = [r for r in runs if r.func_name == "square"]
        assert len(squares) == 3 and all(r.notes["executor"]["executor"] == "docker" for r in squares)
        assert all(r.notes["executor"]["image"] == first.image for r in squares)
        assert any("driver started" in line for line in lines)
        assert f.id in seen, "the driver container was never seen"
        env = dict(e.split("=", 1) for e in seen[f.id]["Config"]["Env"])
        assert "SEMATIC_K8S_API_KEY" not in env and env["SEMATIC_K8S_API_KEY_FILE"]  # its token, as a file
        assert server.key not in json.dumps(seen[f.id])  # never the user's key
        assert "s3cret" not in json.dumps(seen[f.id]) and env["SEMATIC_K8S_SERVER_AUTH_FILE"]  # nor the URL's

        # 2. a rerun with unchanged code builds nothing, reuses the digest, re-executes only the reset runs
        target = squares[1]
        lines.clear()
        again = mod.pipeline(3)
        assert again.resolve(resolver(rerun_from=target.id, cache_namespace="ci")) == 1008
        second = server.store.get_resolution(again.id)
        assert second.image == first.image and second.rerun_of == f.id
        assert any("reusing recorded" in line for line in lines)
        reused = {r.func_name for r in server.store.runs_of_root(again.id) if r.notes.get("reused_from")}
        assert reused == {"square", "offset"}  # the two other squares and offset

        # 3. a cache hit across resolutions: offset(3) is not computed again
        third = mod.pipeline(3)
        third.resolve(resolver(cache_namespace="ci"))
        offset_run = next(r for r in server.store.runs_of_root(third.id) if r.func_name == "offset")
        assert offset_run.cached_from is not None

        # 3b. the server's rerun action starts a driver from the recorded digest, building nothing (in local
        # development: one container without the Docker socket, its runs as processes in it)
        with drivers_seen() as seen:
            with server.client() as http:
                accepted = http.post(f"/api/v1/resolutions/{f.id}/rerun",
                                     json={"rerun_from": target.id, "mode": "from"})
            assert accepted.status_code == 202, accepted.text
            new_id = accepted.json()["resolution_id"]
            done = wait_for(lambda: (r := server.store.get_resolution(new_id)) and r.state in ("resolved", "failed")
                            and r, timeout=120, what="the server-started rerun")
        assert done.state == "resolved" and done.image == first.image and done.rerun_of == f.id
        root_run = server.store.get_run(new_id)
        assert server.store.get_artifact(root_run.output_id).summary == 1008
        assert new_id in seen, "the rerun's driver container was never seen"
        assert not any("docker.sock" in m.get("Source", "") for m in seen[new_id]["Mounts"])

        # 4. after a code edit, a rerun builds a new image and uses the new code for reset runs
        source = root / f"{module}.py"
        source.write_text(source.read_text().replace("VERSION = 1", "VERSION = 10"))
        lines.clear()
        fourth = mod.pipeline(3)
        assert fourth.resolve(resolver(rerun_from=target.id, cache_namespace="ci")) == 1003 + 0 + 10 + 4  # new code
        edited = server.store.get_resolution(fourth.id)
        assert edited.image != first.image and edited.build_hash != first.build_hash


@pytest.mark.parametrize("case", ["revoked key", "read-only key", "not a sematic-k8s server", "nothing answers",
                                  "no such bucket"])
def test_the_server_and_the_key_are_checked_before_an_image_is_built(infra, s3_env, project, tmp_path, monkeypatch,
                                                                     case):
    """A key the server refuses (revoked), a key that may only read (``--read-only``: asked first, ``GET /whoami``), a
    URL where another server answers (the registry's), one where nothing does, a storage bucket that does not exist:
    the line the resolver said after the build, said before it, and nothing built or pushed (was: the image built and
    pushed, then the key or the bucket refused; the read-only key at the token's request, "... use a user key to mint
    a resolution token ...")."""
    root, module = project
    mod = load(module)
    repo = f"{REGISTRY}/sk-test-unchecked-{uuid.uuid4().hex[:12]}"
    lines: list[str] = []
    (tmp_path / "server").mkdir()
    with serve(tmp_path / "server") as server:
        if case == "revoked key":
            url, key = server.url, auth.create_key(server.store.engine, "alice")
            auth.revoke_key(server.store.engine, "alice")
            says = rf"API key missing or invalid for {server.url} \(invalid or revoked API key"
        elif case == "read-only key":
            url, key = server.url, auth.create_key(server.store.engine, "viewer", read_only=True)
            says = r"^key 'viewer' is read-only: resolve with a user key \(\$SEMATIC_K8S_API_KEY"
        elif case == "not a sematic-k8s server":
            url, key = f"http://{REGISTRY}", server.key
            says = rf"GET /api/v1/runs on {url}: HTTP 404: .*\({url} does not answer like a sematic-k8s server"
        elif case == "nothing answers":
            monkeypatch.setenv(settings.RETRY_WINDOW_ENV, "1")
            url, key = f"http://127.0.0.1:{free_port()}", server.key
            says = rf"cannot reach the sematic-k8s server at {url} \(tried for 1 s\)"
        else:
            url, key = server.url, server.key
            missing = f"sk-missing-{uuid.uuid4().hex[:12]}"
            s3_env = f"s3://{missing}/artifacts"
            says = rf"S3 bucket '{missing}' does not exist at "
        resolver = sk.CloudResolver(server=url, api_key=key, storage=s3_env, registry=repo, base_image=infra,
                                    project_root=str(root), progress=lines.append)
        with pytest.raises((ServerError, StorageError), match=says):
            mod.pipeline(1).resolve(resolver)
    assert not [line for line in lines if line.startswith(("context:", "build", "push", "image:"))], lines
    name = repo.partition("/")[2]
    assert httpx.get(f"http://{REGISTRY}/v2/{name}/tags/list", timeout=10).status_code == 404  # never pushed
    assert docker_client().images.list(name=repo) == []  # nor built


def test_cloud_failure_reaches_the_caller_and_the_cli(infra, s3_env, project, tmp_path):
    root, module = project
    mod = load(module)
    (tmp_path / "server").mkdir()
    with serve(tmp_path / "server") as server:
        resolver = sk.CloudResolver(server=server.url, api_key=server.key, storage=s3_env,
                                    registry=f"{REGISTRY}/sk-test-cloud", base_image=infra,
                                    project_root=str(root), poll_interval=0.2, progress=lambda _: None)
        f = mod.failing()
        with pytest.raises(sk.ResolutionFailed, match="exploded on 1") as e:
            f.resolve(resolver)
        assert "about to explode" in str(e.value)  # the worker's last log lines
        # shown escaped but for the colour: the message is printed to whoever reads it (was: as the func wrote it)
        assert "\x1b]" not in str(e.value) and "\u202e" not in str(e.value)
        assert "about to explode \\x1b]52;c;ZXZpbA==\\x07\x1b[31mred\x1b[0m\\u202e" in str(e.value)
        assert 'raise RuntimeError(f"exploded on {x}")' in str(e.value)  # its traceback: the run read whole
        assert e.value.error == server.store.get_run(e.value.run_id).error  # not a listing's excerpt of it
        failed = e.value.run_id
        shown = CliRunner().invoke(cli, ["--home", str(tmp_path / "server"), "runs", "show", failed])
        assert 'raise RuntimeError(f"exploded on {x}")' in shown.output
        logs = CliRunner().invoke(cli, ["--home", str(tmp_path / "server"), "logs", failed])
        assert logs.exit_code == 0 and "about to explode" in logs.output  # read from the run's S3 storage
        with pytest.MonkeyPatch.context() as mp:  # the same CLI against the server
            mp.setenv("SEMATIC_K8S_SERVER", server.url)
            mp.setenv("SEMATIC_K8S_API_KEY", server.key)
            listed = CliRunner().invoke(cli, ["runs", "list", "--root-id", f.id, "--state", "failed"])
        assert listed.exit_code == 0 and failed in listed.output
        assert Path(tmp_path / "server").exists()


@contextlib.contextmanager
def rerunning_server(tmp_path: Path, s3_env: str) -> Iterator[Any]:
    """A server (its home under ``tmp_path``) that re-runs the test registry's cloud resolutions with the docker
    launcher, from storage ``s3_env``."""
    (tmp_path / "server").mkdir()
    reruns = RerunConfig(launcher="docker", allow_docker=True, image_repositories=(f"{REGISTRY}/sk-test-cloud",),
                         storage_url=s3_env)
    with serve(tmp_path / "server", config=ServerConfig(reruns=reruns)) as server:
        yield server


def project_resolver(server: Any, s3_env: str, base: str, tmp_path: Path) -> sk.CloudResolver:
    """A CloudResolver recording to ``server`` that builds the project under ``tmp_path`` on image ``base``."""
    return sk.CloudResolver(server=server.url, api_key=server.key, storage=s3_env, registry=f"{REGISTRY}/sk-test-cloud",
                            base_image=base, project_root=str(tmp_path / "project"), poll_interval=0.2,
                            progress=lambda _: None)


def server_rerun(server: Any, storage: Any, resolution_id: str) -> Any:
    """Ask the server to re-run ``resolution_id``; the new resolution once it ended, or True once the marker a
    refused import or global would write is in ``storage``."""
    with server.client() as http:
        accepted = http.post(f"/api/v1/resolutions/{resolution_id}/rerun", json={})
    assert accepted.status_code == 202, accepted.text
    new_id = accepted.json()["resolution_id"]
    return wait_for(lambda: storage.exists(MARKER_KEY) or (
        (r := server.store.get_resolution(new_id)) and r.state in ("resolved", "failed") and r),
        timeout=120, what=f"the rerun {new_id} to end")


SMALL_PIPELINE = '''
    import sematic_k8s as sk

    @sk.func
    def double(x: int) -> int:
        return 2 * x

    @sk.func
    def add_one(x: int) -> int:
        return x + 1

    @sk.func
    def pipeline(n: int) -> int:
        return add_one(double(n))
'''
MARKER_MODULE = "sk_rerun_marker"
MARKER_KEY = "rerun-marker/imported"
STDLIB_MARKER_MODULE = "sk_stdlib_marker"  # a module in the image's standard-library directory
MARKER_SOURCE = f'''
import json, os
from sematic_k8s.storage.urls import storage_from_url
url = os.environ.get("SEMATIC_K8S_STORAGE") or json.loads(os.environ["SEMATIC_K8S_DRIVER"])["storage_url"]
storage_from_url(url).put("{MARKER_KEY}", b"imported")
class Thing:
    pass
'''


def marker_base_image(base: str) -> tuple[str, str]:
    """``base`` with a module in site-packages, and one in the standard library's directory, whose import puts
    :data:`MARKER_KEY` in the driver's (or worker's) storage: (the image, the site-packages directory). Not project
    code: a rerun must never import them as funcs (nor the second for a value: not an installed library)."""
    import base64
    import io

    encoded = base64.b64encode(MARKER_SOURCE.encode()).decode()
    dockerfile = f"FROM {base}\nUSER 0:0\n" + "".join(
        f"RUN python -c \"import base64, pathlib, sysconfig; pathlib.Path(sysconfig.get_paths()['{where}'], "
        f"'{module}.py').write_bytes(base64.b64decode('{encoded}'))\"\n"
        for where, module in (("purelib", MARKER_MODULE), ("stdlib", STDLIB_MARKER_MODULE)))
    tag = "local/sk-test-marker-base:1"
    client = docker_client()
    client.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=tag, rm=True)
    purelib = client.containers.run(tag, ["python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                    remove=True).decode().strip()
    return tag, purelib


def test_a_server_rerun_loads_only_the_images_packaged_code(infra, s3_env, tmp_path):
    """A rerun the server starts imports funcs only from the project files its image packaged: records naming a
    module of site-packages (by name, or by source file and source map) or the standard library fail at once,
    recorded with the reason, and the module is never imported; a rerun of the pipeline itself still works."""
    from sematic_k8s.storage.urls import storage_from_url
    from serving import record_resolution

    base, purelib = marker_base_image(infra)
    storage = storage_from_url(s3_env)
    with user_project(tmp_path / "project", "smallpipe", SMALL_PIPELINE) as module, \
            rerunning_server(tmp_path, s3_env) as server:
        f = load(module).pipeline(4)
        assert f.resolve(project_resolver(server, s3_env, base, tmp_path)) == 9
        image = server.store.get_resolution(f.id).image

        rerun = functools.partial(server_rerun, server, storage)

        done = rerun(f.id)  # the pipeline's own root func: re-run from its image
        assert done.state == "resolved", done.error
        assert server.store.get_artifact(server.store.get_run(done.id).output_id).summary == 9

        hostile = {  # root func path, source file, source map: as any key holder can record them
            f"{MARKER_MODULE}:pipeline": (None, None),
            "__main__:pipeline": (f"/home/me/proj/{MARKER_MODULE}.py", f"/home/me/proj={purelib}"),
            "os:system": (None, None),
        }
        for func_path, (source_file, source_map) in hostile.items():
            extra = {"source_map": source_map} if source_map else {}
            recorded = record_resolution(server.url, server.key, kind="cloud", image=image, func_path=func_path,
                                         source_file=source_file, storage_url=s3_env, **extra)
            failed = rerun(recorded)
            assert not storage.exists(MARKER_KEY), f"the rerun of {func_path} imported {MARKER_MODULE}"
            assert failed.state == "failed" and failed.rerun_of == recorded
            module_name = MARKER_MODULE if func_path.startswith("__main__") else func_path.partition(":")[0]
            assert failed.error.startswith(f"root func {func_path} is not in this image's packaged code (/app): "
                                           f"module {module_name} is "), failed.error
            assert failed.error.endswith("a rerun runs only the pipeline's own funcs") and "\n" not in failed.error
        listed = CliRunner().invoke(cli, ["--home", str(tmp_path / "server"), "resolutions", "list", "--state",
                                          "failed", "-o", "json"])
        assert {r["id"]: r["error"] for r in json.loads(listed.output)["items"]}[failed.id] == failed.error


VALUES_PIPELINE = '''
    import dataclasses
    import datetime

    import sematic_k8s as sk

    @dataclasses.dataclass
    class Reading:
        at: datetime.datetime
        values: dict

    class Box:  # not plain data: pickled
        def __init__(self, reading: Reading) -> None:
            self.reading = reading

    @sk.func(inline=False)
    def measure(r: Reading) -> Box:
        return Box(r)

    @sk.func(inline=False)
    def total(b: Box) -> int:
        return sum(b.reading.values["xs"]) + len(b.reading.values["tags"]) + b.reading.at.year

    @sk.func(inline=False)
    def expand(r: Reading) -> int:  # a composition in a worker: its Futures come back pickled
        return total(measure(r))

    @sk.func
    def pipeline(r: Reading) -> int:
        return expand(r)
'''


def os_system_pickle(command: str) -> bytes:
    """A pickle (protocol 2) naming ``os.system`` and calling it with ``command`` when loaded, as a client can write."""
    arg = command.encode()
    return b"\x80\x02cos\nsystem\nX" + len(arg).to_bytes(4, "little") + arg + b"\x85R."


def test_a_server_rerun_loads_only_allowed_globals_from_artifacts(infra, s3_env, tmp_path):
    """Values a rerun the server started loads (in its driver, and in the workers it starts) may name only globals
    of the image's packaged code, of libraries installed in site-packages, or a few value types of the standard
    library: a recorded input that names ``os.system`` (a pickle), or a class of a module in the standard library's
    directory (JSON), fails the run at once, recorded with the reason, and nothing of it runs; a pipeline whose
    values are its own dataclass, a datetime, builtin containers and a class of its own (pickled) re-runs."""
    import base64
    import datetime

    from sematic_k8s.storage.urls import storage_from_url
    from serving import record_resolution

    base, _ = marker_base_image(infra)
    storage = storage_from_url(s3_env)
    with user_project(tmp_path / "project", "valuespipe", VALUES_PIPELINE) as module, \
            rerunning_server(tmp_path, s3_env) as server:
        mod = load(module)
        reading = mod.Reading(datetime.datetime(2024, 5, 6, 7, 8, 9), {"xs": [1, 2, 3], "tags": ("a", "b")})
        f = mod.pipeline(reading)
        assert f.resolve(project_resolver(server, s3_env, base, tmp_path)) == 2024 + 6 + 2
        image = server.store.get_resolution(f.id).image

        rerun = functools.partial(server_rerun, server, storage)

        done = rerun(f.id)  # its dataclass (JSON), its Box (pickled), its Futures (pickled by a worker)
        assert done.state == "resolved", done.error
        assert server.store.get_artifact(server.store.get_run(done.id).output_id).summary == 2024 + 6 + 2

        marker = base64.b64encode(MARKER_SOURCE.encode()).decode()
        system = os_system_pickle(f"python -c \"import base64; exec(base64.b64decode('{marker}'))\"")
        stdlib_class = json.dumps({"__sk__": "dataclass", "cls": f"{STDLIB_MARKER_MODULE}:Thing", "v": {}}).encode()
        hostile = [  # (root func, its parameter, the input's format and bytes, what it names, why it is refused)
            ("pipeline", "r", "pickle", system, "os.system", "os is of the standard library"),  # in the driver
            ("total", "b", "pickle", system, "os.system", "os is of the standard library"),  # in a worker
            ("pipeline", "r", "json", stdlib_class, f"{STDLIB_MARKER_MODULE}.Thing",
             f"module {STDLIB_MARKER_MODULE} is /"),
        ]
        for func, param, fmt, payload, name, why in hostile:
            recorded = record_resolution(server.url, server.key, kind="cloud", image=image,
                                         func_path=f"{module}:{func}", storage_url=s3_env,
                                         inputs={param: (fmt, payload)}, storage=storage)
            failed = rerun(recorded)
            assert not storage.exists(MARKER_KEY), f"the rerun of {func} loading {name} ran it"
            assert failed.state == "failed" and failed.rerun_of == recorded
            artifact = server.store.get_run(recorded).inputs[param]
            run = next(r for r in server.store.runs_of_root(failed.id) if r.func_name == func)
            assert run.state == "failed" and run.error["message"].startswith(
                f"artifact {artifact} names {name}, which a rerun started by the server may not load: {why}"), run.error
            assert "\n" not in run.error["message"] and run.error["message"] in failed.error

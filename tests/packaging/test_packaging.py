"""Packaging: context hashing, Dockerfile layering, and real builds/pushes against dockerd + the registry."""

from __future__ import annotations

import io
import re
import shutil
import time
import uuid
from pathlib import Path

import pytest

from sematic_k8s.packaged import MANIFEST, PackagedCode
from sematic_k8s.packaging import BuildError, ImageRef, compute_context, ensure_image, parse_steps
from sematic_k8s.packaging.build import base_platform, registry_platform
from sematic_k8s.packaging.context import CODE_DIR, source_map
from sematic_k8s.packaging.dockerfile import render_dockerfile
from sematic_k8s.packaging.ignore import DockerIgnore
from sematic_k8s.packaging.wheels import build_sematic_wheel, sematic_dist
from sematic_k8s.progress import Display
from sematic_k8s.registry import Repo, manifest_digest
from sematic_k8s.specs import IMAGE_HOME, IMAGE_UID

try:
    import infra
except ImportError:  # pragma: no cover - run from the repository root without pytest's path insertion
    from tests import infra

BASE = "local/python-base:bookworm"
DIGEST_REF = re.compile(r"^[^@]+@sha256:[0-9a-f]{64}$")


def make_project(root: Path, nonce: str = "0") -> Path:
    """A small user project: a package with a data file, requirements, and files that must be left out."""
    pkg = root / "userpipe"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(f'NONCE = "{nonce}"\n')
    (pkg / "steps.py").write_text("import sematic_k8s as sk\n\n\n@sk.func\ndef double(x: int) -> int:\n"
                                  "    return 2 * x\n\n\nVALUE = 1\n")
    (pkg / "data.json").write_text('{"k": 1}\n')
    (root / "requirements.txt").write_text("tomli-w>=1.0\n")
    (root / ".dockerignore").write_text("*.log\nscratch/\n!scratch/keep.txt\n")
    for junk in [".git/HEAD", "__pycache__/x.pyc", "userpipe/__pycache__/steps.cpython-311.pyc", ".venv/lib/x.py",
                 ".venv-other/y.py", "build/lib/z.py", "run.log", "scratch/big.bin", "userpipe.egg-info/PKG-INFO"]:
        (root / junk).parent.mkdir(parents=True, exist_ok=True)
        (root / junk).write_text("junk\n")
    (root / "scratch" / "keep.txt").write_text("kept\n")
    return root


# -- context hashing (no docker) ---------------------------------------------------------------------------


def test_context_files_follow_excludes_and_dockerignore(tmp_path):
    ctx = compute_context(make_project(tmp_path), BASE)
    assert ctx.files == ("requirements.txt", "scratch/keep.txt", "userpipe/__init__.py", "userpipe/data.json",
                         "userpipe/steps.py")
    assert ctx.deps.source == "requirements.txt" and ctx.deps.lines == ["tomli-w>=1.0"]
    assert source_map(tmp_path) == f"{tmp_path.resolve()}={CODE_DIR}"


def test_context_hash_is_deterministic_and_tracks_what_matters(tmp_path):
    root = make_project(tmp_path / "a")
    first = compute_context(root, BASE)
    assert compute_context(root, BASE) == first and compute_context(root, BASE).context_hash == first.context_hash
    # same content elsewhere, other mtimes: same hash
    shutil.copytree(root, tmp_path / "b")
    time.sleep(0.01)
    (tmp_path / "b" / "userpipe" / "steps.py").touch()
    assert compute_context(tmp_path / "b", BASE).context_hash == first.context_hash
    # ignored files do not count
    (root / "run.log").write_text("changed\n")
    (root / "other.log").write_text("new\n")
    (root / "scratch" / "big.bin").write_text("changed\n")
    (root / ".git" / "HEAD").write_text("changed\n")
    (root / "userpipe" / "__pycache__" / "new.pyc").write_text("x")
    assert compute_context(root, BASE).context_hash == first.context_hash
    # a code edit changes the context hash, not the deps hash
    (root / "userpipe" / "steps.py").write_text((root / "userpipe" / "steps.py").read_text() + "# edit\n")
    edited = compute_context(root, BASE)
    assert edited.context_hash != first.context_hash and edited.deps_hash == first.deps_hash
    # so do a new file, a kept (negated) file, and a renamed file
    hashes = {edited.context_hash}
    (root / "userpipe" / "extra.py").write_text("X = 1\n")
    hashes.add(compute_context(root, BASE).context_hash)
    (root / "scratch" / "keep.txt").write_text("changed\n")
    hashes.add(compute_context(root, BASE).context_hash)
    (root / "userpipe" / "extra.py").rename(root / "userpipe" / "extra2.py")
    hashes.add(compute_context(root, BASE).context_hash)
    assert len(hashes) == 4
    # requirements and the base image change both hashes
    before = compute_context(root, BASE)
    (root / "requirements.txt").write_text("tomli-w>=1.0\nsix\n")
    reqs = compute_context(root, BASE)
    other_base = compute_context(root, "python:3.11-slim")
    other_version = compute_context(root, BASE, version="9.9.9")
    for changed in (reqs, other_base, other_version):
        assert changed.context_hash != before.context_hash and changed.deps_hash != before.deps_hash
    assert len({reqs.deps_hash, other_base.deps_hash, other_version.deps_hash, before.deps_hash}) == 4


def test_pyproject_dependencies_are_the_spec(tmp_path):
    (tmp_path / "mod.py").write_text("X = 1\n")
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "p"\nversion = "1"\ndependencies = ["six>=1", '
                                             '"tomli-w"]\n')
    ctx = compute_context(tmp_path, BASE)
    assert ctx.deps.source == "pyproject.toml" and ctx.deps.lines == ["six>=1", "tomli-w"]
    (tmp_path / "pyproject.toml").unlink()
    assert compute_context(tmp_path, BASE).deps.lines == []


def test_dockerignore_matching():
    ig = DockerIgnore(["# comment", "", "**/*.tmp", "/docs", "data/*.csv", "!data/keep.csv", "sub/**/out",
                       "a?c", "[xy].txt"])
    assert ig.ignored("x.tmp") and ig.ignored("deep/er/x.tmp")
    assert ig.ignored("docs") and ig.ignored("docs/index.md") and not ig.ignored("src/docs/x")
    assert ig.ignored("data/a.csv") and not ig.ignored("data/keep.csv") and not ig.ignored("data/sub/a.csv")
    assert ig.ignored("sub/out/f") and ig.ignored("sub/a/b/out") and not ig.ignored("sub/outer")
    assert ig.ignored("abc") and not ig.ignored("abbc")
    assert ig.ignored("x.txt") and not ig.ignored("z.txt")


def test_dockerfile_puts_dependencies_before_code(tmp_path):
    ctx = compute_context(make_project(tmp_path), BASE, setup=["echo setup"])
    text = render_dockerfile(ctx, "sematic_k8s-0.1.0-py3-none-any.whl")
    steps = [ln for ln in text.splitlines() if ln and not ln.startswith("#")]
    assert steps[0] == f"FROM {BASE}"

    def index(prefix: str) -> int:
        return next(i for i, s in enumerate(steps) if s.startswith(prefix))

    setup = index("RUN echo setup")
    runtime = index("RUN pip install --no-index --find-links /tmp/_sk/runtime")
    user = index("RUN pip install --no-index --find-links /tmp/_sk/user")
    sematic = index("RUN pip install --no-index --no-deps /tmp/_sk/sematic/sematic_k8s-0.1.0")
    code = index(f"COPY code {CODE_DIR}")
    assert setup < runtime < user < sematic < code - 1 and steps[code - 1] == f"COPY _sk/packaged-code.json {MANIFEST}"
    assert [s.split()[0] for s in steps[code + 1:]] == ["LABEL"]  # nothing but metadata after the code
    assert "--network" not in text and "pip install -r" not in text  # offline by default
    online = render_dockerfile(compute_context(tmp_path, BASE, network=True), "w.whl")
    assert "RUN pip install -r /tmp/_sk/user/requirements.txt" in online


def test_sematic_wheel_is_deterministic():
    name, data = build_sematic_wheel()
    again = build_sematic_wheel()
    assert again == (name, data)
    assert re.match(r"sematic_k8s-\d+\.\d+\.\d+\+src\.[0-9a-f]{12}-py3-none-any\.whl$", name)
    import io
    import zipfile

    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        names = zf.namelist()
        meta = zf.read(next(n for n in names if n.endswith("METADATA"))).decode()
    assert "sematic_k8s/__init__.py" in names and "sematic_k8s/packaging/build.py" in names
    assert not any("__pycache__" in n for n in names)
    assert "Requires-Dist: cloudpickle" in meta and 'extra == "s3"' in meta
    assert sematic_dist().requirements(["s3"])[-1].startswith("boto3")


def test_requirement_extras_and_python_version():
    from sematic_k8s.packaging.build import base_python_version
    from sematic_k8s.packaging.wheels import _split_extra

    assert _split_extra('boto3>=1.34; extra == "s3"') == ("boto3>=1.34", "s3")
    assert _split_extra('foo; python_version < "3.12" and extra == \'x\'') == ('foo; python_version < "3.12"', "x")
    assert _split_extra("click>=8") == ("click>=8", "")
    assert base_python_version("python:3.12-slim") == "3.12" and base_python_version(BASE) == "3.11"


def test_repo_parsing():
    assert Repo.parse("127.0.0.1:5000/team/app") == Repo("127.0.0.1:5000", "team/app")
    assert Repo.parse("127.0.0.1:5000/app").insecure and Repo.parse("localhost:5000/a").insecure
    assert not Repo.parse("ghcr.io/o/a").insecure and Repo.parse("ghcr.io/o/a").base_url == "https://ghcr.io"
    assert Repo.parse("python") == Repo("registry-1.docker.io", "library/python")


# -- real dockerd + registry -----------------------------------------------------------------------------------


class NoDocker:
    """A docker client that must not be used."""

    def __getattr__(self, name: str):
        raise AssertionError(f"docker was used ({name}) although nothing had to be built")


@pytest.fixture(scope="module")
def base_image() -> str:
    return infra.require_docker()


@pytest.fixture(scope="module")
def repo() -> str:
    return f"{infra.REGISTRY}/sematic-k8s-test"


@pytest.fixture(scope="module")
def client(base_image):
    return infra.docker_client()


@pytest.fixture(scope="module")
def built(tmp_path_factory, base_image, repo) -> tuple[Path, ImageRef, list[str]]:
    """A fresh project (unique nonce, so its code layer is new) built and pushed once for this module."""
    root = make_project(tmp_path_factory.mktemp("proj"), nonce=uuid.uuid4().hex)
    lines: list[str] = []
    started = time.monotonic()
    ref = ensure_image(root, repo, base_image, progress=lines.append)
    print(f"first build + push: {time.monotonic() - started:.1f}s")
    return root, ref, lines


def run_in(client, ref: str, code: str) -> str:
    return client.containers.run(ref, ["python", "-c", code], network_mode="host", remove=True).decode()


def test_build_push_returns_digest_and_image_runs(built, client, repo, base_image):
    root, ref, lines = built
    assert ref.built and DIGEST_REF.match(ref.digest_ref) and ref.repo == repo
    assert ref.context_hash == compute_context(root, base_image).context_hash
    assert manifest_digest(repo, ref.context_hash) == ref.digest  # tagged by the context hash in the registry
    assert ref.digest_ref in client.images.get(f"{repo}:{ref.context_hash}").attrs["RepoDigests"]
    assert any(re.match(r"Step \d+/\d+ : ", ln) for ln in lines) and any(ln.startswith("push ") for ln in lines)
    nonce = (root / "userpipe" / "__init__.py").read_text().split('"')[1]
    out = run_in(client, ref.digest_ref, "import sematic_k8s, sematic_k8s.worker, tomli_w, userpipe, "
                 "userpipe.steps, json, pathlib; print(userpipe.NONCE, userpipe.steps.VALUE, "
                 "json.loads(pathlib.Path('userpipe/data.json').read_text())['k'], pathlib.Path.cwd())")
    assert out.split() == [nonce, "1", "1", CODE_DIR]
    files = run_in(client, ref.digest_ref, "import os; print(sorted(os.listdir('.')))")
    assert ".git" not in files and "build" not in files and "run.log" not in files and "userpipe" in files


def test_the_image_runs_as_a_numeric_non_root_user_with_a_writable_home(built, client, base_image):
    """So that the kubelet can check runAsNonRoot and pods pass the Pod Security "restricted" level."""
    _, ref, _ = built
    assert client.images.get(ref.digest_ref).attrs["Config"]["User"] == f"{IMAGE_UID}:{IMAGE_UID}"
    out = run_in(client, ref.digest_ref, "import os, pathlib; (pathlib.Path.home() / 'x').write_text('ok'); "
                 "print(os.getuid(), os.getgid(), pathlib.Path.home())")
    assert out.split() == [str(IMAGE_UID), str(IMAGE_UID), IMAGE_HOME]


def test_the_image_is_built_for_the_base_images_platform_and_says_so(built, client, repo, base_image):
    _, ref, _ = built
    arch = client.images.get(base_image).attrs["Architecture"]
    assert ref.platform == arch and client.images.get(ref.digest_ref).attrs["Architecture"] == arch
    assert base_platform(client, base_image) == arch
    assert registry_platform(repo, ref.digest) == arch  # what a rerun that reuses the image learns


def test_one_line_edit_rebuilds_only_the_code_layer(built, client, repo, base_image):
    root, first, _ = built
    steps_py = root / "userpipe" / "steps.py"
    steps_py.write_text(steps_py.read_text().replace("VALUE = 1", "VALUE = 2"))
    started = time.monotonic()
    shown = Display(io.StringIO())  # what a pipe or a CI log gets: plain lines, then the summary
    second = ensure_image(root, repo, base_image, recorded=first, progress=shown)
    rebuild = time.monotonic() - started
    summary = shown.done()
    lines = shown.stream.getvalue().splitlines()
    assert any(re.fullmatch(r"build: step 1/\d+ FROM .*", line) for line in lines)
    assert any(re.fullmatch(r"push: layer [0-9a-f]+ pushed \(\d+/\d+\)", line) for line in lines)
    assert not any(line.startswith(("Step ", "Successfully", " ---> ", "Removing")) for line in lines)
    assert re.fullmatch(rf"image built in [\d.]+s, \d+ steps \(\d+ cached\), \d+ layers pushed: "
                        rf"{re.escape(second.digest_ref)}", summary) and lines[-1] == summary
    print(f"rebuild after a one-line edit: {rebuild:.1f}s")
    assert second.built and second.digest_ref != first.digest_ref and second.context_hash != first.context_hash
    steps = parse_steps(second.log)
    code = next(i for i, s in enumerate(steps) if s.instruction.startswith("COPY code "))
    assert all(s.cached for s in steps[1:code]), [(s.instruction, s.cached) for s in steps]
    assert not steps[code].cached
    assert any(s.instruction.startswith("RUN pip install") for s in steps[1:code])
    old_layers = client.images.get(first.digest_ref).attrs["RootFS"]["Layers"]
    new_layers = client.images.get(second.digest_ref).attrs["RootFS"]["Layers"]
    assert len(new_layers) == len(old_layers) and new_layers[:-1] == old_layers[:-1]
    assert new_layers[-1] != old_layers[-1]
    assert run_in(client, second.digest_ref, "import userpipe.steps; print(userpipe.steps.VALUE)").strip() == "2"
    packaged = PackagedCode.from_json(run_in(client, second.digest_ref, f"print(open({MANIFEST!r}).read())"))
    assert packaged.files == {f"{CODE_DIR}/{rel}" for rel in compute_context(root).files}  # what the build copied
    assert packaged.roots == (CODE_DIR, f"{CODE_DIR}/src")


def test_recorded_hash_builds_nothing(built, repo, base_image, tmp_path):
    root, first, _ = built
    copy = shutil.copytree(root, tmp_path / "copy")  # the edit test may have run: rebuild the first state
    (copy / "userpipe" / "steps.py").write_text((copy / "userpipe" / "steps.py").read_text()
                                                .replace("VALUE = 2", "VALUE = 1"))
    assert compute_context(copy, base_image).context_hash == first.context_hash
    lines: list[str] = []
    again = ensure_image(copy, repo, base_image, recorded=(first.context_hash, first.digest_ref),
                         progress=lines.append, client=NoDocker())
    assert again == ImageRef(first.digest_ref, first.context_hash, False)
    assert again.platform == first.platform  # read from the registry, without docker
    assert any("reusing recorded" in ln for ln in lines)


def test_tag_in_registry_builds_nothing(built, repo, base_image, tmp_path):
    root, first, _ = built
    copy = shutil.copytree(root, tmp_path / "copy")
    (copy / "userpipe" / "steps.py").write_text((copy / "userpipe" / "steps.py").read_text()
                                                .replace("VALUE = 2", "VALUE = 1"))
    stale = ("0" * 64, "x@sha256:" + "0" * 64)  # a recorded image for other code
    again = ensure_image(copy, repo, base_image, recorded=stale, progress=lambda _: None, client=NoDocker())
    assert again == ImageRef(first.digest_ref, first.context_hash, False)


def test_failing_run_step_raises_build_error(tmp_path, repo, base_image):
    make_project(tmp_path)
    with pytest.raises(BuildError) as err:
        ensure_image(tmp_path, repo, base_image, progress=lambda _: None,
                     setup=[f"echo about to fail {uuid.uuid4().hex[:6]} && exit 3"])
    e = err.value
    assert e.step and re.match(r"Step \d+/\d+ : RUN echo about to fail \w+ && exit 3", e.step)
    assert any(line.startswith("about to fail") for line in e.output)
    assert "returned a non-zero code: 3" in e.reason
    assert e.step in str(e) and "about to fail" in str(e)


def test_a_shell_syntax_error_in_a_step_reaches_the_error_in_plain_words(tmp_path, repo, base_image):
    """A setup command the shell cannot parse: the BuildError names the step and quotes the shell's words as they
    are (the legacy builder colours a step's stderr: no escape codes, no "Removing intermediate container" after)."""
    make_project(tmp_path)
    nonce = uuid.uuid4().hex[:6]
    with pytest.raises(BuildError) as err:
        ensure_image(tmp_path, repo, base_image, progress=lambda _: None, setup=[f"if then {nonce}"])
    e = err.value
    assert e.output == ['/bin/sh: 1: Syntax error: "then" unexpected'], e.output
    assert str(e) == (f"docker build failed at {e.step}: The command '/bin/sh -c if then {nonce}' returned a non-zero "
                      f"code: 2\n    /bin/sh: 1: Syntax error: \"then\" unexpected"), str(e)
    assert re.fullmatch(rf"Step \d+/\d+ : RUN if then {nonce}", e.step or "")


def test_a_dockerfile_the_engine_cannot_parse_is_a_build_error_quoting_its_line(tmp_path, repo, base_image):
    """A setup command whose line break ends its RUN instruction: the engine refuses the Dockerfile; the BuildError
    says so in its words and quotes the line it names (was: the docker SDK's APIError, with the request's URL)."""
    make_project(tmp_path)
    nonce = uuid.uuid4().hex[:6]
    with pytest.raises(BuildError) as err:
        ensure_image(tmp_path, repo, base_image, progress=lambda _: None, setup=[f"echo one\nBOGUS {nonce}"])
    first, *rest = str(err.value).splitlines()
    assert re.fullmatch(r"docker build failed: the Docker engine refused to start it: dockerfile parse error line "
                        r"(\d+): unknown instruction: BOGUS", first), first
    line = re.search(r"line (\d+)", first).group(1)  # type: ignore[union-attr]
    assert rest == [f"    line {line} of the Dockerfile: BOGUS {nonce}"], rest


@pytest.mark.parametrize("engine", ["stopped", "hung"])
def test_a_docker_engine_that_does_not_answer_is_said_plainly_to_the_caller_of_resolve(tmp_path, monkeypatch, engine):
    """A socket nothing listens on (the engine stopped), or one that takes connections and never answers (hung):
    resolve() raises DockerUnavailable naming the engine and what to do, within the probe's timeout."""
    import importlib
    import socket

    import sematic_k8s as sk
    from projects import user_project
    from sematic_k8s import docker_engine
    from sematic_k8s.errors import DockerUnavailable
    from serving import serve

    path = tmp_path / "docker.sock"
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(path))
    if engine == "hung":
        sock.listen(8)  # connections wait in the backlog: accepted by the kernel, never answered
    else:
        sock.close()
    monkeypatch.setenv("DOCKER_HOST", f"unix://{path}")
    monkeypatch.setattr(docker_engine, "PROBE_TIMEOUT", 1.0)
    lines: list[str] = []
    source = "import sematic_k8s as sk\n\n@sk.func(inline=False)\ndef one() -> int:\n    return 1\n"
    (tmp_path / "server").mkdir()  # a server that answers: it is checked before the build
    with user_project(tmp_path / "project", "enginepipe", source) as module, serve(tmp_path / "server") as server:
        resolver = sk.CloudResolver(server=server.url, api_key=server.key, storage=(tmp_path / "s").as_uri(),
                                    registry=f"{infra.REGISTRY}/sk-test-no-engine",
                                    project_root=str(tmp_path / "project"), progress=lines.append)
        with pytest.raises(DockerUnavailable) as err:
            importlib.import_module(module).one().resolve(resolver)
    sock.close()
    why = "timed out" if engine == "hung" else "Connection refused"
    assert str(err.value) == (f"the Docker engine at unix://{path} does not answer ({why}): is it running? Start it, "
                              "or set $DOCKER_HOST to one that is"), str(err.value)
    assert any(line.startswith("context:") for line in lines)  # what came before is shown


def test_a_push_the_registry_refuses_says_what_to_check(client, base_image, monkeypatch):
    """The registry stopped (nothing listens at its address): tried again for the retry window (1 s here), then the
    push fails naming it, what it did, the engine's words, and what to check."""
    import socket

    from sematic_k8s.errors import PushError, RegistryUnavailable
    from sematic_k8s.packaging.push import push_image
    from sematic_k8s.settings import RETRY_WINDOW_ENV

    monkeypatch.setenv(RETRY_WINDOW_ENV, "1")
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there now
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    repo = f"127.0.0.1:{port}/sk-test-stopped-registry"
    client.images.get(base_image).tag(repo, "t")
    lines: list[str] = []
    try:
        with pytest.raises(RegistryUnavailable) as err:
            push_image(client, repo, "t", progress=lines.append)
    finally:
        client.images.remove(f"{repo}:t")
    text = str(err.value)
    assert isinstance(err.value, PushError)
    assert text.startswith(f"push of {repo}:t failed: the registry 127.0.0.1:{port} refused the connection, still "
                           "after 1 s of tries (the Docker engine said: ") and "connection refused" in text, text
    assert text.endswith("); is it running, and reachable from the Docker engine at that address? Start it (or set "
                         "the registry to one that is), then try again"), text
    assert any(line.startswith(f"registry: 127.0.0.1:{port} refused the connection to the push of {repo}:t")
               for line in lines), lines


def test_worker_image_builds_and_runs(base_image, client):
    from sematic_k8s.packaging.images import build_image

    ref = build_image("worker", f"{infra.REGISTRY}/sematic-k8s-worker:test", base_image=base_image, push=True,
                      progress=lambda _: None)
    assert DIGEST_REF.match(ref)
    assert client.images.get(ref).attrs["Config"]["User"] == f"{IMAGE_UID}:{IMAGE_UID}"
    out = run_in(client, ref, "import sematic_k8s, sematic_k8s.worker, sematic_k8s.driver, boto3, os; "
                 "print(sematic_k8s.__version__, os.getcwd())")
    assert out.split()[1] == "/app"


def test_server_image_builds(base_image, client):
    from sematic_k8s.packaging.images import build_image

    image_id = build_image("server", f"{infra.REGISTRY}/sematic-k8s-server:test", base_image=base_image,
                           progress=lambda _: None)
    image = client.images.get(image_id)
    assert image.attrs["Config"]["Cmd"][:2] == ["sematic-k8s", "server"]
    out = run_in(client, image_id, "import fastapi, uvicorn, alembic, psycopg, kubernetes, sematic_k8s_server.app; "
                 "print('ok')")  # kubernetes: reruns start driver Jobs, the secrets hook makes Secrets
    assert out.strip() == "ok"


def _wheel(directory: Path, tag: str) -> Path:
    """A minimal valid wheel of ``demo`` 1.0 for the platform ``tag`` (e.g. manylinux_2_17_aarch64)."""
    import zipfile

    path = directory / f"demo-1.0-cp311-cp311-{tag}.whl"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("demo/__init__.py", "")
        zf.writestr("demo-1.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: demo\nVersion: 1.0\n")
        zf.writestr("demo-1.0.dist-info/WHEEL", f"Wheel-Version: 1.0\nRoot-Is-Purelib: false\nTag: cp311-cp311-{tag}\n")
        zf.writestr("demo-1.0.dist-info/RECORD", "")
    return path


def test_an_arm64_base_image_gets_arm64_images_and_aarch64_wheels(client, tmp_path, monkeypatch):
    """An arm64 base (FROM scratch: building it needs no emulation) is read as arm64, and the wheels fetched for
    it are the aarch64 ones, whatever the host's architecture (pip download --platform ..._aarch64)."""
    import io
    import tarfile

    from sematic_k8s.packaging.build import WHEEL_ARCH, docker_build
    from sematic_k8s.packaging.wheels import fetch_wheels

    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        for name, data in (("Dockerfile", b"FROM scratch\nCOPY x /x\n"), ("x", b"x")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    context.seek(0)
    tag = f"{infra.REGISTRY}/sk-arm64-base:test"
    docker_build(client, context, tag, platform="arm64", progress=lambda _: None)
    assert base_platform(client, tag) == "arm64"
    index = tmp_path / "index"
    index.mkdir()
    _wheel(index, "manylinux_2_17_x86_64")
    _wheel(index, "manylinux_2_17_aarch64")
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # a local index only: nothing leaves this machine
    monkeypatch.setenv("PIP_FIND_LINKS", str(index))
    wheels = fetch_wheels(["demo==1.0"], python_version="3.11", arch=WHEEL_ARCH["arm64"],
                          cache_dir=tmp_path / "cache")
    assert [p.name for p in wheels.glob("*.whl")] == ["demo-1.0-cp311-cp311-manylinux_2_17_aarch64.whl"]


def _pure_wheel(directory: Path, version: str) -> Path:
    """A minimal valid pure-Python wheel of ``demo`` at ``version``."""
    import zipfile

    info = f"demo-{version}.dist-info"
    path = directory / f"demo-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("demo/__init__.py", "")
        zf.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: demo\nVersion: {version}\n")
        zf.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        zf.writestr(f"{info}/RECORD", "")
    return path


def test_image_wheels_are_the_versions_installed_here_else_what_pip_resolves(tmp_path, monkeypatch):
    """An image's wheels are constrained to the versions this environment has installed (pip, left to itself, may
    backtrack for many minutes: boto3 with kubernetes did); a requirement those versions cannot meet is resolved
    again without them."""
    import sys

    from sematic_k8s.packaging.wheels import fetch_wheels, host_pins

    index = tmp_path / "index"
    index.mkdir()
    for version in ("1.0", "2.0"):
        _pure_wheel(index, version)
    site = tmp_path / "site"  # "demo" 1.0 installed here, as importlib.metadata sees it
    (site / "demo-1.0.dist-info").mkdir(parents=True)
    (site / "demo-1.0.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: demo\nVersion: 1.0\n")
    monkeypatch.setattr(sys, "path", [str(site), *sys.path])
    assert "demo==1.0" in host_pins()
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # a local index only: nothing leaves this machine
    monkeypatch.setenv("PIP_FIND_LINKS", str(index))
    said: list[str] = []
    pinned = fetch_wheels(["demo>=1.0"], cache_dir=tmp_path / "cache", progress=said.append)
    assert [p.name for p in pinned.glob("*.whl")] == ["demo-1.0-py3-none-any.whl"]  # not the newest, 2.0
    newer = fetch_wheels(["demo>=2.0"], cache_dir=tmp_path / "cache", progress=said.append)
    assert [p.name for p in newer.glob("*.whl")] == ["demo-2.0-py3-none-any.whl"]
    assert any("resolving again without them" in line for line in said)
    assert not (newer / "constraints.txt").exists() and (newer / "requirements.txt").read_text() == "demo>=2.0\n"


def test_a_requirement_that_cannot_be_installed_is_a_build_error_naming_it(tmp_path, monkeypatch):
    """A requirement no index has, asked of the host's pip: the BuildError a failed docker build raises, its first
    line naming the requirement and what to check, then pip's ERROR lines only (not the command, not its chatter)."""
    from sematic_k8s.packaging.wheels import fetch_wheels

    index = tmp_path / "index"
    index.mkdir()
    _pure_wheel(index, "1.0")
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # a local index only: nothing leaves this machine
    monkeypatch.setenv("PIP_FIND_LINKS", str(index))
    with pytest.raises(BuildError) as caught:
        fetch_wheels(["demo==1.0", "no-such-requirement-sk8s==1.0"], cache_dir=tmp_path / "cache")
    first, *rest = str(caught.value).splitlines()
    assert first.startswith("docker build failed: requirement no-such-requirement-sk8s==1.0 could not be installed: "
                            "no release of it that pip can see matches"), first
    assert "check its name and version" in first and "pip wheel" not in first
    assert rest and all(line.strip().startswith("ERROR: ") for line in rest), rest
    assert any("No matching distribution found for no-such-requirement-sk8s==1.0" in line for line in rest), rest
    assert not list((tmp_path / "cache").iterdir())  # nothing half-fetched is cached

"""The children a Docker driver starts with multiprocessing (spawn, forkserver: a pipeline's code run in the driver,
or a library it imports) start as the driver did, with site: its ``.pth`` files' import hooks run (an editable
install's finder, as setuptools writes it), so what the driver imports they import too. Multiprocessing starts them
with the interpreter's own flags; :data:`~sematic_k8s.specs.DOCKER_DRIVER_COMMAND` is a ``python -S`` (it blocks
every signal before site's import). In an image made before the relay (a rerun of an older resolution) it ran the
driver in that interpreter (runpy): its children got ``-S``, no site, and ``ModuleNotFoundError`` for a module an
editable install gives. Now it execs a fresh ``python -m sematic_k8s.driver``; under the relay, the relay starts the
driver so already. Real containers of the local base image: the image's package stood in for by a directory (on
PYTHONPATH), without the relay (as before it) or with this repository's relay, and a driver whose children import
the editable module."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import sematic_k8s
from infra import docker_client, require_docker
from sematic_k8s.specs import DOCKER_DRIVER_COMMAND

# an editable install's shape in site-packages (setuptools' __editable__ finder): a .pth whose import line installs
# a finder for a package kept out of sys.path
FINDER = '''
import importlib.util
import sys


class Finder:
    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if name == "editable_lib":
            return importlib.util.spec_from_file_location(name, "/src/editable_lib/__init__.py")
        return None


def install():
    sys.meta_path.append(Finder)
'''
DRIVER = '''
import multiprocessing
import sys


def child():
    import editable_lib
    print(editable_lib.WORDS, "in a child, flags", sys.flags.no_site, flush=True)


if __name__ == "__main__":
    import editable_lib  # the driver's own import
    for method in ("spawn", "forkserver"):
        process = multiprocessing.get_context(method).Process(target=child)
        process.start()
        process.join()
        print(method, "exit code", process.exitcode, flush=True)
'''
DOCKERFILE = '''FROM {base}
COPY site/ /tmp/site/
RUN cp /tmp/site/* "$(python -c 'import site; print(site.getsitepackages()[0])')" && rm -r /tmp/site
COPY src/ /src/
COPY before/ /before/
COPY relay/ /relay/
'''


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The base image with the editable module installed, and two stand-ins of the package: ``/before`` (no relay)
    and ``/relay`` (this repository's relay and the specs it imports)."""
    base = require_docker()
    context = tmp_path_factory.mktemp("children-image")
    (context / "site").mkdir()
    (context / "site" / "__editable__.editable_lib-1.0.pth").write_text(
        "import __editable___editable_lib_finder; __editable___editable_lib_finder.install()\n")
    (context / "site" / "__editable___editable_lib_finder.py").write_text(FINDER)
    (context / "src" / "editable_lib").mkdir(parents=True)
    (context / "src" / "editable_lib" / "__init__.py").write_text('WORDS = "editable_lib imported"\n')
    package = Path(sematic_k8s.__file__).parent
    for stand_in, relay in (("before", False), ("relay", True)):
        root = context / stand_in / "sematic_k8s"
        root.mkdir(parents=True)
        (root / "__init__.py").write_text("")
        (root / "driver.py").write_text(DRIVER)
        if relay:
            for name in ("driver_relay.py", "specs.py"):
                shutil.copy(package / name, root / name)
    (context / "Dockerfile").write_text(DOCKERFILE.format(base=base))
    tag = f"sk-test-driver-children:{uuid.uuid4().hex[:12]}"
    client = docker_client()
    client.images.build(path=str(context), tag=tag, rm=True)
    yield tag
    client.images.remove(tag, force=True)


@pytest.mark.parametrize("stand_in", ["before", "relay"])
def test_a_docker_drivers_multiprocessing_children_import_what_it_imports(image: str, stand_in: str) -> None:
    client = docker_client()
    container: Any = client.containers.run(image, command=list(DOCKER_DRIVER_COMMAND), detach=True,
                                           network_mode="none", working_dir=f"/{stand_in}",
                                           environment={"PYTHONPATH": f"/{stand_in}"})
    try:
        code = container.wait(timeout=120)["StatusCode"]
        log = container.logs(stdout=True, stderr=True).decode(errors="replace")
    finally:
        container.remove(force=True)
    assert "ModuleNotFoundError" not in log, log
    assert code == 0, log
    for method in ("spawn", "forkserver"):
        assert f"{method} exit code 0" in log, log
    assert log.count("editable_lib imported in a child, flags 0") == 2, log

"""The distribution: its wheel (metadata, license, py.typed), its version, and the CLI without the server extra."""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import urllib.parse
import zipfile
from pathlib import Path

import pytest

import sematic_k8s
from sematic_k8s import version as version_module
from sematic_k8s.packaging.wheels import load_toml

REPO = Path(__file__).resolve().parents[2]
PYPROJECT = load_toml(REPO / "pyproject.toml")
SERVER_EXTRA_MODULES = ("fastapi", "uvicorn", "psycopg")  # what `[server]` installs (alembic is a core dependency)


@pytest.fixture(scope="module")
def source_copy(tmp_path_factory) -> Path:
    """The files a source distribution holds, copied, so that builds leave nothing in the checkout."""
    dest = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(REPO / name, dest / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build")
    for name in ("sematic_k8s", "server"):
        shutil.copytree(REPO / name, dest / name, ignore=ignore)
    return dest


@pytest.fixture(scope="module")
def wheel(source_copy, tmp_path_factory) -> tuple[Path, str]:
    """The wheel pip builds offline from the sources, and pip's whole output."""
    out = tmp_path_factory.mktemp("dist")
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                           "--disable-pip-version-check", "-w", str(out), str(source_copy)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (path,) = out.glob("sematic_k8s-*.whl")
    return path, proc.stdout + proc.stderr


def test_wheel_builds_without_warnings(wheel):
    _, output = wheel
    assert "warning" not in output.lower(), output


def test_wheel_metadata_license_and_py_typed(wheel):
    path, _ = wheel
    project = PYPROJECT["project"]
    with zipfile.ZipFile(path) as zf:
        names = set(zf.namelist())
        dist_info = f"sematic_k8s-{project['version']}.dist-info"
        metadata = zf.read(f"{dist_info}/METADATA").decode()
    headers = [line.split(": ", 1) for line in metadata.split("\n\n", 1)[0].splitlines()]
    fields = {k: v for k, v in headers}
    assert fields["Name"] == "sematic-k8s" and fields["Version"] == project["version"]
    assert fields["License-Expression"] == "Apache-2.0" and "License" not in fields  # SPDX, not the legacy field
    assert fields["License-File"] == "LICENSE" and f"{dist_info}/licenses/LICENSE" in names
    assert {"sematic_k8s/py.typed", "sematic_k8s_server/py.typed"} <= names
    assert "sematic_k8s_server/static/index.html" in names and "sematic_k8s/store/migrations/script.py.mako" in names
    assert {f"sematic_k8s_server/static/vendor/{f}" for f in ("swagger-ui-bundle.js", "swagger-ui.css",
                                                              "swagger-ui.LICENSE", "swagger-ui.NOTICE")} <= names
    assert "sematic_k8s/store/migrations/versions/0001_store_tables.py" in names
    assert not any(n.startswith(("tests/", "bench/", "infra/", "server/")) for n in names)
    assert ["sematic-k8s = sematic_k8s.cli:main"] == [
        line.strip() for line in zipfile.ZipFile(path).read(f"{dist_info}/entry_points.txt").decode().splitlines()
        if "=" in line]


def test_build_backend_raises_no_deprecation_or_configuration_warnings(source_copy, tmp_path):
    """setuptools itself, for a regular and an editable wheel. It always adds one informational note to editable
    builds of a project with two package roots (``.`` and ``server/``); anything else (a deprecated ``license``
    table, unknown keys, missing files) fails here."""
    script = textwrap.dedent("""
        import json, sys, warnings
        from setuptools import build_meta
        from setuptools.warnings import InformationOnly
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            build_meta.build_wheel(sys.argv[1])
            build_meta.build_editable(sys.argv[1])
        print(json.dumps([f"{type(w.message).__name__}: {w.message}" for w in caught
                          if not isinstance(w.message, InformationOnly)]))
    """)
    work = tmp_path / "src"
    shutil.copytree(source_copy, work)
    proc = subprocess.run([sys.executable, "-c", script, str(tmp_path / "out")], cwd=work, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[]"


def test_version_is_read_from_the_installed_metadata(monkeypatch):
    assert sematic_k8s.__version__ == importlib.metadata.version("sematic-k8s") == PYPROJECT["project"]["version"]

    def not_installed(name: str) -> str:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(version_module, "version", not_installed)
    assert version_module.installed_version() == version_module.UNKNOWN == "0.0.0.dev0"


def without_server_extra(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The installed ``sematic-k8s`` command, in a Python where the server extra's packages cannot be imported."""
    site = tmp_path / "site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(textwrap.dedent(f"""
        import sys
        from importlib.abc import MetaPathFinder

        class NotInstalled(MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.partition(".")[0] in {SERVER_EXTRA_MODULES!r}:
                    raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
                return None

        sys.meta_path.insert(0, NotInstalled())
    """))
    command = Path(sys.executable).parent / "sematic-k8s"
    paths = [str(site), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]  # the code under test
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths), "SEMATIC_K8S_HOME": str(tmp_path / "home")}
    return subprocess.run([str(command), *args], capture_output=True, text=True, timeout=60, env=env)


@pytest.mark.parametrize(("args", "name"), [(["server", "--local"], "server"),
                                            (["api-keys", "create", "alice"], "api-keys")])
def test_server_commands_without_the_server_extra_name_the_extra(tmp_path, args, name):
    """The command to install it into this very Python, from where the package was installed (an editable install
    of a clone, as make run makes: was "pip install 'sematic-k8s[server]'", which a shell without the venv activated
    runs with another Python's pip, and which asks the package index for a project that is this directory)."""
    proc = without_server_extra(tmp_path, *args)
    assert proc.returncode == 1 and proc.stdout == ""
    # the installed distribution, as the command reads it (not a build's sematic_k8s.egg-info in the checkout,
    # which the checkout on this process's path would find first once a test built the package in place)
    [installed] = importlib.metadata.distributions(name="sematic-k8s", path=[sysconfig.get_paths()["purelib"]])
    found = json.loads(installed.read_text("direct_url.json") or "{}")
    project = urllib.parse.urlparse(found.get("url", "")).path
    assert found.get("dir_info", {}).get("editable") and (Path(project) / "pyproject.toml").exists(), found  # as here
    [line] = proc.stderr.splitlines()
    python = re.escape(str(Path(sys.executable).parent)) + r"/python[\d.]*"  # this venv's (its script's shebang)
    assert re.fullmatch(rf"Error: `sematic-k8s {name}` needs the server extra: {python} -m pip install -e "
                        rf"'{re.escape(project)}\[server\]' \(No module named 'fastapi'\)", line), line


def test_help_lists_the_server_commands_without_the_server_extra(tmp_path):
    proc = without_server_extra(tmp_path, "--help")
    assert proc.returncode == 0
    listed = {line.split()[0]: line for line in proc.stdout.split("Commands:")[1].splitlines() if line.strip()}
    assert "server extra" in listed["server"] and "server extra" in listed["api-keys"]
    assert "resolutions" in listed  # the rest of the CLI is there as usual

"""Wheels for offline image builds: a deterministic wheel of sematic_k8s itself, and third-party wheels
fetched on the host (``pip wheel`` / ``pip download``) into a cache reused across builds.

Inside ``docker build`` pip then installs with ``--no-index --find-links``: no network is needed in the build.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import io
import os
import platform
import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sematic_k8s.errors import BuildError
from sematic_k8s.settings import WHEEL_CACHE_ENV
from sematic_k8s.version import PACKAGE_DIR, __version__

Progress = Callable[[str], None]
DIST_NAME = "sematic-k8s"
SERVER_PACKAGE = "sematic_k8s_server"
DEFAULT_PYTHON = "3.11"
CACHE_ENV = WHEEL_CACHE_ENV
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)


def package_files(root: Path) -> list[str]:
    """The relative POSIX paths of a package's files (no bytecode caches), sorted."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__" and not d.startswith("."))
        for name in filenames:
            if not name.endswith((".pyc", ".pyo")):
                out.append((Path(dirpath) / name).relative_to(root).as_posix())
    return sorted(out)


def tree_digest(root: Path, files: Sequence[str]) -> str:
    """sha256 over the relative paths and contents of ``files`` under ``root``."""
    h = hashlib.sha256()
    for rel in files:
        h.update(rel.encode() + b"\0" + hashlib.sha256((root / rel).read_bytes()).digest())
    return h.hexdigest()


def load_toml(path: Path) -> dict[str, Any]:
    """A TOML file as a dict."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    with path.open("rb") as f:
        return tomllib.load(f)


def sematic_version() -> str:
    """``__version__`` plus a digest of the imported sematic_k8s sources (``0.1.0+src.<12 hex>``), so that
    library edits change context hashes too."""
    root = Path(PACKAGE_DIR)
    return f"{__version__}+src.{tree_digest(root, package_files(root))[:12]}"


@dataclass
class SematicDist:
    """What a wheel of sematic_k8s needs: packages to include, requirements by extra, console scripts."""

    version: str
    packages: dict[str, Path]  # import name -> directory
    requires: dict[str, list[str]] = field(default_factory=dict)  # "" = always; else by extra
    scripts: dict[str, str] = field(default_factory=dict)
    requires_python: str = ""

    def requirements(self, extras: Sequence[str] = ()) -> list[str]:
        """The runtime requirements with these extras, as pip requirement lines."""
        out = list(self.requires.get("", []))
        for extra in extras:
            if extra not in self.requires:
                raise ValueError(f"sematic-k8s has no extra {extra!r} (known: {sorted(k for k in self.requires if k)})")
            out += self.requires[extra]
        return list(dict.fromkeys(out))


def _split_extra(requirement: str) -> tuple[str, str]:
    """``'boto3>=1; extra == "s3"'`` -> (``'boto3>=1'``, ``'s3'``); other markers are kept on the requirement."""
    spec, _, marker = requirement.partition(";")
    m = re.search(r"""extra\s*==\s*["']([^"']+)["']""", marker)
    if not m:
        return requirement.strip(), ""
    rest = (marker[:m.start()] + marker[m.end():]).strip()
    rest = re.sub(r"^\s*and\s+|\s+and\s*$", "", rest).strip()
    if rest.startswith("(") and rest.endswith(")"):
        rest = rest[1:-1].strip()
    return (f"{spec.strip()}; {rest}" if rest else spec.strip()), m.group(1)


def sematic_dist(include_server: bool = False) -> SematicDist:
    """sematic_k8s as it is imported here: its source checkout's pyproject.toml, else its installed metadata."""
    pkg = Path(PACKAGE_DIR)
    dist = SematicDist(sematic_version(), {"sematic_k8s": pkg})
    pyproject = pkg.parent / "pyproject.toml"
    project = load_toml(pyproject).get("project", {}) if pyproject.is_file() else {}
    if project.get("name") == DIST_NAME:
        dist.requires[""] = list(project.get("dependencies", []))
        for extra, reqs in project.get("optional-dependencies", {}).items():
            dist.requires[extra] = list(reqs)
        dist.scripts = dict(project.get("scripts", {}))
        dist.requires_python = project.get("requires-python", "")
    else:
        from importlib import metadata

        md = metadata.distribution(DIST_NAME)
        for req in md.requires or []:
            spec, extra = _split_extra(req)
            dist.requires.setdefault(extra, []).append(spec)
        for extra in md.metadata.get_all("Provides-Extra") or []:
            dist.requires.setdefault(extra, [])
        dist.scripts = {ep.name: ep.value for ep in md.entry_points if ep.group == "console_scripts"}
        dist.requires_python = md.metadata["Requires-Python"] or ""
    if include_server:
        dist.packages[SERVER_PACKAGE] = server_package_dir(pkg)
    return dist


def server_package_dir(sematic_pkg: Path) -> Path:
    """Where the server package (``sematic_k8s_server``) is: importable, or ``server/`` of the checkout."""
    spec = importlib.util.find_spec(SERVER_PACKAGE)
    if spec is not None and spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    candidate = sematic_pkg.parent / "server" / SERVER_PACKAGE
    if candidate.is_dir():
        return candidate
    raise FileNotFoundError(f"the server package {SERVER_PACKAGE} is neither importable nor at {candidate}")


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def build_sematic_wheel(dist: SematicDist | None = None) -> tuple[str, bytes]:
    """A pure-Python wheel of sematic_k8s (file name, bytes); byte-identical for identical sources."""
    dist = dist or sematic_dist()
    name = DIST_NAME.replace("-", "_")
    info = f"{name}-{dist.version}.dist-info"
    entries: list[tuple[str, bytes]] = []
    for pkg_name, pkg_dir in sorted(dist.packages.items()):
        for rel in package_files(pkg_dir):
            entries.append((f"{pkg_name}/{rel}", (pkg_dir / rel).read_bytes()))
    meta = ["Metadata-Version: 2.1", f"Name: {DIST_NAME}", f"Version: {dist.version}"]
    if dist.requires_python:
        meta.append(f"Requires-Python: {dist.requires_python}")
    for extra, reqs in sorted(dist.requires.items()):
        if extra:
            meta.append(f"Provides-Extra: {extra}")
        for req in reqs:
            if not extra:
                meta.append(f"Requires-Dist: {req}")
            else:
                spec, _, marker = req.partition(";")
                cond = f'({marker.strip()}) and extra == "{extra}"' if marker.strip() else f'extra == "{extra}"'
                meta.append(f"Requires-Dist: {spec.strip()}; {cond}")
    entries.append((f"{info}/METADATA", ("\n".join(meta) + "\n").encode()))
    entries.append((f"{info}/WHEEL", b"Wheel-Version: 1.0\nGenerator: sematic_k8s.packaging\n"
                                     b"Root-Is-Purelib: true\nTag: py3-none-any\n"))
    if dist.scripts:
        lines = ["[console_scripts]"] + [f"{k} = {v}" for k, v in sorted(dist.scripts.items())]
        entries.append((f"{info}/entry_points.txt", ("\n".join(lines) + "\n").encode()))
    record = "".join(f"{path},{_record_hash(data)},{len(data)}\n" for path, data in entries) + f"{info}/RECORD,,\n"
    entries.append((f"{info}/RECORD", record.encode()))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for path, data in entries:
            zi = zipfile.ZipInfo(path, date_time=_ZIP_TIME)
            zi.external_attr = 0o644 << 16
            zi.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(zi, data)
    return f"{name}-{dist.version}-py3-none-any.whl", buf.getvalue()


def cache_root() -> Path:
    """The host wheel cache: $SEMATIC_K8S_WHEEL_CACHE, else $XDG_CACHE_HOME (~/.cache)/sematic_k8s/wheels."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "sematic_k8s" / "wheels"


def _host_matches(python_version: str, arch: str) -> bool:
    return (sys.platform == "linux" and platform.machine() == arch
            and f"{sys.version_info.major}.{sys.version_info.minor}" == python_version)


def host_pins() -> list[str]:
    """``name==version`` of every distribution installed here (but this package): what an image's wheels are
    constrained to, so the image runs the versions this environment runs, and pip picks them at once. (Left to
    itself, pip may backtrack through hundreds of releases: boto3 and kubernetes together sent it down every boto3
    release, a 15 MB botocore wheel each, for many minutes.)"""
    from importlib import metadata

    pins: dict[str, str] = {}  # by normalized name (PEP 503)
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        key = re.sub(r"[-_.]+", "-", name or "").lower()
        if key and key != DIST_NAME:
            pins.setdefault(key, f"{name}=={dist.version}")  # the first on sys.path: the one imported
    return [pins[k] for k in sorted(pins)]


# what pip's ERROR lines say went wrong, the requirement it names, and what to check
_PIP_FAILURES = (
    (re.compile(r"No matching distribution found for (.+)$"),
     "no release of it that pip can see matches ({target}): check its name and version, and the package index pip "
     "uses ($PIP_INDEX_URL, $PIP_FIND_LINKS, pip.conf)"),
    (re.compile(r"(?:Failed building wheel for|Failed to build|Could not build wheels for) (\S+)"),
     "it did not build into a wheel on this host: check that `pip wheel` builds it here, or pin a version that "
     "has a wheel for {target}"),
)


def pip_failed(proc: subprocess.CompletedProcess[str], target: str) -> BuildError:
    """The :class:`BuildError` of a failed ``pip wheel`` / ``pip download``: its first line names the requirement
    that could not be installed and what to check, the lines after it are pip's ERROR lines."""
    lines = f"{proc.stdout}\n{proc.stderr}".splitlines()
    errors = [line.strip() for line in lines if line.startswith("ERROR:")] or [ln for ln in lines if ln.strip()][-5:]
    for pattern, check in _PIP_FAILURES:
        found = next((m for m in map(pattern.search, errors) if m), None)
        if found:
            return BuildError(f"requirement {found.group(1).strip()} could not be installed: "
                              f"{check.format(target=target)}", output=errors)
    first = errors[0] if errors else f"pip exited with code {proc.returncode}"
    return BuildError(f"the image's requirements could not be installed ({first.removeprefix('ERROR: ')}): check "
                      f"their names and version pins, and the package index pip uses", output=errors)


def fetch_wheels(requirements: Sequence[str], *, python_version: str = DEFAULT_PYTHON, arch: str = "x86_64",
                 progress: Progress | None = None, cache_dir: Path | None = None) -> Path:
    """A directory holding ``requirements.txt`` and wheels for all of ``requirements`` and their dependencies.

    Cached under ``cache_dir`` (default :func:`cache_root`) by the requirements and target Python. On a Linux
    host whose Python and architecture match the image's, ``pip wheel`` (which also builds sdists); otherwise
    ``pip download --only-binary=:all:`` for the image's platform. Either way the versions installed here are
    constraints (:func:`host_pins`); should pip find no wheels within them (another platform's), it resolves
    again without them, saying so. A requirement pip cannot install is a :class:`BuildError` (:func:`pip_failed`).
    """
    say = progress or (lambda _line: None)
    text = "".join(f"{r}\n" for r in requirements)
    key = hashlib.sha256(f"{python_version}\n{arch}\n{text}".encode()).hexdigest()[:24]
    root = cache_dir or cache_root()
    final = root / key
    if (final / "requirements.txt").is_file():
        say(f"wheels: cached {final} ({len(list(final.glob('*.whl')))} wheels)")
        return final
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".tmp-{key}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        if requirements:
            (tmp / "requirements.in").write_text(text)
            if _host_matches(python_version, arch):
                cmd = [sys.executable, "-m", "pip", "wheel", "--wheel-dir", str(tmp),
                       "-r", str(tmp / "requirements.in")]
            else:
                major, minor = python_version.split(".")[:2]
                cmd = [sys.executable, "-m", "pip", "download", "--dest", str(tmp), "--only-binary=:all:",
                       "--python-version", python_version, "--implementation", "cp", "--abi", f"cp{major}{minor}",
                       "-r", str(tmp / "requirements.in")]
                for plat in ("manylinux2014", "manylinux_2_17", "manylinux_2_28", "manylinux_2_31",
                             "manylinux_2_34", "manylinux_2_35", "manylinux_2_36"):
                    cmd += ["--platform", f"{plat}_{arch}"]
            (tmp / "constraints.txt").write_text("".join(f"{pin}\n" for pin in host_pins()))
            say(f"wheels: fetching {len(requirements)} requirement(s) on the host, at the versions installed here: "
                f"{' '.join(cmd[2:4])}")
            proc = subprocess.run([*cmd, "-c", str(tmp / "constraints.txt")], capture_output=True, text=True)
            if proc.returncode != 0:
                say("wheels: none within the versions installed here; resolving again without them")
                proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                raise pip_failed(proc, f"Python {python_version} on {arch}")
            (tmp / "requirements.in").unlink()
            (tmp / "constraints.txt").unlink()
        (tmp / "requirements.txt").write_text(text)
        try:
            tmp.rename(final)
        except OSError:  # another process finished first
            if not (final / "requirements.txt").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    say(f"wheels: {len(list(final.glob('*.whl')))} wheels in {final}")
    return final

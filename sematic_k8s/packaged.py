"""The user code an image packaged, as its build recorded it in the image: where a driver the server started may
find a func named by a record (a rerun's root func, its runs' funcs), and nowhere else.

Records are written by clients, so a func's recorded ``module:qualname`` and source file are only names: looked
up by them alone, any module of the image could be imported and its top level run (one of the standard library
or site-packages, or a file outside the project). The image build writes :data:`MANIFEST` (the code directory,
its Python roots and every file it copied there) into the image, where no record can change it;
:meth:`PackagedCode.find_spec` finds a module only among those files, from those roots.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.machinery
import json
import os
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from sematic_k8s.errors import CodeRefused

MANIFEST = "/opt/sematic-k8s/packaged-code.json"  # written by the image build (sematic_k8s.packaging)
FORMAT = "sematic-k8s-packaged-code-v1"
_ONLY: list[PackagedCode] = []  # while not empty: this process works for a rerun the server started (only())


class NotPackaged(ImportError):
    """A module a record names is not among the image's packaged files; the message says where it is instead."""


def python_roots(code_dir: str) -> tuple[str, str]:
    """The directories of the code directory that are on ``PYTHONPATH`` in the image: itself and ``src``."""
    return code_dir, f"{code_dir}/src"


def manifest_json(code_dir: str, files: Iterable[str]) -> str:
    """The manifest of an image whose project files (relative POSIX paths) were copied to ``code_dir``."""
    return json.dumps({"format": FORMAT, "code_dir": code_dir, "python_roots": list(python_roots(code_dir)),
                       "files": sorted(files)}, indent=0) + "\n"


@dataclass(frozen=True)
class PackagedCode:
    """The packaged files (absolute paths) under ``code_dir``, and the roots modules are found from."""

    code_dir: str
    roots: tuple[str, ...]
    files: frozenset[str]

    @classmethod
    def from_json(cls, text: str) -> PackagedCode:
        doc = json.loads(text)
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise ValueError(f"not a {FORMAT} manifest")
        code_dir = os.path.normpath(doc["code_dir"])
        return cls(code_dir, tuple(os.path.normpath(r) for r in doc["python_roots"]),
                   frozenset(os.path.normpath(os.path.join(code_dir, f)) for f in doc["files"]))

    def covers(self, path: str | None) -> bool:
        """Whether ``path`` is a packaged file, and really under the code directory (not a link out of it)."""
        if not path:
            return False
        path = os.path.normpath(os.path.abspath(path))
        return path in self.files and os.path.realpath(path).startswith(os.path.realpath(self.code_dir) + os.sep)

    def find_spec(self, name: str) -> importlib.machinery.ModuleSpec:
        """The spec of module ``name`` among the packaged files, its parent package already loaded (its
        ``__path__`` searched) or else the Python roots; NotPackaged, saying where it is instead, otherwise."""
        loaded = sys.modules.get(name)
        if loaded is not None:
            where = getattr(loaded, "__file__", None)
            if self.covers(where):
                spec: importlib.machinery.ModuleSpec | None = loaded.__spec__
                if spec is not None:
                    return spec
            raise NotPackaged(f"module {name} is {where or 'built into Python'}, outside it", name=name)
        parent = name.rpartition(".")[0]
        path = list(getattr(sys.modules[parent], "__path__", [])) if parent else list(self.roots)
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None:
            raise NotPackaged(f"module {name} is not among its files", name=name)
        locations = spec.submodule_search_locations
        packaged = (self.covers(spec.origin) if spec.has_location else  # a namespace package: its directories
                    bool(locations) and all(d.startswith(self.code_dir + os.sep) for d in locations or ()))
        if not packaged or spec.loader is None:
            raise NotPackaged(f"module {name} is {spec.origin}, not one of its files", name=name)
        return spec


@functools.cache
def packaged_code(manifest: str = MANIFEST) -> PackagedCode | None:
    """This image's packaged code, as its build recorded it; None where there is no manifest (not in an image
    built by sematic_k8s, or one built before the manifest existed)."""
    try:
        with open(manifest, encoding="utf-8") as f:
            return PackagedCode.from_json(f.read())
    except FileNotFoundError:
        return None


@contextlib.contextmanager
def only(code: PackagedCode) -> Iterator[None]:
    """While in it, this process works for a rerun the server started: funcs named by records are loaded only from
    ``code`` (:func:`sematic_k8s.func.load_func`) and values may name only the globals :mod:`sematic_k8s.loadable`
    allows. Process-wide (every thread of a driver works for its one resolution)."""
    _ONLY.append(code)
    try:
        yield
    finally:
        _ONLY.remove(code)


def restricted_to() -> PackagedCode | None:
    """The packaged code this process is restricted to (:func:`only`), or None: a user's own resolution."""
    return _ONLY[-1] if _ONLY else None


def restricted_if(asked: bool, image: str) -> contextlib.AbstractContextManager[None]:
    """:func:`only` this image's packaged code when ``asked`` (a process working for a rerun the server started:
    its DriverSpec or TaskSpec, written by the server or its driver, says so), else no restriction. CodeRefused,
    naming ``image``, when the image has no manifest (built by an older sematic-k8s)."""
    if not asked:
        return contextlib.nullcontext()
    code = packaged_code()
    if code is None:
        raise CodeRefused(f"{image} has no manifest of its packaged code ({MANIFEST}): built by an older sematic-k8s; "
                          "resolve the pipeline again (which rebuilds it) to re-run it from the server")
    return only(code)

"""Which globals a value's bytes may name: one rule for a pickle's globals (``find_class``) and a JSON value's
class (:mod:`sematic_k8s.serialization`).

Artifacts are written by clients. Outside a rerun the server started, a process loads what its own user's code
wrote, so anything importable is found (:func:`find` imports it). A process working for such a rerun (a driver
told ``packaged_only``, and the workers it starts: :func:`sematic_k8s.packaged.only`) finds a global only

- in the image's packaged code, loaded from its files alone (the rule funcs follow, :mod:`sematic_k8s.packaged`);
- in a library installed in site-packages that is not one sematic-k8s brings itself (its own requirements and
  theirs, such as cloudpickle, whose by-value functions are code; httpx; click): the libraries the pipeline chose;
- among :data:`ALLOWED`: value types of the standard library, the reconstructors pickle and this package's
  own values use; never a function that runs, imports or opens something.

Anything else raises :class:`~sematic_k8s.errors.ValueRefused` before its module is imported. Not covered: a
global of an allowed library that does something when called with chosen arguments (a gadget) runs.
"""

from __future__ import annotations

import builtins
import functools
import importlib
import importlib.metadata
import os
import re
import site
import sys
import sysconfig
import types
from importlib import machinery
from typing import Any

from sematic_k8s import modules, packaged
from sematic_k8s.errors import ValueRefused

PATHS = frozenset({"PurePath", "PurePosixPath", "PureWindowsPath", "Path", "PosixPath", "WindowsPath"})
ALLOWED: dict[str, frozenset[str]] = {  # module -> the names a value may use: data types and their reconstructors
    "builtins": frozenset({"object", "bool", "int", "float", "complex", "str", "bytes", "bytearray", "list", "tuple",
                           "dict", "set", "frozenset", "range", "slice", "Ellipsis", "NotImplemented"}),
    "collections": frozenset({"OrderedDict", "Counter", "defaultdict", "deque", "ChainMap"}),
    "datetime": frozenset({"datetime", "date", "time", "timedelta", "timezone", "tzinfo"}),
    "decimal": frozenset({"Decimal"}),
    "fractions": frozenset({"Fraction"}),
    "uuid": frozenset({"UUID", "SafeUUID"}),
    "pathlib": PATHS,
    "pathlib._local": PATHS,  # where Python 3.13 defines them
    "enum": frozenset({"Enum", "IntEnum", "Flag", "IntFlag", "StrEnum"}),
    "copyreg": frozenset({"_reconstructor", "__newobj__", "__newobj_ex__"}),
    "sematic_k8s.future": frozenset({"Future"}),  # a composition's Futures (a worker's expansion)
    "sematic_k8s.func": frozenset({"load_func"}),  # how a Func is pickled: itself restricted to the packaged code
}
OWN = "sematic-k8s"
OWN_EXTRAS = ('"s3"',)  # the extras images install it with


def find(module: str, qualname: str) -> Any:
    """The global ``module.qualname`` a value names; in a process working for a server-started rerun, only one
    the rule allows (ValueRefused, saying why, otherwise; a refused module is never imported). ImportInterrupted when
    its module raised, as it loaded, an error that may pass (:func:`sematic_k8s.modules.told_apart`)."""
    with modules.told_apart(named(module, qualname), module):
        return _find(module, qualname)


def named(module: str, qualname: str) -> str:
    """How a global ``module.qualname`` a value names is said in an error (ImportInterrupted's ``what``)."""
    return f"a value's {module[:200]}.{qualname[:200]}"


def _find(module: str, qualname: str) -> Any:
    code = packaged.restricted_to()
    if code is None:
        return _attribute(modules.load_module(module), qualname)
    name = f"{module}.{qualname}"[:300]
    try:
        where = _packaged(module, code) if qualname not in ALLOWED.get(module, ()) else None
        if where is None:
            why = _refusal(module, qualname)
            if why is not None:
                raise ValueRefused(name, why)
            where = importlib.import_module(module)
        obj = _attribute(where, qualname)
    except (ImportError, AttributeError) as e:
        raise ValueRefused(name, f"it cannot be found in this image ({e})") from None
    if isinstance(obj, types.ModuleType):
        raise ValueRefused(name, "it is a module")
    home, real = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    if isinstance(obj, (type, types.FunctionType, types.BuiltinFunctionType)) and isinstance(home, str) \
            and isinstance(real, str) and (home, real) != (module, qualname) \
            and not code.covers(getattr(sys.modules.get(home), "__file__", None)):  # another module's, renamed
        why = _refusal(home, real)
        if why is not None:
            raise ValueRefused(name, f"it is {home}.{real}: {why}")
    return obj


def _attribute(obj: Any, qualname: str) -> Any:
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def _packaged(module: str, code: packaged.PackagedCode) -> types.ModuleType | None:
    """Module ``module`` loaded from the packaged files, parents first; None when it is not among them."""
    try:
        return modules.load_module(module, within=code)
    except packaged.NotPackaged:
        return None


def _refusal(module: str, qualname: str) -> str | None:
    """Why a server-started rerun may not load ``module.qualname``, not of the packaged code; None if it may."""
    if qualname in ALLOWED.get(module, ()):
        return None
    exception = getattr(builtins, qualname, None) if module == "builtins" else None
    if isinstance(exception, type) and issubclass(exception, BaseException):
        return None  # an exception: a value like any other
    if module in ALLOWED:
        return f"{qualname} is not one of the few names of {module} a value may use (docs/DESIGN.md, trust boundary)"
    top = module.partition(".")[0]
    if top in sys.stdlib_module_names:
        return f"{module} is of the standard library, of which only value types may be loaded (docs/DESIGN.md)"
    return _library_refusal(top)


@functools.cache
def _library_refusal(top: str) -> str | None:
    """Why top-level module ``top`` (not of the standard library) is not a library the pipeline chose; None if it is."""
    where = _location(top)
    if where is None or not _in_site_packages(where):
        return (f"module {top} is {where or 'nowhere to be found'}: neither the image's packaged code nor a "
                "library installed in site-packages")
    theirs = sorted(_canonical(d) for d in importlib.metadata.packages_distributions().get(top, ()))
    ours = [d for d in theirs if d in _ours()]
    if ours:
        return f"module {top} is of {ours[0]}, which sematic-k8s installs itself, not a library the pipeline chose"
    return None


def _location(top: str) -> str | None:
    """The file (or directory) top-level module ``top`` is, or would be imported, from; nothing is imported."""
    loaded = sys.modules.get(top)
    if loaded is not None:
        return getattr(loaded, "__file__", None) or next(iter(getattr(loaded, "__path__", []) or []), None)
    if not top.isidentifier():
        return None
    spec = machinery.PathFinder.find_spec(top, sys.path)
    if spec is None:
        return None
    return spec.origin if spec.has_location else next(iter(spec.submodule_search_locations or []), None)


def _in_site_packages(path: str) -> bool:
    real = os.path.realpath(path)
    return any(real.startswith(d + os.sep) for d in _site_dirs())


@functools.cache
def _site_dirs() -> tuple[str, ...]:
    dirs = {sysconfig.get_paths()[k] for k in ("purelib", "platlib")} | set(site.getsitepackages())
    dirs.add(site.getusersitepackages())
    return tuple(sorted({os.path.realpath(d) for d in dirs}))


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@functools.cache
def _ours() -> frozenset[str]:
    """sematic-k8s and the distributions it requires (with the extras images install it with), and theirs."""
    seen: set[str] = set()
    todo = [OWN]
    while todo:
        name = _canonical(todo.pop())
        if name in seen:
            continue
        seen.add(name)
        try:
            requirements = importlib.metadata.requires(name) or []
        except importlib.metadata.PackageNotFoundError:
            continue
        for requirement in requirements:
            marker = requirement.partition(";")[2]
            if "extra" in marker and not (name == OWN and any(e in marker for e in OWN_EXTRAS)):
                continue
            found = re.match(r"[A-Za-z0-9._-]+", requirement.strip())
            if found:
                todo.append(found.group())
    return frozenset(seen)

"""User code found again by name: the module name to record for a func or class, and loading that module
without running the pipeline a script starts at its top level.

A pipeline is often a plain script: funcs and dataclasses, then ``pipeline(...).resolve(...)`` at the top
level with no ``if __name__ == "__main__":`` guard. Run as ``python script.py``, its module is ``__main__``,
a name that means something else in every other process. So:

- :func:`recorded_name` records such a module by the name it can be imported by (``script``, or
  ``pkg.script`` inside a package), and remembers that, in this process, that name *is* ``__main__``
  (importing it again would run the script twice).
- :func:`load_module` loads a recorded module (for a rerun, a driver, a worker, or a value of one of its
  classes). While it runs the module's top level, resolving a pipeline stops the loading right there
  (:class:`StopLoading`): what the script defined before that line is what its pipeline could use, and
  nothing is resolved twice. Its prints go to stderr and ``sys.argv`` holds only the script's path, so a
  command's own output (``rerun -o json``) and arguments are left alone.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import logging
import os
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

from sematic_k8s.error_records import caught_by_user, one_line, raised_by_user, user_line
from sematic_k8s.errors import ImportInterrupted, InfrastructureError
from sematic_k8s.packaged import NotPackaged, PackagedCode

log = logging.getLogger("sematic_k8s")
MAIN = "__main__"
_aliases: dict[str, str] = {}  # recorded name -> the sys.modules name it runs as in this process (__main__)
_files: dict[str, str] = {}  # recorded name -> its source file, where known
_main_names: dict[int, str] = {}  # id(the __main__ module) -> its recorded name, worked out once
_state = threading.local()  # .loading: how many guarded loads this thread is in


class StopLoading(BaseException):
    """Raised by ``resolve()`` while :func:`load_module` runs a module's top level: loading stops there.

    A BaseException, so a script's ``except Exception`` does not swallow it."""


def loading() -> bool:
    """True while this thread runs the top level of a module :func:`load_module` is loading."""
    return getattr(_state, "loading", 0) > 0


def check_not_loading(what: str) -> None:
    """Stop a guarded load at a call that would resolve a pipeline (``what`` names it in the log)."""
    if loading():
        raise StopLoading(what)


def name_for_file(path: str | os.PathLike[str]) -> str:
    """The module name a source file is imported by: its stem, under the packages (directories with an
    ``__init__.py``) that contain it."""
    p = Path(path).resolve()
    parts = [] if p.stem == "__init__" else [p.stem]
    parent = p.parent
    while (parent / "__init__.py").exists() and parent != parent.parent:
        parts.insert(0, parent.name)
        parent = parent.parent
    return ".".join(parts) or p.parent.name


def recorded_name(module_name: str) -> str:
    """The name to record for code in ``module_name``: itself, except for ``__main__`` (``python script.py``,
    ``python -m pkg.mod``), recorded by the name it can be imported by."""
    if module_name != MAIN:
        return module_name
    main = sys.modules.get(MAIN)
    cached = _main_names.get(id(main))
    if cached is not None:
        return cached
    _main_names[id(main)] = name = _main_name(main)
    return name


def _main_name(main: ModuleType | None) -> str:
    spec = getattr(main, "__spec__", None)
    file = getattr(main, "__file__", None)
    if spec is not None and spec.name != MAIN:
        name = spec.name
    elif file:
        name = name_for_file(file)
    else:
        return MAIN  # an interactive session: nothing to import it by elsewhere
    _aliases[name] = MAIN
    if file:
        _files.setdefault(name, os.path.abspath(file))
    return name


def remember_file(name: str, source_file: str | None) -> None:
    """Where module ``name``'s source is, for loading it (or a class of it) later by name."""
    if source_file and name != MAIN:
        _files.setdefault(name, source_file)


def load_module(name: str, source_file: str | None = None, within: PackagedCode | None = None) -> ModuleType:
    """The module recorded as ``name`` (its file ``source_file`` if known), loaded at most once per process,
    its top level run only up to a call that would resolve a pipeline.

    ``within``: only a module among an image's packaged files (and its parent packages, loaded the same way); the
    source file then only names a script's module. Raises ImportError when it cannot be found (NotPackaged when
    it is not there)."""
    if name == MAIN:  # no file (python -c, a notebook): this process's own; else find it by its file
        if not source_file:
            if within is not None:
                raise NotPackaged("module __main__ is this process's own, not one of its files", name=name)
            return sys.modules[MAIN]
        name = name_for_file(source_file)
    if within is not None:
        return _load_packaged(name, within)
    if name in _aliases:
        return sys.modules[_aliases[name]]
    if name in sys.modules:
        return sys.modules[name]
    source_file = source_file or _files.get(name)
    return _load(name, _find_spec(name, source_file), source_file)


def raised(name: str, exc: BaseException) -> str:
    """What module ``name`` raised as it loaded, and at which line of the user's code: one line."""
    text = exc.msg if isinstance(exc, SyntaxError) else str(exc)  # (a SyntaxError's str names its place, said below)
    said = f"{type(exc).__name__}: {one_line(text)}" if text.strip() else type(exc).__name__
    at = user_line(exc)
    return f"its module {name} raised {said}{f' at {at}' if at else ''}"


# what a module's top level may raise that may pass: an OSError but one about its own paths, which stays until the
# module or its image changes (a file or directory it names missing, or not readable); memory running short
IMPORT_MAY_PASS: tuple[type[BaseException], ...] = (OSError, MemoryError)
IMPORT_STAYS: tuple[type[BaseException], ...] = (FileNotFoundError, PermissionError, IsADirectoryError,
                                                 NotADirectoryError, FileExistsError)
# a service's answers that may pass: it timed out, was asked too often, or failed (not 501 Not Implemented nor 505
# HTTP Version Not Supported, which stay); and AWS's error codes of the same whatever their status (throttling is
# often a 400 there)
SERVICE_MAY_PASS = frozenset({408, 429, *range(500, 600)}) - {501, 505}
AWS_MAY_PASS = frozenset({"Throttling", "ThrottlingException", "ThrottledException", "RequestThrottledException",
                          "TooManyRequestsException", "ProvisionedThroughputExceededException",
                          "TransactionInProgressException", "RequestLimitExceeded", "BandwidthLimitExceeded",
                          "LimitExceededException", "RequestThrottled", "SlowDown", "EC2ThrottledException",
                          "PriorRequestNotComplete", "RequestTimeout", "RequestTimeoutException"})


def import_may_pass(exc: BaseException) -> bool:
    """Whether ``exc``, raised by a module's top level as it loaded, may pass on another try (ImportInterrupted),
    rather than being the module's mistake (FuncNotFound). An InfrastructureError is neither: it keeps its type.

    Down the chain of errors ``exc`` was raised from (each one's cause, else its context, shown or not), the first that
    decides: a service's answer (:func:`service_answer`: a 5xx, 429, 408, AWS throttling or error answers of a status
    not said may pass, a 4xx is the module's mistake, with the service's words); an OSError (a ConnectionError, not one
    about a path of its own) or MemoryError may pass; one of Python's own (a NameError, json's JSONDecodeError) is the
    module's mistake, whatever it was handling; so is one the user's code raised (their own class, a library's they
    raised), from an error or while handling one, and one a library raised while the user's code handled another (a bad
    fallback in their ``except``). Only a library's error raised from (or while handling) an error the library itself
    caught is judged by that error: httpx's ConnectError, urllib3's MaxRetryError, botocore's EndpointConnectionError,
    each raised from the socket's ConnectionRefusedError."""
    if isinstance(exc, InfrastructureError):
        return False
    seen: set[int] = set()
    at: BaseException | None = exc
    while at is not None and id(at) not in seen:
        seen.add(id(at))
        answered = service_answer(at)
        if answered is not None:
            status, code = answered
            return status is None or status in SERVICE_MAY_PASS or code in AWS_MAY_PASS
        if isinstance(at, IMPORT_MAY_PASS):
            return not isinstance(at, IMPORT_STAYS)
        if _pythons_own(type(at)) or raised_by_user(at):
            return False
        at = at.__cause__ or at.__context__  # (a context hidden "from None" too: httpcore's ConnectError hides it)
        if at is not None and caught_by_user(at):
            return False
    return False


def service_answer(exc: BaseException) -> tuple[int | None, str] | None:
    """The HTTP status of a service's error answer (4xx, 5xx) that ``exc`` says, and its AWS error code ("" if
    none): botocore's ClientError, httpx's HTTPStatusError and requests' HTTPError (``raise_for_status``), urllib's
    HTTPError, aiohttp's ClientResponseError; urllib3's MaxRetryError of error answers its Retry's
    ``status_forcelist`` retried (its reason, a ResponseError, names the last status: None when it does not, a
    service answering errors again and again), and requests' RetryError (an OSError) wrapping one; None for an error
    that carries no such answer. A library's errors are known only when it is loaded (it raised one): none is
    imported for this."""
    status: object = None
    code = ""
    try:
        urllib_errors = sys.modules.get("urllib.error")
        aiohttp_errors = sys.modules.get("aiohttp.client_exceptions")
        urllib3_errors = sys.modules.get("urllib3.exceptions")
        requests_errors = sys.modules.get("requests.exceptions")
        if urllib_errors is not None and isinstance(exc, urllib_errors.HTTPError):
            status = exc.code
        elif aiohttp_errors is not None and isinstance(exc, aiohttp_errors.ClientResponseError):
            status = exc.status
        elif urllib3_errors is not None and isinstance(exc, urllib3_errors.MaxRetryError):
            return _retried_answers(exc.reason, urllib3_errors.ResponseError)
        elif requests_errors is not None and isinstance(exc, requests_errors.RetryError):  # urllib3's, wrapped
            wrapped = exc.args[0] if exc.args else None
            if urllib3_errors is None or not isinstance(wrapped, urllib3_errors.MaxRetryError):
                return None
            return _retried_answers(wrapped.reason, urllib3_errors.ResponseError)
        elif isinstance(response := getattr(exc, "response", None), dict):  # botocore's ClientError
            status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            code = str(response.get("Error", {}).get("Code", ""))
        else:
            status = getattr(response, "status_code", None)
    except Exception:  # noqa: BLE001 - a property of the error's own that raises: no answer it says
        return None
    if isinstance(status, int) and not isinstance(status, bool) and 400 <= status < 600:
        return status, code
    return None


def _retried_answers(reason: object, response_error: type[Exception]) -> tuple[int | None, str] | None:
    """The status of the error answers urllib3 retried until its Retry was spent, as its MaxRetryError's ``reason``
    (a ResponseError: "too many 503 error responses") says it; (None, "") when it names none ("too many error
    responses"); None for another reason (a connection's error, too many redirects)."""
    if not isinstance(reason, response_error):
        return None
    text = str(reason)
    before, _, after = getattr(response_error, "SPECIFIC_ERROR", "").partition("{status_code}")
    if after and text.startswith(before) and text.endswith(after):
        said = text[len(before):len(text) - len(after)]
        if said.isdigit() and 400 <= int(said) < 600:
            return int(said), ""
    return (None, "") if text == getattr(response_error, "GENERIC_ERROR", None) else None


def _pythons_own(cls: type[BaseException]) -> bool:
    """Whether error class ``cls`` is Python's own: a builtin, or one of its standard library's modules
    (``json.decoder``, ``_pickle``), not a library's."""
    return (cls.__module__ or "").partition(".")[0] in sys.stdlib_module_names  # ("builtins" among them)


def interrupted(what: str, name: str, exc: BaseException) -> ImportInterrupted | None:
    """ImportInterrupted ("``what`` could not be loaded: ...") when ``exc``, raised by module ``name``'s top level as
    it loaded, may pass (:func:`import_may_pass`: a service or network mount it reads at import did not answer, or
    answered 5xx; memory short); None when it is the module's mistake, or an InfrastructureError (itself)."""
    if not import_may_pass(exc):
        return None
    return ImportInterrupted(f"{what} could not be loaded: {raised(name, exc)}, which may pass (not the module's "
                             "mistake)", name)  # what then: said where it is tried again or given up on


@contextlib.contextmanager
def told_apart(what: str, name: str) -> Iterator[None]:
    """Loading module ``name`` for ``what``: an error its top level raised that may pass becomes ImportInterrupted
    (:func:`interrupted`); any other goes on as it is."""
    try:
        yield
    except Exception as e:
        stop = interrupted(what, name, e)
        if stop is None:
            raise
        raise stop from e


def _load_packaged(name: str, within: PackagedCode) -> ModuleType:
    """Module ``name`` from the packaged files only, parents first: nothing else is imported on its behalf."""
    if not all(part.isidentifier() for part in name.split(".")):
        raise NotPackaged(f"{name[:200]!r} is not a module name", name=name)
    parent = name.rpartition(".")[0]
    if parent:
        _load_packaged(parent, within)
    spec = within.find_spec(name)  # one loaded already: its spec, if its file is packaged
    loaded = sys.modules.get(name)
    return loaded if loaded is not None else _load(name, spec, spec.origin)


def _load(name: str, spec: importlib.machinery.ModuleSpec, source_file: str | None) -> ModuleType:
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        with _guarded(source_file or spec.origin or name):
            spec.loader.exec_module(module)  # type: ignore[union-attr]
    except StopLoading as stop:
        log.info("loaded %s up to its call of %s (not run again)", name, stop)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    parent, _, child = name.rpartition(".")
    if parent and parent in sys.modules:
        setattr(sys.modules[parent], child, module)
    remember_file(name, source_file)
    return module


def _find_spec(name: str, source_file: str | None) -> importlib.machinery.ModuleSpec:
    """By name from sys.path; else with the directory holding the file's top package added to sys.path (so
    ``sematic-k8s rerun`` finds a user's pipeline from any working directory); else from the file itself."""
    spec = _spec_by_name(name)
    if spec is None and source_file:
        path = Path(source_file).resolve()
        depth = len(name.split(".")) - (0 if path.stem == "__init__" else 1)
        if depth < len(path.parents) and str(path.parents[depth]) not in sys.path:
            sys.path.append(str(path.parents[depth]))
            spec = _spec_by_name(name)
        if spec is None and path.exists():
            spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        where = f" (recorded source {source_file} not found here)" if source_file else ""
        raise ImportError(f"no module named {name!r}{where}")
    return spec


def _spec_by_name(name: str) -> importlib.machinery.ModuleSpec | None:
    try:
        return importlib.util.find_spec(name)
    except (ImportError, ValueError):  # a parent package is missing, or the name is not a module name
        return None


@contextlib.contextmanager
def _guarded(path: str) -> Iterator[None]:
    """While a module's top level runs: resolving stops it, prints go to stderr, argv is just its path."""
    _state.loading = getattr(_state, "loading", 0) + 1
    argv = sys.argv
    sys.argv = [path]
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        sys.argv = argv
        _state.loading -= 1

"""A recorded func's module that raises as a worker process imports it: an error that may pass (ConnectionError: a
module that reads a network mount or calls a service at import) loses that attempt only, run again as an
infrastructure failure; the user's mistake (NameError) fails the run at once with FuncNotFound's words. Real worker
processes import a module of the test's own, whose top level raises as ``$SK_TEST_IMPORT_FAULT`` says."""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import socket
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

import sematic_k8s as sk
from process_resolver import ProcessResolver
from s3_front import Front, s3_error, s3_front
from sematic_k8s import serialization
from sematic_k8s.errors import FuncNotFound, ImportInterrupted, ResolutionFailed, ServerError
from sematic_k8s.func import load_func
from sematic_k8s.resolvers import loop
from sematic_k8s.settings import API_KEY_ENV, API_KEY_FILE_ENV, DB_URL_ENV, DRIVER_ENV, SERVER_ENV
from sematic_k8s.specs import DRIVER_EXIT_RETRY, DriverSpec
from sematic_k8s.storage.base import artifact_key
from sematic_k8s.storage.local import LocalStorage
from sematic_k8s.storage.urls import storage_url
from sematic_k8s.store import sql_store
from sematic_k8s.store.records import RunRecord

FAULT_ENV = "SK_TEST_IMPORT_FAULT"

MODULE = textwrap.dedent("""
    import os

    import sematic_k8s as sk

    fault, _, marker = os.environ.get("SK_TEST_IMPORT_FAULT", "").partition(":")
    if fault == "connection" and not os.path.exists(marker):  # its first import in a worker only
        open(marker, "w").close()
        raise ConnectionError("the feature store at 10.0.0.9:443 did not answer")
    if fault == "connection-always":
        raise ConnectionError("the feature store at 10.0.0.9:443 did not answer")
    if fault == "name":
        FEATURES = load_features()  # a typo'd name: the user's mistake

    @sk.func(inline=False)
    def double(x: int) -> int:
        return 2 * x
""")


@contextlib.contextmanager
def users_modules(monkeypatch: pytest.MonkeyPatch, code: Path, **sources: str) -> Iterator[None]:
    """The user's modules (name: source) written in ``code``, on the path, for the block to import without a fault
    (``$SK_TEST_IMPORT_FAULT`` unset); forgotten (out of sys.modules) before and after."""
    code.mkdir(exist_ok=True)
    for name, source in sources.items():
        (code / f"{name}.py").write_text(source)
    monkeypatch.syspath_prepend(str(code))
    monkeypatch.delenv(FAULT_ENV, raising=False)
    for name in sources:
        sys.modules.pop(name, None)
    try:
        yield
    finally:
        for name in sources:
            sys.modules.pop(name, None)


@pytest.fixture
def users_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """The user's module, imported here without a fault (the test's process records its func)."""
    with users_modules(monkeypatch, tmp_path / "code", feature_funcs=MODULE):
        yield importlib.import_module("feature_funcs")


def root_run(tmp_path: Path, f: sk.Future) -> RunRecord:
    """The one run of ``f``'s resolution, as recorded in the home ``tmp_path/home``."""
    [run] = sql_store(f"sqlite:///{tmp_path / 'home' / 'db.sqlite3'}").runs_of_root(f.id)
    return run


def retried(caplog: pytest.LogCaptureFixture) -> str:
    """The one line said of an infrastructure failure on attempt 1 (the attempt run again)."""
    [said] = [r.getMessage() for r in caplog.records if "infrastructure failure on attempt 1" in r.getMessage()]
    return said


def load_top_level(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, top_level: str,
                   raises: type[Exception]) -> tuple[Path, Exception]:
    """``name:f`` loaded from module ``name`` (``top_level`` its source, in ``tmp_path``), which raises ``raises``
    (that class itself): the module's source file and the error."""
    source = tmp_path / f"{name}.py"
    source.write_text(top_level + "\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        with pytest.raises(raises) as raised:
            load_func(f"{name}:f", str(source))
    finally:
        sys.modules.pop(name, None)
    assert type(raised.value) is raises
    return source, raised.value


def test_a_module_that_cannot_reach_a_service_as_it_loads_loses_one_attempt_and_the_run_resolves(
        tmp_path: Path, users_module: ModuleType, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """Was: FuncNotFound 'cannot be loaded ... fix the module': the run failed for good on a service's blip."""
    caplog.set_level(logging.WARNING, "sematic_k8s")
    marker = tmp_path / "raised-once"
    monkeypatch.setenv(FAULT_ENV, f"connection:{marker}")
    f = users_module.double(21)
    assert f.resolve(ProcessResolver(home=tmp_path / "home")) == 42
    assert marker.exists()  # the first attempt met the ConnectionError
    run = root_run(tmp_path, f)
    assert run.state == "resolved"
    assert run.attempts == 2, run
    said = retried(caplog)
    assert ("ImportInterrupted: func feature_funcs:double could not be loaded: its module feature_funcs raised "
            "ConnectionError: the feature store at 10.0.0.9:443 did not answer at ") in said, said


def test_a_module_that_cannot_reach_a_service_on_any_attempt_fails_its_run_saying_so_and_what_to_do(
        tmp_path: Path, users_module: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every attempt's worker process meets the ConnectionError: the run fails after its infrastructure retries, its
    recorded words saying how often it was tried and what to do. Was: "which may pass (not the module's mistake): a
    driver or worker tries again; a command, run it again", where no one tried again."""
    monkeypatch.setattr(loop, "INFRA_RETRY_DELAY", 0.01)
    monkeypatch.setenv(FAULT_ENV, "connection-always:")
    f = users_module.double(21)
    with pytest.raises(ResolutionFailed) as failed:
        f.resolve(ProcessResolver(home=tmp_path / "home"))
    run = root_run(tmp_path, f)
    assert run.state == "failed"
    assert run.attempts == loop.INFRA_RETRIES + 1, run
    assert run.error is not None and run.error["type"] == "ImportInterrupted", run.error
    words = run.error["message"]
    assert words.startswith("func feature_funcs:double could not be loaded: its module feature_funcs raised "
                            "ConnectionError: the feature store at 10.0.0.9:443 did not answer at "), words
    assert words.endswith(f", which may pass (not the module's mistake); tried {loop.INFRA_RETRIES + 1} times: "
                          "check that the module's top level can reach what it reads (a service, a network mount, "
                          "memory), then rerun"), words
    assert "tries again" not in words and "tries again" not in str(failed.value)
    assert words in str(failed.value)


def test_a_module_with_a_typod_name_fails_its_run_at_once_with_the_words_to_fix_it(
        tmp_path: Path, users_module: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(FAULT_ENV, "name:")
    f = users_module.double(21)
    with pytest.raises(ResolutionFailed):
        f.resolve(ProcessResolver(home=tmp_path / "home"))
    run = root_run(tmp_path, f)
    assert run.state == "failed"
    assert run.attempts == 1, run
    assert run.error is not None
    assert run.error["type"] == "FuncNotFound", run.error
    assert ("func feature_funcs:double cannot be loaded: its module feature_funcs raised NameError: name "
            "'load_features' is not defined at ") in run.error["message"], run.error


def driver_of(tmp_path: Path, users_module: ModuleType, db_url: str, fault: str) -> tuple[str, dict[str, str]]:
    """A driver process's environment for ``users_module.double(21)``, pickled into the storage at
    ``tmp_path/storage``, its records in ``db_url``, ``fault`` its module's ``$SK_TEST_IMPORT_FAULT``: (its root's id,
    the environment)."""
    storage = LocalStorage(tmp_path / "storage")
    f = users_module.double(21)
    s = serialization.serialize(f)
    storage.put(artifact_key(s.id), s.payload)
    spec = DriverSpec(root={"id": s.id, "format": s.format}, storage_url=storage_url(storage),
                      image="127.0.0.1:5000/none@sha256:" + "0" * 64, build_hash="h" * 64, executor="process")
    env = {k: v for k, v in os.environ.items() if k not in (SERVER_ENV, API_KEY_ENV, API_KEY_FILE_ENV)}
    env.update({DB_URL_ENV: db_url, FAULT_ENV: fault, DRIVER_ENV: spec.to_json(),
                "PYTHONPATH": os.pathsep.join([os.getcwd(), str(Path(users_module.__file__).parent)])})
    return f.id, env


def run_driver(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``python -m sematic_k8s.driver`` run to its end in ``env``."""
    return subprocess.run([sys.executable, "-m", "sematic_k8s.driver"], capture_output=True, text=True, env=env,
                          timeout=120)


def test_a_driver_whose_root_funcs_module_cannot_reach_a_service_exits_to_be_started_again_then_resolves(
        tmp_path: Path, users_module: ModuleType) -> None:
    """A driver process loading its pickled root (whose func's module raises ConnectionError at its first import):
    exit 75, nothing recorded failed; started again, it resolves. Was: exit 1, the resolution recorded failed for
    good ("cannot be loaded ... fix the module")."""
    db_url = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    marker = tmp_path / "raised-once"
    root_id, env = driver_of(tmp_path, users_module, db_url, f"connection:{marker}")
    first = run_driver(env)
    assert first.returncode == DRIVER_EXIT_RETRY, first.stderr
    assert marker.exists()
    assert "ImportInterrupted" in first.stderr and "feature store at 10.0.0.9:443 did not answer" in first.stderr
    recorded = sql_store(db_url).get_resolution(root_id)
    assert recorded is None or recorded.state not in ("failed", "resolved"), recorded
    again = run_driver(env)
    assert again.returncode == 0, again.stderr
    assert sql_store(db_url).get_resolution(root_id).state == "resolved"


def test_a_driver_whose_root_funcs_module_never_loads_says_what_to_do_if_it_is_not_started_again(
        tmp_path: Path, users_module: ModuleType) -> None:
    """A driver process whose root func's module raises ConnectionError at every import exits 75 each time; its last
    line (the last log line a CloudResolver records when its Job's tries are spent, or a Docker driver, never started
    again, exits) says what to do then. Was: "...: a driver or worker tries again; a command, run it again"."""
    _, env = driver_of(tmp_path, users_module, f"sqlite:///{tmp_path / 'db.sqlite3'}", "connection-always:")
    done = run_driver(env)
    assert done.returncode == DRIVER_EXIT_RETRY, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("driver: an infrastructure failure (ImportInterrupted: func feature_funcs:double could "
                           "not be loaded: its module feature_funcs raised ConnectionError: "), last
    assert last.endswith(", which may pass (not the module's mistake)); exiting 75 to be started again; if it is "
                         "not (its Job's tries spent, or launched by Docker): check that the module's top level can "
                         "reach what it reads (a service, a network mount, memory), then rerun"), last
    assert "tries again" not in done.stderr


@pytest.mark.parametrize(("top_level", "raises"), [
    ("raise ConnectionError('refused')", ImportInterrupted),
    ("raise TimeoutError('timed out')", ImportInterrupted),
    ("import errno\nraise OSError(errno.EIO, 'Input/output error', '/mnt/features/table.parquet')",
     ImportInterrupted),
    ("raise OSError(errno.ESTALE, 'Stale file handle')", ImportInterrupted),
    ("raise MemoryError()", ImportInterrupted),
    ("from sematic_k8s.errors import ServerError\nraise ServerError('the server did not answer')", ServerError),
    ("load_features()", FuncNotFound),
    ("raise ValueError('bad setting')", FuncNotFound),
    ("import os\nos.no_such_function()", FuncNotFound),
    ("open('/no/such/file.csv')", FuncNotFound),  # a path of its own: stays until the module or its image changes
    ("def broken(:\n    pass", FuncNotFound),
], ids=["ConnectionError", "TimeoutError", "EIO", "ESTALE", "MemoryError", "ServerError", "NameError", "ValueError",
        "AttributeError", "FileNotFoundError", "SyntaxError"])
def test_what_a_modules_top_level_raises_decides_whether_its_load_is_tried_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, top_level: str, raises: type[Exception]) -> None:
    """An error that may pass keeps its kind through the load (ImportInterrupted naming the module, an
    InfrastructureError itself: a driver exits 75, a worker's attempt is run again); the module's mistake is
    FuncNotFound. Was: FuncNotFound for each."""
    name = f"top_level_{abs(hash(top_level))}"
    _, error = load_top_level(tmp_path, monkeypatch, name, "import errno\n" + top_level, raises)
    if isinstance(error, ImportInterrupted):
        assert error.module == name
        assert f"func {name}:f could not be loaded: its module {name} raised " in str(error)
        assert str(error).endswith(", which may pass (not the module's mistake)")
        assert "\n" not in str(error)
    elif raises is FuncNotFound:
        assert f"func {name}:f cannot be loaded: its module {name} raised " in str(error)


@pytest.fixture
def refusing_port() -> Iterator[int]:
    """A local port bound but not listening: every connection to it is refused (ECONNREFUSED), for real."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()[1]


BOTOCORE = ("import botocore.config, botocore.session\n"
            "botocore.session.get_session().create_client('s3', endpoint_url='http://127.0.0.1:PORT', "
            "region_name='us-east-1', aws_access_key_id='k', aws_secret_access_key='s', "
            "config=botocore.config.Config(retries={'max_attempts': 1})).list_buckets()")


@pytest.mark.parametrize(("top_level", "raises"), [
    ("import httpx\nhttpx.get('http://127.0.0.1:PORT/')", ImportInterrupted),  # httpx.ConnectError
    ("import urllib3\nurllib3.PoolManager(retries=0).request('GET', 'http://127.0.0.1:PORT/')",
     ImportInterrupted),  # urllib3's MaxRetryError
    (BOTOCORE, ImportInterrupted),  # botocore's EndpointConnectionError
    ("import requests\nrequests.get('http://127.0.0.1:PORT/')", ImportInterrupted),  # an OSError already
    ("try:\n    import httpx\n    httpx.get('http://127.0.0.1:PORT/')\nexcept httpx.ConnectError:\n"
     "    FEATURES = load_defaults()", FuncNotFound),  # the user's typo while handling it: Python's own NameError
    ("import json\ntry:\n    import httpx\n    httpx.get('http://127.0.0.1:PORT/')\nexcept httpx.ConnectError:\n"
     "    FEATURES = json.loads('{\"rows\": 3,}')", FuncNotFound),  # its own bad fallback: Python's JSONDecodeError
    ("class SettingsMissing(Exception):\n    pass\ntry:\n    open('/no/such/settings.toml')\n"
     "except OSError as e:\n    raise SettingsMissing('no settings file') from e", FuncNotFound),  # a path of its own
], ids=["httpx", "urllib3", "botocore", "requests", "NameError-handling-ConnectError",
        "JSONDecodeError-handling-ConnectError", "own-error-from-a-path"])
def test_a_librarys_connection_error_that_is_no_oserror_is_told_apart_by_what_it_was_raised_from(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, refusing_port: int, top_level: str,
        raises: type[Exception]) -> None:
    """httpx's ConnectError, urllib3's MaxRetryError and botocore's EndpointConnectionError are no OSErrors: each is
    raised from the socket's ConnectionRefusedError, which decides. Was: FuncNotFound 'fix the module' for the three
    (a refused connection failing the run for good). The error is said at the user's line that called the library
    (was: the library's own file, httpx/_transports/default.py:118)."""
    name = f"library_{abs(hash(top_level))}"
    source, error = load_top_level(tmp_path, monkeypatch, name, top_level.replace("PORT", str(refusing_port)), raises)
    if raises is ImportInterrupted:  # at the user's line that called the library, not in the library's own files
        assert f"func {name}:f could not be loaded: its module {name} raised " in str(error)
        assert f" at {source}:{top_level.count(chr(10)) + 1}, which may pass " in str(error), error


USER_SITE_LOAD = """
import sys
from sematic_k8s.func import load_func
try:
    load_func("userpipe:f", sys.argv[1])
except Exception as e:
    print(f"{type(e).__name__}: {e}")
"""


def test_a_library_installed_in_the_user_site_is_not_named_as_the_users_line(tmp_path: Path) -> None:
    """A library installed with ``pip install --user`` (its files under $PYTHONUSERBASE's site-packages) raising a
    refused connection from the top level of the user's module: the error is said at the user's line that called it.
    Was: at the library's own file (only sysconfig's paths were taken for installed libraries' files)."""
    env = {**os.environ, "PYTHONUSERBASE": str(tmp_path / "userbase")}
    user_site = Path(subprocess.run([sys.executable, "-c", "import site; print(site.getusersitepackages())"], env=env,
                                    check=True, capture_output=True, text=True).stdout.strip())
    assert user_site.is_relative_to(tmp_path)
    (user_site / "flakylib").mkdir(parents=True)
    (user_site / "flakylib" / "__init__.py").write_text(
        "def fetch(url):\n    raise ConnectionRefusedError(111, f'Connection refused: {url}')\n")
    project = tmp_path / "project"
    project.mkdir()
    source = project / "userpipe.py"
    source.write_text("import flakylib\n\nSCHEMA = flakylib.fetch('http://10.0.0.9/schema')\n")
    root = Path(__file__).resolve().parents[2]
    # the user site on the path as site.py puts it there for an interpreter that reads it (this venv's does not)
    env["PYTHONPATH"] = os.pathsep.join([str(project), str(user_site), str(root)])
    said = subprocess.run([sys.executable, "-c", USER_SITE_LOAD, str(source)], env=env, check=True,
                          capture_output=True, text=True, timeout=120).stdout.strip()
    assert said.startswith("ImportInterrupted: func userpipe:f could not be loaded: its module userpipe raised "
                           "ConnectionRefusedError: "), said
    assert f" at {source}:3, which may pass " in said, said


VALUE_MODULE = textwrap.dedent("""
    import dataclasses
    import os

    marker = os.environ.get("SK_TEST_IMPORT_FAULT", "")
    if marker and not os.path.exists(marker):  # its first import only
        open(marker, "w").close()
        raise ConnectionError("the schema registry at 10.0.0.9:443 did not answer")

    @dataclasses.dataclass
    class Features:
        rows: int
""")


@pytest.mark.parametrize("as_pickle", [False, True], ids=["json", "pickle"])
def test_a_values_class_whose_module_cannot_reach_a_service_as_it_loads_is_an_import_interrupted(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, as_pickle: bool) -> None:
    """A value whose class' module raises ConnectionError at its first import (a JSON value's class, a pickle's
    global): ImportInterrupted naming the module (an InfrastructureError: the worker's attempt run again, a driver
    started again), and the value loads on the next try. Was: ArtifactUnloadable, the taking run failed for good."""
    with users_modules(monkeypatch, tmp_path / "code", feature_types=VALUE_MODULE):
        features = importlib.import_module("feature_types").Features(rows=3)
        s = serialization.serialize({"f": features, "lock": threading.Lock} if as_pickle else features)
        assert s.format == (serialization.PICKLE if as_pickle else serialization.JSON)
        sys.modules.pop("feature_types")
        marker = tmp_path / "raised-once"
        monkeypatch.setenv(FAULT_ENV, str(marker))
        with pytest.raises(ImportInterrupted) as raised:
            serialization.load_recorded(serialization.Value(s.id, s.format, s.type_name), s.payload)
        assert marker.exists()
        assert raised.value.module == "feature_types"
        assert ("Features could not be loaded: its module feature_types raised ConnectionError: the schema registry "
                "at 10.0.0.9:443 did not answer at ") in str(raised.value)
        assert "feature_types" not in sys.modules
        again = serialization.load_recorded(serialization.Value(s.id, s.format, s.type_name), s.payload)
        assert (again["f"] if as_pickle else again).rows == 3


HALF_LOADED = textwrap.dedent("""
    import os

    import sematic_k8s as sk

    @sk.func
    def score(x: int) -> int:
        return MODEL + x

    if not os.path.exists(os.environ["SK_TEST_IMPORT_FAULT"]):  # its first import only
        open(os.environ["SK_TEST_IMPORT_FAULT"], "w").close()
        raise ConnectionError("the model store at 10.0.0.9:443 did not answer")
    MODEL = 40
""")


def test_a_func_its_module_registered_before_raising_is_loaded_again_not_kept_half_loaded(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The module's top level registered ``score`` and then raised ConnectionError (ImportInterrupted): loading it
    again in the same process runs the module again, whose ``score`` sees ``MODEL``. Was: the second load returned
    the first ``score``, of the module that stopped halfway (not in sys.modules): NameError 'MODEL' when it ran, the
    run failed as the user's mistake."""
    with users_modules(monkeypatch, tmp_path, half_loaded=HALF_LOADED):
        monkeypatch.setenv(FAULT_ENV, str(tmp_path / "raised-once"))
        with pytest.raises(ImportInterrupted):
            load_func("half_loaded:score")
        assert "half_loaded" not in sys.modules
        assert load_func("half_loaded:score").fn(2) == 42


TAKER_MODULE = textwrap.dedent("""
    import sematic_k8s as sk

    @sk.func(inline=False)
    def count(features) -> int:  # its module does not import feature_types: the input's load does
        return features.rows
""")


def test_a_worker_whose_inputs_class_module_cannot_reach_a_service_loses_one_attempt_and_the_run_resolves(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """A worker process loading its input, a JSON value whose class' module raises ConnectionError at its first
    import: that attempt is an infrastructure failure, the next resolves. Was: the run failed for good as
    ArtifactUnloadable ("its class changed since it was stored")."""
    caplog.set_level(logging.WARNING, "sematic_k8s")
    code = tmp_path / "code"
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([os.getcwd(), str(code)]))
    with users_modules(monkeypatch, code, feature_types=VALUE_MODULE, feature_taker=TAKER_MODULE):
        features = importlib.import_module("feature_types").Features(rows=3)
        f = importlib.import_module("feature_taker").count(features)
        marker = tmp_path / "raised-once"
        monkeypatch.setenv(FAULT_ENV, str(marker))
        assert f.resolve(ProcessResolver(home=tmp_path / "home")) == 3
    assert marker.exists()  # the first attempt met the ConnectionError
    run = root_run(tmp_path, f)
    assert (run.state, run.attempts) == ("resolved", 2), run
    said = retried(caplog)
    assert ("ImportInterrupted: a value's feature_types.Features could not be loaded: its module feature_types raised "
            "ConnectionError: the schema registry at 10.0.0.9:443 did not answer at ") in said, said


@pytest.mark.parametrize(("top_level", "raises"), [
    ("class SettingsInvalid(Exception):\n    pass\ntry:\n    import httpx\n    httpx.get('http://127.0.0.1:PORT/')\n"
     "except httpx.ConnectError:\n    raise SettingsInvalid('bad config')", FuncNotFound),  # while handling it
    ("class SettingsInvalid(Exception):\n    pass\ntry:\n    import httpx\n    httpx.get('http://127.0.0.1:PORT/')\n"
     "except httpx.ConnectError as e:\n    raise SettingsInvalid('bad config') from e", FuncNotFound),  # from it
    ("import httpx\ntry:\n    httpx.get('http://127.0.0.1:PORT/')\nexcept httpx.ConnectError:\n"
     "    httpx.get('fallback.example/schema')", FuncNotFound),  # httpx's error of the user's bad fallback
    ("import httpx\ntry:\n    httpx.get('http://127.0.0.1:PORT/')\nexcept httpx.ConnectError:\n"
     "    print('the feature store did not answer')\n    raise", ImportInterrupted),  # the connection error again
    ("import httpx\ntry:\n    httpx.get('http://127.0.0.1:PORT/')\nexcept httpx.ConnectError as e:\n"
     "    raise ConnectionError('the feature store did not answer') from e", ImportInterrupted),  # one that may pass
], ids=["own-error-handling-ConnectError", "own-error-from-ConnectError", "library-error-in-users-except",
        "re-raised", "ConnectionError-from-ConnectError"])
def test_an_error_the_users_code_raised_from_a_connection_error_is_the_modules_mistake(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, refusing_port: int, top_level: str,
        raises: type[Exception]) -> None:
    """An error the module's own code raised (its own class, while handling a refused connection or from it), or one
    a library raised from the module's own ``except`` (a bad fallback URL), is the module's mistake: FuncNotFound at
    once. Only a library's error raised from one the library itself caught is judged by it; the connection error
    itself, re-raised or one that may pass raised from it, may pass. Was: ImportInterrupted "which may pass" for the
    first three, walked down their context or cause to the refused connection (a worker tried it 4 times)."""
    name = f"own_{abs(hash(top_level))}"
    source, error = load_top_level(tmp_path, monkeypatch, name, top_level.replace("PORT", str(refusing_port)), raises)
    if raises is FuncNotFound:
        assert f"func {name}:f cannot be loaded: its module {name} raised " in str(error), error
        assert f" at {source}:" in str(error) and "; fix the module" in str(error), error


OWN_ERROR_MODULE = textwrap.dedent("""
    import os

    import sematic_k8s as sk

    class SettingsInvalid(Exception):
        pass

    if os.environ.get("SK_TEST_IMPORT_FAULT"):
        try:
            raise ConnectionError("the settings service at 10.0.0.9:443 did not answer")
        except ConnectionError:
            raise SettingsInvalid("bad config: no settings service and no local default")

    @sk.func(inline=False)
    def double(x: int) -> int:
        return 2 * x
""")


def test_a_modules_own_error_raised_while_handling_a_connection_error_fails_its_run_at_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Worker processes import a module whose top level raises its own SettingsInvalid while handling a
    ConnectionError: the run fails on its first attempt as FuncNotFound naming that line. Was: ImportInterrupted,
    tried 4 times, then failed with "check that the module's top level can reach what it reads"."""
    monkeypatch.setattr(loop, "INFRA_RETRY_DELAY", 0.01)
    with users_modules(monkeypatch, tmp_path, settings_funcs=OWN_ERROR_MODULE):
        f = importlib.import_module("settings_funcs").double(21)
        monkeypatch.setenv(FAULT_ENV, "own")
        with pytest.raises(ResolutionFailed):
            f.resolve(ProcessResolver(home=tmp_path / "home"))
    run = root_run(tmp_path, f)
    assert (run.state, run.attempts) == ("failed", 1), run
    assert run.error is not None and run.error["type"] == "FuncNotFound", run.error
    assert ("func settings_funcs:double cannot be loaded: its module settings_funcs raised SettingsInvalid: bad "
            f"config: no settings service and no local default at {tmp_path / 'settings_funcs.py'}:13; fix the module"
            ) in run.error["message"], run.error


@pytest.fixture
def service() -> Iterator[Front]:
    """A stand-in service (:func:`s3_front` with no S3 API behind it) for a module's top level to call as it loads:
    its scripted ``answers["GET"]`` are real HTTP answers; ``refused`` lists each request it answered."""
    with s3_front() as front:
        yield front


BOTO3_GET = ("import boto3, botocore.config\n"
             "s3 = boto3.client('s3', endpoint_url='URL', region_name='us-east-1', aws_access_key_id='k', "
             "aws_secret_access_key='s', config=botocore.config.Config(retries={'total_max_attempts': 1}, "
             "s3={'addressing_style': 'path'}))\n"
             "SCHEMA = s3.get_object(Bucket='features', Key='schema.json')['Body'].read()")
HTTPX_GET = "import httpx\nhttpx.get('URL/schema').raise_for_status()"
REQUESTS_GET = "import requests\nrequests.get('URL/schema').raise_for_status()"
URLLIB_GET = "import urllib.request\nurllib.request.urlopen('URL/schema')"
AIOHTTP_GET = ("import asyncio, aiohttp\n"
               "async def get(url):\n"
               "    async with aiohttp.ClientSession() as s, s.get(url) as r:\n"
               "        r.raise_for_status()  # raises\n"
               "asyncio.run(get('URL/schema'))")
SLOW_DOWN = (503, s3_error("SlowDown", "Please reduce your request rate."))
ACCESS_DENIED = (403, s3_error("AccessDenied", "Access Denied"))


@pytest.mark.parametrize(("top_level", "answer", "raises", "said"), [
    (BOTO3_GET, SLOW_DOWN, ImportInterrupted, "ClientError: An error occurred (SlowDown) when calling the GetObject"),
    (BOTO3_GET, (500, s3_error("InternalError", "We encountered an internal error. Please try again.")),
     ImportInterrupted, "ClientError: An error occurred (InternalError)"),
    (BOTO3_GET, ACCESS_DENIED, FuncNotFound,
     "AccessDenied: An error occurred (AccessDenied) when calling the GetObject operation (reached max retries: 0): "
     "Access Denied"),
    (BOTO3_GET, (404, s3_error("NoSuchKey", "The specified key does not exist.")), FuncNotFound,
     "NoSuchKey: An error occurred (NoSuchKey) when calling the GetObject operation (reached max retries: 0): The "
     "specified key does not exist."),
    (HTTPX_GET, (503, b"{}"), ImportInterrupted, "HTTPStatusError: Server error '503 Service Unavailable' for url"),
    (HTTPX_GET, (429, b"{}"), ImportInterrupted, "HTTPStatusError: Client error '429 Too Many Requests' for url"),
    (HTTPX_GET, (404, b"{}"), FuncNotFound, "HTTPStatusError: Client error '404 Not Found' for url"),
    (REQUESTS_GET, (503, b"{}"), ImportInterrupted, "HTTPError: 503 Server Error"),
    (REQUESTS_GET, (403, b"{}"), FuncNotFound, "HTTPError: 403 Client Error: Forbidden for url"),
    (URLLIB_GET, (503, b"{}"), ImportInterrupted, "HTTPError: HTTP Error 503: Service Unavailable"),
    (URLLIB_GET, (404, b"{}"), FuncNotFound, "HTTPError: HTTP Error 404: Not Found"),
    (AIOHTTP_GET, (503, b"{}"), ImportInterrupted, "ClientResponseError: 503, message='Service Unavailable'"),
    (AIOHTTP_GET, (429, b"{}"), ImportInterrupted, "ClientResponseError: 429, message='Too Many Requests'"),
    (AIOHTTP_GET, (404, b"{}"), FuncNotFound, "ClientResponseError: 404, message='Not Found'"),
], ids=["boto3-503-SlowDown", "boto3-500", "boto3-403", "boto3-404", "httpx-503", "httpx-429", "httpx-404",
        "requests-503", "requests-403", "urllib-503", "urllib-404", "aiohttp-503", "aiohttp-429", "aiohttp-404"])
def test_a_services_answer_at_import_is_judged_by_its_status(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, service: Front, top_level: str,
        answer: tuple[int, bytes], raises: type[Exception], said: str) -> None:
    """A service that answered the module's top level a 5xx or 429 (S3's SlowDown, httpx's or requests'
    ``raise_for_status``, urllib's HTTPError, aiohttp's ClientResponseError) may pass: ImportInterrupted. A 4xx (403,
    404) is the module's mistake, FuncNotFound at once, in the service's words. Was: botocore's ClientError and
    httpx's HTTPStatusError, no OSErrors, FuncNotFound whatever the status (a throttled S3 failing the run for good);
    requests' and urllib's HTTPError, OSErrors, ImportInterrupted whatever the status (a 403 or 404 tried 4 times);
    aiohttp's ClientResponseError (no OSError) FuncNotFound whatever the status."""
    service.answers["GET"] = [answer]
    judged(tmp_path, monkeypatch, service, top_level, raises, said, asked=1)


def judged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, service: Front, top_level: str, raises: type[Exception],
           said: str, *, asked: int) -> None:
    """Module ``top_level`` (``URL`` the service's address) raises ``raises`` as it loads, saying ``said`` (``URL``,
    ``PORT``: the service's) at its line marked ``# raises`` (else its last), having asked ``service`` ``asked`` times
    (each request it answered from its script)."""
    name = f"answered_{abs(hash((top_level, said)))}"
    source, error = load_top_level(tmp_path, monkeypatch, name, top_level.replace("URL", service.endpoint), raises)
    assert len(service.refused) == asked, service.refused
    lines = top_level.splitlines()
    line = next((n for n, text in enumerate(lines, 1) if text.endswith("# raises")), len(lines))
    words = str(error)
    said = said.replace("URL", service.endpoint).replace("PORT", service.endpoint.rpartition(":")[2])
    assert f"its module {name} raised {said}" in words, words
    assert f" at {source}:{line}" in words, words
    if raises is ImportInterrupted:
        assert words.endswith(", which may pass (not the module's mistake)"), words
    else:
        assert "; fix the module" in words, words


URLLIB3_RETRIED = ("import urllib3\n"
                   "retry = urllib3.Retry(total=1, status_forcelist=[STATUS])\n"
                   "urllib3.PoolManager(retries=retry).request('GET', 'URL/schema')")
RETRIED_URLLIB3 = ("MaxRetryError: HTTPConnectionPool(host='127.0.0.1', port=PORT): Max retries exceeded with url: "
                   "/schema")
REQUESTS_RETRIED = ("import requests\n"
                    "from requests.adapters import HTTPAdapter\n"
                    "from urllib3 import Retry\n"
                    "session = requests.Session()\n"
                    "session.mount('http://', HTTPAdapter(max_retries=Retry(total=1, status_forcelist=[STATUS])))\n"
                    "session.get('URL/schema')")
RETRIED_REQUESTS = RETRIED_URLLIB3.replace("MaxRetryError:", "RetryError:", 1)


@pytest.mark.parametrize(("top_level", "answer", "asked", "raises", "said"), [
    (URLLIB3_RETRIED.replace("STATUS", "503"), (503, b"{}"), 2, ImportInterrupted,
     f"{RETRIED_URLLIB3} (Caused by ResponseError('too many 503 error responses'))"),
    (URLLIB3_RETRIED.replace("STATUS", "404"), (404, b"{}"), 2, FuncNotFound,
     f"{RETRIED_URLLIB3} (Caused by ResponseError('too many 404 error responses'))"),
    ("import urllib3\nurllib3.Retry(total=0).increment('GET', 'URL/schema')", (503, b"{}"), 0, ImportInterrupted,
     "MaxRetryError: None: Max retries exceeded with url: URL/schema (Caused by ResponseError('too many error "
     "responses'))"),
    (REQUESTS_RETRIED.replace("STATUS", "503"), (503, b"{}"), 2, ImportInterrupted,
     f"{RETRIED_REQUESTS} (Caused by ResponseError('too many 503 error responses'))"),
    (REQUESTS_RETRIED.replace("STATUS", "404"), (404, b"{}"), 2, FuncNotFound,
     f"{RETRIED_REQUESTS} (Caused by ResponseError('too many 404 error responses'))"),
], ids=["503", "404", "no-status", "requests-503", "requests-404"])
def test_urllib3s_retried_error_answers_at_import_are_judged_by_the_status_it_retried_on(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, service: Front, top_level: str, answer: tuple[int, bytes],
        asked: int, raises: type[Exception], said: str) -> None:
    """urllib3's MaxRetryError whose reason is a ResponseError (its Retry's ``status_forcelist`` answered every try):
    the status its reason names decides as a service's answer (503: ImportInterrupted, 404: FuncNotFound); a reason
    naming none ("too many error responses") may pass. So does requests' RetryError wrapping one (a Session mounted
    with an HTTPAdapter of that Retry). Was: FuncNotFound "fix the module" for each (no OSError, nor raised from one),
    a service answering 503 on every try failing the run for good; requests' RetryError (an OSError) ImportInterrupted
    whatever the status, a retried 404 tried 4 times."""
    service.answers["GET"] = [answer]
    judged(tmp_path, monkeypatch, service, top_level, raises, said, asked=asked)


SERVICE_MODULE = textwrap.dedent("""
    import os

    import sematic_k8s as sk

    url = os.environ.get("SK_TEST_IMPORT_FAULT")
    if url:  # a worker's import only
        import boto3
        import botocore.config

        s3 = boto3.client("s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id="k",
                          aws_secret_access_key="s", config=botocore.config.Config(
                              retries={"total_max_attempts": 1}, s3={"addressing_style": "path"}))
        SCHEMA = s3.get_object(Bucket="features", Key="schema.json")["Body"].read()

    @sk.func(inline=False)
    def double(x: int) -> int:
        return 2 * x
""")


@pytest.mark.parametrize("throttled", [True, False], ids=["503-then-200", "403"])
def test_a_worker_whose_module_s3_answers_503_at_import_loses_one_attempt_and_a_403_fails_at_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, service: Front,
        throttled: bool) -> None:
    """Worker processes import a module whose top level reads an object with boto3 from a service answering 503
    SlowDown, then 200: that attempt is an infrastructure failure, the next resolves. One answering 403 AccessDenied
    fails the run on its first attempt as FuncNotFound in S3's words. Was: the 503 failed the run at once as
    FuncNotFound "fix the module" (botocore's ClientError taken for the module's mistake)."""
    caplog.set_level(logging.WARNING, "sematic_k8s")
    service.answers["GET"] = [SLOW_DOWN, (200, b"{}")] if throttled else [ACCESS_DENIED]
    with users_modules(monkeypatch, tmp_path, s3_funcs=SERVICE_MODULE):
        f = importlib.import_module("s3_funcs").double(21)
        monkeypatch.setenv(FAULT_ENV, service.endpoint)
        if throttled:
            assert f.resolve(ProcessResolver(home=tmp_path / "home")) == 42
        else:
            with pytest.raises(ResolutionFailed):
                f.resolve(ProcessResolver(home=tmp_path / "home"))
    run = root_run(tmp_path, f)
    raised = "func s3_funcs:double could not be loaded: its module s3_funcs raised "
    operation = "when calling the GetObject operation (reached max retries: 0):"
    if throttled:
        assert (run.state, run.attempts, len(service.refused)) == ("resolved", 2, 2), (run, service.refused)
        said = retried(caplog)
        assert (f"ImportInterrupted: {raised}ClientError: An error occurred (SlowDown) {operation} Please reduce your "
                "request rate. at ") in said, said
    else:
        assert (run.state, run.attempts, len(service.refused)) == ("failed", 1, 1), (run, service.refused)
        assert run.error is not None and run.error["type"] == "FuncNotFound", run.error
        assert (raised.replace("could not", "cannot") + f"AccessDenied: An error occurred (AccessDenied) {operation} "
                f"Access Denied at {tmp_path / 's3_funcs.py'}:14; fix the module") in run.error["message"], run.error

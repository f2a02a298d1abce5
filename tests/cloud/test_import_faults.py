"""A recorded func's module that raises as a worker process imports it: an error that may pass (ConnectionError: a
module that reads a network mount or calls a service at import) loses that attempt only, run again as an
infrastructure failure; the user's mistake (NameError) fails the run at once with FuncNotFound's words. Real worker
processes import a module of the test's own, whose top level raises as ``$SK_TEST_IMPORT_FAULT`` says."""

from __future__ import annotations

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
from sematic_k8s import serialization
from sematic_k8s.errors import FuncNotFound, ImportInterrupted, ResolutionFailed, ServerError
from sematic_k8s.executors.inline import InlineExecutor
from sematic_k8s.executors.inline_or_remote import InlineOrRemoteExecutor
from sematic_k8s.executors.process import ProcessExecutor
from sematic_k8s.func import load_func
from sematic_k8s.resolvers import loop
from sematic_k8s.settings import API_KEY_ENV, API_KEY_FILE_ENV, DB_URL_ENV, DRIVER_ENV, SERVER_ENV
from sematic_k8s.specs import DRIVER_EXIT_RETRY, DriverSpec
from sematic_k8s.storage.base import artifact_key
from sematic_k8s.storage.local import LocalStorage
from sematic_k8s.storage.urls import storage_url
from sematic_k8s.store import sql_store

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


class ProcessResolver(sk.LocalResolver):
    """Inline funcs in this process, the others in worker processes."""

    def _parts(self):  # noqa: ANN202
        storage = self.storage
        return self.store, storage, InlineOrRemoteExecutor(InlineExecutor(self.max_parallelism),
                                                           ProcessExecutor(storage, storage_url(storage)))


@pytest.fixture
def users_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """The user's module, imported here without a fault (the test's process records its func)."""
    code = tmp_path / "code"
    code.mkdir()
    (code / "feature_funcs.py").write_text(MODULE)
    monkeypatch.syspath_prepend(str(code))
    monkeypatch.delenv(FAULT_ENV, raising=False)
    sys.modules.pop("feature_funcs", None)
    module = importlib.import_module("feature_funcs")
    yield module
    sys.modules.pop("feature_funcs", None)


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
    [run] = sql_store(f"sqlite:///{tmp_path / 'home' / 'db.sqlite3'}").runs_of_root(f.id)
    assert run.state == "resolved"
    assert run.attempts == 2, run
    [retried] = [r.getMessage() for r in caplog.records if "infrastructure failure on attempt 1" in r.getMessage()]
    assert ("ImportInterrupted: func feature_funcs:double could not be loaded: its module feature_funcs raised "
            "ConnectionError: the feature store at 10.0.0.9:443 did not answer at ") in retried, retried


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
    [run] = sql_store(f"sqlite:///{tmp_path / 'home' / 'db.sqlite3'}").runs_of_root(f.id)
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
    [run] = sql_store(f"sqlite:///{tmp_path / 'home' / 'db.sqlite3'}").runs_of_root(f.id)
    assert run.state == "failed"
    assert run.attempts == 1, run
    assert run.error is not None
    assert run.error["type"] == "FuncNotFound", run.error
    assert ("func feature_funcs:double cannot be loaded: its module feature_funcs raised NameError: name "
            "'load_features' is not defined at ") in run.error["message"], run.error


def test_a_driver_whose_root_funcs_module_cannot_reach_a_service_exits_to_be_started_again_then_resolves(
        tmp_path: Path, users_module: ModuleType) -> None:
    """A driver process loading its pickled root (whose func's module raises ConnectionError at its first import):
    exit 75, nothing recorded failed; started again, it resolves. Was: exit 1, the resolution recorded failed for
    good ("cannot be loaded ... fix the module")."""
    storage = LocalStorage(tmp_path / "storage")
    f = users_module.double(21)
    s = serialization.serialize(f)
    storage.put(artifact_key(s.id), s.payload)
    spec = DriverSpec(root={"id": s.id, "format": s.format}, storage_url=storage_url(storage),
                      image="127.0.0.1:5000/none@sha256:" + "0" * 64, build_hash="h" * 64, executor="process")
    db_url = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    marker = tmp_path / "raised-once"
    env = {k: v for k, v in os.environ.items() if k not in (SERVER_ENV, API_KEY_ENV, API_KEY_FILE_ENV)}
    env.update({DB_URL_ENV: db_url, FAULT_ENV: f"connection:{marker}", DRIVER_ENV: spec.to_json(),
                "PYTHONPATH": os.pathsep.join([os.getcwd(), str(Path(users_module.__file__).parent)])})
    first = subprocess.run([sys.executable, "-m", "sematic_k8s.driver"], capture_output=True, text=True, env=env,
                           timeout=120)
    assert first.returncode == DRIVER_EXIT_RETRY, first.stderr
    assert marker.exists()
    assert "ImportInterrupted" in first.stderr and "feature store at 10.0.0.9:443 did not answer" in first.stderr
    recorded = sql_store(db_url).get_resolution(f.id)
    assert recorded is None or recorded.state not in ("failed", "resolved"), recorded
    again = subprocess.run([sys.executable, "-m", "sematic_k8s.driver"], capture_output=True, text=True, env=env,
                           timeout=120)
    assert again.returncode == 0, again.stderr
    assert sql_store(db_url).get_resolution(f.id).state == "resolved"


def test_a_driver_whose_root_funcs_module_never_loads_says_what_to_do_if_it_is_not_started_again(
        tmp_path: Path, users_module: ModuleType) -> None:
    """A driver process whose root func's module raises ConnectionError at every import exits 75 each time; its last
    line (the last log line a CloudResolver records when its Job's tries are spent, or a Docker driver, never started
    again, exits) says what to do then. Was: "...: a driver or worker tries again; a command, run it again"."""
    storage = LocalStorage(tmp_path / "storage")
    f = users_module.double(21)
    s = serialization.serialize(f)
    storage.put(artifact_key(s.id), s.payload)
    spec = DriverSpec(root={"id": s.id, "format": s.format}, storage_url=storage_url(storage),
                      image="127.0.0.1:5000/none@sha256:" + "0" * 64, build_hash="h" * 64, executor="process")
    env = {k: v for k, v in os.environ.items() if k not in (SERVER_ENV, API_KEY_ENV, API_KEY_FILE_ENV)}
    env.update({DB_URL_ENV: f"sqlite:///{tmp_path / 'db.sqlite3'}", FAULT_ENV: "connection-always:",
                DRIVER_ENV: spec.to_json(),
                "PYTHONPATH": os.pathsep.join([os.getcwd(), str(Path(users_module.__file__).parent)])})
    done = subprocess.run([sys.executable, "-m", "sematic_k8s.driver"], capture_output=True, text=True, env=env,
                          timeout=120)
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
    source = tmp_path / f"{name}.py"
    source.write_text("import errno\n" + top_level + "\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        with pytest.raises(raises) as raised:
            load_func(f"{name}:f", str(source))
    finally:
        sys.modules.pop(name, None)
    assert type(raised.value) is raises
    if raises is ImportInterrupted:
        assert raised.value.module == name
        assert f"func {name}:f could not be loaded: its module {name} raised " in str(raised.value)
        assert str(raised.value).endswith(", which may pass (not the module's mistake)")
        assert "\n" not in str(raised.value)
    elif raises is FuncNotFound:
        assert f"func {name}:f cannot be loaded: its module {name} raised " in str(raised.value)


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
    source = tmp_path / f"{name}.py"
    source.write_text(top_level.replace("PORT", str(refusing_port)) + "\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        with pytest.raises(raises) as raised:
            load_func(f"{name}:f", str(source))
    finally:
        sys.modules.pop(name, None)
    assert type(raised.value) is raises
    if raises is ImportInterrupted:  # at the user's line that called the library, not in the library's own files
        assert f"func {name}:f could not be loaded: its module {name} raised " in str(raised.value)
        assert f" at {source}:{top_level.count(chr(10)) + 1}, which may pass " in str(raised.value), raised.value


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
    code = tmp_path / "code"
    code.mkdir()
    (code / "feature_types.py").write_text(VALUE_MODULE)
    monkeypatch.syspath_prepend(str(code))
    monkeypatch.delenv(FAULT_ENV, raising=False)
    sys.modules.pop("feature_types", None)
    try:
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
    finally:
        sys.modules.pop("feature_types", None)


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
    (tmp_path / "half_loaded.py").write_text(HALF_LOADED)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv(FAULT_ENV, str(tmp_path / "raised-once"))
    sys.modules.pop("half_loaded", None)
    try:
        with pytest.raises(ImportInterrupted):
            load_func("half_loaded:score")
        assert "half_loaded" not in sys.modules
        assert load_func("half_loaded:score").fn(2) == 42
    finally:
        sys.modules.pop("half_loaded", None)


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
    code.mkdir()
    (code / "feature_types.py").write_text(VALUE_MODULE)
    (code / "feature_taker.py").write_text(TAKER_MODULE)
    monkeypatch.syspath_prepend(str(code))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([os.getcwd(), str(code)]))
    monkeypatch.delenv(FAULT_ENV, raising=False)
    for name in ("feature_types", "feature_taker"):
        sys.modules.pop(name, None)
    try:
        features = importlib.import_module("feature_types").Features(rows=3)
        f = importlib.import_module("feature_taker").count(features)
        marker = tmp_path / "raised-once"
        monkeypatch.setenv(FAULT_ENV, str(marker))
        assert f.resolve(ProcessResolver(home=tmp_path / "home")) == 3
    finally:
        for name in ("feature_types", "feature_taker"):
            sys.modules.pop(name, None)
    assert marker.exists()  # the first attempt met the ConnectionError
    [run] = sql_store(f"sqlite:///{tmp_path / 'home' / 'db.sqlite3'}").runs_of_root(f.id)
    assert (run.state, run.attempts) == ("resolved", 2), run
    [retried] = [r.getMessage() for r in caplog.records if "infrastructure failure on attempt 1" in r.getMessage()]
    assert ("ImportInterrupted: a value's feature_types.Features could not be loaded: its module feature_types raised "
            "ConnectionError: the schema registry at 10.0.0.9:443 did not answer at ") in retried, retried

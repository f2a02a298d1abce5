"""Pipelines written as plain scripts (top-level ``pipeline(...).resolve(...)``, no ``__main__`` guard), run the
way users run them: ``python script.py``, then ``sematic-k8s rerun``, each in its own process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from sematic_k8s import settings
from sematic_k8s.store import sql_store

REPO = Path(__file__).resolve().parents[2]
CLI = Path(sys.executable).with_name("sematic-k8s")

SCRIPT = '''
import dataclasses
import sys

import sematic_k8s as sk
from sematic_k8s.executors.inline import InlineExecutor
from sematic_k8s.executors.inline_or_remote import InlineOrRemoteExecutor
from sematic_k8s.executors.process import ProcessExecutor
from sematic_k8s.storage.urls import storage_url

print("top level of the script", sys.argv)


@dataclasses.dataclass
class Metrics:
    score: float
    label: str


@sk.func(inline=WORKERS)
def measure(x: int) -> Metrics:
    print(f"measuring {x}")
    return Metrics(score=x / 2, label=f"x{x}")


@sk.func(inline=WORKERS)
def summarize(m: Metrics) -> str:
    assert type(m) is Metrics, type(m)  # the class of this module, wherever the value was made
    return f"{m.label}:{m.score}"


@sk.func
def pipeline(x: int) -> list:
    m = measure(x)
    return [summarize(m), m]


class ProcessResolver(sk.LocalResolver):
    """Non-inline funcs in worker processes (python -m sematic_k8s.worker), like pods."""

    def _parts(self):
        storage = self.storage
        remote = ProcessExecutor(storage, storage_url(storage))
        return self.store, storage, InlineOrRemoteExecutor(InlineExecutor(), remote)


resolver = ProcessResolver() if not WORKERS else sk.LocalResolver()
result = pipeline(3).resolve(resolver)
print("result", result)
assert type(result[1]) is Metrics
'''


def write_script(directory: Path, *, workers: bool) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "metrics_script.py"
    path.write_text(SCRIPT.replace("inline=WORKERS", f"inline={not workers}")
                    .replace("if not WORKERS", f"if {workers}"))
    return path


def run(args: list[str], home: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, settings.HOME_ENV: str(home), "PYTHONPATH": str(REPO)}
    env.pop(settings.SERVER_ENV, None)
    env.pop(settings.DB_URL_ENV, None)
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=180)


@pytest.mark.parametrize("workers", [False, True], ids=["in-process", "worker-processes"])
def test_script_pipeline_reruns_exactly_the_rerun(tmp_path: Path, workers: bool) -> None:
    home, project, elsewhere = tmp_path / "home", tmp_path / "project", tmp_path / "elsewhere"
    elsewhere.mkdir()
    script = write_script(project, workers=workers)
    first = run([sys.executable, str(script)], home, project)
    assert first.returncode == 0, first.stderr
    assert "result ['x3:1.5', Metrics(score=1.5, label='x3')]" in first.stdout
    store = sql_store(settings.db_url(home))
    [original] = store.list_resolutions()
    runs = {r.func_name: r for r in store.runs_of_root(original.id)}
    assert runs["measure"].func_path == "metrics_script:measure"  # not __main__: importable elsewhere
    assert runs["measure"].source_file == str(script)
    output = store.get_artifact(runs["measure"].output_id)
    assert output.type_name == "metrics_script.Metrics"

    rerun = run([str(CLI), "rerun", runs["measure"].id, "-o", "json"], home, elsewhere)
    assert rerun.returncode == 0, rerun.stderr
    new = json.loads(rerun.stdout)  # the script's prints went to stderr: stdout is the JSON alone
    assert new["state"] == "resolved" and new["rerun_of"] == original.id
    assert "top level of the script" in rerun.stderr and "measuring 3" in rerun.stderr
    assert f"['{script}']" in rerun.stderr  # the script saw its own path as argv, not the CLI's arguments
    assert {r.id for r in store.list_resolutions()} == {original.id, new["id"]}  # the rerun, and nothing else
    new_runs = {r.func_name: r for r in store.runs_of_root(new["id"])}
    assert new_runs["measure"].original_run_id == runs["measure"].id
    assert new_runs["measure"].output_id == runs["measure"].output_id  # the same value, the same artifact

    # the dataclass loads back in another process, without the script's pipeline running again
    code = textwrap.dedent(f"""
        from pathlib import Path
        from sematic_k8s.storage.base import artifact_loader
        from sematic_k8s.storage.local import LocalStorage
        from sematic_k8s.serialization import Value
        from sematic_k8s.store import sql_store
        store = sql_store("sqlite:///" + str(Path({str(home)!r}) / "db.sqlite3"))
        inline = lambda artifact_id: store.get_artifact(artifact_id).inline  # small values: in their records
        load = artifact_loader(LocalStorage(Path({str(home)!r}) / "storage"), inline)
        value = Value({output.id!r}, {output.format!r}, "", load=load).value
        print(type(value).__module__, type(value).__qualname__, value)
    """)
    loaded = run([sys.executable, "-c", code], home, project)
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout.splitlines()[-1] == "metrics_script Metrics Metrics(score=1.5, label='x3')"
    assert "top level of the script" in loaded.stderr
    assert len(store.list_resolutions()) == 2


def test_a_failing_func_shows_its_traceback_once_from_the_users_line(tmp_path: Path) -> None:
    script = tmp_path / "boom.py"
    script.write_text(textwrap.dedent("""
        import sematic_k8s as sk

        @sk.func
        def inner(x: int) -> int:
            return 1 // x  # the user's line

        @sk.func
        def pipeline(x: int) -> int:
            return inner(x)

        pipeline(0).resolve()
    """))
    proc = run([sys.executable, str(script)], tmp_path / "home", tmp_path)
    assert proc.returncode == 1
    err = proc.stderr
    assert err.count("return 1 // x  # the user's line") == 1
    assert err.count("ZeroDivisionError: integer division or modulo by zero") == 2  # the cause, and its summary
    assert "sematic_k8s/executors" not in err and "sematic_k8s/resolvers" not in err
    assert err.rstrip().splitlines()[-1].startswith("sematic_k8s.errors.ResolutionFailed: resolution ")
    store = sql_store(settings.db_url(tmp_path / "home"))
    [res] = store.list_resolutions()
    [inner] = [r for r in store.runs_of_root(res.id) if r.func_name == "inner"]
    recorded = inner.error["traceback"]
    assert recorded.startswith("Traceback") and "boom.py" in recorded and "sematic_k8s/" not in recorded


EDITED = textwrap.dedent("""
    import sematic_k8s as sk

    @sk.func
    def double(x: int) -> int:
        return 2 * x

    @sk.func
    def pipeline(x: int) -> int:
        return double(x)

    pipeline(2).resolve()
""")


@pytest.mark.parametrize(("edit", "says"), [
    (("import sematic_k8s as sk", "import sematic_k8s as sk\nimport nump"),
     "its module edited raised ModuleNotFoundError: No module named 'nump' at {script}:3; fix the module"),
    (("import sematic_k8s as sk", "import sematic_k8s as sk\nfrom os import pathh"),
     "its module edited raised ImportError: cannot import name 'pathh' from 'os'"),
    (("import sematic_k8s as sk", "import sematic_k8s as sk\nx = undefined_name"),
     "its module edited raised NameError: name 'undefined_name' is not defined at {script}:3; fix the module"),
    (("def pipeline(x: int) -> int:", "def pipeline(x: int) -> int"),
     "its module edited raised SyntaxError: expected ':' at {script}:9; fix the module (it must import without "
     "error), then run again"),
    (("double", "twice"), "func edited:double is not defined in its module edited ({script}): renamed or removed since "
     "it was recorded? Put it back to re-run it"),
], ids=["typo-import", "typo-from-import", "name-error", "syntax-error", "renamed"])
def test_a_rerun_of_a_script_that_no_longer_loads_says_where_in_one_line(tmp_path: Path, edit: tuple[str, str],
                                                                          says: str) -> None:
    """A user's pipeline edited after its resolution (a typo'd import or name, a syntax error, a func renamed), then
    re-run: one line naming the module's error and its line (was "unexpected NameError ..." with no file, a
    SyntaxError the same, and a typo'd import said as the func "cannot be found")."""
    home, elsewhere = tmp_path / "home", tmp_path / "elsewhere"
    elsewhere.mkdir()
    script = tmp_path / "edited.py"
    script.write_text(EDITED)
    first = run([sys.executable, str(script)], home, tmp_path)
    assert first.returncode == 0, first.stderr
    store = sql_store(settings.db_url(home))
    [res] = store.list_resolutions()
    [double] = [r for r in store.runs_of_root(res.id) if r.func_name == "double"]
    script.write_text(EDITED.replace(*edit))
    rerun = run([str(CLI), "rerun", double.id], home, elsewhere)
    assert rerun.returncode == 1
    assert rerun.stdout == ""
    assert rerun.stderr.splitlines() == [rerun.stderr.rstrip("\n")], rerun.stderr
    assert rerun.stderr.startswith(f"Error: cannot rerun {double.id}: func edited:"), rerun.stderr
    assert says.format(script=script) in rerun.stderr, rerun.stderr


VERDICTS = textwrap.dedent("""
    import sys
    import threading

    import sematic_k8s as sk

    @sk.func
    def fmt(t: int) -> str:
        return t * 2  # not a str

    @sk.func
    def use(x: object) -> int:
        return 1

    @sk.func
    def composed() -> int:
        return use(threading.Lock())

    @sk.func
    def touchy() -> object:
        from touchy_values import Touchy  # a module of the user's beside the script (the unloadable case's)

        return Touchy()

    case = sys.argv[1]
    root = (fmt(5) if case == "output" else composed() if case == "argument" else touchy() if case == "unloadable"
            else use(x for x in range(3)))
    root.resolve()
""")


@pytest.mark.parametrize(("case", "says", "func"), [
    ("output", "FuncError: fmt: output should be str, got int 10", "fmt"),
    ("argument", "FuncError: use(): argument 'x': value of type _thread.lock cannot be serialized", "composed"),
    ("root-argument", "FuncError: use(): argument 'x': value of type generator cannot be serialized", None),
])
def test_the_librarys_verdict_on_a_func_is_shown_and_recorded_without_the_librarys_traceback(
        tmp_path: Path, case: str, says: str, func: str | None) -> None:
    """A value returned that its hint does not allow, an argument that cannot be serialized (a composition's, the
    root's): the error's words, from the user's .resolve() line, not three chained tracebacks through the resolution
    loop, the planner and cloudpickle (as were recorded on the run too)."""
    script = tmp_path / "verdicts.py"
    script.write_text(VERDICTS)
    proc = run([sys.executable, str(script), case], tmp_path / "home", tmp_path)
    assert proc.returncode == 1
    err = proc.stderr
    assert "sematic_k8s/resolvers" not in err and "sematic_k8s/serialization" not in err, err
    assert "cloudpickle" not in err and "sematic_k8s/func.py" not in err, err
    assert err.count("Traceback (most recent call last):") == 1, err  # from the user's line: root.resolve()
    assert "root.resolve()" in err and says in err, err
    if func is None:  # refused before anything was recorded
        return
    store = sql_store(settings.db_url(tmp_path / "home"))
    [res] = store.list_resolutions()
    [run_] = [r for r in store.runs_of_root(res.id) if r.func_name == func]
    assert says in f"{run_.error['type']}: {run_.error['message']}"
    assert run_.error["traceback"].strip() == f"sematic_k8s.errors.FuncError: {run_.error['message']}", run_.error


def test_a_library_error_caused_in_the_users_code_keeps_the_users_line(tmp_path: Path) -> None:
    """A value whose own ``__setstate__`` raises as it is loaded back (Unloadable, raised by the library): not a
    verdict of the library alone, so the user's line that raised stays in what is shown and recorded. Was: its
    message alone, the cause with the user's frame dropped."""
    script = tmp_path / "verdicts.py"
    script.write_text(VERDICTS)
    values = tmp_path / "touchy_values.py"
    values.write_text(textwrap.dedent("""
        class Touchy:
            def __getstate__(self):
                return {"a": 1}

            def __setstate__(self, state):
                raise RuntimeError("cannot come back")
    """))
    proc = run([sys.executable, str(script), "unloadable"], tmp_path / "home", tmp_path)
    assert proc.returncode == 1
    assert 'raise RuntimeError("cannot come back")' in proc.stderr, proc.stderr
    store = sql_store(settings.db_url(tmp_path / "home"))
    [res] = store.list_resolutions()
    [run_] = [r for r in store.runs_of_root(res.id) if r.func_name == "touchy"]
    assert f"{values}" in run_.error["traceback"], run_.error


def test_code_without_a_file_round_trips_in_its_own_process(tmp_path: Path) -> None:
    """``python -c`` (or a notebook): nothing to import it by elsewhere, but its values load back here."""
    code = textwrap.dedent("""
        import dataclasses
        from sematic_k8s import serialization as ser

        @dataclasses.dataclass
        class Point:
            x: int

        s = ser.serialize(Point(3))
        back = ser.deserialize(s.format, s.payload)
        print(s.format, s.type_name, type(back) is Point)
    """)
    proc = run([sys.executable, "-c", code], tmp_path / "home", tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["json", "__main__.Point", "True"]

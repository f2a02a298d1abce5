"""The ``sematic-k8s`` CLI against real pipelines recorded in a SQLite home directory (and a server, for changes
of the labels that meet someone else's)."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner, Result

import sematic_k8s as sk
from outages import HoldingProxy
from sematic_k8s import settings
from sematic_k8s.cli import cli
from sematic_k8s.cli.output import duration
from sematic_k8s.store import sql_store
from sematic_k8s.store.http import HttpStore
from sematic_k8s.store.records import Batch, ResolutionRecord, RunRecord, utcnow
from serving import serve

try:  # tests/ is a plain directory (pytest puts it on sys.path) or, later, a package
    import cli_pipeline as pl
except ImportError:  # pragma: no cover
    from tests import cli_pipeline as pl

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Recorded:
    home: Path
    flag: Path
    ok_id: str  # a resolved resolution
    cached_id: str  # the same pipeline again: `square` is a cache hit
    failed_id: str  # `flaky` failed


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(settings.DB_URL_ENV, raising=False)
    monkeypatch.delenv(settings.HOME_ENV, raising=False)


@pytest.fixture
def rec(tmp_path: Path) -> Recorded:
    home, flag = tmp_path / "home", tmp_path / "fail.flag"
    resolver = sk.LocalResolver(home=home, cache_namespace="ns")
    ok = pl.pipeline(2, 3, str(flag))
    assert ok.resolve(resolver) == 250
    cached = pl.pipeline(2, 3, str(flag))
    assert cached.resolve(resolver) == 250
    flag.touch()
    with pytest.raises(sk.ResolutionFailed) as e:
        pl.pipeline(1, 1, str(flag)).resolve(resolver)
    return Recorded(home, flag, ok.id, cached.id, e.value.resolution_id)


def run_cli(home: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--home", str(home), *args])


def ok(home: Path, *args: str) -> Result:
    result = run_cli(home, *args)
    assert result.exit_code == 0, result.output
    return result


def runs_of(home: Path, root_id: str) -> dict[str, RunRecord]:
    """The runs of one resolution by func name (each func runs once in cli_pipeline)."""
    return {r.func_name: r for r in sql_store(settings.db_url(home)).runs_of_root(root_id)}


# -- resolutions --------------------------------------------------------------------------------------

def test_resolutions_list_table(rec: Recorded) -> None:
    out = ok(rec.home, "resolutions", "list").stdout
    lines = out.splitlines()
    assert lines[0].split() == ["ID", "FUNC", "STATE", "CREATED", "DURATION", "RERUN_OF"]
    assert len(lines) == 4
    assert lines[1].startswith(rec.failed_id)  # newest first
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert rows[rec.ok_id][1:3] == ["pipeline", "resolved"]
    assert rows[rec.failed_id][1:3] == ["pipeline", "failed"]
    assert rows[rec.ok_id][-1] == "-"  # not a rerun
    assert rows[rec.ok_id][-2].endswith("s")  # a duration
    # columns are aligned: every header starts where its cells start
    col = lines[0].index("STATE")
    assert all(line[col:].split()[0] in ("resolved", "failed") for line in lines[1:])


def test_resolutions_list_json_and_filters(rec: Recorded) -> None:
    items = json.loads(ok(rec.home, "resolutions", "list", "-o", "json").stdout)["items"]
    assert [i["id"] for i in items][0] == rec.failed_id
    assert {i["id"] for i in items} == {rec.ok_id, rec.cached_id, rec.failed_id}
    first = items[0]
    assert first["state"] == "failed" and first["root_func_path"] == "cli_pipeline:pipeline"
    assert "flaky" in first["error"] and first["rerun_of"] is None
    assert isinstance(first["duration_seconds"], float) and first["created_at"].endswith("Z")

    failed = json.loads(ok(rec.home, "resolutions", "list", "--state", "failed", "-o", "json").stdout)
    assert [i["id"] for i in failed["items"]] == [rec.failed_id]
    assert len(json.loads(ok(rec.home, "resolutions", "list", "--limit", "1", "--output", "json").stdout)
               ["items"]) == 1


def test_empty_home(tmp_path: Path) -> None:
    sql_store(settings.db_url(tmp_path))  # a home whose database holds nothing yet
    result = ok(tmp_path, "resolutions", "list")
    assert result.stdout == "" and result.stderr == "No resources found.\n"
    assert json.loads(ok(tmp_path, "resolutions", "list", "-o", "json").stdout) == {"items": []}


@pytest.mark.parametrize("args", [["resolutions", "list"], ["runs", "list", "-o", "json"], ["runs", "show", "abc"]],
                         ids=" ".join)
def test_a_home_given_that_exists_without_a_database_has_nothing_recorded(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str]) -> None:
    """An empty directory given as the home (--home, $SEMATIC_K8S_HOME: made for it, a volume mounted there) is a home
    whose first resolution is still to come, as the default home not made yet: a listing is empty, exit 0 (it was
    before the CLI stopped making homes on reads; then it was refused as a typo), anything else says nothing was
    recorded yet. Nothing is made in it."""
    empty = tmp_path / "empty"
    empty.mkdir()
    for home, env, given in [(empty, {}, "--home"), (None, {settings.HOME_ENV: str(empty)}, f"${settings.HOME_ENV}")]:
        result = _invoke(monkeypatch, home, env, args)
        _nothing_recorded(result, args, f"nothing has been recorded yet in the home {empty} ({given}; the first "
                                        "resolution recorded in it makes its database)")
        assert list(empty.iterdir()) == []


def _invoke(monkeypatch: pytest.MonkeyPatch, home: Path | None, env: dict[str, str], args: list[str]) -> Any:
    """The CLI run with ``--home home`` (unless None) and ``env`` set."""
    with monkeypatch.context() as m:
        for name, value in env.items():
            m.setenv(name, value)
        return CliRunner().invoke(cli, [*(["--home", str(home)] if home else []), *args])


def _nothing_recorded(result: Any, args: list[str], nothing: str) -> None:
    """A listing is empty (valid JSON with -o json), exit 0, saying ``nothing``; any other command says it, exit 1."""
    if args[1] == "list" and "--root-id" not in args:
        assert result.exit_code == 0, result.output
        if "json" in args:
            assert json.loads(result.stdout) == {"items": []} and result.stderr == ""
        else:
            assert result.stdout == "" and result.stderr == f"No resources found: {nothing}\n"
    else:
        assert result.exit_code == 1 and result.stdout == "" and result.stderr == f"Error: {nothing}\n"


READS = [["resolutions", "list"], ["resolutions", "list", "-o", "json"], ["resolutions", "show", "abc"],
         ["runs", "list"], ["runs", "list", "-o", "json"], ["runs", "list", "--root-id", "abc"],
         ["runs", "show", "abc"], ["logs", "abc"], ["cancel", "abc"], ["rerun", "abc"],
         ["resolutions", "tag", "abc", "x"]]  # every command on records (rerun, cancel, tag: of a run read first)


@pytest.mark.parametrize("args", READS, ids=" ".join)
def test_a_home_given_that_does_not_exist_is_refused_and_not_made(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                 args: list[str]) -> None:
    """A typo in --home or $SEMATIC_K8S_HOME, a database file that is not there: one line naming it and what to
    check, and nothing is made (was: an empty home made, and "No resources found.")."""
    typo, empty = tmp_path / "hom", tmp_path / "empty"
    empty.mkdir()
    made_by = "(a home is made by the first resolution recorded in it)"
    cases = [  # (--home, environment, the line)
        (typo, {}, f"no sematic-k8s home at {typo} (no such directory): nothing has been resolved there; check "
                   f"--home {made_by}"),
        (None, {settings.HOME_ENV: str(typo)}, f"no sematic-k8s home at {typo} (no such directory): nothing has been "
                                               f"resolved there; check ${settings.HOME_ENV} {made_by}"),
        (empty, {settings.DB_URL_ENV: f"sqlite:///{typo}/db.sqlite3"}, f"the metadata database {typo}/db.sqlite3 "
                f"does not exist: nothing has been resolved there; check ${settings.DB_URL_ENV}"),
    ]
    for home, env, says in cases:
        result = _invoke(monkeypatch, home, env, args)
        assert result.exit_code == 1, result.output
        assert result.stdout == "" and result.stderr == f"Error: {says}\n"
        assert not typo.exists() and list(empty.iterdir()) == []


@pytest.mark.parametrize("args", READS, ids=" ".join)
def test_the_default_home_not_made_yet_has_nothing_recorded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            args: list[str]) -> None:
    """A new user's first look, before any resolution: a listing is empty (valid JSON with -o json), anything else
    says nothing was recorded yet; ~/.sematic_k8s is not made by it, but by the first resolution."""
    monkeypatch.setenv("HOME", str(tmp_path))
    default = tmp_path / ".sematic_k8s"
    nothing = (f"nothing has been recorded yet in the default home {default} (the first resolution makes it; --home "
               f"or ${settings.HOME_ENV} name another)")
    _nothing_recorded(CliRunner().invoke(cli, args), args, nothing)
    assert not default.exists()


def test_the_first_resolution_makes_the_default_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    assert pl.pipeline(2, 3, str(tmp_path / "fail.flag")).resolve(sk.LocalResolver(cache_namespace="ns")) == 250
    assert (tmp_path / ".sematic_k8s" / "db.sqlite3").is_file()
    assert len(json.loads(CliRunner().invoke(cli, ["resolutions", "list", "-o", "json"]).stdout)["items"]) == 1


# -- runs -----------------------------------------------------------------------------------------------

def test_runs_list_table(rec: Recorded) -> None:
    runs = runs_of(rec.home, rec.cached_id)
    lines = ok(rec.home, "runs", "list", "--root-id", rec.cached_id).stdout.splitlines()
    assert lines[0].split() == ["ID", "FUNC", "STATE", "PARENT", "ORIGIN", "DURATION"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert set(rows) == {r.id for r in runs.values()}
    assert rows[runs["pipeline"].id][1:5] == ["pipeline", "resolved", "-", "-"]
    assert rows[runs["add"].id][1:4] == ["add", "resolved", rec.cached_id]
    cache_hit = runs_of(rec.home, rec.ok_id)["square"].id
    assert rows[runs["square"].id][4] == f"cached:{cache_hit}"


def test_runs_list_json_and_filters(rec: Recorded) -> None:
    items = json.loads(ok(rec.home, "runs", "list", "--root-id", rec.failed_id, "-o", "json").stdout)["items"]
    by_func = {i["func_name"]: i for i in items}
    assert set(by_func) == {"pipeline", "add", "square", "flaky"}
    assert by_func["flaky"]["state"] == "failed" and by_func["flaky"]["error"]["type"] == "RuntimeError"
    assert by_func["pipeline"]["state"] == "failed" and by_func["pipeline"]["parent_id"] is None
    assert {"cached_from", "original_run_id", "duration_seconds", "inputs", "output_id"} <= set(by_func["add"])

    failed = json.loads(ok(rec.home, "runs", "list", "--root-id", rec.failed_id, "--state", "resolved",
                           "--func", "add", "-o", "json").stdout)["items"]
    assert [(i["func_name"], i["state"]) for i in failed] == [("add", "resolved")]
    assert len(json.loads(ok(rec.home, "runs", "list", "--root-id", rec.failed_id, "--limit", "2", "-o",
                             "json").stdout)["items"]) == 2


def test_runs_list_wants_a_root(rec: Recorded) -> None:
    child = runs_of(rec.home, rec.ok_id)["add"].id
    result = run_cli(rec.home, "runs", "list", "--root-id", child)
    assert result.exit_code == 1 and f"its resolution is {rec.ok_id}" in result.stderr


def test_runs_show(rec: Recorded) -> None:
    add = runs_of(rec.home, rec.ok_id)["add"]
    out = ok(rec.home, "runs", "show", add.id).stdout
    fields = {line.split(maxsplit=1)[0]: line.split(maxsplit=1)[1] for line in out.splitlines()[1:]}
    assert fields["id"] == add.id and fields["state"] == "resolved" and fields["func_name"] == "add"
    assert fields["input.a"] == f"{add.inputs['a']} int 2"
    assert fields["input.b"] == f"{add.inputs['b']} int 3"
    assert fields["output"] == f"{add.output_id} int 5"
    assert fields["root_id"] == rec.ok_id and "settings" in fields and "started_at" in fields

    obj = json.loads(ok(rec.home, "runs", "show", add.id, "-o", "json").stdout)
    assert obj["id"] == add.id and obj["inputs"] == add.inputs and obj["output_id"] == add.output_id
    assert obj["input_artifacts"] == {"a": {"type": "int", "summary": 2}, "b": {"type": "int", "summary": 3}}
    assert obj["output_artifact"] == {"type": "int", "summary": 5}


def test_runs_show_failed_has_traceback(rec: Recorded) -> None:
    flaky = runs_of(rec.home, rec.failed_id)["flaky"]
    out = ok(rec.home, "runs", "show", flaky.id).stdout
    assert f"RuntimeError: flag file {rec.flag} is set" in out
    assert "Traceback" in out and 'raise RuntimeError(f"flag file {flag} is set")' in out
    assert "output_id" in out and "input.x" in out and "input.flag" in out

    obj = json.loads(ok(rec.home, "runs", "show", flaky.id, "-o", "json").stdout)
    assert obj["state"] == "failed" and "Traceback" in obj["error"]["traceback"]
    assert obj["output_artifact"] is None and obj["input_artifacts"]["x"] == {"type": "int", "summary": 4}


# -- logs -------------------------------------------------------------------------------------------------

def test_logs(rec: Recorded) -> None:
    runs = runs_of(rec.home, rec.ok_id)
    assert ok(rec.home, "logs", runs["add"].id).stdout == "adding 2 + 3\n"
    assert json.loads(ok(rec.home, "logs", runs["flaky"].id, "-o", "json").stdout) == {
        "run_id": runs["flaky"].id, "logs": "flaky got 25\n"}
    failed_flaky = runs_of(rec.home, rec.failed_id)["flaky"].id
    assert ok(rec.home, "logs", failed_flaky).stdout == "flaky got 4\n"


def test_logs_missing(rec: Recorded) -> None:
    square = runs_of(rec.home, rec.ok_id)["square"].id
    result = ok(rec.home, "logs", square)
    assert result.stdout == "" and f"run {square} (square, resolved) has no logs: it printed nothing" in result.stderr
    cached = runs_of(rec.home, rec.cached_id)["square"].id
    assert f"from the cache (run {square})" in ok(rec.home, "logs", cached).stderr
    assert json.loads(ok(rec.home, "logs", cached, "-o", "json").stdout) == {"run_id": cached, "logs": None}


# -- rerun ------------------------------------------------------------------------------------------------

def test_rerun_continue_after_fix(rec: Recorded) -> None:
    rec.flag.unlink()
    result = ok(rec.home, "rerun", rec.failed_id, "--mode", "continue")
    assert "flaky got 4" in result.stderr  # the func's prints stay off stdout
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["ID", "FUNC", "STATE", "CREATED", "DURATION", "RERUN_OF"]
    new_id, func, state = lines[1].split()[:3]
    assert (func, state, lines[1].split()[-1]) == ("pipeline", "resolved", rec.failed_id)
    new = runs_of(rec.home, new_id)
    assert new["pipeline"].state == "resolved"
    old = runs_of(rec.home, rec.failed_id)
    assert new["add"].notes["reused_from"] == old["add"].id  # what succeeded was not redone
    listing = ok(rec.home, "runs", "list", "--root-id", new_id).stdout
    assert f"reused:{old['add'].id}" in listing and f"rerun:{old['flaky'].id}" in listing
    assert ok(rec.home, "logs", new["flaky"].id).stdout == "flaky got 4\n"


def test_rerun_from_a_step_json(rec: Recorded) -> None:
    rec.flag.unlink()
    add = runs_of(rec.home, rec.ok_id)["add"]
    result = ok(rec.home, "rerun", add.id, "--cache-namespace", "ns", "--max-parallelism", "2", "-o", "json")
    obj = json.loads(result.stdout)
    assert obj["state"] == "resolved" and obj["rerun_of"] == rec.ok_id and obj["id"] != rec.ok_id
    assert obj["settings"]["rerun_from"] == add.id and obj["settings"]["cache_namespace"] == "ns"
    assert obj["settings"]["max_parallelism"] == 2
    assert "adding 2 + 3" in result.stderr  # re-executed
    assert runs_of(rec.home, obj["id"])["square"].cached_from is not None  # same inputs: a cache hit


def test_rerun_that_fails_exits_1(rec: Recorded) -> None:
    result = run_cli(rec.home, "rerun", rec.failed_id, "--mode", "continue")
    assert result.exit_code == 1
    new_id = result.stdout.splitlines()[1].split()[0]
    assert result.stdout.splitlines()[1].split()[1:3] == ["pipeline", "failed"]
    flaky = runs_of(rec.home, new_id)["flaky"].id
    line = result.stderr.splitlines()[-1]  # after what the funcs printed
    assert line.startswith(f"Error: resolution {new_id} failed: flaky (run {flaky}) raised RuntimeError")
    assert line.endswith(f"; see `sematic-k8s runs show {flaky}`")
    assert "Traceback" not in result.output


def test_rerun_continue_needs_the_root(rec: Recorded) -> None:
    add = runs_of(rec.home, rec.failed_id)["add"].id
    result = run_cli(rec.home, "rerun", add, "--mode", "continue")
    assert result.exit_code == 1 and f"cannot rerun {add}" in result.stderr and "not a root run" in result.stderr


def test_rerun_of_a_cloud_resolution_is_refused_with_how_to_rerun_it(rec: Recorded) -> None:
    """A cloud resolution's code is in its image and its artifacts in its storage: `rerun` (the LocalResolver, here)
    says to use the CloudResolver or the server, and records nothing (it recorded a local rerun that could not read
    the cloud artifacts, failed with ArtifactMissing)."""
    store = sql_store(settings.db_url(rec.home))
    res = store.get_resolution(rec.ok_id)
    with store.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE resolutions SET settings = ? WHERE id = ?",
                             (json.dumps({**res.settings, "kind": "cloud"}), rec.ok_id))
    before = len(store.list_resolutions())
    add = runs_of(rec.home, rec.ok_id)["add"].id
    result = run_cli(rec.home, "rerun", add[:8])
    assert result.exit_code == 1 and len(result.stderr.splitlines()) == 1, result.output
    assert f'CloudResolver(rerun_from="{add}")' in result.stderr and "ran with the CloudResolver" in result.stderr
    assert len(store.list_resolutions()) == before


def test_rerun_in_a_fresh_process(rec: Recorded, tmp_path: Path) -> None:
    """The console script does not have the pipeline's module on sys.path: the CLI finds it."""
    rec.flag.unlink()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "sematic_k8s.cli", "--home", str(rec.home), "rerun",
                           rec.failed_id, "--mode", "continue", "-o", "json"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["state"] == "resolved"


# -- ids, listing across resolutions, times -------------------------------------------------------------

def test_unique_id_prefixes_are_accepted_everywhere(rec: Recorded) -> None:
    add = runs_of(rec.home, rec.ok_id)["add"]
    assert json.loads(ok(rec.home, "runs", "show", add.id[:10], "-o", "json").stdout)["id"] == add.id
    assert ok(rec.home, "logs", add.id[:10].upper()).stdout == "adding 2 + 3\n"
    listing = json.loads(ok(rec.home, "runs", "list", "--root-id", rec.ok_id[:10], "-o", "json").stdout)
    assert {i["root_id"] for i in listing["items"]} == {rec.ok_id}


def test_runs_list_across_resolutions(rec: Recorded) -> None:
    lines = ok(rec.home, "runs", "list", "--func", "add").stdout.splitlines()
    assert lines[0].split() == ["ID", "FUNC", "STATE", "RESOLUTION", "CREATED", "DURATION"]
    adds = {res: runs_of(rec.home, res)["add"].id for res in (rec.ok_id, rec.cached_id, rec.failed_id)}
    assert [line.split()[0] for line in lines[1:]] == [adds[rec.failed_id], adds[rec.cached_id], adds[rec.ok_id]]
    assert [line.split()[3] for line in lines[1:]] == [rec.failed_id, rec.cached_id, rec.ok_id]  # newest first
    failed = json.loads(ok(rec.home, "runs", "list", "--state", "failed", "-o", "json").stdout)["items"]
    assert {(i["func_name"], i["root_id"]) for i in failed} == {("flaky", rec.failed_id), ("pipeline", rec.failed_id)}
    assert len(json.loads(ok(rec.home, "runs", "list", "--limit", "3", "-o", "json").stdout)["items"]) == 3


@pytest.mark.parametrize(("zone", "name", "hours"), [("UTC", "UTC", 0), ("Asia/Tokyo", "JST", 9)])
def test_times_are_shown_in_the_local_zone_with_its_name(rec: Recorded, zone: str, name: str, hours: int) -> None:
    env = {**os.environ, "TZ": zone, settings.HOME_ENV: str(rec.home)}
    proc = subprocess.run([str(Path(sys.executable).with_name("sematic-k8s")), "runs", "show", rec.ok_id],
                          env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    shown = {line.split(maxsplit=1)[0]: line.split(maxsplit=1)[1] for line in proc.stdout.splitlines()[1:]}
    created = sql_store(settings.db_url(rec.home)).get_run(rec.ok_id).created_at  # naive UTC
    local = (created + dt.timedelta(hours=hours)).strftime("%Y-%m-%d %H:%M:%S")
    assert shown["created_at"] == f"{local} {name}"


def test_runs_show_says_why_a_cached_func_was_not_cached(tmp_path: Path) -> None:
    f = pl.square_anything(object())
    f.resolve(sk.LocalResolver(home=tmp_path, cache_namespace="ns"))
    shown = ok(tmp_path, "runs", "show", f.id).stdout
    assert re.search(r"^cache +not cached: input 'x' \(object\) has no deterministic encoding", shown, re.M)


# -- errors -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("args", [
    ["runs", "list", "--root-id", "{id}"],
    ["runs", "show", "{id}"],
    ["runs", "show", "{id}", "-o", "json"],
    ["resolutions", "show", "{id}"],
    ["logs", "{id}"],
    ["rerun", "{id}"],
    ["cancel", "{id}"],
])
def test_unknown_ids(tmp_path: Path, args: list[str]) -> None:
    sql_store(settings.db_url(tmp_path))  # a home, with nothing recorded in it
    result = run_cli(tmp_path, *[a.format(id="abc123") for a in args])
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr == ("Error: no run with id 'abc123': list them with `sematic-k8s resolutions list` or "
                             "`sematic-k8s runs list`\n")


@pytest.mark.parametrize("args", [
    ["resolutions", "list", "--state", "bogus"],
    ["resolutions", "list", "--limit", "0"],
    ["resolutions", "list", "-o", "yaml"],
    ["runs", "show"],
    ["rerun", "x", "--mode", "sideways"],
    ["rerun", "x", "--max-parallelism", "0"],
    ["logs", "x", "--follow", "-o", "json"],
    ["nonsense"],
])
def test_bad_options_are_one_line_usage_errors(tmp_path: Path, args: list[str]) -> None:
    result = run_cli(tmp_path, *args)
    assert result.exit_code == 2
    [line] = result.stderr.splitlines()
    assert line.startswith("Error: ") and line.endswith(" --help`)")


@pytest.mark.parametrize(("seconds", "text"), [
    (None, None), (0.004, "4ms"), (0.9996, "1.00s"), (2.5, "2.50s"), (42, "42.0s"), (184, "3m04s"),
    (7500, "2h05m"),
])
def test_duration(seconds: float | None, text: str | None) -> None:
    assert duration(seconds) == text


def test_the_readme_names_only_real_commands_and_options() -> None:
    """Every line of the README's command block is a command with the options it names."""
    readme = (REPO / "README.md").read_text()
    block = readme.split("## Command line", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    lines = [line.strip() for line in block.strip().splitlines()]
    assert len(lines) >= 8
    for line in lines:
        words = line.split()[1:]
        command: click.Command = cli
        path = []
        while isinstance(command, click.Group) and words and words[0] in command.commands:
            path.append(words[0])
            command = command.commands[words.pop(0)]
        assert path and not isinstance(command, click.Group), line
        named = set(re.findall(r"(?<![\w-])(-{1,2}[a-z][\w-]*)", " ".join(words)))
        known = {opt for p in command.params for opt in p.opts + p.secondary_opts}
        assert named <= known, f"{line}: {named - known}"
    for documented in ("cancel", "logs", "rerun", "runs", "resolutions"):
        assert documented in cli.commands

# -- tags and notes -------------------------------------------------------------------------------------

def test_tags_and_note(rec: Recorded) -> None:
    out = ok(rec.home, "resolutions", "tag", rec.ok_id, "nightly", "lr=0.1", "-o", "json").output
    assert json.loads(out)["tags"] == ["lr=0.1", "nightly"]
    ok(rec.home, "resolutions", "tag", rec.ok_id, "nightly", "--remove")
    table = ok(rec.home, "resolutions", "note", rec.ok_id, "baseline for the Q3 report").output
    assert "lr=0.1" in table and "baseline for the Q3 report" in table and "nightly" not in table
    res = sql_store(settings.db_url(rec.home)).get_resolution(rec.ok_id)
    assert res.tags == ["lr=0.1"] and res.note == "baseline for the Q3 report"
    assert json.loads(ok(rec.home, "resolutions", "note", rec.ok_id, "", "-o", "json").output)["note"] is None
    bad = run_cli(rec.home, "resolutions", "tag", rec.ok_id, "no spaces")
    assert bad.exit_code == 2 and "a tag is 1-64 letters" in bad.output
    missing = run_cli(rec.home, "resolutions", "tag", "ab" * 16, "x")
    assert missing.exit_code == 1 and "no run with id" in missing.output


def test_tags_and_note_meeting_someone_elses_change(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Someone else's change lands between the CLI's read of the labels and its write (made by a proxy before the
    server as the CLI's request goes by): the CLI's change, refused (409), is read again and made once more when
    it still makes sense: a tag, or a note whose text nobody else replaced; a note someone else replaced is not
    overwritten, nor is a change refused twice made: one line, exit 1."""
    root = "abc1" + "0" * 28
    with serve(tmp_path) as served:
        bob = HttpStore(served.url, served.key)
        now = utcnow()
        batch = Batch()
        batch.add_resolution(ResolutionRecord(id=root, root_func_path="m:p", state="resolved", created_at=now))
        batch.add_run(RunRecord(id=root, root_id=root, parent_id=None, func_path="m:p", func_name="p",
                                state="resolved", created_at=now))
        bob.write(batch)
        theirs: list[dict] = []  # Bob's changes, one landing before each of the CLI's next writes

        def meanwhile(request: bytes) -> bool:
            if request.startswith(f"POST /api/v1/resolutions/{root}/labels".encode()) and theirs:
                bob.label_resolution(root, **theirs.pop(0))
            return False  # every request passes

        proxy = HoldingProxy(int(served.url.rpartition(":")[2]), hold=meanwhile)
        monkeypatch.setenv(settings.SERVER_ENV, proxy.url)
        monkeypatch.setenv(settings.API_KEY_ENV, served.key)
        try:
            theirs.append({"add": ["theirs"]})
            out = json.loads(ok(tmp_path, "resolutions", "tag", root, "mine", "-o", "json").output)
            assert (out["tags"], out["labels_version"]) == (["mine", "theirs"], 2)
            theirs.append({"remove": ["theirs"]})  # only the tags changed: the note is made all the same
            out = json.loads(ok(tmp_path, "resolutions", "note", root, "my note", "-o", "json").output)
            assert (out["tags"], out["note"], out["labels_version"]) == (["mine"], "my note", 4)
            theirs.append({"note": "their note", "set_note": True})
            refused = run_cli(tmp_path, "resolutions", "note", root, "mine again")
            assert refused.exit_code == 1
            assert refused.output.strip().splitlines() == [
                f"Error: the labels of resolution {root} changed since they were read (tags now: mine; note now: "
                "'their note'): nothing was changed; read them again and make your change to them"]
            theirs.extend([{"add": ["one"]}, {"add": ["two"]}])  # refused twice: not tried a third time
            refused = run_cli(tmp_path, "resolutions", "tag", root, "mine", "--remove")
            assert refused.exit_code == 1 and "tags now: mine, one, two; note now: 'their note'" in refused.output
            res = bob.get_resolution(root)
            assert (res.tags, res.note, res.labels_version) == (["mine", "one", "two"], "their note", 7)
        finally:
            proxy.close()
            bob.close()

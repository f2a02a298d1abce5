"""The ``sematic-k8s`` CLI used as a careless or hostile user would: an id as long as a file, an API key with a line
break or a key file that is not one, a home whose database is damaged, not a file, unreadable or read-only, standard
output that is closed or full. Each is one line on stderr naming the problem and what to do, with a non-zero exit;
a key that could not be shown is not left active. The real console script in a subprocess, as test_cli_errors runs
it (its Env: a recorded home, a real server wanting API keys)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sqlite3
import subprocess
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

import test_cli_errors
from sematic_k8s import settings
from sematic_k8s.store import sql_store
from sematic_k8s.store.records import Batch, ResolutionRecord, RunRecord, utcnow
from serving import free_port
from test_cli_errors import CLI, ROOT, Env, record, run_cli, start_server

env = test_cli_errors.env  # its module's fixture: a recorded home, a server wanting API keys

NO_OVERRIDE = ["setpriv", "--bounding-set=-dac_override,-dac_read_search",
               "--inh-caps=-dac_override,-dac_read_search"]  # root, held to the files' modes as any user is


def one_line(proc: subprocess.CompletedProcess[str], code: int = 1) -> str:
    """The one line a failed command printed on stderr (checked: exit ``code``, nothing on stdout, no traceback)."""
    assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr and "unexpected" not in proc.stderr, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), proc.stderr
    return lines[0]


def test_an_id_as_long_as_a_file_is_named_by_its_start_and_length(env: Env) -> None:
    """A file pasted where an id goes: the line repeats its start and its length (was all of it, 100,000 characters
    on one line)."""
    for given in ("z" * 100_000, "a" * 100_000):
        line = one_line(run_cli(env, ["runs", "show", given]))
        assert line.startswith(f"Error: {'z' * 40 if given[0] == 'z' else 'a' * 40!r}... (100,000 characters) is not "
                               "a run id"), line[:200]
        assert len(line) < 300


@pytest.mark.parametrize(("case", "says"), [
    ("line-break", "$SEMATIC_K8S_API_KEY holds a control character (a line break?): give the API key alone, on one "
     "line"),
    ("missing-file", "cannot read the API key file $SEMATIC_K8S_API_KEY_FILE={base}/nowhere (No such file or "
     "directory): give it the path of a readable file holding the API key"),
    ("directory", "cannot read the API key file $SEMATIC_K8S_API_KEY_FILE={base} (Is a directory)"),
    ("binary-file", "the API key file $SEMATIC_K8S_API_KEY_FILE={base}/binary is not text: give it the path of a "
     "file holding the API key alone"),
    ("two-lines", "the API key file $SEMATIC_K8S_API_KEY_FILE={base}/two-lines holds a control character"),
])
def test_an_api_key_that_cannot_be_sent_is_named(env: Env, tmp_path: Path, case: str, says: str) -> None:
    """A key with a line break in it (was "unexpected ValueError: Invalid header value"), a key file that is missing,
    a directory or binary (was "unexpected RuntimeError" / "unexpected UnicodeDecodeError"): one line naming the
    setting, never the key."""
    (tmp_path / "binary").write_bytes(b"\xfb\xff\x00" * 10)
    (tmp_path / "two-lines").write_text("sk8s_first\nsk8s_second\n")
    environ = {settings.SERVER_ENV: env.server}
    if case == "line-break":
        environ[settings.API_KEY_ENV] = "sk8s_secret\nX-Other: 1"
    else:
        environ[settings.API_KEY_FILE_ENV] = str({"missing-file": tmp_path / "nowhere", "directory": tmp_path,
                                                  "binary-file": tmp_path / "binary",
                                                  "two-lines": tmp_path / "two-lines"}[case])
    line = one_line(run_cli(env, ["runs", "list"], environ))
    assert says.format(base=tmp_path) in line, line
    assert "secret" not in line and "sk8s_first" not in line


def _damaged(home: Path, how: str) -> None:
    db = home / "db.sqlite3"
    with sqlite3.connect(db) as conn:  # every commit in the database file
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    if how == "not-a-database":  # its header overwritten, or another file put in its place
        with open(db, "r+b") as f:
            f.write(b"id,name\n" * 20)
    else:  # cut short to its first page: the tables it lists are gone
        os.truncate(db, 4096)


@pytest.mark.parametrize(("how", "says"), [
    ("not-a-database", "{db} is not a SQLite database (file is not a database): check --home and "
     "$SEMATIC_K8S_DB_URL; if it held the metadata database, restore it from a backup"),
    ("cut-short", "the SQLite metadata database {db} is damaged (database disk image is malformed): restore it from a "
     "backup (`sqlite3 {db} .recover` may save part of what it holds)"),
])
def test_a_damaged_database_says_to_restore_it_in_every_command(tmp_path: Path, env: Env, how: str, says: str) -> None:
    """A home whose database was overwritten or cut short: the reads, `server` and `api-keys` say it is damaged and
    to restore a backup (was "cannot open the metadata database ...: check $SEMATIC_K8S_DB_URL or --home", though
    both are right)."""
    home = tmp_path / "home"
    home.mkdir()
    record(home)
    _damaged(home, how)
    expected = "Error: " + says.format(db=home / "db.sqlite3")
    for args in (["runs", "list"], ["resolutions", "show", ROOT], ["api-keys", "list"],
                 ["server", "--local", "--port", str(free_port())]):
        line = one_line(run_cli(env, ["--home", str(home), *args]))
        assert line == expected, (args, line)


def test_a_database_that_is_a_directory_is_not_an_empty_home(tmp_path: Path, env: Env) -> None:
    """db.sqlite3 a directory (a copy gone wrong): named, exit 1 (was "No resources found: nothing has been recorded
    yet", exit 0, as for a new home)."""
    (tmp_path / "db.sqlite3").mkdir()
    for args in (["resolutions", "list"], ["runs", "list"]):
        line = one_line(run_cli(env, ["--home", str(tmp_path), *args]))
        assert line == (f"Error: the metadata database {tmp_path / 'db.sqlite3'} is not a file: move it away, or "
                        "check --home, $SEMATIC_K8S_HOME and $SEMATIC_K8S_DB_URL")


@pytest.fixture
def as_a_user(env: Env) -> list[str]:
    """How to run the CLI held to the files' modes (root, as the tests run here, is not)."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is needed to run as root without overriding file modes")
    return NO_OVERRIDE


def test_an_unreadable_or_read_only_home_says_what_access_is_missing(tmp_path: Path, env: Env,
                                                                     as_a_user: list[str]) -> None:
    """A home this user may not look into: named with what to do (was "Permission denied: HOME/db.sqlite3"). A
    home, or its database, that this user may not write (a copy handed over read-only): SQLite needs to write beside
    the file even to read it, so say so (was "attempt to write a readonly database; check $SEMATIC_K8S_DB_URL or
    --home")."""
    home = tmp_path / "home"
    home.mkdir()
    record(tmp_path)
    with sqlite3.connect(tmp_path / "db.sqlite3") as conn:  # every commit in the database file
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    shutil.copy(tmp_path / "db.sqlite3", home)  # as a home is copied, handed over: no process has it open
    environ = {k: v for k, v in os.environ.items() if not k.startswith(settings.PREFIX)}
    try:
        home.chmod(0o000)  # named by $SEMATIC_K8S_HOME (--home's own check says it is not readable)
        closed = subprocess.run([*as_a_user, str(CLI), "runs", "list"], env={**environ, settings.HOME_ENV: str(home)},
                                capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
        home.chmod(0o555)
        (home / "db.sqlite3").chmod(0o444)
        read_only = subprocess.run([*as_a_user, str(CLI), "--home", str(home), "resolutions", "list"], env=environ,
                                   capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    finally:
        home.chmod(0o755)
        (home / "db.sqlite3").chmod(0o644)
    assert one_line(closed) == (f"Error: cannot read the home {home} (Permission denied): give this user read and "
                                "write access to it, or name another with --home or $SEMATIC_K8S_HOME")
    assert one_line(read_only) == (f"Error: the SQLite metadata database {home / 'db.sqlite3'} cannot be written by "
                                   "this user (attempt to write a readonly database): give this user write access to "
                                   "it and to its directory (SQLite writes beside it even to read), or copy its "
                                   "directory somewhere writable and use that copy")


def _cli_with_stdout(env: Env, redirect: str, args: list[str]) -> subprocess.CompletedProcess[str]:
    """The CLI with its standard output redirected by the shell (``>/dev/full``, ``>&-``: closed)."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith(settings.PREFIX)}
    environ[settings.HOME_ENV] = str(env.home)
    return subprocess.run(["sh", "-c", f'exec "$0" "$@" {redirect}', str(CLI), *args], env=environ,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)


@pytest.mark.parametrize(("redirect", "says"), [
    (">/dev/full", "Error: cannot write to standard output: No space left on device (free space on its disk, or "
     "redirect it elsewhere)"),
    (">&-", "Error: standard output is closed, so nothing can be printed: run the command with it open (redirect it "
     "to a file, or to /dev/null to print nothing)"),
])
def test_output_that_cannot_be_written_is_a_failure(env: Env, redirect: str, says: str) -> None:
    """Standard output on a full disk (was "unexpected OSError: [Errno 28]") or closed (was exit 0, nothing printed:
    a script took the empty result for an empty listing)."""
    for args in (["runs", "list"], ["resolutions", "show", ROOT, "-o", "json"]):
        assert one_line(_cli_with_stdout(env, redirect, args)) == says, args


@pytest.mark.parametrize("redirect", [">/dev/full", ">&-"])
def test_an_api_key_that_could_not_be_shown_is_revoked(tmp_path: Path, env: Env, redirect: str) -> None:
    """`api-keys create` whose output cannot be written: the key, shown to no one, is revoked at once and the line
    says so (was: created and active, its only copy lost; for a closed output, exit 0)."""
    home = str(tmp_path)
    proc = _cli_with_stdout(env, redirect, ["api-keys", "create", "lost", "--home", home])
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.splitlines()[-1].startswith("Error: API key 'lost' could not be printed ("), proc.stderr
    assert proc.stderr.rstrip().endswith("so it was revoked at once: create it again with standard output open")
    listed = subprocess.run([str(CLI), "api-keys", "list", "--home", home], capture_output=True, text=True,
                            timeout=60, stdin=subprocess.DEVNULL)
    [row] = [line for line in listed.stdout.splitlines() if " lost " in line]
    assert "revoked" in row, listed.stdout


def test_a_read_leaves_another_programs_database_as_it_is(tmp_path: Path, env: Env) -> None:
    """$SEMATIC_K8S_DB_URL (or --home) naming another program's SQLite database, or an empty file: a read refuses
    the one, lists nothing from the other, and changes neither (was: `resolutions list` made sematic-k8s's five
    tables in it, put it in WAL mode and a 1 MiB -reserve file beside it, and said "No resources found")."""
    other = tmp_path / "invoices.db"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE invoices (id INTEGER, amount INTEGER)")
        conn.execute("INSERT INTO invoices VALUES (1, 100)")
    conn.close()
    before = other.read_bytes()
    for args in (["resolutions", "list"], ["runs", "show", "abc"], ["api-keys", "list", "--db-url", f"sqlite:///{other}"]):
        line = one_line(run_cli(env, args, {settings.DB_URL_ENV: f"sqlite:///{other}"}))
        assert line.startswith(f"Error: {other} is not a sematic-k8s database"), (args, line)
    assert other.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["invoices.db"]

    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "db.sqlite3").touch()
    listed = run_cli(env, ["--home", str(empty), "resolutions", "list"])
    assert listed.returncode == 0 and listed.stdout == "", listed.stderr
    assert listed.stderr == f"No resources found: nothing has been recorded yet in {empty / 'db.sqlite3'} (an empty " \
                            "database)\n"
    assert [(p.name, p.stat().st_size) for p in empty.iterdir()] == [("db.sqlite3", 0)]


@pytest.mark.parametrize(("args", "environ", "says", "code"), [
    (["--header-timeout", "nan"], {}, "Invalid value for '--header-timeout': 'nan' is not a number: give one in the "
     "range 1<=x<=3600", 2),  # was a server started whose clients were never timed out
    (["--shutdown-timeout", "nan"], {}, "Invalid value for '--shutdown-timeout': 'nan' is not a number", 2),
    (["--token-max-hours", "nan"], {}, "Invalid value for '--token-max-hours': 'nan' is not a number", 2),  # was
    # "cannot convert float NaN to integer"
    (["--db-url", ""], {}, "--db-url is empty: give a SQLAlchemy URL, or leave --db-url out for $SEMATIC_K8S_DB_URL "
     "or the data directory's SQLite database", 1),  # was the home's database, unsaid
    (["--port", "0"], {}, "Invalid value for '--port': 0 is not in the range 1<=x<=65535. (see `python -m "
     "sematic_k8s_server.cli server --help`)", 2),  # was three lines: click's usage, a hint and the error
    ([], {"HEARTBEAT_TIMEOUT": "nan"}, "$SEMATIC_K8S_HEARTBEAT_TIMEOUT must be a number of seconds > 0, got 'nan'",
     1),  # was BadSetting's traceback
    ([], {"HEARTBEAT_TIMEOUT": "inf"}, "$SEMATIC_K8S_HEARTBEAT_TIMEOUT must be a finite number of seconds, got 'inf': "
     "set one (the default is 60) or unset it", 1),  # was taken: its claim beats' thread died on a wait of inf/4 s
], ids=["header-timeout-nan", "shutdown-timeout-nan", "token-hours-nan", "empty-db-url", "port-zero",
        "heartbeat-nan", "heartbeat-inf"])
def test_the_server_cli_on_its_own_refuses_in_one_line(tmp_path: Path, args: list[str], environ: dict[str, str],
                                                       says: str, code: int) -> None:
    """``python -m sematic_k8s_server.cli server`` fails as the ``sematic-k8s`` CLI does: one line (its group is the
    CLI's Group), nan refused by every number option (click's FloatRange let it through), an empty --db-url refused."""
    proc = start_server(["--home", str(tmp_path), *args], {settings.PREFIX + k: v for k, v in environ.items()})
    assert one_line(proc, code).startswith(f"Error: {says}")
    if args:  # refused before the database is opened
        assert not (tmp_path / "db.sqlite3").exists()


def test_api_keys_create_with_an_empty_db_url_makes_no_key(tmp_path: Path, env: Env) -> None:
    """`api-keys create NAME --db-url "$URL"` with the variable unset: refused (was a key made in the home's
    database, which the server meant was not reading)."""
    (tmp_path / "db.sqlite3").touch()
    line = one_line(run_cli(env, ["api-keys", "create", "ci", "--db-url", "", "--home", str(tmp_path)]))
    assert line.startswith("Error: --db-url is empty")
    assert (tmp_path / "db.sqlite3").stat().st_size == 0


KEY_NAME_RULE = ("Error: an API key name must have 1 to 128 printable characters (no line breaks, tabs or other "
                 "control characters) and no space at either end")


@pytest.mark.parametrize("name", ["a\nb", "a\tb", "a\x1b[2Jb", "a\u2028b", "", "   ", " alice", "x" * 129])
def test_an_api_key_name_that_would_not_list_as_itself_is_refused(tmp_path: Path, env: Env, name: str) -> None:
    """`api-keys create $'a\\nb'` made a key whose name `api-keys list` showed across two lines (a tab, an escape
    sequence likewise; spaces alone listed as nothing). Now refused in one line naming the rule, nothing made;
    the API refuses the same names with the same words (one check: test_odd_requests)."""
    assert one_line(run_cli(env, ["api-keys", "create", name, "--home", str(tmp_path)])) == KEY_NAME_RULE
    assert run_cli(env, ["api-keys", "create", "a b", "--home", str(tmp_path)]).returncode == 0
    listed = run_cli(env, ["api-keys", "list", "--home", str(tmp_path)]).stdout.splitlines()
    assert [line.split()[1:3] for line in listed[1:]] == [["a", "b"]], listed


def _running(home: Path, beats: bool) -> str:
    """A running resolution recorded by hand, as a resolver no longer there left it (its beat stamped now, or none
    at all); its id."""
    res_id, now = uuid.uuid4().hex, utcnow()
    batch = Batch()
    batch.add_resolution(ResolutionRecord(id=res_id, root_func_path="gone:f", state="running", created_at=now,
                                          heartbeat_at=now if beats else None, settings={"kind": "local"}))
    batch.add_run(RunRecord(id=res_id, root_id=res_id, parent_id=None, func_path="gone:f", func_name="f",
                            state="running", created_at=now))
    sql_store(settings.db_url(home)).write(batch)
    return res_id


@contextlib.contextmanager
def _beating(home: Path, res_id: str) -> Iterator[None]:
    """Heartbeats for ``res_id`` every 0.2 s, as its resolver would, for the block (written as a resolver writes them,
    to the database of ``home``)."""
    store, stop = sql_store(settings.db_url(home)), threading.Event()

    def beat() -> None:
        while not stop.wait(0.2):
            store.write(Batch(resolution_updates={res_id: {"heartbeat_at": utcnow()}}))
    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(30)


def test_cancel_wait_on_a_resolution_whose_resolver_is_gone_ends(tmp_path: Path, env: Env) -> None:
    """`cancel --wait` on a resolution whose resolver never beats again waited until Ctrl-C, saying nothing. Now it
    says once what it waits for, and ends when the store judges the resolution silent (the sweeper's rule: the read
    marks it canceled). Its resolver beats until the command says it waits, then is gone (whatever the time the
    command took to start, the cancel is asked of a live resolution). One that records no heartbeat at all is never
    judged silent: refused in one line saying so, its cancel asked."""
    home = str(tmp_path)
    silent = _running(tmp_path, beats=True)
    environ = {k: v for k, v in os.environ.items() if not k.startswith(settings.PREFIX)}
    environ.update({settings.HOME_ENV: str(env.home), settings.HEARTBEAT_TIMEOUT_ENV: "2"})
    with _beating(tmp_path, silent):
        proc = subprocess.Popen([str(CLI), "--home", home, "cancel", "--wait", silent, "-o", "json"], env=environ,
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert proc.stderr is not None
        line = proc.stderr.readline().rstrip("\n")  # said once it asked the cancel, and waits
    out, rest = proc.communicate(timeout=60)
    assert proc.returncode == 0, line + rest
    assert json.loads(out)["state"] == "canceled"
    assert rest == ""
    assert line.startswith(f"Waiting for resolution {silent} to stop: its resolver stops it within about a second; "
                           "if it has been silent since its last heartbeat ("), line
    res = sql_store(settings.db_url(tmp_path)).get_resolution(silent)
    assert res is not None and res.error is not None and res.error.endswith("; canceled as asked"), res
    unbeating = _running(tmp_path, beats=False)
    line = one_line(run_cli(env, ["--home", home, "cancel", "--wait", unbeating]))
    assert line == (f"Error: resolution {unbeating} is canceling but records no heartbeat, so whether its resolver "
                    "still runs cannot be told: its cancel was asked, and is not waited for (see `sematic-k8s "
                    f"resolutions show {unbeating}`)")


def test_an_empty_func_filter_is_refused(env: Env) -> None:
    """`runs list --func "$F"` with the variable unset: refused (was "No resources found", exit 0: no run matched)."""
    line = one_line(run_cli(env, ["runs", "list", "--func", ""]), 2)
    assert line == ("Error: Invalid value for '--func': it is empty: give a func's name or module:qualname, or leave "
                    "the option out (see `sematic-k8s runs list --help`)")

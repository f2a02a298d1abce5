"""Every CLI failure is one line on stderr naming the problem and what to do, with a non-zero exit: the real
console script, in a subprocess, against bad input of every kind."""

from __future__ import annotations

import http.server
import os
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import sematic_k8s as sk
from s3server import s3_endpoint
from sematic_k8s import settings
from sematic_k8s.store import sql_store
from sematic_k8s.store.records import Batch, ResolutionRecord, RunRecord, utcnow
from serving import free_port, serve, server_process, wait_for

CLI = Path(sys.executable).with_name("sematic-k8s")
ROOT = "abc1" + "0" * 28  # a resolved resolution (and its root run)
CHILD = "abc2" + "0" * 28  # a run of it: shares the prefix "abc" with the root
GONE = "def0" + "0" * 28  # a resolution whose code is nowhere to be found


@sk.func
def _one() -> int:
    return 1


@dataclass
class Env:
    home: Path
    file: Path  # a plain file, where a directory is needed
    server: str  # a sematic-k8s server that wants API keys
    not_sematic: str  # an HTTP server that is something else
    unreachable: str


def record(home: Path) -> None:
    """Recorded data for the commands to refuse, written as records (no code needs to exist)."""
    now = utcnow()
    batch = Batch()
    for root, path in ((ROOT, "cli_pipeline:pipeline"), (GONE, "gone_module:pipeline")):
        batch.add_resolution(ResolutionRecord(id=root, root_func_path=path, state="resolved", created_at=now,
                                              ended_at=now, settings={"kind": "local"}))
        batch.add_run(RunRecord(id=root, root_id=root, parent_id=None, func_path=path, func_name="pipeline",
                                state="resolved", source_file=f"/nowhere/{path.partition(':')[0]}.py",
                                created_at=now))
    batch.add_run(RunRecord(id=CHILD, root_id=ROOT, parent_id=ROOT, func_path="cli_pipeline:add", func_name="add",
                            state="resolved", created_at=now))
    sql_store(settings.db_url(home)).write(batch)


class NotFound(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - the http.server API
        self.send_response(404)
        self.send_header("Content-Type", "text/html")
        self.end_headers()
        self.wfile.write(b"<html>not here</html>")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    base = tmp_path_factory.mktemp("cli-errors")
    home = base / "home"
    home.mkdir()
    record(home)
    (base / "a-file").write_text("not a directory")
    other = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NotFound)
    thread = threading.Thread(target=other.serve_forever, daemon=True)
    thread.start()
    try:
        (base / "served").mkdir()
        with serve(base / "served") as served:
            yield Env(home, base / "a-file", served.url, f"http://127.0.0.1:{other.server_address[1]}",
                      f"http://127.0.0.1:{free_port()}")
    finally:
        other.shutdown()


def run_cli(env: Env, args: list[str], extra: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(settings.PREFIX)}
    environ[settings.HOME_ENV] = str(env.home)
    environ.update(extra or {})
    return subprocess.run([str(CLI), *args], env=environ, capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)


# (args, environment, what the one line says, exit code); {file}, {server}... are filled from the Env
BAD_INPUTS = [
    pytest.param(["resolutions", "list"], {"SERVER": "{unreachable}"},
                 "cannot reach the sematic-k8s server at {unreachable}", 1, id="unreachable-server"),
    pytest.param(["runs", "list"], {"SERVER": "{server}", "API_KEY": "sk8s_wrong"},
                 "API key missing or invalid for {server} (invalid or revoked API key", 1, id="bad-key"),
    pytest.param(["runs", "list"], {"SERVER": "{server}"}, "API key missing or invalid", 1, id="no-key"),
    pytest.param(["resolutions", "list"], {"SERVER": "{not_sematic}"},
                 "{not_sematic} does not answer like a sematic-k8s server", 1, id="not-a-sematic-server"),
    pytest.param(["resolutions", "list"], {"SERVER": "localhost:8000"},
                 "$SEMATIC_K8S_SERVER='localhost:8000' is not a server URL: use http://HOST:PORT", 1, id="bad-url"),
    pytest.param(["resolutions", "list"], {"SERVER": "http://u:secret@127.0.0.1:99999"},  # was "connection refused"
                 "$SEMATIC_K8S_SERVER='http://***@127.0.0.1:99999' has port 99999, not one of 1-65535", 1,
                 id="port-out-of-range"),
    pytest.param(["runs", "list"], {"SERVER": "{with_user_info}"}, "API key missing or invalid", 1,
                 id="user-info-is-a-server-url"),  # was "is not a server URL", as was http://[::1]:PORT
    pytest.param(["resolutions", "list"], {"HEARTBEAT_TIMEOUT": "nan"}, "Error: $SEMATIC_K8S_HEARTBEAT_TIMEOUT must be "
                 "a number of seconds > 0, got 'nan'", 1, id="bad-seconds"),  # was "unexpected ValueError", nan taken
    pytest.param(["runs", "show", "xyz!"], {}, "'xyz!' is not a run id: ids are hexadecimal", 1, id="malformed-id"),
    pytest.param(["logs", "0123456789abcdef0123456789abcdef"], {},
                 "no run with id '0123456789abcdef0123456789abcdef'", 1, id="unknown-id"),
    pytest.param(["runs", "show", "abc"], {}, f"run id prefix 'abc' is ambiguous: it starts {ROOT} (pipeline), "
                 f"{CHILD} (add); give more of the id", 1, id="ambiguous-prefix"),
    pytest.param(["runs", "list", "--root-id", "abc2"], {}, f"run {CHILD} is not a root run; its resolution is "
                 f"{ROOT}", 1, id="not-a-root"),
    pytest.param(["cancel", "abc1"], {}, f"resolution {ROOT} already ended (resolved): nothing to cancel", 1,
                 id="cancel-ended"),
    pytest.param(["rerun", "def0"], {}, f"cannot rerun {GONE}: func gone_module:pipeline cannot be found", 1,
                 id="code-gone"),
    pytest.param(["resolutions", "list", "--limit", "0"], {},
                 "Invalid value for '--limit': 0 is not in the range 1<=x<=10000", 2, id="limit-out-of-range"),
    pytest.param(["rerun", "abc1", "--max-parallelism", "0"], {}, "Invalid value for '--max-parallelism'", 2,
                 id="parallelism-out-of-range"),
    pytest.param(["runs", "list", "--state", "sideways"], {}, "Invalid value for '--state'", 2, id="bad-state"),
    pytest.param(["runs", "list", "--limit", "ten"], {}, "Invalid value for '--limit': 'ten' is not a valid integer.",
                 2, id="limit-not-a-number"),  # was "... is not a valid integer range."
    pytest.param(["server", "--local", "--header-timeout", "ten"], {},
                 "Invalid value for '--header-timeout': 'ten' is not a valid number.", 2,
                 id="timeout-not-a-number"),  # was "... is not a valid float range."
    pytest.param(["runs", "show"], {}, "Missing argument 'RUN_ID'", 2, id="missing-argument"),
    pytest.param(["runz"], {}, "No such command 'runz'", 2, id="unknown-command"),
    pytest.param(["logs", "abc1", "--follow", "-o", "json"], {}, "--follow prints text as it comes", 2,
                 id="follow-json"),
    pytest.param(["--home", "{file}", "resolutions", "list"], {}, "Invalid value for '--home': Directory", 2,
                 id="home-option-is-a-file"),
    pytest.param(["--home", "", "rerun", "abc1"], {}, "Invalid value for '--home': it is empty: give a directory", 2,
                 id="home-option-empty"),  # was the current directory: the rerun recorded there
    pytest.param(["resolutions", "list"], {"HOME": "{file}"}, "no sematic-k8s home at {file} (not a directory): "
                 "nothing has been resolved there; check $SEMATIC_K8S_HOME", 1, id="home-is-a-file"),
    pytest.param(["--home", "{file}/sub", "runs", "list"], {}, "no sematic-k8s home at {file}/sub (no such "
                 "directory): nothing has been resolved there; check --home", 1, id="home-under-a-file"),
    pytest.param(["--home", "{file}.typo", "runs", "show", "abc"], {}, "no sematic-k8s home at {file}.typo (no such "
                 "directory): nothing has been resolved there; check --home", 1, id="home-typo"),
    pytest.param(["resolutions", "list"], {"DB_URL": "nosuchdb://x"},
                 "cannot open the metadata database nosuchdb://x", 1, id="bad-db-url"),
]


@pytest.mark.parametrize(("args", "environ", "says", "code"), BAD_INPUTS)
def test_each_failure_is_one_line(env: Env, args: list[str], environ: dict[str, str], says: str, code: int) -> None:
    fill = {"file": str(env.file), "server": env.server, "not_sematic": env.not_sematic,
            "unreachable": env.unreachable, "with_user_info": env.server.replace("://", "://u:secret@")}
    proc = run_cli(env, [a.format(**fill) for a in args],
                   {settings.PREFIX + k: v.format(**fill) for k, v in environ.items()})
    assert proc.returncode == code, proc.stderr
    assert proc.stdout == ""
    assert len(proc.stderr.splitlines()) == 1, proc.stderr
    assert proc.stderr.startswith("Error: ") and says.format(**fill) in proc.stderr
    assert "Traceback" not in proc.stderr
    assert "secret" not in proc.stderr


@pytest.mark.parametrize(("args", "commands"), [([], ["resolutions", "runs", "logs", "cancel", "rerun", "server"]),
                                               (["runs"], ["list", "show"]),
                                               (["resolutions"], ["list", "show", "tag", "note"])])
def test_a_group_given_no_command_shows_its_help(env: Env, args: list[str], commands: list[str]) -> None:
    """What a new user types first: the help with its commands (was "Error: Usage: sematic-k8s [OPTIONS] COMMAND
    [ARGS]..." alone, the rest of click's help cut by the one-line rule)."""
    proc = run_cli(env, args)
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    assert proc.stderr.startswith(f"Usage: {' '.join(['sematic-k8s', *args])} [OPTIONS] COMMAND [ARGS]...")
    assert "Error" not in proc.stderr
    listed = proc.stderr.partition("\nCommands:\n")[2].split()
    assert set(commands) <= set(listed), proc.stderr


def test_debug_shows_the_traceback(env: Env) -> None:
    for args in (["--debug", "resolutions", "list"], ["resolutions", "list", "--debug"]):
        proc = run_cli(env, args, {settings.SERVER_ENV: env.unreachable})
        assert proc.returncode == 1
        assert proc.stderr.startswith("Traceback (most recent call last):")
        assert proc.stderr.splitlines()[-1].startswith("Error: cannot reach the sematic-k8s server")


def test_a_server_error_shows_the_servers_word_without_blaming_the_settings(env: Env, tmp_path: Path) -> None:
    """A 500 of a reachable server that let us in (its database holds a damaged record) is the server's detail,
    not a hint to check the server URL and the API key, which are right; a 403 (a key not allowed) keeps it."""
    import sqlite3

    from sematic_k8s.store.http import HttpStore

    with serve(tmp_path) as served:
        now = utcnow()
        batch = Batch()
        for root, state in ((ROOT, "resolved"), (CHILD, "resolved"), (GONE, "running")):  # here: three roots
            batch.add_resolution(ResolutionRecord(id=root, root_func_path="m:p", state=state, created_at=now,
                                                  settings={"kind": "local"}))
            batch.add_run(RunRecord(id=root, root_id=root, parent_id=None, func_path="m:p", func_name="p",
                                    state=state, created_at=now))
        for row in [*batch.new_resolutions, *batch.new_runs.values()]:
            row["owner"] = served.owner  # the key's, as if it recorded them: it mints their tokens
        served.store.write(batch)
        with sqlite3.connect(tmp_path / "db.sqlite3") as db:  # damaged (or edited by hand) under the server
            db.execute("UPDATE runs SET notes = '{not json' WHERE id = ?", (ROOT,))
        assert served.key is not None
        damaged = run_cli(env, ["runs", "show", ROOT], {settings.SERVER_ENV: served.url,
                                                        settings.API_KEY_ENV: served.key})
        user = HttpStore(served.url, served.key)
        token = user.mint_token(GONE)  # may read only resolution GONE
        user.close()
        refused = run_cli(env, ["runs", "show", CHILD], {settings.SERVER_ENV: served.url, settings.API_KEY_ENV: token})
    assert damaged.returncode == 1, damaged.stderr
    assert len(damaged.stderr.splitlines()) == 1, damaged.stderr
    assert "HTTP 500" in damaged.stderr and "the metadata database holds a value that is not JSON" in damaged.stderr
    assert settings.SERVER_ENV not in damaged.stderr and settings.API_KEY_ENV not in damaged.stderr, damaged.stderr
    assert "HTTP 403" in refused.stderr, refused.stderr
    assert refused.stderr.rstrip().endswith(f"check ${settings.SERVER_ENV} and ${settings.API_KEY_ENV}"), \
        refused.stderr


SERVER_START_FAILURES = [
    pytest.param([], {"HOME": "{file}"}, "cannot use {file} as the data directory (File exists): pass --home DIR or "
                 "set $SEMATIC_K8S_HOME to a directory you can write", 1, id="home-is-a-file"),
    pytest.param([], {"DB_URL": "sqlite:///{file}/sub/db.sqlite3"}, "cannot open the metadata database "
                 "sqlite:///{file}/sub/db.sqlite3: unable to open database file; check --db-url", 1,
                 id="database-cannot-be-opened"),
    pytest.param([], {"DB_URL": "postgres://u:secret@127.0.0.1/x"}, "cannot open the metadata database "
                 "postgres://u:***@127.0.0.1/x: Can't load plugin", 1, id="dialect-typo"),
    pytest.param(["--host", ""], {}, "--host '' is empty, which would listen on every interface: give an address", 1,
                 id="empty-host"),  # was a server on 0.0.0.0 and [::], its banner saying http://:8000
    pytest.param([], {"STORAGE": "gs://bucket"}, "$SEMATIC_K8S_STORAGE: unsupported storage URL 'gs://bucket': use "
                 "file:///path or s3://bucket/prefix", 1, id="bad-storage-url"),
    pytest.param([], {"HEARTBEAT_INTERVAL": "0"}, "$SEMATIC_K8S_HEARTBEAT_INTERVAL must be a number of seconds > 0, "
                 "got '0': set it to one (the default is 5) or unset it", 1, id="heartbeat-interval-0"),  # was a server
    pytest.param([], {"HEARTBEAT_TIMEOUT": "0"}, "$SEMATIC_K8S_HEARTBEAT_TIMEOUT must be a number of seconds > 0, "
                 "got '0'", 1, id="heartbeat-timeout-0"),  # whose claim-beat thread spun (every 0 s) at its 1st rerun
    pytest.param([], {"DB_POOLER": "session"}, "$SEMATIC_K8S_DB_POOLER must be 'none' (PostgreSQL itself, or a "
                 "session-pooling PgBouncer) or 'transaction' (PgBouncer's transaction pooling), got 'session': set "
                 "one of those or unset it", 1, id="db-pooler-unknown"),  # was no such setting: a session's SET alone
    pytest.param([], {"LOG_LEVEL": "loud"}, "$SEMATIC_K8S_LOG_LEVEL must be one of critical, error, warning, info, "
                 "debug, trace, got 'loud': set one of them or unset it", 1,
                 id="log-level-unknown"),  # was uvicorn's KeyError: 'loud' after the banner
]


@pytest.mark.parametrize(("args", "environ", "says", "code"), SERVER_START_FAILURES)
def test_the_server_refuses_bad_settings_in_one_line(env: Env, tmp_path: Path, args: list[str],
                                                     environ: dict[str, str], says: str, code: int) -> None:
    """``python -m sematic_k8s_server.cli server`` (plain click, no last-resort handler) with a data directory that
    is a file, a database it cannot open, a storage URL it does not know: one line, no traceback (was a
    FileExistsError's or a ValueError's traceback, and SQLAlchemy's two-line error with no advice)."""
    fill = {"file": str(env.file)}
    environ = {settings.PREFIX + k: v.format(**fill) for k, v in environ.items()}
    environ.setdefault(settings.HOME_ENV, str(tmp_path))
    proc = start_server([a.format(**fill) for a in args], environ)
    assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.splitlines()) == 1, proc.stderr
    assert says.format(**fill) in proc.stderr, proc.stderr


def start_server(args: list[str], environ: dict[str, str], port: int | None = None
                 ) -> subprocess.CompletedProcess[str]:
    """``python -m sematic_k8s_server.cli server --local`` run to its end (it is meant to refuse to start), on a free
    port or ``port``, with ``environ`` instead of this process's sematic-k8s and AWS settings (never the instance
    metadata service: only 127.0.0.1 is contacted)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith((settings.PREFIX, "AWS_"))}
    base["AWS_EC2_METADATA_DISABLED"] = "true"
    return subprocess.run([sys.executable, "-m", "sematic_k8s_server.cli", "server", "--local", "--port",
                           str(port or free_port()), *args], env={**base, **environ}, capture_output=True, text=True,
                          timeout=120, stdin=subprocess.DEVNULL)


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def checking_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """moto's S3 server in a process of its own that checks credentials: its first request, which makes the bucket
    "kept", is let through (INITIAL_NO_AUTH_ACTION_COUNT=1); every later one needs keys moto issued (any others get
    403). (endpoint, bucket)."""
    import boto3
    from botocore.config import Config

    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    log = tmp_path_factory.mktemp("checking-s3") / "moto.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                env={**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "1"}, stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        wait_for(lambda: _listening(port), 60, what=f"moto's S3 server on port {port} (log: {log})")
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="test",
                     aws_secret_access_key="test", config=Config(s3={"addressing_style": "path"})
                     ).create_bucket(Bucket="kept")
        yield endpoint, "kept"
    finally:
        proc.terminate()
        proc.wait(15)


@pytest.mark.parametrize("case", ["missing-bucket", "refused-credentials", "no-credentials"])
def test_the_server_refuses_a_storage_it_cannot_use_in_one_line(tmp_path: Path, checking_s3: tuple[str, str],
                                                                case: str) -> None:
    """$SEMATIC_K8S_STORAGE naming a bucket S3 does not have, S3 refusing the server's keys (moto checking them), no
    keys at all: the server refuses to start in one line naming the storage, the endpoint and what to do, before it
    opens its database (was: it started, and its first artifact or log request failed). An endpoint that does not
    answer is an outage, not a setting: see test_the_server_starts_while_its_s3_does_not_answer."""
    checking, kept = checking_s3
    keys = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"}
    none = {"AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"), "AWS_CONFIG_FILE": str(tmp_path / "none")}
    with s3_endpoint() as s3:  # one that takes any keys
        endpoint, bucket, creds, says = {
            "missing-bucket": (s3, "sk-no-such-bucket", keys, f"S3 bucket 'sk-no-such-bucket' does not exist at {s3}; "
                               "correct $SEMATIC_K8S_STORAGE, or create the bucket"),
            "refused-credentials": (checking, kept, keys, f"S3 refused to access s3://{kept} at {checking}: 403: "
                                    "Forbidden (check the AWS credentials and the bucket's policy)"),
            "no-credentials": (s3, "kept", none, f"no usable AWS credentials to access s3://kept at {s3} (Unable to "
                               "locate credentials): set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"),
        }[case]
        proc = start_server(["--home", str(tmp_path)], {settings.STORAGE_ENV: f"s3://{bucket}/runs",
                                                        "AWS_ENDPOINT_URL_S3": endpoint, **creds})
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.splitlines()) == 1, proc.stderr
    assert proc.stderr.startswith(f"Error: ${settings.STORAGE_ENV} s3://{bucket}/runs: ") and says in proc.stderr, \
        proc.stderr
    assert not (tmp_path / "db.sqlite3").exists()


def test_s3_keys_rotated_away_are_said_as_such_at_once(monkeypatch: pytest.MonkeyPatch,
                                                     checking_s3: tuple[str, str]) -> None:
    """Credentials rotated while a resolution runs (its keys deactivated or deleted: S3 answers a GET or a PUT
    InvalidAccessKeyId): each read and write fails at once (no retries: S3 answered) in one line naming the code, why
    and what to do (was: the bucket check's bare "403: Forbidden" in place of S3's own answer). A HEAD (``exists``)
    has no body to name a code: it says the bucket check's words."""
    from sematic_k8s.errors import S3CredentialsError
    from sematic_k8s.storage.s3 import S3Storage

    checking, kept = checking_s3
    for name, value in {"AWS_ENDPOINT_URL_S3": checking, "AWS_ACCESS_KEY_ID": "AKIAROTATEDAWAY00000",
                        "AWS_SECRET_ACCESS_KEY": "old", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    storage = S3Storage(kept, "runs", retry_window=600)  # a retried refusal would hold the test for minutes
    for op, key, call in (("get", "artifacts/ab/abc", lambda: storage.get("artifacts/ab/abc")),
                          ("put", "artifacts/ab/abd", lambda: storage.put("artifacts/ab/abd", b"1")),
                          ("append", "logs/run.log", lambda: storage.append("logs/run.log", b"line\n"))):
        with pytest.raises(S3CredentialsError) as refused:
            call()
        assert str(refused.value) == (
            f"S3 refused to {op} s3://{kept}/runs/{key} at {checking}: InvalidAccessKeyId (S3 does not know this "
            "access key: rotated, deactivated or deleted; S3 says: The AWS Access Key Id you provided does not exist "
            "in our records.): set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (AWS_SESSION_TOKEN) to current "
            "credentials (in a cluster: the storage Secret) and run again")


@pytest.mark.parametrize("case", ["missing-bucket", "not-a-url"])
def test_the_server_refuses_an_allowed_storage_it_cannot_use_in_one_line(tmp_path: Path, case: str) -> None:
    """A storage on $SEMATIC_K8S_STORAGE_ALLOW is checked at start as the server's own is: a bucket S3 does not have,
    or a URL that is not a storage's, is one line naming the entry and the setting (was: the server started, and the
    first resolution recorded there showed an error in place of its artifacts and logs)."""
    with s3_endpoint() as s3:
        entry, says = {
            "missing-bucket": ("s3://sk-no-such-archive/runs", f"S3 bucket 'sk-no-such-archive' does not exist at "
                               f"{s3}; correct ${settings.STORAGE_ALLOW_ENV}, or create the bucket"),
            "not-a-url": ("gs://archive/runs", ""),
        }[case]
        proc = start_server(["--home", str(tmp_path)], {
            settings.STORAGE_ALLOW_ENV: f"file://{tmp_path}/other, {entry}", "AWS_ENDPOINT_URL_S3": s3,
            "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"})
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.splitlines()) == 1, proc.stderr
    prefix = (f"Error: ${settings.STORAGE_ALLOW_ENV} {entry}: " if case == "missing-bucket"
              else f"Error: ${settings.STORAGE_ALLOW_ENV}: {entry}: ")
    assert proc.stderr.startswith(prefix) and says in proc.stderr, proc.stderr
    assert not (tmp_path / "db.sqlite3").exists()


def test_the_server_refuses_a_token_sweep_namespace_that_is_no_namespace_name_in_one_line(tmp_path: Path) -> None:
    """$SEMATIC_K8S_TOKEN_SWEEP_NAMESPACES holding a name Kubernetes refuses for a namespace (upper case, "_"): one
    line naming the entry, the setting and what a namespace name is, before the server opens its database."""
    proc = start_server(["--home", str(tmp_path)], {settings.TOKEN_SWEEP_NAMESPACES_ENV: "team-a, Team_B"})
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.splitlines() == [
        f"Error: namespace 'Team_B' in ${settings.TOKEN_SWEEP_NAMESPACES_ENV}: give namespace names (at most 63 "
        "lowercase letters, digits and '-', starting and ending with a letter or digit), separated by commas"]
    assert not (tmp_path / "db.sqlite3").exists()


def test_the_server_starts_while_its_s3_does_not_answer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A server (re)started while its S3 endpoint does not answer (an outage: say its Kubernetes pod was rescheduled
    meanwhile) starts, saying so in one line, and serves its records; an artifact's bytes answer 503 until S3 is back,
    then 200, as for a server that was running already. It refused to start (exit 1): its Deployment's restarts,
    backing off, kept it (and every driver's records) down for minutes past a brief outage."""
    import httpx

    from outages import private_s3
    from sematic_k8s.serialization import content_id
    from sematic_k8s.storage.base import artifact_key
    from sematic_k8s.storage.urls import storage_from_url
    from sematic_k8s.store.http import HttpStore

    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with private_s3(monkeypatch, bucket="kept") as (s3, storage_url):
        payload = b"1"
        art = content_id("json", payload)
        storage_from_url(storage_url).put(artifact_key(art), payload)
        s3.stop()
        with server_process(tmp_path, "--local", env={settings.STORAGE_ENV: storage_url}) as (_, url):
            root = uuid.uuid4().hex
            store = HttpStore(url, "")
            try:
                store.write(Batch(artifacts={art: {"id": art, "format": "json", "type_name": "int", "summary": None,
                                                   "size": 1, "created_at": utcnow()}},
                                  new_resolutions=[{"id": root, "root_func_path": "m:f", "state": "running",
                                                    "created_at": utcnow()}]))
            finally:
                store.close()
            assert httpx.get(f"{url}/api/v1/resolutions/{root}", timeout=30).status_code == 200
            assert httpx.get(f"{url}/api/v1/artifacts/{art}/data", timeout=30).status_code == 503
            s3.start()
            back = httpx.get(f"{url}/api/v1/artifacts/{art}/data", timeout=30)
            assert back.status_code == 200 and back.content == payload, back.text
        [log] = tmp_path.glob("server-*.log")
        said = [line for line in log.read_text().splitlines() if line.startswith("Warning:")]
        assert len(said) == 1, log.read_text()
        assert said[0].startswith(f"Warning: ${settings.STORAGE_ENV} {storage_url}: cannot reach S3 at {s3.endpoint} "
                                  "to access s3://kept"), said
        assert said[0].endswith("(for 3 s); the server starts: its artifact and log requests answer 503 until S3 "
                                "answers (if it never does, give the storage an endpoint that does: ?endpoint= in "
                                f"${settings.STORAGE_ENV}, or $AWS_ENDPOINT_URL_S3)"), said


def test_the_server_starts_on_a_bucket_it_can_use(tmp_path: Path) -> None:

    import boto3
    from botocore.config import Config

    bucket = f"sk-startup-{uuid.uuid4().hex[:12]}"
    with s3_endpoint() as s3:
        boto3.client("s3", endpoint_url=s3, region_name="us-east-1", aws_access_key_id="test",
                     aws_secret_access_key="test", config=Config(s3={"addressing_style": "path"})
                     ).create_bucket(Bucket=bucket)
        env = {settings.STORAGE_ENV: f"s3://{bucket}/runs", "AWS_ENDPOINT_URL_S3": s3, "AWS_ACCESS_KEY_ID": "test",
               "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}
        with server_process(tmp_path, "--local", env=env) as (proc, url):
            assert proc.poll() is None


def test_the_server_refuses_a_port_in_use_in_one_line(tmp_path: Path) -> None:
    """--port another process listens on: one line naming the port and what to do, exit 1, before the database is
    opened (was uvicorn's "[Errno 98] error while attempting to bind on address ...: address already in use" after the
    banner, exit 3)."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = start_server(["--home", str(tmp_path)], {}, port=port)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr == (f"Error: port {port} on 127.0.0.1 is already in use by another process: choose another "
                           "--port, or stop the process using it\n")
    assert not (tmp_path / "db.sqlite3").exists()


def test_a_resolver_with_a_home_that_is_a_file_says_what_to_do(env: Env) -> None:
    from sematic_k8s.resolvers.local import LocalResolver

    with pytest.raises(FileExistsError, match=r"cannot use .* as the data directory \(File exists\): pass --home DIR "
                       r"or set \$SEMATIC_K8S_HOME to a directory you can write \(a resolver: home=DIR\)"):
        LocalResolver(home=env.file)


@pytest.mark.parametrize(("url", "says"), [
    ("postgres://u:secret@127.0.0.1/x", "cannot open the metadata database postgres://u:***@127.0.0.1/x: Can't load "
     "plugin: sqlalchemy.dialects:postgres: check $SEMATIC_K8S_DB_URL or --home (a resolver: home=DIR)"),
    ("sqlite:///{file}/sub/db.sqlite3", "cannot open the metadata database sqlite:///{file}/sub/db.sqlite3: unable to "
     "open database file: check $SEMATIC_K8S_DB_URL"),
    ("sqlite://", "the metadata database sqlite:// is in memory: what a resolution records there is lost when the "
     "process ends (and no other process sees it): give $SEMATIC_K8S_DB_URL a file"),
], ids=["dialect-typo", "database-cannot-be-opened", "in-memory"])
def test_a_resolver_whose_database_cannot_be_opened_says_which_and_what_to_do(env: Env, monkeypatch, url: str,
                                                                              says: str) -> None:
    """A pipeline resolved on a database URL no driver takes, or a file that cannot be made: DatabaseUnopenable in one
    line, the password hidden (was SQLAlchemy's NoSuchModuleError / OperationalError with its background link); on
    an in-memory database, refused (it resolved, and everything it recorded was lost at the process's end)."""
    from sematic_k8s.errors import DatabaseUnopenable
    from sematic_k8s.resolvers.local import LocalResolver

    monkeypatch.setenv("SEMATIC_K8S_DB_URL", url.format(file=env.file))
    with pytest.raises(DatabaseUnopenable) as e:
        _one().resolve(LocalResolver(home=env.file.parent / "home"))
    assert str(e.value).startswith(says.format(file=env.file)) and "\n" not in str(e.value)


@pytest.mark.parametrize("url", ["postgres://u:secret@127.0.0.1/x", "sqlite:///{file}/sub/db.sqlite3"],
                         ids=["dialect-typo", "database-cannot-be-opened"])
def test_the_servers_store_is_unopenable_the_same_way(env: Env, url: str) -> None:
    """The server's open_store (its CLI, each of ``--workers``' processes) opens a SqlStore the way a resolver does:
    DatabaseUnopenable in the same words (was SQLAlchemy's error, worded by the server's CLI alone)."""
    from sematic_k8s.errors import DatabaseUnopenable
    from sematic_k8s_server.db import open_store

    with pytest.raises(DatabaseUnopenable) as e:
        open_store(url.format(file=env.file))
    assert str(e.value).startswith("cannot open the metadata database ") and "\n" not in str(e.value)
    assert "secret" not in str(e.value)


def test_the_http_store_names_a_bad_port_and_a_server_that_is_not_sematic(env: Env) -> None:
    """A resolver's store (no CLI probe before it): a port that is not a number is refused at once (was
    http.client.InvalidURL at the first request), and another server's non-JSON 404 says the URL is wrong."""
    from sematic_k8s.errors import ServerError
    from sematic_k8s.store.http import HttpStore

    with pytest.raises(ValueError, match="'http://127.0.0.1:notaport' has a port that is not a number: use "
                       "http://HOST:PORT"):
        HttpStore("http://127.0.0.1:notaport")
    with pytest.raises(ValueError, match=r"^server 'http://\[::1\]:65536' has port 65536, not one of 1-65535"):
        sk.LocalResolver(home=env.home, server="http://[::1]:65536")  # on the resolver's line, not at its first request
    with pytest.raises(ValueError, match=r"^server 'htp://h:8000' is not a server URL: use http://HOST:PORT"):
        sk.CloudResolver(server="htp://h:8000", storage="s3://bucket", registry="127.0.0.1:5000/x")
    store = HttpStore(env.not_sematic, retry_window=0)
    try:
        with pytest.raises(ServerError) as e:
            store.runs_of_root(ROOT)
    finally:
        store.close()
    assert str(e.value) == (f"GET /api/v1/store/runs_of_root/{ROOT} on {env.not_sematic}: HTTP 404: not here "
                            f"({env.not_sematic} does not answer like a sematic-k8s server: check "
                            f"${settings.SERVER_ENV})")

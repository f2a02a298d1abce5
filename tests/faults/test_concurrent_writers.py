"""Several writers at once: processes resolving on one fresh home, pipelines writing the same new artifacts
through one server on PostgreSQL, and an embedded home made by an older version (DESIGN.md "Faults":
writes are idempotent, the schema is created and migrated under a lock)."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import sqlalchemy as sa

import fault_pipelines as fp
import sematic_k8s as sk
from racing import at_once
from revisions import at_revision
from sematic_k8s.store import schema
from sematic_k8s.store.http import HttpStore
from sematic_k8s.store.records import Batch, utcnow
from sematic_k8s.store.sql import SqlStore
from serving import free_port, serve, wait_for

HERE = Path(__file__).parent
N = 24
RESOLVE = "import sys, fault_pipelines as fp, sematic_k8s as sk; print(fp.pipeline(5).resolve(sk.LocalResolver()))"


def resolve_in_processes(n: int, env: dict[str, str]) -> list[subprocess.CompletedProcess]:
    """``n`` processes started together, each resolving ``pipeline(5)``."""
    env = {**os.environ, **env, "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    procs = [subprocess.Popen([sys.executable, "-c", RESOLVE], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(n)]
    outputs = [p.communicate(timeout=240) for p in procs]  # reading as it waits: a full pipe blocks no process
    return [subprocess.CompletedProcess(p.args, p.returncode, *out) for p, out in zip(procs, outputs, strict=True)]


def failures(done: list[subprocess.CompletedProcess], tail: int = 40) -> str:
    """The failed processes of ``done``, each with its exit status and the last ``tail`` lines of its stderr
    in full (a traceback's cause is rarely its last line); empty when none failed."""
    failed = [p for p in done if p.returncode != 0]
    return "".join(f"\n--- process {i} of {len(failed)}, exit {p.returncode}, stderr:\n"
                   + "\n".join(p.stderr.rstrip().splitlines()[-tail:]) for i, p in enumerate(failed, 1))


def test_processes_resolving_on_one_fresh_home_all_succeed(tmp_path, monkeypatch):
    monkeypatch.delenv("SEMATIC_K8S_SERVER", raising=False)
    monkeypatch.delenv("SEMATIC_K8S_DB_URL", raising=False)
    done = resolve_in_processes(N, {"SEMATIC_K8S_HOME": str(tmp_path)})
    failed = failures(done)
    assert not failed, f"of {N} processes, these failed:{failed}"
    assert all(p.stdout.strip() == "8" for p in done)
    store = SqlStore(f"sqlite:///{tmp_path / 'db.sqlite3'}")
    resolutions = store.list_resolutions(limit=100)
    assert len(resolutions) == N and {r.state for r in resolutions} == {"resolved"}
    with store.engine.connect() as conn:
        assert conn.scalar(sa.text("SELECT version_num FROM alembic_version")) == schema.HEAD
        assert conn.scalar(sa.text("PRAGMA integrity_check")) == "ok"


def opened_here(path: Path) -> int:
    """How many of this process's descriptors are open on the file ``path``."""
    fds = Path("/proc/self/fd")
    return sum(1 for fd in fds.iterdir() if os.path.realpath(fd) == os.path.realpath(path))


def test_a_fresh_home_opened_while_another_connection_writes_it_waits_its_turn(tmp_path):
    """The first connection to a fresh SQLite file switches it to WAL mode, under SQLite's exclusive lock taken from
    inside a read, where SQLite does not wait its busy timeout: one opening the file while another connection holds
    its lock (another process switching it, or writing it: a fresh home many processes start on at once) failed at
    once, "stayed locked by another process ... for 120 s" (DatabaseLocked). It waits for the lock as a write does."""
    path = tmp_path / "db.sqlite3"
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")  # the file's write lock, before it is in WAL mode
    opened: list[SqlStore] = []
    errors: list[BaseException] = []

    def open_store() -> None:
        try:
            opened.append(SqlStore(f"sqlite:///{path}"))
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    opener = threading.Thread(target=open_store)
    opener.start()
    wait_for(lambda: opened_here(path) > 1 or errors, 120, what="the store to open the file")
    opener.join(1.0)  # its first statements are the switch: without the wait, it failed here at once
    assert not errors, f"failed while another connection held the lock: {errors[0]!r}"
    assert opener.is_alive() and not opened
    other.execute("COMMIT")
    other.close()
    opener.join(120)
    assert not errors and opened, errors
    store = opened[0]
    try:
        assert store.list_resolutions() == []
        with store.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.scalar(sa.text("SELECT version_num FROM alembic_version")) == schema.HEAD
    finally:
        store.close()


def test_processes_resolving_through_one_server_on_postgres_all_succeed(postgres_url, tmp_path):
    with serve(tmp_path, postgres_url) as s:
        done = resolve_in_processes(N, {"SEMATIC_K8S_HOME": str(tmp_path), "SEMATIC_K8S_SERVER": s.url,
                                        "SEMATIC_K8S_API_KEY": s.key or ""})
        failed = failures(done)
        assert not failed, f"of {N} processes, these failed:{failed}"
        assert {r.state for r in s.store.list_resolutions(limit=100)} == {"resolved"}


def test_the_same_new_artifact_written_at_once_is_recorded_once(postgres_url, tmp_path):
    """Two pipelines that compute the same value write its artifact together: both writes succeed."""
    with serve(tmp_path, postgres_url) as s:
        stores = [HttpStore(s.url, s.key) for _ in range(8)]
        errors: list[BaseException] = []
        for i in range(20):
            artifact_id = f"{i:064x}"
            row = {"id": artifact_id, "format": "json", "type_name": "int", "summary": i, "size": 1,
                   "created_at": utcnow()}

            def write(store: HttpStore, row: dict = row) -> None:
                try:
                    store.write(Batch(artifacts={row["id"]: row}))
                except BaseException as e:  # noqa: BLE001
                    errors.append(e)
            at_once([lambda st=st: write(st) for st in stores])
        assert errors == []
        assert len(s.store.artifacts([f"{i:064x}" for i in range(20)])) == 20


def test_a_batch_sent_twice_is_harmless(tmp_path):
    """A client that retries a batch whose first attempt did land (the answer was lost) changes nothing."""
    store = SqlStore(f"sqlite:///{tmp_path / 'db.sqlite3'}")
    f = fp.pipeline(1)
    f.resolve(sk.LocalResolver(home=tmp_path))
    res = store.get_resolution(f.id)
    runs = store.runs_of_root(f.id)
    again = Batch()
    again.add_resolution(res)
    for run in runs:
        again.add_run(run)
    store.write(again)
    assert store.get_resolution(f.id) == res and sorted(store.runs_of_root(f.id), key=lambda r: r.id) == sorted(
        runs, key=lambda r: r.id)


def test_an_embedded_home_made_by_an_older_version_gains_the_new_columns(tmp_path):
    """A home whose database an older version created (its tables, no Alembic revision) keeps its records and
    is upgraded when opened."""
    url = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    with at_revision(url, schema.FIRST_REVISION) as conn:  # exactly the tables of the first release, then forget
        conn.execute(sa.text("DROP TABLE alembic_version"))  # the revision
        conn.execute(sa.text("INSERT INTO resolutions (id, root_func_path, state, settings, created_at) "
                             "VALUES ('ab', 'm:f', 'resolved', '{}', '2026-01-01 00:00:00')"))
    store = SqlStore(url)
    assert [r.id for r in store.list_resolutions()] == ["ab"]
    columns = {c["name"] for c in sa.inspect(store.engine).get_columns("resolutions")}
    assert "heartbeat_at" in columns
    assert {"api_keys", "alembic_version"} <= set(sa.inspect(store.engine).get_table_names())


def test_a_home_migrated_by_a_newer_version_is_refused_in_words_and_left_as_it_is(tmp_path):
    """A database whose schema a newer sematic-k8s migrated (a rollback after an upgrade; an older replica on an
    upgraded database): the store, the CLI and the server each refuse it in one line naming the revisions and what
    to do, and write nothing to it (was: "unexpected CommandError: Can't locate revision ...")."""
    from click.testing import CliRunner

    from sematic_k8s.cli import cli
    from sematic_k8s.errors import SchemaTooNew

    home = tmp_path / "home"
    home.mkdir()
    url = f"sqlite:///{home / 'db.sqlite3'}"
    SqlStore(url).engine.dispose()
    with sa.create_engine(url).begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '0099_from_the_future'"))
    words = (f"the metadata database {url} was migrated by a newer sematic-k8s (its schema is at revision "
             f"0099_from_the_future; this version knows revisions up to {schema.HEAD}): use that newer sematic-k8s "
             "here too (pip install -U sematic-k8s), or point this one at another database")
    with pytest.raises(SchemaTooNew) as e:
        SqlStore(url)
    assert str(e.value).startswith(words)
    result = CliRunner().invoke(cli, ["--home", str(home), "resolutions", "list"])
    assert result.exit_code == 1 and words in result.output and "Traceback" not in result.output
    server = subprocess.run([sys.executable, "-m", "sematic_k8s_server.cli", "server", "--port", str(free_port()),
                             "--home", str(home)], capture_output=True, text=True, timeout=120)
    assert server.returncode != 0 and words in server.stdout + server.stderr
    with sa.create_engine(url).connect() as conn:
        assert conn.scalar(sa.text("SELECT version_num FROM alembic_version")) == "0099_from_the_future"


def test_head_names_the_newest_migration():
    from alembic.script import ScriptDirectory

    assert ScriptDirectory.from_config(schema.alembic_config()).get_heads() == [schema.HEAD]


TAGGER = """import os, sys, time
from sematic_k8s.store.sql import SqlStore
store = SqlStore(sys.argv[1])
open(sys.argv[4] + "." + sys.argv[3], "w").close()
while not os.path.exists(sys.argv[4]):
    time.sleep(0.01)
for i in range(200):  # its newest tag alone (a resolution has at most 100)
    store.label_resolution(sys.argv[2], add=[f"{sys.argv[3]}{i}"], remove=[f"{sys.argv[3]}{i - 1}"])
"""


def test_processes_tagging_one_resolution_at_once_lose_no_tag(tmp_path, monkeypatch):
    """Tags are read, merged and written back: on SQLite the read must hold the write lock already (on PostgreSQL
    it is ``FOR UPDATE``), else a writer that read before another committed writes the older tags back (a tag
    another removed comes back, one it added is lost)."""
    monkeypatch.delenv("SEMATIC_K8S_SERVER", raising=False)
    f = fp.pipeline(1)
    f.resolve(sk.LocalResolver(home=tmp_path))
    url = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", TAGGER, url, f.id, who, str(go)], stderr=subprocess.PIPE,
                              text=True) for who in "abc"]
    wait_for(lambda: all(Path(f"{go}.{who}").exists() for who in "abc"), 60, what="the taggers to be ready")
    go.touch()  # all start at once
    for p in procs:
        _, err = p.communicate(timeout=240)
        assert p.returncode == 0, err
    tags = set(SqlStore(url).get_resolution(f.id).tags)
    assert tags == {"a199", "b199", "c199"}, f"older tags written back: {sorted(tags)}"

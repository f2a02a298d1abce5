"""Two API keys of one name created at the same instant (requests released together through a real server, on SQLite
and on PostgreSQL; two ``sematic-k8s api-keys create`` processes on one home): exactly one is made, the other refused
as a second create of that name is (409; the CLI's one line), so ``api-keys revoke NAME`` revokes one key. The
database holds it (a partial unique index on the active keys' names): both creates' "no active key has this name"
checks may pass before either inserts. And a database that already holds active keys sharing a name is migrated to
that index without losing or changing a key: the oldest keeps the name, the others are renamed, in the log."""

from __future__ import annotations

import datetime as dt
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from racing import at_once
from revisions import at_revision, table_as_left
from sematic_k8s.store.sql import SqlStore
from sematic_k8s_server import auth
from serving import Served, serve
from waiting import wait_for

ROUNDS = 12
TAKEN = ("an active API key is already named {name!r} (revoking by name would revoke both): revoke it first, or "
         "choose another name (see `sematic-k8s api-keys list`)")


@pytest.fixture
def served(tmp_path: Path, db_url: str) -> Iterator[Served]:
    with serve(tmp_path, db_url) as s:
        yield s


def _active(engine: sa.Engine, name: str) -> list[dict]:
    return [k for k in auth.list_keys(engine) if k["name"] == name and k["revoked_at"] is None]


def test_two_creates_of_one_name_at_once_make_one_key(served: Served) -> None:
    """Each round, two admins post a key of one new name, released together: one 201, one 409 in the words of a
    second create (was: both 201 when both checks ran before either insert, two active keys of that name)."""
    clients = [served.client(served.admin_key) for _ in range(2)]
    try:
        for c in clients:
            assert c.get("/api/v1/api-keys").status_code == 200  # connected, authenticated once
        for i in range(ROUNDS):
            name = f"racer-{i}"
            answers = at_once([lambda c=c, n=name: c.post("/api/v1/api-keys", json={"name": n}) for c in clients],
                              timeout=60)
            assert sorted(r.status_code for r in answers) == [201, 409], f"round {i}: {[r.text for r in answers]}"
            [lost] = [r.json()["detail"] for r in answers if r.status_code == 409]
            assert lost == TAKEN.format(name=name), lost
            [won] = [r.json() for r in answers if r.status_code == 201]
            assert [k["id"] for k in _active(served.store.engine, name)] == [won["id"]]
    finally:
        for c in clients:
            c.close()


# each process imports the CLI, says it is ready (a file $RACE_GO.ready.<pid>) and waits for the file $RACE_GO,
# then runs `sematic-k8s api-keys create $RACE_NAME`
CREATE = ("import os, pathlib, runpy, sys, time, sematic_k8s.cli, sematic_k8s_server.cli\n"
          "pathlib.Path(os.environ['RACE_GO'] + f'.ready.{os.getpid()}').touch()\n"
          "while not os.path.exists(os.environ['RACE_GO']): time.sleep(0.001)\n"
          "sys.argv = ['sematic-k8s', 'api-keys', 'create', os.environ['RACE_NAME']]\n"
          "runpy.run_module('sematic_k8s.cli', run_name='__main__')")


def test_two_cli_creates_of_one_name_at_once_make_one_key(tmp_path: Path) -> None:
    """Two ``sematic-k8s api-keys create`` processes on one home, released together: one prints its key, the other
    exits 1 with the one line a second create gets, never a traceback."""
    store = SqlStore(f"sqlite:///{tmp_path / 'db.sqlite3'}")
    env = {**os.environ, "SEMATIC_K8S_HOME": str(tmp_path)}
    env.pop("SEMATIC_K8S_DB_URL", None)
    try:
        for i in range(ROUNDS // 3):
            name, go = f"cli-racer-{i}", tmp_path / f"go{i}"
            procs = [subprocess.Popen([sys.executable, "-c", CREATE], env={**env, "RACE_GO": str(go),
                                                                          "RACE_NAME": name},
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
            try:
                wait_for(lambda i=i: len(list(tmp_path.glob(f"go{i}.ready.*"))) == 2, 60, what="both creates ready")
            finally:
                go.touch()
                said = [p.communicate(timeout=60) for p in procs]
            done = sorted(((p.returncode, out, err) for p, (out, err) in zip(procs, said, strict=True)))
            assert [code for code, _, _ in done] == [0, 1], f"round {i}: {done}"
            assert done[1][2] == f"Error: {TAKEN.format(name=name)}\n", done[1][2]
            assert len(_active(store.engine, name)) == 1
    finally:
        store.close()


def test_a_database_holding_active_keys_of_one_name_is_migrated_keeping_every_key(
        db_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """A database at the revision before the index holding three active keys named alice (made before a second
    create was refused), a revoked alice and a bob: migrated, the oldest alice keeps the name and the two others are
    renamed alice~ID, said in one warning naming them; every key still opens the API as it did, with its id, role and
    creation time; nothing else is renamed. ``revoke alice`` then revokes one key, and a new alice is refused."""
    t0 = dt.datetime(2026, 11, 30, 12)
    made = [("f" * 32, "alice", t0, None, False), ("a" * 32, "alice", t0 + dt.timedelta(hours=1), None, True),
            ("b" * 32, "alice", t0 + dt.timedelta(hours=1), None, False), ("c" * 32, "alice", t0, t0, False),
            ("d" * 32, "bob", t0, None, False)]
    keys = {key_id: auth.new_key() for key_id, *_ in made}
    with at_revision(db_url, "0010_labels_version") as conn:
        conn.execute(sa.insert(table_as_left(conn, "api_keys")), [
            {"id": key_id, "name": name, "key_hash": auth.hash_key(keys[key_id]), "created_at": created,
             "revoked_at": revoked, "admin": admin} for key_id, name, created, revoked, admin in made])
    with caplog.at_level(logging.WARNING, logger="sematic_k8s"):
        store = SqlStore(db_url)
    try:
        renamed = {"a" * 32: "alice~" + "a" * 32, "b" * 32: "alice~" + "b" * 32}
        rows = {k["id"]: k for k in auth.list_keys(store.engine)}
        assert {key_id: k["name"] for key_id, k in rows.items()} == {
            key_id: renamed.get(key_id, name) for key_id, name, *_ in made}
        assert {key_id: (k["created_at"], k["revoked_at"], k["admin"]) for key_id, k in rows.items()} == {
            key_id: (created, revoked, admin) for key_id, _, created, revoked, admin in made}
        checker = auth.Authenticator(store.engine, required=True)
        for key_id, _, _, revoked, admin in made:
            if revoked is None:
                who = checker.authenticate(keys[key_id])
                assert (who.key_id, who.name, who.is_admin) == (key_id, rows[key_id]["name"], admin)
        [warning] = [r.getMessage() for r in caplog.records if "API key" in r.getMessage()]
        assert warning == (f"3 active API keys were named 'alice' (API key names are unique now): the oldest (id "
                           f"{'f' * 32}) keeps the name, the others are renamed 'alice~{'a' * 32}' (id {'a' * 32}), "
                           f"'alice~{'b' * 32}' (id {'b' * 32}); each still works: revoke those not needed with "
                           "`sematic-k8s api-keys revoke NAME_OR_ID`")
        assert auth.revoke_key(store.engine, "alice") == 1
        assert auth.create_key(store.engine, "alice")
        with pytest.raises(auth.KeyNameTaken):
            auth.create_key(store.engine, "alice~" + "a" * 32)
    finally:
        store.close()

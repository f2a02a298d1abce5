"""A driver without a server (recording to its database directly) derives its workers' outcome keys from a secret its
database keeps (sematic_k8s/store/kept.py, sematic_k8s/executors/outcome_signing.py): a restarted driver, another
process, derives the same keys and adopts what its predecessor's workers signed; a driver of another database derives
others. Real driver processes (``signing_secret`` and ``remote_executor`` as ``python -m sematic_k8s.driver`` calls
them), on SQLite and PostgreSQL; two of them making the secret at once keep one."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa

from pgcluster import create_database
from sematic_k8s.settings import API_KEY_ENV, API_KEY_FILE_ENV, DB_URL_ENV, SERVER_ENV
from sematic_k8s.store import sql_store

# a driver process: opens its store as the driver does ($SEMATIC_K8S_DB_URL), says it is ready, waits for the go (so
# that two make the secret at once), builds its executor as the driver does and prints its attempt's key
DRIVER = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    from sematic_k8s import settings
    from sematic_k8s.executors.outcome_signing import attempt_key
    from sematic_k8s.resolvers.driven import remote_executor, signing_secret
    from sematic_k8s.specs import DriverSpec, ResolutionSettings
    from sematic_k8s.storage.urls import storage_from_url
    from sematic_k8s.store import open_store

    store = open_store(settings.home())
    Path(sys.argv[1]).touch()
    while not Path(sys.argv[2]).exists():
        time.sleep(0.01)
    spec = DriverSpec(root={"id": "a" * 64, "format": "pickle"}, storage_url=sys.argv[3], image="", build_hash="",
                      executor="process", resolution=ResolutionSettings(root_id="r" * 32))
    executor = remote_executor(spec, storage_from_url(spec.storage_url), signing_secret(store))
    print(attempt_key(executor.secret, "r" * 32, 1))
""")


def drivers(db: str, tmp_path: Path, n: int, name: str) -> list[str]:
    """The attempt key each of ``n`` driver processes of the database ``db``, started together, derives."""
    env = {k: v for k, v in os.environ.items() if k not in (SERVER_ENV, API_KEY_ENV, API_KEY_FILE_ENV)}
    env[DB_URL_ENV] = db
    go = tmp_path / f"{name}-go"
    ready = [tmp_path / f"{name}-ready-{i}" for i in range(n)]
    procs = [subprocess.Popen([sys.executable, "-c", DRIVER, str(r), str(go), f"file://{tmp_path / 'bucket'}"],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for r in ready]
    try:
        while not all(r.exists() for r in ready) and all(p.poll() is None for p in procs):
            time.sleep(0.01)
        go.touch()  # all at once: each finds no secret yet, and makes one
        said = [p.communicate(timeout=120) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert all(p.returncode == 0 for p in procs), said
    return [out.strip() for out, _ in said]


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_drivers_of_one_database_without_a_server_derive_the_same_keys_and_another_databases_others(
        backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """Two driver processes of one database, started together (a driver and its replacement; the secret made by
    both at once), derive the same attempt key; a third, started after (a restarted driver), the same again; a
    driver of another database another key. The database keeps one secret. Was: each driver process kept a random
    secret in its memory, so every one derived another key (a restarted driver could not verify what its
    predecessor's workers signed: OutcomeUnverified, the step run again)."""
    def database(name: str) -> str:  # a fresh one
        if backend == "postgresql":
            return create_database(request.getfixturevalue("postgres_server"), f"t_{uuid.uuid4().hex[:12]}")
        return f"sqlite:///{tmp_path / name}.sqlite3"

    one, other = database("one"), database("other")
    first, second = drivers(one, tmp_path, 2, "together")
    [restarted] = drivers(one, tmp_path, 1, "restarted")
    [elsewhere] = drivers(other, tmp_path, 1, "elsewhere")
    assert len(first) == 64 and first == second == restarted
    assert elsewhere != first
    store = sql_store(one)
    try:
        with store.engine.connect() as conn:
            assert conn.scalar(sa.text("SELECT count(*) FROM kept_secrets")) == 1
    finally:
        store.close()


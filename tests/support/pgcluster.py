"""A throwaway PostgreSQL cluster from the installed server binaries (Debian's package), on 127.0.0.1."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


def pg_bin() -> Path | None:
    """PostgreSQL's server binaries: $PG_BIN, else the newest /usr/lib/postgresql/*/bin."""
    if os.environ.get("PG_BIN"):
        candidates = [os.environ["PG_BIN"]]
    else:
        found = glob.glob("/usr/lib/postgresql/*/bin")
        candidates = sorted(found, key=lambda p: int(n) if (n := Path(p).parent.name).isdigit() else 0, reverse=True)
    for c in candidates:
        if (Path(c) / "initdb").exists() and (Path(c) / "pg_ctl").exists():
            return Path(c)
    return None


def _as_postgres(cmd: list[str]) -> list[str]:
    """initdb refuses to run as root: run as the ``postgres`` user then."""
    if os.geteuid() != 0:
        return cmd
    return ["su", "postgres", "-s", "/bin/sh", "-c", " ".join(f"'{c}'" for c in cmd)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PgCluster:
    """A PostgreSQL cluster of its own (initdb in a temp dir, 127.0.0.1, a free port): :meth:`start`, :meth:`stop`
    (``pg_ctl stop``, as a crash with ``mode="immediate"``) and start again on the same port and data;
    :meth:`remove` stops it and deletes it. ``max_connections``: the cluster's, set before a start; ``language``: of
    the server's messages (``de``: gettext's ``LANGUAGE`` in its environment, with ``lc_messages`` C.UTF-8, a locale
    every glibc has; None: English), set before a start."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir
        self.base = Path(tempfile.mkdtemp(prefix="sk-pg-"))  # not under pytest's 0700 tmp dirs: postgres enters it
        self.data, self.sock = self.base / "data", self.base / "run"
        self.sock.mkdir()
        if os.geteuid() == 0:
            shutil.chown(self.base, "postgres")
            shutil.chown(self.sock, "postgres")
        self.port = _free_port()
        self.max_connections = 300
        self.language: str | None = None
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}"
        subprocess.run(_as_postgres([str(bin_dir / "initdb"), "-D", str(self.data), "-U", "postgres",
                                     "--auth=trust", "-E", "UTF8", "--no-locale"]), check=True, capture_output=True)

    def start(self) -> None:
        opts = (f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.sock} -c fsync=off "
                f"-c max_connections={self.max_connections}")
        env = dict(os.environ)
        if self.language:  # gettext heeds LANGUAGE unless the locale is C itself ("C.UTF-8" is not)
            opts += " -c lc_messages=C.UTF-8"
            env["LANGUAGE"] = self.language
        log = str(self.base / "pg.log")
        subprocess.run(_as_postgres([str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-l", log, "-o", opts, "-w",
                                     "-t", "60", "start"]), check=True, capture_output=True, env=env)

    def stop(self, mode: str = "fast") -> None:
        if (self.data / "postmaster.pid").exists():
            subprocess.run(_as_postgres([str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w",
                                         "stop"]), capture_output=True)

    def remove(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.base, ignore_errors=True)


@contextlib.contextmanager
def postgres_cluster(bin_dir: Path) -> Iterator[str]:
    """A started :class:`PgCluster`, removed afterwards; yields ``postgresql+psycopg://postgres@127.0.0.1:PORT``."""
    cluster = PgCluster(bin_dir)
    try:
        cluster.start()
        yield cluster.url
    finally:
        cluster.remove()


@contextlib.contextmanager
def own_cluster() -> Iterator[PgCluster]:
    """A started :class:`PgCluster` of the test's own (to stop, crash and start again under the code tested), removed
    afterwards. Skips the test when PostgreSQL is not installed."""
    bin_dir = pg_bin()
    if bin_dir is None:
        pytest.skip("PostgreSQL server binaries not found")
    cluster = PgCluster(bin_dir)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.remove()


def create_database(server_url: str, name: str) -> str:
    """CREATE DATABASE ``name`` (a generated identifier) on the cluster; returns its SQLAlchemy URL."""
    import psycopg

    dsn = server_url.replace("postgresql+psycopg://", "postgresql://") + "/postgres"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return f"{server_url}/{name}"

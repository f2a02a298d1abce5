"""Bad bytes in the metadata database (DESIGN.md "Faults"): a record whose JSON was cut short, a SQLite page
overwritten. What reads them fails with one line naming the damage and what to do, never an "unexpected"
error or a traceback."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import fault_pipelines as fp
import sematic_k8s as sk
from sematic_k8s import settings
from serving import serve

CLI = Path(sys.executable).with_name("sematic-k8s")


def cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(settings.PREFIX)}
    environ[settings.HOME_ENV] = str(home)
    return subprocess.run([str(CLI), *args], env=environ, capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    return lines[0]


def resolved_home(home: Path, monkeypatch) -> tuple[str, str]:
    """A home with ``pipeline(3)`` resolved: (its resolution id, the id of one of its other runs)."""
    monkeypatch.delenv("SEMATIC_K8S_SERVER", raising=False)
    monkeypatch.delenv("SEMATIC_K8S_DB_URL", raising=False)
    f = fp.pipeline(3)
    assert f.resolve(sk.LocalResolver(home=home)) == 6
    store = sk.LocalResolver(home=home).store
    child = next(r.id for r in store.runs_of_root(f.id) if r.id != f.id)
    store.close()
    return f.id, child


def test_a_record_whose_json_was_cut_short_is_named_with_what_to_do(tmp_path, monkeypatch):
    root, child = resolved_home(tmp_path, monkeypatch)
    with sqlite3.connect(tmp_path / "db.sqlite3") as conn:  # as a half-written value, or a hand edit, leaves it
        conn.execute("UPDATE runs SET notes = ? WHERE id = ?", ('{"reused_from": "abc', child))
    line = one_error_line(cli(tmp_path, "runs", "list"))
    assert line.startswith("Error: the metadata database holds a value that is not JSON ('{\"reused_from\": \"abc'")
    assert "SELECT id FROM runs WHERE NOT json_valid(notes)" in line and "restore a backup" in line

    with serve(tmp_path) as s, s.client() as c:
        r = c.get("/api/v1/runs", params={"root_id": root})
        assert r.status_code == 500 and "holds a value that is not JSON" in r.json()["detail"]


def test_a_damaged_sqlite_page_is_named_with_what_to_do(tmp_path, monkeypatch):
    resolved_home(tmp_path, monkeypatch)
    db = tmp_path / "db.sqlite3"
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # every commit in the database file
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        root_page = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'runs'").fetchone()[0]
    conn.close()
    with open(db, "r+b") as f:  # garbage over the runs table's root page, as a bad sector or a stray write leaves
        f.seek((root_page - 1) * page_size)
        f.write(b"\xde\xad\xbe\xef" * (page_size // 4))
    line = one_error_line(cli(tmp_path, "runs", "list"))
    assert line == ("Error: the SQLite metadata database is damaged (database disk image is malformed): restore it "
                    "from a backup (`sqlite3 DB .recover` may save part of what it holds)")

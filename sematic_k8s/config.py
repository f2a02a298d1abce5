"""Where the embedded mode keeps its data."""

from __future__ import annotations

import os
from pathlib import Path

HOME_ENV = "SEMATIC_K8S_HOME"
DB_URL_ENV = "SEMATIC_K8S_DB_URL"


def home(override: str | os.PathLike[str] | None = None) -> Path:
    """The data directory: ``override``, else $SEMATIC_K8S_HOME, else ~/.sematic_k8s."""
    path = Path(override or os.environ.get(HOME_ENV) or Path.home() / ".sematic_k8s").expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def db_url(home_dir: Path) -> str:
    """The metadata database: $SEMATIC_K8S_DB_URL, else a SQLite file in the home directory."""
    return os.environ.get(DB_URL_ENV) or f"sqlite:///{home_dir / 'db.sqlite3'}"

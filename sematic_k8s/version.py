"""The installed distribution's version, read from its metadata (pyproject.toml is the one place it is set).

A module of its own so that packaging can read it without importing the package root (which imports the
resolvers, which import packaging).
"""

from __future__ import annotations

import os
import sys
from importlib.metadata import PackageNotFoundError, distribution, version

DISTRIBUTION = "sematic-k8s"
UNKNOWN = "0.0.0.dev0"  # imported from a source tree that was never installed
PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))  # the sematic_k8s package directory


def installed_version() -> str:
    """``sematic-k8s``'s version from its installed metadata, or :data:`UNKNOWN` when it is not installed."""
    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:
        return UNKNOWN


def install_command(extra: str) -> str:
    """The command that installs ``extra`` into this very Python (its venv, activated or not): from the directory the
    distribution was installed from when it was (``make run``: ``pip install -e .``), else by name."""
    import json
    import shlex
    from urllib.parse import unquote, urlparse

    target = shlex.quote(f"{DISTRIBUTION}[{extra}]")
    try:
        found = json.loads(distribution(DISTRIBUTION).read_text("direct_url.json") or "{}")
    except (PackageNotFoundError, ValueError):
        found = {}
    url = found.get("url") if isinstance(found, dict) else None
    if isinstance(url, str) and url.startswith("file://") and os.path.isdir(unquote(urlparse(url).path)):
        editable = isinstance(found.get("dir_info"), dict) and found["dir_info"].get("editable") is True
        target = ("-e " if editable else "") + shlex.quote(f"{unquote(urlparse(url).path)}[{extra}]")
    return f"{sys.executable} -m pip install {target}"


__version__ = installed_version()

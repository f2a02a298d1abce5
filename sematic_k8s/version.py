"""The installed distribution's version, read from its metadata (pyproject.toml is the one place it is set).

A module of its own so that packaging can read it without importing the package root (which imports the
resolvers, which import packaging).
"""

from __future__ import annotations

import os
from importlib.metadata import PackageNotFoundError, version

DISTRIBUTION = "sematic-k8s"
UNKNOWN = "0.0.0.dev0"  # imported from a source tree that was never installed
PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))  # the sematic_k8s package directory


def installed_version() -> str:
    """``sematic-k8s``'s version from its installed metadata, or :data:`UNKNOWN` when it is not installed."""
    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:
        return UNKNOWN


__version__ = installed_version()

"""This process as a user without root's power over permissions, so that a file-system refusal (EACCES) is met for
real in a test run as root."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator


@contextlib.contextmanager
def unprivileged() -> Iterator[None]:
    """This process as a user without root's power over permissions (``nobody``, for a test run as root)."""
    if os.geteuid() != 0:
        yield
        return
    os.seteuid(65534)
    try:
        yield
    finally:
        os.seteuid(0)

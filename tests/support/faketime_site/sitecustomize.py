"""Imported at start-up by the Python processes :func:`skewed_clock.skewed` runs under libfaketime (this folder is
first on their PYTHONPATH). libfaketime 0.9.10 (Debian 12's) with ``FAKETIME_DONT_FAKE_MONOTONIC`` turns a
``clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME)`` into a negative time, which the kernel refuses (EINVAL), and
``time.sleep`` calls it since Python 3.11 (wolfcw/libfaketime#426): here it waits in ``select`` instead, on the
same real monotonic clock. Nothing else changes."""

import select
import time


def _sleep(seconds: float) -> None:
    if seconds < 0:
        raise ValueError("sleep length must be non-negative")
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        select.select([], [], [], left)


time.sleep = _sleep

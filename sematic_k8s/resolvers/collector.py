"""Python's cyclic garbage collector paused while the resolution loop does bulk work of its own.

Planning a fan-out, looking up its cache hits and writing its records make tens of thousands of objects that
live until the resolution ends and form no garbage cycle. As they pile up they set off full collections (each
time the survivors reach a quarter of the process's long-lived objects), which walk every object of the process
and find nothing to free: three of them, 50-70 ms each, in a 10,000-run re-resolution from the cache; one with
the pauses. Only the library's own work is paused, never a func's code: a func that makes cyclic garbage has it
collected as usual.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def paused() -> Iterator[None]:
    """The collector off inside (if it was on), back on after; a nested use leaves it to the outer one. Also a
    decorator (``@paused()``), each call its own."""
    was_on = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_on:
            gc.enable()

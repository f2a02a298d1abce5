"""Python's cyclic garbage collector paused while the resolution loop does bulk work of its own.

Planning a fan-out (or a rerun) and resolving its cache hits make tens of thousands of objects that
live until the resolution ends and form no garbage cycle. As they pile up they set off full collections (each
time the survivors reach a quarter of the process's long-lived objects), which walk every object of the process
and find nothing to free: three of them, 50-70 ms each, in a 10,000-run re-resolution from the cache; one with
the pauses. Only the library's own steps are paused, never a func's code in the same thread, and not the loop's
writes to the store, which may wait for the database or the server (though a fan-out of over 20,000 runs is
written as it is planned, and a large value goes to artifact storage when it is serialized: waits, then, that a
pause lasts through). Funcs on other threads (``max_parallelism`` > 1) go on meanwhile: their cyclic garbage is
collected once the step ends.
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

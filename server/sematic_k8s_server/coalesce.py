"""Many concurrent requests' database work done in a few round trips: credential checks and writes.

A :class:`Coalescer` gathers the items that requests submit while its database calls are busy and hands them
over together, to a blocking function run on a worker thread. Each item is handled by a call that *started
after it was submitted*, so batching changes no answer: a key revoked before a request arrived is refused by
the check that request waits for, exactly as a check of its own would. Under load one query checks hundreds
of keys and one transaction records hundreds of state changes (see bench/server_load.py for the figures).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

import anyio.to_thread

T = TypeVar("T")
R = TypeVar("R")


class Coalescer(Generic[T, R]):
    """``await submit(item)`` -> ``handle(items)[i]`` for its item (an exception there is raised in the
    submitter). At most ``calls`` calls of ``handle`` run at once, each with up to ``limit`` items."""

    def __init__(self, handle: Callable[[list[T]], Sequence[R | BaseException]], *, calls: int = 1,
                 limit: int = 500) -> None:
        self.handle, self.calls, self.limit = handle, calls, limit
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._running = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def submit(self, item: T) -> R:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # first use, or a new loop (a test's client started another)
            self._loop, self._pending, self._running = loop, [], 0
        future: asyncio.Future[R] = loop.create_future()
        self._pending.append((item, future))
        if self._running < self.calls:
            self._running += 1
            task = loop.create_task(self._drain())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return await future

    async def _drain(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending[:self.limit], self._pending[self.limit:]
                items = [item for item, _ in batch]
                try:
                    results: Sequence[R | BaseException] = await anyio.to_thread.run_sync(self.handle, items)
                except Exception as e:  # noqa: BLE001 - e.g. the database is down: every submitter is told
                    results = [e] * len(batch)
                for (_, future), result in zip(batch, results, strict=True):
                    if future.done():  # its request was cancelled (the client went away)
                        continue
                    if isinstance(result, BaseException):
                        future.set_exception(result)
                    else:
                        future.set_result(result)
        finally:
            self._running -= 1

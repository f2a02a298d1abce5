"""Worker Job creates the API server refused for now (429, 5xx, an exceeded quota on Jobs, unreachable): kept in
order and tried again once the pause the refusals asked for is over; new creates wait behind them meanwhile."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterator
from typing import Any


class LaunchQueue:
    """(run id, Job manifest) pairs, oldest first, and the pause of every create."""

    def __init__(self) -> None:
        self.queued: deque[tuple[str, dict[str, Any]]] = deque()  # creates the API server refused for now
        self.paused_until = 0.0  # no create before this (monotonic): the API server asked us to slow down

    def busy(self) -> bool:
        """A create now would jump the queue or ignore the pause."""
        return bool(self.queued) or time.monotonic() < self.paused_until

    def hold(self, run_id: str, body: dict[str, Any]) -> None:
        self.queued.append((run_id, body))

    def pause(self, delay: float) -> None:
        """No create for ``delay`` seconds (at least 50 ms) from now, unless a pause lasts longer already."""
        self.paused_until = max(self.paused_until, time.monotonic() + max(delay, 0.05))

    def due(self, now: float) -> Iterator[tuple[str, dict[str, Any]]]:
        """The creates to try again, oldest first, while no pause holds them (one that is refused again pauses
        the rest): each is taken once the one before was tried."""
        while self.queued and now >= self.paused_until:
            yield self.queued.popleft()
            now = time.monotonic()

    def wake_at(self) -> float | None:
        """When the queued creates may be tried again (monotonic), if any wait."""
        return self.paused_until if self.queued else None

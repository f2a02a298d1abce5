"""An image's pull as its waiters are told it: how far it got, from the engine's pull stream
(:class:`PullProgress`: layers, MB, a layer the engine retries), and the notes and failure words made of it
(:func:`pull_note`, :func:`unpulled_words`), a worker's run and a driver's launch alike. No I/O."""

from __future__ import annotations

import threading
import time
from typing import Any

PULL_PROGRESS_EVERY = 5.0  # seconds between changes of a pull's progress words (PullProgress.words)
PULL_STALL = 10.0  # seconds a pull may download nothing and still be moving (a run past its grace waits for it)


def unpulled_words(image: str, said: str, waited: float | None = None) -> str:
    """The engine's failed pull of ``image`` in its words (``said``), how long it was tried (``waited`` seconds,
    when it was waited for), and what to do."""
    tried = f" for {waited:.0f} s" if waited is not None else ""
    return (f"the Docker engine does not have image {image} and could not pull it{tried} ({said}): push it to its "
            "registry, or check that the engine can reach that registry")


def registry_of(image: str) -> str:
    """The registry an image reference names (its first part when that is a host), else Docker Hub's."""
    first, slash, _ = image.partition("/")
    return first if slash and ("." in first or ":" in first or first == "localhost") else "docker.io"


class PullProgress:
    """What a pull's stream said so far (:func:`pull` hands it each line, on the pull's thread), read as words
    (:meth:`words`, any thread): its layers, how many are there, bytes downloaded of those sized, and a layer the
    engine retries (after a registry's 5xx or a cut to that layer's blob: its stream counts down "Retrying in N
    seconds" before each new download), with how many of its downloads failed. The words change at most every
    :data:`PULL_PROGRESS_EVERY` seconds, and only when what they tell changes (a layer, a MB, a failed download; not
    the engine's countdown, a second at a time): a note, not a line per stream line. :attr:`retried_at` is when the
    stream first said the engine retries a layer (a failure of its registry, within the try), :attr:`heard_at` when
    it last said anything; :meth:`moving` whether it downloaded something lately."""

    _DONE = ("Pull complete", "Already exists")

    def __init__(self, image: str) -> None:
        self.image = image
        self._lock = threading.Lock()
        self._layers: dict[str, tuple[int, int]] = {}  # layer id -> (bytes downloaded, its size; 0 not known yet)
        self._done: set[str] = set()
        self._retrying: dict[str, int] = {}  # layer id -> the second its engine's countdown is at, while it retries
        self._failed = 0  # downloads of a layer that failed (each a countdown begun)
        self._said, self._said_at = "", float("-inf")
        self.retried_at: float | None = None  # monotonic time the stream first said the engine retries a layer
        self.moved_at = float("-inf")  # monotonic time of its last byte downloaded or layer done
        self.heard_at = time.monotonic()  # of its last line (its start before one): when a failed try began failing

    def seen(self, line: dict[str, Any]) -> None:
        """One line of the engine's pull stream."""
        self.heard_at = time.monotonic()
        status, layer = str(line.get("status") or ""), str(line.get("id") or "")
        if not layer or status.startswith(("Pulling from", "Digest:", "Status:")):
            return
        detail = line.get("progressDetail") or {}
        with self._lock:
            current, total = self._layers.get(layer, (0, 0))
            # a "Downloading" line of no bytes is a download that failed before its first (the engine's line for its
            # failed read, just before its "Retrying in", seen when its stream is not quick to replace it): no move
            came = status == "Downloading" and int(detail.get("current") or 0) > 0
            moved = came or status in ("Verifying Checksum", "Download complete", "Extracting", "Pull complete")
            if status == "Downloading" and detail.get("total"):
                current, total = int(detail.get("current") or 0), int(detail["total"])
            elif status in ("Download complete", "Verifying Checksum", "Extracting", "Pull complete") and total:
                current = total
            if status.startswith("Retrying in"):
                second = int(status.split()[2]) if status.split()[2:3] and status.split()[2].isdigit() else 0
                if layer not in self._retrying or second > self._retrying[layer]:  # a countdown begun: a failure
                    self._failed += 1
                self._retrying[layer] = second
                self.retried_at = self.retried_at or time.monotonic()
            elif came or status in ("Download complete", *self._DONE):
                self._retrying.pop(layer, None)
            if status in self._DONE:
                self._done.add(layer)
            if moved:
                self.moved_at = time.monotonic()
            self._layers[layer] = (current, total)

    def silent_for(self) -> float:
        """Seconds since its stream last said anything (since the try began, before it said anything)."""
        return time.monotonic() - self.heard_at

    def moving(self) -> bool:
        """Whether it downloaded or extracted a layer's bytes (or finished a layer) in the last :data:`PULL_STALL`
        seconds."""
        return time.monotonic() - self.moved_at < PULL_STALL

    def words(self, now: bool = False) -> str:
        """"D of N layers, X of Y MB[; the engine retries a layer (K failed downloads)]" ("" before the stream
        named a layer), as last made (at most every :data:`PULL_PROGRESS_EVERY` seconds; ``now``: made now, for a
        failure's words)."""
        at = time.monotonic()
        with self._lock:
            if now or at - self._said_at >= PULL_PROGRESS_EVERY or not self._said:
                said = ""
                if self._layers:
                    sized = [v for v in self._layers.values() if v[1]]  # a layer it has already: no size
                    said = f"{len(self._done)} of {len(self._layers)} layers"
                    if sum(t for _, t in sized) >= 5e5:  # less: "0 of 0 MB"
                        said += f", {sum(c for c, _ in sized) / 1e6:.0f} of {sum(t for _, t in sized) / 1e6:.0f} MB"
                if self._retrying:
                    n = len(self._retrying)
                    said += f"; the engine retries {'a layer' if n == 1 else f'{n} layers'} ({self._failed} failed " \
                            f"download{'' if self._failed == 1 else 's'})"
                self._said, self._said_at = said.removeprefix("; "), at
            return self._said


def pull_note(whose: str, image: str, progress: str | None, failed: str = "") -> str:
    """What waits for ``image`` is told while it is pulled (``whose``: "its", "the driver's"), a worker's run and a
    driver's launch alike: "pulling its image (PROGRESS): REF" (the image named short, its progress first, within
    the 40 characters the CLI shows) while no try failed; once one did, ``failed`` (the wait's words), with
    "; pulling: PROGRESS" while a later try is under way."""
    if failed:
        return and_pulling(failed, progress)
    return f"pulling {whose} image{f' ({progress})' if progress else ''}: {short_image(image)}"


def and_pulling(said: str, progress: str | None) -> str:
    """A failed pull's words ``said`` with the try under way's progress, "SAID; pulling: PROGRESS" (either part alone
    when the other is empty)."""
    return "; ".join(w for w in (said, f"pulling: {progress}" if progress else "") if w)


def short_image(image: str) -> str:
    """``image`` named short for a note: "REPO@sha256:" and its digest's first 12 hex digits."""
    name, at, digest = image.partition("@sha256:")
    return f"{name}@sha256:{digest[:12]}" if at else image

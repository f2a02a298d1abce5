"""A pass of the server's run on a daemon thread of its own each time it is woken (after each sweep).

:class:`~.copies.LeftCopies` and :class:`~.token_secrets.LeftTokens` are its subclasses: each gives its pass
(:meth:`WokenPass.sweep`), the words of a pass that failed (:meth:`WokenPass.failed`), and what a pass that succeeded
(:meth:`WokenPass.passed`) or the thread's end (:meth:`WokenPass.ended`) does.
"""

from __future__ import annotations

import threading


class WokenPass:
    """Runs :meth:`sweep` on a daemon thread named ``thread_name`` (started on the first :meth:`wake`) once per wake
    (wakes while a pass runs make one more), until :meth:`stop`; a pass that raises is given to :meth:`failed`, the
    next wake tries again."""

    thread_name = "sk-woken-pass"

    def __init__(self) -> None:
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def wake(self) -> None:
        """Run a pass now, on the thread (started on first use)."""
        if self._stop.is_set():
            return
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, daemon=True, name=self.thread_name)
            self._thread.start()
        self._wake.set()

    def stop(self) -> None:
        """No more passes; a pass under way (which may look at :meth:`stopping`) is waited for a moment."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(5)

    def stopping(self) -> bool:
        """Whether :meth:`stop` was called: a pass under way ends early."""
        return self._stop.is_set()

    def sweep(self) -> object:
        """One pass."""
        raise NotImplementedError

    def passed(self) -> None:
        """After a pass that succeeded."""

    def failed(self, e: Exception) -> None:
        """After a pass that raised ``e`` (logged: the next wake tries again)."""
        raise NotImplementedError

    def ended(self) -> None:
        """When the thread ends (stopped)."""

    def _run(self) -> None:
        try:
            while True:
                self._wake.wait()
                self._wake.clear()
                if self._stop.is_set():
                    return
                try:
                    self.sweep()
                    self.passed()
                except Exception as e:  # noqa: BLE001 - the database or API may be down for a while: the next wake
                    self.failed(e)
        finally:
            self.ended()

"""``pytest --fd-report``: the test process's open file descriptors, before and after each test.

At the end of the session it prints how many descriptors the process held at its start and at its end, what
those left open are (their ``/proc/self/fd`` targets, a test's temporary directory and socket numbers folded
together), the tests after which the process held most more than before, and each module's total. Linux only
(``/proc``). A descriptor a test leaves open is usually a store, client, engine or socket nothing closed.
"""

from __future__ import annotations

import collections
import os
import re
from collections.abc import Iterator

import pytest

TOP = 25  # the tests listed, most descriptors gained first


def open_fds() -> dict[int, str]:
    """This process's descriptors and what each is open on (a path, ``socket:[N]``, ``pipe:[N]``)."""
    fds = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            fds[int(name)] = os.readlink(f"/proc/self/fd/{name}")
        except OSError:  # the listing's own descriptor, or one closed meanwhile
            continue
    return fds


def connections_to(port: int) -> list[str]:
    """This process's descriptors on TCP connections to ``port`` (as ``/proc/self/fd`` names them: ``socket:[N]``),
    in any state: one its peer closed is held until this process closes it. Its own listening or accepted sockets on
    ``port`` are not counted (their remote port is another)."""
    inodes = set()
    for table in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
        try:
            with open(table) as f:
                rows = f.read().splitlines()[1:]
        except OSError:  # no IPv6
            continue
        for row in rows:
            fields = row.split()  # sl local_address rem_address st ... inode (the 10th)
            if int(fields[2].rsplit(":", 1)[1], 16) == port:
                inodes.add(f"socket:[{fields[9]}]")
    return sorted(target for target in open_fds().values() if target in inodes)


def kind(target: str) -> str:
    """``target`` with what differs between tests folded: socket and pipe numbers, pytest's temporary directories."""
    target = re.sub(r"\[\d+\]", "[]", target)
    return re.sub(r"/pytest-of-[^/]+/pytest-\d+/[^/]+", "/TMP", target)


def opened(before: dict[int, str], after: dict[int, str]) -> collections.Counter[str]:
    """The kinds of descriptors open in ``after`` that were not (or were open on something else) in ``before``."""
    return collections.Counter(kind(t) for fd, t in after.items() if before.get(fd) != t)


class FdReport:
    """The pytest plugin: registered by tests/conftest.py when ``--fd-report`` is given."""

    def __init__(self) -> None:
        self.start = open_fds()
        self.tests: list[tuple[int, str, collections.Counter[str]]] = []  # (descriptors gained, test, kinds)

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_protocol(self, item: pytest.Item) -> Iterator[None]:
        before = open_fds()
        yield
        after = open_fds()
        self.tests.append((len(after) - len(before), item.nodeid, opened(before, after)))

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        write = terminalreporter.write_line
        end = open_fds()
        write(f"fd report: {len(self.start)} descriptors open at the start, {len(end)} at the end")
        for what, n in opened(self.start, end).most_common(15):
            write(f"  left open {n:5d} {what}")
        for gained, test, kinds in sorted(self.tests, key=lambda t: -t[0])[:TOP]:
            if gained > 0:
                write(f"  +{gained:<4d} {test} {dict(kinds.most_common(4))}")
        modules: collections.Counter[str] = collections.Counter()
        for gained, test, _ in self.tests:
            modules[test.split("::")[0]] += gained
        for module, gained in modules.most_common():
            if gained:
                write(f"  {gained:+5d} {module}")

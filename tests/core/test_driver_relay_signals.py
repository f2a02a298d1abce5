"""The Docker driver relay's first instants (``sematic_k8s.driver_relay``, started by
:data:`~sematic_k8s.specs.DOCKER_DRIVER_COMMAND`): a signal sent as it starts, before its handlers are set, is held
(blocked) until they are and the driver runs, then passed on or dropped as any later one. Was: Python's SIGINT
handler raised KeyboardInterrupt in the relay while it imported sematic_k8s or started the driver, which ended the
relay (and the container, whose first process it is). Here the relay runs as a process (not a container's first
process, whose unhandled signals the kernel ignores): a signal it gets before the interpreter set its own handlers
kills it (nothing of it ran: in a container that signal is ignored), which is left out."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from sematic_k8s import settings
from sematic_k8s.specs import DOCKER_DRIVER_COMMAND

RUNS = 60  # relays started, each sent SIGINT at once or within 20 ms (its interpreter's start, its imports)


def test_a_sigint_sent_as_the_relay_starts_never_ends_it_by_a_keyboard_interrupt() -> None:
    environ = {k: v for k, v in os.environ.items() if k != settings.DRIVER_ENV}  # the driver exits 75 at once
    ended_by_it: list[str] = []
    for n in range(RUNS):
        relay = subprocess.Popen([sys.executable, *DOCKER_DRIVER_COMMAND[1:]], env=environ, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.PIPE)
        time.sleep((n % 20) / 1000)  # at once, or a few ms later: its interpreter starting, its imports
        relay.send_signal(signal.SIGINT)
        _, err = relay.communicate(timeout=120)
        # the relay's own KeyboardInterrupt, raised after its command began (its imports, its start of the driver):
        # it exits by it (-2, or 1 in site's import); the driver's own is relayed, the relay exiting with its code
        if relay.returncode in (-signal.SIGINT, 1) and any(w in err for w in (b"sematic_k8s", b"site.py")):
            ended_by_it.append(err.decode(errors="replace").strip().splitlines()[-1])
    assert not ended_by_it, f"{len(ended_by_it)} of {RUNS} relays ended by a SIGINT sent as they started"

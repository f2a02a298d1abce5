"""The first process of a Docker driver container (``python -m sematic_k8s.driver_relay``): runs the driver
(``python -m sematic_k8s.driver``) as its child, passes its stdout and stderr on as they come, and once the driver
ended ends each stream's unended last line with a line break; then exits with the driver's exit code (128 + N for a
driver killed by signal N, as Docker says a container's).

Why: the engine's json-file log keeps an unended line until its stream ends, writes it as the container ends, and its
follow (how :class:`~sematic_k8s.launchers.docker.DriverContainer` reads the log) often ends before sending it; the
container, removed as it ends (``auto_remove``), cannot be read after it. A dying driver's last words (a Python fatal
error, ``print(..., end="")`` before ``os._exit``, a kill -9 mid-line) then missed the CloudResolver's "last log lines".
Ended here while the container still runs, that line is logged as any other.

The relay stops at the driver's end, not at its streams' (a process the driver left holding them would keep the
container up). A signal the container gets (``docker stop``'s SIGTERM, ``docker kill -s``) is passed on to the driver
when the driver has a handler for it, as it reached the driver in the relay's place (a container's first process gets
only the signals it handles): Python's SIGINT, a pipeline's own SIGTERM handler. One it does not handle is dropped, as
then (SIGTERM still waits for ``docker stop``'s SIGKILL); the container's SIGKILL ends both. A signal sent as the
container starts is held (blocked: the container's command blocks every signal first, see
:data:`~sematic_k8s.specs.DOCKER_DRIVER_COMMAND`) until the relay's handlers are set and the driver runs, then passed on
or dropped as a later one (was: Python's SIGINT, before the handlers, ended the relay and the container). Not closed:
a SIGINT sent in the interpreter's own start, after it set its handler and before the command's first line (a few
ms), ends it; before that handler, the kernel ignores it (a container's first process).
"""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys

from sematic_k8s.specs import DRIVER_MODULE

CHUNK = 65536
DRAIN_CHUNKS = 1024  # at most this many reads once the driver ended (64 MB): a process it left may write on
# the signals passed on to a driver that handles them (those a container is sent: docker stop, docker kill -s)
PASSED = (signal.SIGHUP, signal.SIGINT, signal.SIGQUIT, signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)


def main() -> int:
    signal.pthread_sigmask(signal.SIG_BLOCK, PASSED)  # (blocked already by the container's command) until handled
    child = subprocess.Popen([sys.executable, "-m", DRIVER_MODULE], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, bufsize=0, preexec_fn=unblocked)
    for sig in PASSED:
        signal.signal(sig, lambda signum, _: pass_on(child, signum))
    unblocked()  # a signal sent meanwhile is handled now: passed on, or dropped, as any later one
    assert child.stdout is not None and child.stderr is not None
    relay({child.stdout.fileno(): 1, child.stderr.fileno(): 2}, child)
    code = child.wait()
    return 128 - code if code < 0 else code


def unblocked() -> None:
    """No signal blocked: the relay's once its handlers are set, and the driver's from its start (a child inherits its
    parent's mask), as a container's first process starts."""
    signal.pthread_sigmask(signal.SIG_SETMASK, ())


def pass_on(child: subprocess.Popen[bytes], signum: int) -> None:
    """Send ``signum`` to ``child`` if it handles it (its ``SigCgt``), as the kernel gives a container's first process
    only the signals it handles."""
    if handles(child.pid, signum):
        child.send_signal(signum)  # nothing once it exited


def handles(pid: int, signum: int) -> bool:
    """Whether process ``pid`` has a handler for ``signum`` (``/proc/<pid>/status``; False once it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            caught = next((line.split()[1] for line in status if line.startswith("SigCgt:")), "0")
    except OSError:
        return False
    return bool(int(caught, 16) >> (signum - 1) & 1)


def relay(streams: dict[int, int], child: subprocess.Popen[bytes]) -> None:
    """Copy each read end in ``streams`` to its file descriptor until both end or ``child`` exited (then what they
    hold already is copied, no more: a process it left may write on); then end with a line break each one whose last
    byte copied was not one."""
    ended = dict.fromkeys(streams, True)  # whether what was copied ends with a line break (or is nothing)
    selector = selectors.DefaultSelector()
    for fd in streams:
        os.set_blocking(fd, False)
        selector.register(fd, selectors.EVENT_READ)
    held = DRAIN_CHUNKS  # reads left once it exited
    while selector.get_map() and held > 0:
        exited = child.poll() is not None  # asked before the reads: what it wrote before it ended is in the pipes
        ready = selector.select(0 if exited else 0.2)
        if exited and not ready:
            break
        for key, _ in ready:
            held -= exited
            try:
                chunk = os.read(key.fd, CHUNK)
            except BlockingIOError:  # nothing after all
                continue
            if chunk:
                _write(streams[key.fd], chunk)
                ended[key.fd] = chunk.endswith(b"\n")
            else:
                selector.unregister(key.fd)
    for fd, out in streams.items():
        if not ended[fd]:
            _write(out, b"\n")


def _write(fd: int, data: bytes) -> None:
    """All of ``data`` to ``fd``; nothing when it cannot take it (the driver is never held up by its log)."""
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view):]
        except OSError:
            return


if __name__ == "__main__":
    sys.exit(main())

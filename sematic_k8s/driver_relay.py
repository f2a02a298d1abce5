"""The first process of a Docker driver container (``python -m sematic_k8s.driver_relay``): runs the driver
(``python -m sematic_k8s.driver``) as its child, its stdout and stderr one pipe (as ``2>&1``), passes that on to its
own stdout as it comes, and once the driver ended ends its unended last line with a line break; then exits with the
driver's exit code (128 + N for a driver killed by signal N, as Docker says a container's).

Why one stream: the engine reads a container's stdout and stderr on two copiers of its own, each stamping and logging
its lines as it gets to them, up to a megabyte behind the process: the log's order across the two streams (and its
timestamps) is the copiers', not the driver's (moby/moby#31706). A traceback written last on stderr after a burst on
stdout landed among stdout's lines, or before all of them (every line kept, in order within its stream), and the
CloudResolver's "last log lines" (the log's tail) showed neither its end nor, at times, any stdout line. One pipe keeps
the order the driver wrote in, as a terminal does; the driver's log is then all stdout (``docker logs`` shows no
stderr), and a line the driver left unended on one stream is continued by what it writes next on the other.

Why ended: the engine's json-file log keeps an unended line until its stream ends, writes it as the container ends, and
its follow (how :class:`~sematic_k8s.launchers.docker.DriverContainer` reads the log) often ends before sending it;
the container, removed as it ends (``auto_remove``), cannot be read after it. A dying driver's last words (a Python
fatal error, ``print(..., end="")`` before ``os._exit``, a kill -9 mid-line) then missed the CloudResolver's "last log
lines". Ended here while the container still runs, that line is logged as any other.

The relay stops at the driver's end, not at its output's (a process the driver left holding it would keep the
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
    # one pipe for both streams: the engine keeps its order
    child = subprocess.Popen([sys.executable, "-m", DRIVER_MODULE], stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, bufsize=0, preexec_fn=unblocked)
    for sig in PASSED:
        signal.signal(sig, lambda signum, _: pass_on(child, signum))
    unblocked()  # a signal sent meanwhile is handled now: passed on, or dropped, as any later one
    assert child.stdout is not None
    relay(child.stdout.fileno(), 1, child)
    code = child.wait()
    return 128 - code if code < 0 else code


def unblocked() -> None:
    """No signal blocked: the relay's once its handlers are set, and the driver's from its start (a child inherits its
    parent's mask), as a container's first process starts. Its name is how the container's command tells this relay
    from an older one, which it unblocks for (:data:`~sematic_k8s.specs.DOCKER_DRIVER_COMMAND`): keep it."""
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


def relay(source: int, out: int, child: subprocess.Popen[bytes]) -> None:
    """Copy the read end ``source`` to ``out`` until it ends or ``child`` exited (then what it holds already is
    copied, no more: a process it left may write on); then end with a line break what was copied when its last byte
    was not one."""
    ended = True  # whether what was copied ends with a line break (or is nothing)
    os.set_blocking(source, False)
    selector = selectors.DefaultSelector()
    selector.register(source, selectors.EVENT_READ)
    held = DRAIN_CHUNKS  # reads left once it exited
    while held > 0:
        exited = child.poll() is not None  # asked before the read: what it wrote before it ended is in the pipe
        if not selector.select(0 if exited else 0.2):
            if exited:
                break
            continue
        held -= exited
        try:
            chunk = os.read(source, CHUNK)
        except BlockingIOError:  # nothing after all
            continue
        if not chunk:
            break
        _write(out, chunk)
        ended = chunk.endswith(b"\n")
    selector.close()
    if not ended:
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

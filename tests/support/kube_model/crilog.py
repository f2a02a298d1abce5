"""A container's log as the kubelet keeps it under containerd: one file in the CRI format, written by two copiers.

containerd's CRI logger (``NewCRILogger``/``redirectLogs``) runs one goroutine per stream: each reads its own pipe
(4 KiB reads), cuts what it read into lines and appends each, as it gets to it, to the one file as
``<RFC3339Nano time> <stdout|stderr> <F|P> <content>`` (``F`` a whole line, its newline, and a ``\\r`` before it,
dropped; ``P`` part of one: a line longer than 16 KiB is cut, and an unended last line is written as ``P`` at the
end of its stream). Order across the two streams is the copiers', not the process's: a burst on stdout still in its
pipe is logged after a later line on stderr. :func:`read` answers as the kubelet's ``ReadLogs`` does: the last
``tail`` records of the file, those before ``since`` left out, a ``P`` record without a newline, timestamps in
RFC3339Nano with 9 digits, the content's bytes as written (invalid UTF-8 too).
"""

from __future__ import annotations

import datetime
import os
import threading
import time

READ_SIZE = 4096  # containerd's bufio reader
MAX_LINE = 16 * 1024  # containerd's max_container_log_line_size (default)


class Log:
    """One container's log file; :meth:`copy` is a copier (run one per stream, each in a thread of its own)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.lock = threading.Lock()
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_TRUNC, 0o640)

    def _append(self, stream: bytes, records: list[tuple[bytes, bytes]]) -> None:
        stamp = _stamp(time.time_ns()).encode()
        data = b"".join(b"%s %s %s %s\n" % (stamp, stream, tag, content) for tag, content in records)
        with self.lock:
            os.write(self.fd, data)

    def copy(self, fd: int, stream: str) -> None:
        """Read the pipe ``fd`` to its end, logging its lines as ``stream``'s; closes ``fd``."""
        name, pending = stream.encode(), b""
        try:
            while chunk := os.read(fd, READ_SIZE):
                pending += chunk
                *lines, pending = pending.split(b"\n")
                records = [r for line in lines for r in _cut(line[:-1] if line.endswith(b"\r") else line, b"F")]
                while len(pending) > MAX_LINE:  # a line longer than the limit: its first part, partial
                    records.append((b"P", pending[:MAX_LINE]))
                    pending = pending[MAX_LINE:]
                if records:
                    self._append(name, records)
            if pending:
                self._append(name, [(b"P", pending)])  # unended at the stream's end
        finally:
            os.close(fd)

    def close(self) -> None:
        os.close(self.fd)


def _cut(line: bytes, tag: bytes) -> list[tuple[bytes, bytes]]:
    parts = [line[i:i + MAX_LINE] for i in range(0, len(line), MAX_LINE)] or [b""]
    return [(b"P", p) for p in parts[:-1]] + [(tag, parts[-1])]


def _stamp(ns: int) -> str:
    """RFC3339Nano as Go writes it: trailing zeros of the fraction dropped."""
    seconds, frac = divmod(ns, 1_000_000_000)
    base = datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    digits = f"{frac:09d}".rstrip("0")
    return f"{base}.{digits}Z" if digits else f"{base}Z"


def _parse(stamp: bytes) -> tuple[float, str]:
    """The time of a record (seconds) and its stamp as the kubelet writes it (RFC3339Nano, 9 digits)."""
    text = stamp.decode().rstrip("Z")
    base, _, frac = text.partition(".")
    when = datetime.datetime.strptime(base, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=datetime.timezone.utc)
    return when.timestamp() + int((frac or "0").ljust(9, "0")) / 1e9, f"{base}.{frac.ljust(9, '0')}Z"


def read(path: str, *, tail: int | None = None, timestamps: bool = False, since: float | None = None) -> bytes:
    """The log as the kubelet gives it (both streams, in the file's order; its bytes as written)."""
    with open(path, "rb") as f:
        records = f.read().split(b"\n")[:-1]
    if tail is not None:
        records = records[-tail:] if tail > 0 else []
    out = []
    for record in records:
        stamp, _stream, tag, content = record.split(b" ", 3)
        when, fixed = _parse(stamp)
        if since is not None and when < since:
            continue
        line = content if tag.split(b":")[0] == b"P" else content + b"\n"
        out.append(fixed.encode() + b" " + line if timestamps else line)
    return b"".join(out)

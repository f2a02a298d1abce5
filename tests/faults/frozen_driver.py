"""``python -m audited_driver`` (the driver, its SQLite connections naming their writer) frozen for real, once: when
its loop has made a batch that records runs and carries neither a heartbeat nor a change of its resolution's state
(one written within half a heartbeat interval of its last beat), and the file $FREEZE_AT exists, the process stops
itself (SIGSTOP: stopped at that instant, as a paused VM or a process stopped by hand would be) before the store takes
the batch; it first writes ``$FREEZE_AT.frozen``, the ids of the runs the batch records. A SIGCONT lets it go on with
that write. A module, not a test file: the test runs it as a process."""

from __future__ import annotations

import json
import os
import runpy
import signal
from pathlib import Path

import audited_driver  # noqa: F401 - its listener names the writer of every SQLite connection
from sematic_k8s.resolvers.recorder import Recorder

_write = Recorder.write
_frozen: list[bool] = []


def _beatless(recorder: Recorder) -> bool:
    batch = recorder.batch
    return bool(batch.run_updates) and not any({"heartbeat_at", "state"} & set(fields)
                                               for fields in batch.resolution_updates.values())


def _write_or_freeze(self: Recorder) -> None:
    at = os.environ["FREEZE_AT"]
    if not _frozen and self.fence and os.path.exists(at) and _beatless(self):
        _frozen.append(True)
        Path(f"{at}.frozen").write_text(json.dumps(sorted(self.batch.run_updates)))
        os.kill(os.getpid(), signal.SIGSTOP)  # here until SIGCONT
    _write(self)


Recorder.write = _write_or_freeze  # type: ignore[method-assign]

if __name__ == "__main__":
    runpy.run_module("sematic_k8s.driver", run_name="__main__")

"""Driver entrypoint: resolve one Resolution inside a container or pod.

``python -m sematic_k8s.driver`` reads a DriverSpec from $SEMATIC_K8S_DRIVER and hands it to
:func:`sematic_k8s.resolvers.driven.drive`: the pickled root Future is loaded from artifact storage and
resolved by the same loop as the LocalResolver's, with inline funcs in this process and the others in
their own containers or pods. It records through the server ($SEMATIC_K8S_SERVER, with the API key from
$SEMATIC_K8S_API_KEY). Nothing imports this module.

Exit codes: 0 the resolution resolved; 1 the pipeline failed (final: the driver Job's podFailurePolicy fails
the Job); 75 (EX_TEMPFAIL) an infrastructure failure that may pass (the server or the Kubernetes API
unreachable, a crash of the driver itself): the Job starts the driver again, which resumes the resolution
and re-attaches to its running workers; 76 another driver took the resolution over while this one ran (a
replacement pod beside one cut off from the cluster, a driver started by hand): this one stopped without writing
more or touching the workers, the other one records it (the podFailurePolicy ignores the exit).

A driver started after its resolution's end was recorded (the driver that recorded it died before it exited, a pod
evicted after it) does nothing and exits as that driver would have: 0 resolved, 1 failed or canceled, so the Job's
end follows the resolution's. Its token stopped working with the end; the server's refusal names the end
(``X-Sematic-K8s-Ended``) for a token refused for that alone.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback

from sematic_k8s import settings
from sematic_k8s.errors import DriverReplaced, InfrastructureError, ResolutionEnded, ResolutionFailed, ServerError
from sematic_k8s.graph import RESOLVED, TERMINAL
from sematic_k8s.log_lines import SafeStreamHandler
from sematic_k8s.resolvers.driven import drive
from sematic_k8s.resolvers.loop import transient
from sematic_k8s.specs import DRIVER_EXIT_FAILED, DRIVER_EXIT_REPLACED, DRIVER_EXIT_RETRY, DriverSpec
from sematic_k8s.store import open_store


def main() -> int:
    """Container entrypoint: 0 when the resolution resolved, 1 when it failed, 75 to be started again."""
    try:
        return _main()
    except Exception as e:  # noqa: BLE001 - anything else: let the Job start the driver again (it resumes)
        traceback.print_exc()
        why = "an infrastructure failure" if transient(e) else "an unexpected error"
        # started again by its Job, up to its backoffLimit; not by Docker (no restart policy): what then, if it is not
        then = f"; if it is not (its Job's tries spent, or launched by Docker): {e.lasted}" \
            if isinstance(e, InfrastructureError) else ""
        print(f"driver: {why} ({type(e).__name__}: {e}); exiting {DRIVER_EXIT_RETRY} to be started again{then}",
              file=sys.stderr)
        return DRIVER_EXIT_RETRY


def _main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s driver %(levelname)s %(message)s",
                        handlers=[SafeStreamHandler()])  # others' words (Kubernetes', the engine's) safe in its log
    spec = DriverSpec.from_json(os.environ[settings.DRIVER_ENV])
    logging.getLogger("sematic_k8s").info("driver of resolution %s: executor %s, image %s", spec.root_id,
                                          spec.executor, spec.image)
    store = open_store(settings.home())  # the server at $SEMATIC_K8S_SERVER; else $SEMATIC_K8S_DB_URL
    try:
        ended = store.get_resolution(spec.root_id) if spec.root_id else None
    except ResolutionEnded as e:  # its token: refused, the refusal naming the end (X-Sematic-K8s-Ended)
        return _already_ended(e.resolution_id, e.state)
    except ServerError as e:
        if e.status != 401:
            raise
        # a token revoked, past its lifetime, or its key revoked (or a server too old to name the end)
        print(f"resolution {spec.root_id}: the server refuses this driver's token; nothing to do: {e}",
              file=sys.stderr)
        return DRIVER_EXIT_FAILED
    if ended is not None and ended.state in TERMINAL:  # an API key, not a token: it reads the end itself
        return _already_ended(ended.id, ended.state)
    try:
        drive(spec, store)
    except DriverReplaced as e:
        print(str(e), file=sys.stderr)
        return DRIVER_EXIT_REPLACED
    except ResolutionEnded as e:  # ended by another process meanwhile (the CloudResolver, a reader finding it dead)
        print(str(e), file=sys.stderr)
        return _exit_code(e.state)
    except ResolutionFailed as e:
        print(str(e), file=sys.stderr)
        return DRIVER_EXIT_FAILED
    except Exception as e:
        if transient(e):
            raise
        print(f"resolution {spec.root_id} failed: {type(e).__name__}: {e}", file=sys.stderr)
        return DRIVER_EXIT_FAILED  # recorded as failed by the loop: a restart would find it ended
    return 0


def _exit_code(state: str) -> int:
    """The exit of a driver whose resolution ended in ``state``: the Job's end follows the resolution's, whichever
    of its pods saw it (0: Complete; 1, failed or canceled: the podFailurePolicy fails the Job)."""
    return 0 if state == RESOLVED else DRIVER_EXIT_FAILED


def _already_ended(resolution_id: str, state: str) -> int:
    """A driver started after its resolution's end was recorded (the one that recorded it died before it exited,
    a pod evicted after it): nothing to do, said in one line, and the exit the recording driver would have had."""
    print(f"resolution {resolution_id} already ended: {state}; nothing to do", file=sys.stderr)
    return _exit_code(state)


if __name__ == "__main__":
    sys.exit(main())

"""``python -m sematic_k8s_server.rerun_worker``: a rerun started by the server, recording through it.

The same code path as ``sematic-k8s rerun``: a root Future of the recorded root func, resolved with
``LocalResolver(rerun_from=..., rerun_mode=...)``; the store is the server ($SEMATIC_K8S_SERVER).
"""

from __future__ import annotations

import argparse
import sys

from sematic_k8s.func import load_func
from sematic_k8s.future import Future
from sematic_k8s.resolvers.local import LocalResolver
from sematic_k8s.resolvers.loop import ResolutionFailed
from sematic_k8s.settings import SERVER_ENV


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sematic_k8s_server.rerun_worker")
    parser.add_argument("--rerun-from", required=True)
    parser.add_argument("--mode", choices=["from", "continue"], default="from")
    parser.add_argument("--root-id", required=True, help="the new resolution's id, chosen by the server")
    parser.add_argument("--max-parallelism", type=int, default=2,
                        help="at least 2: runs execute on threads, so each run's state is recorded as it starts")
    args = parser.parse_args(argv)
    resolver = LocalResolver(rerun_from=args.rerun_from, rerun_mode=args.mode, root_id=args.root_id,
                             max_parallelism=max(2, args.max_parallelism))
    if not resolver.server:
        parser.error(f"{SERVER_ENV} is not set")
    store = resolver.store
    target = store.get_run(args.rerun_from)
    root = store.get_run(target.root_id) if target is not None else None
    if root is None:
        print(f"no run {args.rerun_from} recorded on {resolver.server}", file=sys.stderr)
        return 2
    future = Future(load_func(root.func_path, root.source_file), {})  # the planner reads only its func
    try:
        resolver.resolve(future)
    except ResolutionFailed as e:
        print(str(e).split("\n", 1)[0], file=sys.stderr)
        return 1
    print(f"resolution {future.id} resolved", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

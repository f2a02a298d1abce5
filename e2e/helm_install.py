"""``helm upgrade --install --wait`` through Helm's Go library (helm-python-sdk), for machines without the
helm CLI. Used by e2e/run.sh::

    python -m e2e.helm_install CHART RELEASE --namespace NS --values values.yaml [--timeout 600]

The cluster is the current context of $KUBECONFIG (else ~/.kube/config).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import yaml


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("chart")
    parser.add_argument("release")
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--values", type=Path, help="a values YAML file")
    parser.add_argument("--timeout", type=int, default=600, help="seconds to wait for the release to be ready")
    args = parser.parse_args(argv)
    try:
        import helm_python as helm
    except ImportError:
        print("neither the helm CLI nor helm-python-sdk is installed (pip install helm-python-sdk)", file=sys.stderr)
        return 1
    values = yaml.safe_load(args.values.read_text()) if args.values else {}
    kubeconfig = os.environ.get("KUBECONFIG", "").split(os.pathsep)[0] or str(Path.home() / ".kube" / "config")
    with helm.Config(kubeconfig_path=kubeconfig, namespace=args.namespace) as cfg:
        try:
            cfg.status(args.release)
            installed = True
        except helm.HelmError:
            installed = False
        common = {"namespace": args.namespace, "wait": "watcher", "timeout": args.timeout}
        if installed:
            release = cfg.upgrade(args.chart, args.release, values, **common)
        else:
            release = cfg.install(args.chart, args.release, values, create_namespace=True, **common)
    print(f"release {args.release} in {args.namespace}: {release.get('status')}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

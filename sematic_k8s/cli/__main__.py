"""``python -m sematic_k8s.cli``."""

from sematic_k8s.cli import main

main()

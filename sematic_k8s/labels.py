"""The labels every container, Job and pod of a resolution carries (DESIGN.md "kubectl"), so that
``kubectl get pods -l sematic-k8s/resolution-id=ID`` and ``docker ps --filter label=...`` find them."""

from __future__ import annotations

import re

LABEL_PREFIX = "sematic-k8s/"
RESOLUTION_LABEL = "sematic-k8s/resolution-id"
RUN_LABEL = "sematic-k8s/run-id"
FUNC_LABEL = "sematic-k8s/func"
ROLE_LABEL = "sematic-k8s/role"  # driver | worker
ATTEMPT_LABEL = "sematic-k8s/attempt"  # workers (a restarted driver finds the attempt's worker again)
RELAUNCH_LABEL = "sematic-k8s/relaunch"  # workers on Kubernetes: 0, or n for the n-th Job of an evicted attempt
# an image's (written at its build, sematic_k8s.packaging.dockerfile): "1" where its worker signs its outcome document
# with the key its task carries (sematic_k8s.executors.outcome_signing); an image without it predates that
SIGNS_OUTCOMES_LABEL = "sematic-k8s/signs-outcomes"


def label_value(text: str) -> str:
    """A Kubernetes/Docker-safe label value: [A-Za-z0-9_.-], at most 63 characters."""
    value = re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-_.")
    return value[:63].rstrip("-_.")


def run_labels(resolution_id: str, run_id: str, func_name: str, role: str) -> dict[str, str]:
    """The labels of one run's container, Job or pod (a driver's run id is its resolution's id)."""
    return {RESOLUTION_LABEL: resolution_id, RUN_LABEL: run_id, FUNC_LABEL: label_value(func_name),
            ROLE_LABEL: role}

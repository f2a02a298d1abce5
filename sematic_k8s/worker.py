"""Worker entrypoint: execute one Run attempt in a container or pod.

``python -m sematic_k8s.worker`` reads its task from $SEMATIC_K8S_TASK (JSON), loads the inputs
from artifact storage, runs the func, and writes the output artifact, the captured logs and an
outcome document to storage. It never writes metadata: the driver, the single writer of Run
records, reads the outcome when the container ends.

The outcome document (``outcomes/<run_id>/<attempt>.json``) holds one of:
``{"output": artifact}``, ``{"expansion": artifact}`` (a pickled structure of Futures returned by
a composition) or ``{"error": {"type", "message", "traceback"}}``.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from sematic_k8s import graph, logcapture, serialization, settings
from sematic_k8s.errors import error_info
from sematic_k8s.executors.base import Task
from sematic_k8s.executors.inline import execute
from sematic_k8s.func import load_func
from sematic_k8s.specs import TaskSpec, outcome_key
from sematic_k8s.storage.base import Storage, artifact_loader, log_key, put_artifact


def run_task(spec: TaskSpec, storage: Storage) -> dict[str, Any]:
    """Execute one attempt and store its output, logs and outcome; returns the outcome document."""
    func = load_func(spec.func_path, spec.source_file)
    inputs = {name: serialization.Value(artifact_id, spec.input_formats[name], "", load=artifact_loader(storage))
              for name, artifact_id in spec.input_ids.items()}
    logcapture.install()
    try:
        outcome = execute(Task(spec.run_id, spec.root_id, func, inputs, spec.attempt))
    finally:
        logcapture.uninstall()
    if outcome.logs:
        storage.append(log_key(spec.run_id), outcome.logs.encode())
    doc: dict[str, Any]
    if outcome.error_info is not None:
        doc = {"error": outcome.error_info}
    else:
        try:
            if graph.template_of(outcome.value, lambda _: None)[1]:  # Futures: pickled for the driver
                doc = {"expansion": put_artifact(storage, serialization.serialize(outcome.value))}
            else:
                func.check_output(outcome.value)
                doc = {"output": put_artifact(storage, serialization.serialize(outcome.value))}
        except Exception as e:
            doc = {"error": error_info(e)}
    storage.put(outcome_key(spec.run_id, spec.attempt), json.dumps(doc).encode())
    return doc


def main() -> int:
    """Container entrypoint."""
    from sematic_k8s.storage.urls import storage_from_url

    spec = TaskSpec.from_json(os.environ[settings.TASK_ENV])
    storage = storage_from_url(os.environ[settings.STORAGE_ENV])
    doc = run_task(spec, storage)
    return 1 if "error" in doc else 0


if __name__ == "__main__":
    sys.exit(main())

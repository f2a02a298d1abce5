"""e2e/run.sh (``make e2e``) as far as a machine without kind can check it: it is valid bash, it puts images on
the cluster the way a real cluster gets them (pushed to the registry it runs, referenced by digest, never
``kind load docker-image``), and its namespace enforces the Pod Security level the chart's README asks for."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "e2e" / "run.sh"


def commands() -> str:
    """The script without its comments."""
    lines = SCRIPT.read_text().splitlines()
    return "\n".join(line.split(" #")[0] for line in lines if not line.lstrip().startswith("#"))


def test_the_script_is_valid_bash() -> None:
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)


def test_images_go_through_the_registry_by_digest() -> None:
    code = commands()
    assert "kind load" not in code
    pushes = re.findall(r"sematic_k8s\.packaging\.images (server|worker) .*\\\n.*--push", code)
    assert sorted(pushes) == ["server", "worker"]
    assert "digest: ${SERVER_REF#*@}" in code and "pullPolicy: Never" not in code
    assert 'SEMATIC_K8S_BASE_IMAGE="$WORKER_REF"' in code


def test_the_namespace_enforces_the_restricted_level() -> None:
    assert "pod-security.kubernetes.io/enforce=restricted" in commands()

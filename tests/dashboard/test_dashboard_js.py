"""The dashboard's JavaScript without a browser: ``node --test`` over ``tests/dashboard/js`` (the graph layout,
the graph model, the event-stream parser, routes, answers taken in the order asked and requests superseded
aborted, and the modules' boundaries).

Needs Node.js 20 or newer (``node`` on PATH, or SEMATIC_K8S_NODE). Without it the test skips, except under
CI=true, where it fails.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

JS_TESTS = Path(__file__).resolve().parent / "js"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
MIN_NODE = 20


def _node() -> str:
    """The node executable, or skip (fail under CI) with what to install."""
    node = shutil.which(os.environ.get("SEMATIC_K8S_NODE", "node"))
    problem = None
    if node is None:
        problem = f"Node.js {MIN_NODE}+ is not on PATH (apt-get install nodejs, or set SEMATIC_K8S_NODE)"
    else:
        version = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=30).stdout.strip()
        major = re.match(r"v(\d+)\.", version)
        if not major or int(major.group(1)) < MIN_NODE:
            problem = f"{node} is Node.js {version or '(unknown version)'}; the dashboard's JS tests need {MIN_NODE}+"
    if problem:
        message = f"dashboard JS tests: {problem}"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return node


def test_dashboard_js() -> None:
    node = _node()
    files = sorted(JS_TESTS.glob("*.test.mjs"))
    assert files, f"no *.test.mjs files in {JS_TESTS}"
    proc = subprocess.run([node, "--test", "--test-reporter=tap", *map(str, files)], capture_output=True,
                          text=True, timeout=240, cwd=JS_TESTS)
    out = proc.stdout + proc.stderr
    passed = re.search(r"^# pass (\d+)$", out, re.M)
    failed = re.search(r"^# fail (\d+)$", out, re.M)
    assert proc.returncode == 0 and failed and failed.group(1) == "0", f"node --test failed:\n{out[-8000:]}"
    assert passed and int(passed.group(1)) >= len(files), f"node --test ran too few tests:\n{out[-3000:]}"


CANCEL_ERRORS = [None, "", "  ", f"ResolutionCanceled: resolution {'a' * 32} was canceled",
                 f"ResolutionCanceled: resolution {'a' * 32} was canceled: ",
                 f"ResolutionCanceled: resolution {'a' * 32} was canceled: f (run b) was interrupted",
                 f"ResolutionCanceled: resolution {'a' * 32} was canceled: two\nlines",
                 "KeyboardInterrupt: ", "KeyboardInterrupted", "the resolver stopped responding at 2026-12-04 09:00:00 "
                 "UTC; canceled as asked", "ResolutionCanceled: resolution x was canceled, then more"]


def test_a_canceled_resolutions_notice_is_one_rule_in_python_and_javascript() -> None:
    """``canceled_notice`` (the CLI's) and ``started.js``'s ``resolutionCanceledText`` (the dashboard's) say each
    recorded end the same way, with and without its time."""
    import json

    from sematic_k8s.store.records import canceled_notice

    node = _node()
    started = (JS_TESTS.parent.parent.parent / "server/sematic_k8s_server/static/started.js").as_uri()
    cases = [(error, when) for error in CANCEL_ERRORS for when in (None, "2026-12-04 10:00:00 UTC")]
    script = (f"import {{ resolutionCanceledText }} from {json.dumps(started)};\n"
              f"const cases = {json.dumps(cases)};\n"
              "console.log(JSON.stringify(cases.map(([error, when]) => resolutionCanceledText({ error }, when))));")
    proc = subprocess.run([node, "--input-type=module", "-e", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == [canceled_notice(error, when) for error, when in cases]

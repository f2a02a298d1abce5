"""Image build time: a full build (no layer cache) vs the rebuild after a one-line code edit, plus the cost
of reusing an image whose context hash is already pushed or recorded. Needs dockerd + the registry: brought up
with the repository's infra/ scripts (tests/support/infra.py) unless --base-image is given. Run with ``make bench``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import uuid
from pathlib import Path

from sematic_k8s.packaging import ensure_image, parse_steps


def make_project(root: Path) -> Path:
    pkg = root / "benchpipe"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(f'NONCE = "{uuid.uuid4().hex}"\n')
    (pkg / "steps.py").write_text("import sematic_k8s as sk\n\n\n@sk.func\ndef inc(x: int) -> int:\n"
                                  "    return x + 1\n\n\nVALUE = 1\n")
    (root / "requirements.txt").write_text("tomli-w>=1.0\n")
    return root


def quiet(_line: str) -> None:
    """Progress lines are not printed."""


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return time.perf_counter() - start, out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--base-image", help="FROM image (default: the local base from infra/base-image.sh)")
    parser.add_argument("--repo", default="127.0.0.1:5000/sematic-k8s-bench", help="registry repository")
    parser.add_argument("--json", action="store_true", help="print the numbers as JSON")
    args = parser.parse_args()
    base = args.base_image
    if not base:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "support"))
        import infra

        base = infra.bring_up()
    with tempfile.TemporaryDirectory() as tmp:
        root = make_project(Path(tmp))
        ensure_image(root, args.repo, base, progress=quiet)  # warm the host wheel cache (not measured)
        (root / "benchpipe" / "__init__.py").write_text(f'NONCE = "{uuid.uuid4().hex}"\n')
        full_s, full = timed(ensure_image, root, args.repo, base, progress=quiet, nocache=True)
        steps_py = root / "benchpipe" / "steps.py"
        steps_py.write_text(steps_py.read_text().replace("VALUE = 1", "VALUE = 2"))
        edit_s, edit = timed(ensure_image, root, args.repo, base, recorded=full, progress=quiet)
        pushed_s, pushed = timed(ensure_image, root, args.repo, base, progress=quiet)
        recorded_s, recorded = timed(ensure_image, root, args.repo, base, recorded=edit, progress=quiet)
    assert full.built and edit.built and not pushed.built and not recorded.built
    steps = parse_steps(edit.log)
    result = {
        "full_build_and_push_s": round(full_s, 2),
        "rebuild_after_one_line_edit_s": round(edit_s, 2),
        "rebuild_steps_from_cache": f"{sum(s.cached for s in steps)}/{len(steps)}",
        "reuse_tag_in_registry_s": round(pushed_s, 3),
        "reuse_recorded_digest_s": round(recorded_s, 3),
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(f"image build, base {base}, repo {args.repo}")
        for key, value in result.items():
            print(f"  {key:<34} {value}")
        print(f"  speed-up of the edit rebuild       {full_s / edit_s:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())

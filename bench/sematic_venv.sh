#!/usr/bin/env bash
# Create (once) a separate virtualenv holding Sematic 0.41.0 for bench/sematic_baseline.py.
#
# Usage: bash bench/sematic_venv.sh        # prints the venv's python path on stdout
# Env:   SEMATIC_VENV  venv path (default: <repo>/.venv-sematic)
#        PYTHON        interpreter used to create it (default: python3)
# Progress goes to stderr. Idempotent: a stamp file inside the venv marks a finished install.
set -euo pipefail

SEMATIC_VERSION="0.41.0"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VENV="${SEMATIC_VENV:-$ROOT/.venv-sematic}"
PY="${PYTHON:-python3}"
STAMP="$VENV/.sematic-$SEMATIC_VERSION.installed"

if [[ -f "$STAMP" && -x "$VENV/bin/python" ]]; then
  echo "sematic_venv: sematic==$SEMATIC_VERSION already in $VENV" >&2
  echo "$VENV/bin/python"
  exit 0
fi

fail() {
  echo "sematic_venv: ERROR: $*" >&2
  exit 1
}

echo "sematic_venv: installing sematic==$SEMATIC_VERSION into $VENV ..." >&2
start=$SECONDS
if [[ ! -x "$VENV/bin/python" ]]; then
  "$PY" -m venv "$VENV" >&2 \
    || fail "'$PY -m venv $VENV' failed (on Debian: apt-get install python3-venv)"
fi
pip_log="$VENV/pip-install.log"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "sematic==$SEMATIC_VERSION" >"$pip_log" 2>&1 \
  || { tail -20 "$pip_log" >&2; fail "pip install sematic==$SEMATIC_VERSION failed (needs PyPI access and Python 3.9-3.13)"; }
# Importing sematic creates its config dir: point it at a temp dir, not ~/.sematic.
check_dir="$(mktemp -d)"
SEMATIC_CONFIG_DIR="$check_dir" "$VENV/bin/python" -c \
  "import sematic, sematic.api.server; sematic.SilentRunner; sematic.LocalRunner" \
  || { rm -rf "$check_dir"; fail "sematic installed but does not import in $VENV"; }
rm -rf "$check_dir"
touch "$STAMP"
echo "sematic_venv: done in $((SECONDS - start)) s" >&2
echo "$VENV/bin/python"

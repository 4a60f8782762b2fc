#!/usr/bin/env bash
# Create .venv with the node and its test dependencies (pinned in pyproject.toml).
# Idempotent: reinstalls only when pyproject.toml changed since the last install.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
STAMP="$VENV/.installed-pyproject"

if [[ ! -x "$VENV/bin/python" ]]; then
    PYTHON="${PYTHON:-python3}"
    if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
        echo "setup-venv: needs Python >= 3.11; $PYTHON is $("$PYTHON" --version 2>&1 || echo missing) (set PYTHON=python3.12, say)" >&2
        exit 1
    fi
    echo "setup-venv: creating $VENV"
    "$PYTHON" -m venv "$VENV" || { echo "setup-venv: $PYTHON -m venv failed (on Debian: apt-get install python3-venv)" >&2; exit 1; }
fi
if [[ -f "$STAMP" ]] && cmp -s "$STAMP" "$ROOT/pyproject.toml"; then
    exit 0
fi
echo "setup-venv: installing the node and its test dependencies (a few minutes the first time)"
"$VENV/bin/python" -m pip install --quiet -e "$ROOT[test]" 2>&1 | grep -v "is ignored" || true
"$VENV/bin/python" -c "import node.app" # fail loudly if the install did not work
cp "$ROOT/pyproject.toml" "$STAMP"

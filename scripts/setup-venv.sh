#!/usr/bin/env bash
# Create .venv with the node and its test dependencies (pinned in pyproject.toml).
# Idempotent: reinstalls only when pyproject.toml changed since the last install.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
STAMP="$VENV/.installed-pyproject"

if [[ ! -x "$VENV/bin/python" ]]; then
    echo "setup-venv: creating $VENV"
    python3 -m venv "$VENV"
fi
if [[ -f "$STAMP" ]] && cmp -s "$STAMP" "$ROOT/pyproject.toml"; then
    exit 0
fi
echo "setup-venv: installing the node and its test dependencies"
"$VENV/bin/python" -m pip install --quiet -e "$ROOT[test]" 2>&1 | grep -v "is ignored" || true
"$VENV/bin/python" -c "import node.app" # fail loudly if the install did not work
cp "$ROOT/pyproject.toml" "$STAMP"

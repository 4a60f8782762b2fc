#!/usr/bin/env bash
# The lint and type bar (configured in pyproject.toml): ruff on every Python tree, mypy on
# the node package. Any finding fails. scripts/test.sh runs this before pytest.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="${VENV:-$ROOT/.venv}"

echo "lint: ruff check"
"$VENV/bin/ruff" check --no-cache node tests bench containers migrations tools/chain/deploy.py
echo "lint: mypy node"
"$VENV/bin/mypy" node

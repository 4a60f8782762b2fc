#!/usr/bin/env bash
# The lint and type bar (configured in pyproject.toml): ruff and mypy on every Python tree
# (the node, its tests, the benchmarks, migrations, each service). Any finding fails.
# scripts/test.sh runs this before pytest.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="${VENV:-$ROOT/.venv}"

echo "lint: ruff check"
"$VENV/bin/ruff" check --no-cache node tests bench containers migrations tools/chain/deploy.py
echo "lint: ruff format --check"
"$VENV/bin/ruff" format --check --no-cache node tests bench containers migrations tools/chain/deploy.py
echo "lint: mypy node tests bench migrations"
"$VENV/bin/mypy" node tests bench migrations
# Each service is its own program (every one has an app.py) with the shared module beside it.
for service in containers/*/app.py; do
    dir="$(dirname "$service")"
    echo "lint: mypy $dir"
    MYPYPATH="containers/common:$dir" "$VENV/bin/mypy" "$dir"
done

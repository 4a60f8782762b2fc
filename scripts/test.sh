#!/usr/bin/env bash
# The whole test suite, on a fresh machine or a used one: installs what it needs, runs the
# lint and type bar (ruff, mypy: any finding fails the run), then pytest.
#   scripts/test.sh [pytest args...]
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

scripts/setup-venv.sh
scripts/lint.sh
scripts/client-venv.sh
# The official Gonka client (gonka-openai, with openai<3) for the signed-request tests.
scripts/gonka-venv.sh >/dev/null
if [[ -f tools/chain/package-lock.json ]]; then
    # anvil and solcjs, pinned in the lock file.
    if [[ ! -x tools/chain/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil ]]; then
        command -v npm >/dev/null || { echo "test.sh: needs Node.js with npm for anvil and solcjs (on Debian: apt-get install nodejs npm)" >&2; exit 1; }
        npm ci --prefix tools/chain --no-audit --no-fund
    fi
fi
# Docker daemon and the service images (real containers in the e2e tests).
scripts/provision.sh
# A PostgreSQL server on 127.0.0.1 (the store tests run on SQLite and on it).
scripts/postgres.sh start >/dev/null

exec .venv/bin/pytest "$@"

#!/usr/bin/env bash
# Run the node on its embedded default: SQLite under data/, the sample services.
#   scripts/run-node.sh [--config PATH]
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
scripts/setup-venv.sh
CONFIG="${INFERNET_CONFIG_PATH:-config.json}"
if [[ "${1:-}" == "--config" ]]; then CONFIG="$2"; fi

# A bad config stops here, before Docker is provisioned; its error (on stderr) is shown once.
.venv/bin/infernet-node check-config --config "$CONFIG" >/dev/null || exit $?

if .venv/bin/python - "$CONFIG" <<'PY'
import json, sys
sys.exit(0 if json.load(open(sys.argv[1])).get("manage_containers") else 1)
PY
then
    # Managed containers: a Docker daemon and the service images must exist.
    scripts/provision.sh
    exec .venv/bin/infernet-node run --config "$CONFIG"
fi

# Unmanaged: run the sample echo service as a local process next to the node.
mkdir -p data
HOST=127.0.0.1 PORT=3000 .venv/bin/python containers/hello-world/app.py >data/hello-world.log 2>&1 &
SERVICE=$!
trap 'kill $SERVICE 2>/dev/null || true' EXIT
.venv/bin/infernet-node run --config "$CONFIG"

#!/usr/bin/env bash
# cluster.sh: three nodes on one PostgreSQL database, on this machine (see README "Several nodes").
#
#   scripts/cluster.sh start    start PostgreSQL (scripts/postgres.sh), the database, the nodes; waits until they serve
#   scripts/cluster.sh status   each node: pid, URL, and what its /info says of the cluster
#   scripts/cluster.sh stop     SIGTERM every node (queued jobs pass to the others), then the sample service
#
# Node N (1..3) is `node-N` (cluster.node_id) on port 4000+N, with its config, log and pid under
# $INFERNET_CLUSTER_DIR/node-N. Every node reads the same base config; the script sets only
# server.port, cluster.node_id, store.url, log.path (and docker.container_prefix, so that nodes
# managing containers on one Docker daemon don't share them).
#
# Environment:
#   INFERNET_CLUSTER_NODES=3              how many nodes
#   INFERNET_CLUSTER_PORT=4001            the first node's port (the others follow)
#   INFERNET_CLUSTER_DIR=data/cluster     configs, logs, pid files
#   INFERNET_CLUSTER_DB=infernet_cluster  the database (created if missing) on scripts/postgres.sh's server
#   INFERNET_CLUSTER_CONFIG               a base config; default: the sample echo service (id "hello-world")
#                                         run by this script as one local process on port 3000, shared by the nodes
#   INFERNET_CLUSTER_HOST=127.0.0.1       where the nodes listen (0.0.0.0 behind a load balancer on another host)
#   INFERNET_CLUSTER_SERVICE_PORT=3000    the sample echo service's port
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="${VENV:-$ROOT/.venv}"
NODES=${INFERNET_CLUSTER_NODES:-3}
FIRST_PORT=${INFERNET_CLUSTER_PORT:-4001}
DIR=${INFERNET_CLUSTER_DIR:-data/cluster}
DB=${INFERNET_CLUSTER_DB:-infernet_cluster}
HOST=${INFERNET_CLUSTER_HOST:-127.0.0.1}
SERVICE_PORT=${INFERNET_CLUSTER_SERVICE_PORT:-3000}

log() { echo "cluster: $*" >&2; }
die() { echo "cluster: ERROR: $*" >&2; exit 1; }

alive() { [[ -f "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

# The server's admin URL -> this cluster's database URL, after creating the database if needed.
database_url() {
    local admin=$1
    "$VENV/bin/python" - "$admin" "$DB" <<'PY'
import asyncio, sys
import asyncpg

admin, name = sys.argv[1], sys.argv[2]

async def main() -> None:
    connection = await asyncpg.connect(admin.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        if not await connection.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()

asyncio.run(main())
print(admin.rsplit("/", 1)[0] + "/" + name)
PY
}

write_config() {
    local n=$1 store=$2 base=$3 folder="$DIR/node-$1"
    mkdir -p "$folder"
    "$VENV/bin/python" - "$base" "$folder" "$n" "$((FIRST_PORT + n - 1))" "$store" "$HOST" "$SERVICE_PORT" <<'PY'
import json, sys
from pathlib import Path

base, folder, n, port, store, host, service_port = sys.argv[1:]
folder = Path(folder).resolve()
if base:
    config = json.loads(Path(base).read_text())
else:  # the sample echo service, run by this script
    config = {
        "manage_containers": False,
        "containers": [{"id": "hello-world", "url": f"http://127.0.0.1:{service_port}", "external": True}],
    }
config.setdefault("server", {}).update(host=host, port=int(port))
config.setdefault("cluster", {})["node_id"] = f"node-{n}"
config.setdefault("store", {})["url"] = store
config.setdefault("log", {})["path"] = str(folder / "node.log")
config.setdefault("docker", {})["container_prefix"] = f"infernet-node-{n}-"
(folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")
PY
}

wait_health() {
    local port=$1 pidfile=$2 out=$3
    for _ in $(seq 1 300); do
        alive "$pidfile" || die "node on port $port exited; its output ($out):
$(tail -n 20 "$out")"
        curl -fsS -o /dev/null "http://127.0.0.1:$port/health" 2>/dev/null && return 0
        sleep 0.1
    done
    die "node on port $port did not answer /health within 30 s (output: $out)"
}

start() {
    [[ -x "$VENV/bin/infernet-node" ]] || scripts/setup-venv.sh
    mkdir -p "$DIR"
    local admin store base=${INFERNET_CLUSTER_CONFIG:-}
    admin=$(scripts/postgres.sh start | tail -n 1)
    store=$(database_url "$admin")
    if [[ -z "$base" ]] && ! alive "$DIR/service.pid"; then
        HOST=127.0.0.1 PORT=$SERVICE_PORT nohup "$VENV/bin/python" containers/hello-world/app.py \
            >"$DIR/service.out" 2>&1 &
        echo $! >"$DIR/service.pid"
        log "sample echo service on 127.0.0.1:$SERVICE_PORT (pid $(cat "$DIR/service.pid"))"
    fi
    local n
    for n in $(seq 1 "$NODES"); do
        local folder="$DIR/node-$n"
        if alive "$folder/node.pid"; then
            log "node-$n already running (pid $(cat "$folder/node.pid"))"
            continue
        fi
        write_config "$n" "$store" "$base"
        "$VENV/bin/infernet-node" check-config --config "$folder/config.json" >/dev/null
        nohup "$VENV/bin/infernet-node" run --config "$folder/config.json" >"$folder/node.out" 2>&1 &
        echo $! >"$folder/node.pid"
    done
    # Started together: they take turns on the schema, then each serves.
    for n in $(seq 1 "$NODES"); do
        wait_health "$((FIRST_PORT + n - 1))" "$DIR/node-$n/node.pid" "$DIR/node-$n/node.out"
        log "node-$n on http://127.0.0.1:$((FIRST_PORT + n - 1)) (pid $(cat "$DIR/node-$n/node.pid"))"
    done
    log "store: $store"
}

status() {
    local n folder port code=0
    for n in $(seq 1 "$NODES"); do
        folder="$DIR/node-$n"
        port=$((FIRST_PORT + n - 1))
        if alive "$folder/node.pid"; then
            local cluster
            cluster=$(curl -fsS "http://127.0.0.1:$port/info" 2>/dev/null \
                | "$VENV/bin/python" -c 'import json,sys; print(json.dumps(json.load(sys.stdin)["cluster"]))' \
                || echo "no answer")
            echo "node-$n pid $(cat "$folder/node.pid") http://127.0.0.1:$port cluster: $cluster"
        else
            echo "node-$n stopped"
            code=3
        fi
    done
    return $code
}

stop_pid() {
    local pidfile=$1 name=$2
    if alive "$pidfile"; then
        local pid
        pid=$(cat "$pidfile")
        kill -TERM "$pid"
        for _ in $(seq 1 300); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            log "$name did not stop within 30 s: SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
        log "$name stopped"
    fi
    rm -f "$pidfile"
}

stop() {
    local n
    for n in $(seq 1 "$NODES"); do
        stop_pid "$DIR/node-$n/node.pid" "node-$n"
    done
    stop_pid "$DIR/service.pid" "the sample echo service"
}

case "${1:-}" in
    start) start ;;
    status) status ;;
    stop) stop ;;
    *) die "usage: $0 start|status|stop" ;;
esac

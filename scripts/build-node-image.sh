#!/usr/bin/env bash
# build-node-image.sh: build the node's own image (default infernet-local/node:latest).
#
# Idempotent: rebuilds only when the node's sources, pyproject.toml, the Dockerfile or the base
# changed (a hash in an image label). Where Docker Hub cannot be reached the base is the local
# Debian one (built by build-base-image.sh), and since builds cannot reach PyPI either (containers
# here lack the host's CA), the node's dependencies are fetched on the host into a wheelhouse
# (build/node-wheelhouse, with pip itself) that the Dockerfile installs from with --no-index.
#
# Usage: scripts/build-node-image.sh [IMAGE]
# Environment:
#   NODE_BASE=IMAGE          use this base instead of choosing one
#   DOCKER_PULL_TIMEOUT=20   seconds allowed for trying to pull the public base
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
IMAGE=${1:-infernet-local/node:latest}
WHEELHOUSE="$ROOT/build/node-wheelhouse"
HASH_LABEL=org.infernet-local.source-hash
PYTHON="$ROOT/.venv/bin/python"

log() { echo "build-node-image: $*"; }
die() { echo "build-node-image: ERROR: $*" >&2; exit 1; }
# shellcheck source=base-image.sh
source "$ROOT/scripts/base-image.sh"
# shellcheck source=lock.sh
source "$ROOT/scripts/lock.sh"

cd "$ROOT"
docker info >/dev/null 2>&1 || die "'docker info' fails: run scripts/provision.sh first"
[ -x "$PYTHON" ] || scripts/setup-venv.sh

# One build at a time per user (tests and scripts may race here).
LOCK_FILE="/tmp/infernet-node-image.$(id -u).lock"
exec 8<>"$LOCK_FILE"
take_lock 8 "$LOCK_FILE" "one build of the node image at a time" 1200

choose_base "${NODE_BASE:-}"

# The wheelhouse only fits a base with the same Python as the host's venv.
base_python=$(docker run --rm --network none --entrypoint python3 "$BASE" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
host_python=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
if [ "$base_python" = "$host_python" ]; then
    stamp="$WHEELHOUSE/.stamp"
    want="python $host_python $(sha256sum pyproject.toml | cut -d' ' -f1)"
    if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
        log "filling $WHEELHOUSE (the node's dependencies for Python $host_python, and pip)"
        rm -rf "$WHEELHOUSE" && mkdir -p "$WHEELHOUSE"
        wheel_log=$(mktemp)
        if ! "$PYTHON" -m pip wheel --disable-pip-version-check --wheel-dir "$WHEELHOUSE" "$ROOT" >"$wheel_log" 2>&1 \
            || ! "$PYTHON" -m pip download --disable-pip-version-check --only-binary=:all: --dest "$WHEELHOUSE" \
                pip "setuptools>=68" wheel >>"$wheel_log" 2>&1; then
            tail -n 30 "$wheel_log" >&2
            rm -rf "$WHEELHOUSE" "$wheel_log"
            die "could not fill the wheelhouse"
        fi
        rm -f "$wheel_log" "$WHEELHOUSE"/infernet_node_py-*.whl  # the image builds the node from source
        echo "$want" >"$stamp"
    fi
else
    log "base has Python $base_python, this venv $host_python: no wheelhouse, the build installs from PyPI"
    rm -rf "$WHEELHOUSE"
fi

want=$(
    {
        echo "base $(docker image inspect -f '{{.Id}}' "$BASE")"
        find node migrations pyproject.toml README.md config.json Dockerfile .dockerignore -type f \
            ! -name '*.pyc' ! -path '*/__pycache__/*' -print0 | LC_ALL=C sort -z | xargs -0 sha256sum
        [ -f "$WHEELHOUSE/.stamp" ] && cat "$WHEELHOUSE/.stamp"
    } | sha256sum | cut -d' ' -f1
)
have=$(docker image inspect -f "{{ index .Config.Labels \"$HASH_LABEL\" }}" "$IMAGE" 2>/dev/null || true)
if [ "$want" = "$have" ]; then
    log "$IMAGE: up to date"
    exit 0
fi
old_id=$(docker image inspect -f '{{.Id}}' "$IMAGE" 2>/dev/null || true)
start=$SECONDS
build_log=$(mktemp)
if ! docker build --build-arg "BASE=$BASE" --label "$HASH_LABEL=$want" -t "$IMAGE" "$ROOT" >"$build_log" 2>&1; then
    tail -n 40 "$build_log" >&2
    rm -f "$build_log"
    die "docker build of $IMAGE failed"
fi
rm -f "$build_log"
log "$IMAGE: built in $((SECONDS - start))s"
# The previous build is untagged now: don't let rebuilds pile up (kept if a container uses it).
new_id=$(docker image inspect -f '{{.Id}}' "$IMAGE")
if [ -n "$old_id" ] && [ "$old_id" != "$new_id" ]; then
    docker rmi "$old_id" >/dev/null 2>&1 || true
fi
docker image prune -f --filter label=org.infernet-local.node-build-stage=1 >/dev/null 2>&1 || true

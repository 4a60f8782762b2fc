#!/usr/bin/env bash
# provision.sh: make Docker usable on this machine and make sure the service images exist.
#
# One idempotent entry point for the README's run command, the test command and CI:
#   (a) a Docker daemon that answers (installs docker.io and starts dockerd when root on Debian),
#       and a compose command for docker-compose.yaml (installs Debian's docker-compose, v1, when
#       neither `docker compose` nor `docker-compose` is there; elsewhere says how to get one),
#   (b) a Python base image (public python:3.12-slim if present or pullable, else a local one
#       built from Debian packages by build-base-image.sh),
#   (c) infernet-local/{hello-world,streaming,iris-classifier,llm,openai-proxy}:latest, rebuilt only
#       when the service's sources (or the base) changed. The llm image first needs its
#       llama-cpp-python wheel (built once per machine, cached) and model staged:
#       scripts/build-llm-wheel.sh; openai-proxy its ecdsa wheels: scripts/build-openai-proxy-wheels.sh.
#
# Environment:
#   PROVISION_SKIP_IMAGES=1   only ensure the daemon (step a)
#   PROVISION_BASE=IMAGE      use this base image instead of choosing one
#   DOCKERD_WAIT_SECONDS=60   how long to wait for a freshly started dockerd
#   DOCKER_PULL_TIMEOUT=20    seconds allowed for trying to pull the public base
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CONTAINERS_DIR="$REPO_ROOT/containers"
SERVICES=(hello-world streaming iris-classifier llm openai-proxy)
HASH_LABEL=org.infernet-local.source-hash
DOCKERD_LOG=/var/log/dockerd.log

log() { echo "provision: $*"; }
die() { echo "provision: ERROR: $*" >&2; exit 1; }
# shellcheck source=base-image.sh
source "$REPO_ROOT/scripts/base-image.sh"
# shellcheck source=lock.sh
source "$REPO_ROOT/scripts/lock.sh"

# Several test sessions or CI steps may call this at once; one at a time is enough.
# Per user: a lock file created by root could not be opened by anyone else.
LOCK_FILE=${PROVISION_LOCK_FILE:-/tmp/infernet-provision.$(id -u).lock}
exec 9<>"$LOCK_FILE"
take_lock 9 "$LOCK_FILE" "one provision.sh at a time: it may be installing Docker or building the service images" 1800

docker_answers() { docker info >/dev/null 2>&1; }

install_missing_packages() {
    local missing=()
    command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
    command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
    command -v openssl >/dev/null 2>&1 || missing+=(openssl)  # the TLS test's self-signed certificate
    if ((${#missing[@]} == 0)); then
        return 0
    fi
    log "installing ${missing[*]} with apt-get"
    apt-get update -qq || die "apt-get update failed"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" \
        >/dev/null || die "apt-get install ${missing[*]} failed"
}

dockerd_running() {
    # A dockerd started earlier may still be initialising; don't start a second one.
    [ -f /var/run/docker.pid ] && kill -0 "$(cat /var/run/docker.pid)" 2>/dev/null
}

ensure_daemon() {
    if docker_answers; then
        log "docker daemon: answering"
        return 0
    fi
    if [ "$(id -u)" != 0 ] || [ ! -f /etc/debian_version ]; then
        die "'docker info' fails and this is not root on Debian; start a Docker daemon yourself"
    fi
    install_missing_packages
    command -v docker >/dev/null 2>&1 || die "no 'docker' client on PATH after installing docker.io"
    if dockerd_running; then
        log "dockerd already started (pid $(cat /var/run/docker.pid)), waiting for it"
    else
        log "starting dockerd (log: $DOCKERD_LOG)"
        # setsid + nohup: the daemon must outlive this script and the shell job that ran it.
        # 9>&-: the daemon must not inherit (and so hold forever) our lock file descriptor.
        setsid nohup dockerd >>"$DOCKERD_LOG" 2>&1 </dev/null 9>&- &
    fi
    local deadline=$((SECONDS + ${DOCKERD_WAIT_SECONDS:-60}))
    until docker_answers; do
        if ((SECONDS >= deadline)); then
            echo "--- last lines of $DOCKERD_LOG ---" >&2
            tail -n 20 "$DOCKERD_LOG" >&2 || true
            die "dockerd did not answer 'docker info' within ${DOCKERD_WAIT_SECONDS:-60}s"
        fi
        sleep 0.5
    done
    log "docker daemon: answering"
}

compose_command() {
    if docker compose version >/dev/null 2>&1; then
        echo "docker compose"
    elif command -v docker-compose >/dev/null 2>&1; then
        echo "docker-compose"
    fi
}

# Not needed by `make run` or `make test`: for the README's `docker-compose up -d node`.
ensure_compose() {
    local found
    found=$(compose_command)
    if [ -z "$found" ] && [ "$(id -u)" = 0 ] && [ -f /etc/debian_version ]; then
        log "installing docker-compose (v1, Debian's package) for docker-compose.yaml"
        local apt_log
        apt_log=$(mktemp)
        if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
            --no-install-recommends docker-compose; } >"$apt_log" 2>&1; then
            tail -n 20 "$apt_log" >&2
            log "apt-get install docker-compose failed (see above)"
        fi
        rm -f "$apt_log"
        found=$(compose_command)
    fi
    if [ -n "$found" ]; then
        log "compose: $found"
    else
        log "no compose command (only docker-compose.yaml needs one): apt-get install docker-compose," \
            "or Docker's compose plugin (https://docs.docker.com/compose/install/)"
    fi
}

# Hash of everything that goes into a service image: its folder, the shared protocol module,
# and the base image's id (so switching base rebuilds).
source_hash() {
    local name=$1 base_id
    base_id=$(docker image inspect -f '{{.Id}}' "$BASE")
    {
        echo "base $base_id"
        (cd "$CONTAINERS_DIR" && find "$name" common .dockerignore -type f \
            ! -name '*.pyc' ! -path '*/__pycache__/*' -print0 | LC_ALL=C sort -z \
            | xargs -0 sha256sum)
    } | sha256sum | cut -d' ' -f1
}

# Files a service's build needs that are not in git, prepared on the host before hashing.
prepare_service() {
    case $1 in
        llm) bash "$REPO_ROOT/scripts/build-llm-wheel.sh" || die "preparing the llm image's wheel and model failed" ;;
        openai-proxy) bash "$REPO_ROOT/scripts/build-openai-proxy-wheels.sh" \
            || die "staging the openai-proxy image's wheels failed" ;;
    esac
}

build_service() {
    local name=$1 image="infernet-local/$1:latest" want have start
    local build_args=(--build-arg "BASE=$BASE")
    if [ "$name" = llm ] && [ "$BASE" = "$LOCAL_BASE" ]; then
        build_args+=(--build-arg WHEELHOUSE_ONLY=1)  # containers cannot reach PyPI here
    fi
    prepare_service "$name"
    want=$(source_hash "$name")
    have=$(docker image inspect -f "{{ index .Config.Labels \"$HASH_LABEL\" }}" "$image" 2>/dev/null || true)
    if [ "$want" = "$have" ]; then
        log "$image: up to date"
        return 0
    fi
    if [ -n "$have" ]; then
        log "$image: sources or base changed, rebuilding"
    else
        log "$image: not built yet, building"
    fi
    start=$SECONDS
    local build_log
    build_log=$(mktemp)
    # The build context is containers/ so the images can share containers/common/.
    if ! docker build "${build_args[@]}" --label "$HASH_LABEL=$want" -t "$image" \
        -f "$CONTAINERS_DIR/$name/Dockerfile" "$CONTAINERS_DIR" >"$build_log" 2>&1; then
        tail -n 30 "$build_log" >&2
        rm -f "$build_log"
        die "docker build of $image failed"
    fi
    rm -f "$build_log"
    log "$image: built in $((SECONDS - start))s"
}

ensure_daemon
ensure_compose
if [ "${PROVISION_SKIP_IMAGES:-0}" = 1 ]; then
    log "PROVISION_SKIP_IMAGES=1: not building images"
    exit 0
fi
choose_base "${PROVISION_BASE:-}"
for service in "${SERVICES[@]}"; do
    build_service "$service"
done
log "done"

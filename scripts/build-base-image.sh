#!/usr/bin/env bash
# build-base-image.sh: build a Python base image from Debian bookworm packages, without Docker Hub.
#
# debootstrap fetches the packages on the host (containers here cannot do HTTPS to registries),
# and the rootfs is imported as an image. The result carries python3 with aiohttp, scikit-learn,
# numpy, scipy and joblib for the service images, plus what the node's own image will need.
#
# Usage: scripts/build-base-image.sh [IMAGE]   (default infernet-local/python-base:bookworm)
# Environment: FORCE=1 rebuilds even when the image exists; MIRROR overrides the Debian mirror.
set -euo pipefail

IMAGE=${1:-infernet-local/python-base:bookworm}
SUITE=bookworm
REQUIRED_PACKAGES=(python3 python3-aiohttp python3-sklearn python3-numpy python3-scipy
    python3-joblib ca-certificates)
# For the node's own image later; included only if this Debian release ships them.
OPTIONAL_PACKAGES=(python3-sqlalchemy python3-aiosqlite python3-pydantic python3-alembic)

log() { echo "build-base-image: $*"; }
die() { echo "build-base-image: ERROR: $*" >&2; exit 1; }

if [ "${FORCE:-0}" != 1 ] && docker image inspect "$IMAGE" >/dev/null 2>&1; then
    log "$IMAGE already exists, nothing to do (FORCE=1 rebuilds)"
    exit 0
fi
[ "$(id -u)" = 0 ] || die "debootstrap needs root"

if ! command -v debootstrap >/dev/null 2>&1; then
    log "installing debootstrap"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null \
        || die "could not install debootstrap"
fi

if [ -z "${MIRROR:-}" ]; then
    # The host's own mirror is the one known to be reachable from here.
    MIRROR=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
    MIRROR=${MIRROR:-http://deb.debian.org/debian}
fi

# apt-cache needs package lists; fetch them once if this machine has none yet.
if ! apt-cache show python3 >/dev/null 2>&1; then
    apt-get update -qq || die "apt-get update failed"
fi
packages=("${REQUIRED_PACKAGES[@]}")
for pkg in "${OPTIONAL_PACKAGES[@]}"; do
    if apt-cache show "$pkg" >/dev/null 2>&1; then
        packages+=("$pkg")
        log "optional package $pkg: included"
    else
        log "optional package $pkg: not in this Debian release, skipped"
    fi
done

ROOTFS=$(mktemp -d /var/tmp/infernet-rootfs.XXXXXX)
trap 'rm -rf "$ROOTFS"' EXIT

start=$SECONDS
include=$(IFS=,; echo "${packages[*]}")
log "debootstrap $SUITE from $MIRROR (a few minutes) with: $include"
if ! debootstrap --variant=minbase --include="$include" "$SUITE" "$ROOTFS" "$MIRROR" \
    >"$ROOTFS.log" 2>&1; then
    tail -n 30 "$ROOTFS.log" >&2
    rm -f "$ROOTFS.log"
    die "debootstrap failed"
fi
rm -f "$ROOTFS.log"
log "debootstrap took $((SECONDS - start))s"

# Downloaded .debs and package lists are dead weight in an image.
rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/tmp/*

import_start=$SECONDS
tar -C "$ROOTFS" --numeric-owner -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'ENV PYTHONUNBUFFERED=1' \
    --change 'ENV PYTHONDONTWRITEBYTECODE=1' \
    --change 'CMD ["python3"]' \
    --message "Debian $SUITE minbase + ${packages[*]}" \
    - "$IMAGE" >/dev/null || die "docker import failed"
log "docker import took $((SECONDS - import_start))s"

docker run --rm "$IMAGE" python3 -c \
    'import aiohttp, sklearn, sys; print("python", sys.version.split()[0], "aiohttp", aiohttp.__version__, "sklearn", sklearn.__version__)' \
    || die "the new image cannot import its Python packages"
log "$IMAGE built in $((SECONDS - start))s ($(docker image inspect -f '{{.Size}}' "$IMAGE" | awk '{printf "%.0f MB", $1/1e6}'))"

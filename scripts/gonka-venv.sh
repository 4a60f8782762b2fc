#!/usr/bin/env bash
# Build a virtual environment with the official Gonka client `gonka-openai` 0.2.6, for the tests
# that check our signature verifier against the client's own signer.
#
# Usage: scripts/gonka-venv.sh [DIR]      (default: .venv-gonka in the repo root)
#
# Idempotent: if DIR/bin/python can import gonka_openai already, nothing is done.
#
# Why a venv of its own: gonka-openai 0.2.6 imports `httpx`, which the openai SDK 3.x (the one
# the /v1 tests use) no longer depends on, so with openai 3.x it fails at import. It works with
# openai<3 (2.54.0 pinned here). See docs/inference-apis.md §3.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="${1:-$ROOT/.venv-gonka}"
PYTHON="${GONKA_PYTHON:-python3}"

ready() { [[ -x "$DIR/bin/python" ]] && "$DIR/bin/python" -c 'import gonka_openai.utils' >/dev/null 2>&1; }

if ready; then
    echo "gonka venv ready: $DIR"
    exit 0
fi

# One builder at a time (two test runs may start together); the loser reuses the result.
mkdir -p "$(dirname "$DIR")"
exec 9>"${TMPDIR:-/tmp}/gonka-venv-$(printf '%s' "$DIR" | sha1sum | cut -c1-12).lock"
flock 9
if ready; then
    echo "gonka venv ready: $DIR"
    exit 0
fi

# Only ever delete a directory that is a (broken) venv, or empty.
if [[ -e "$DIR" && ! -f "$DIR/pyvenv.cfg" ]] && [[ -n "$(ls -A "$DIR" 2>/dev/null)" ]]; then
    echo "gonka-venv.sh: $DIR exists and is not a virtual environment; refusing to replace it" >&2
    exit 1
fi

start=$(date +%s)
rm -rf "$DIR"
"$PYTHON" -m venv "$DIR"
"$DIR/bin/pip" install --disable-pip-version-check --no-input --quiet \
    "gonka-openai==0.2.6" "openai==2.54.0" 2>&1 | grep -v "is ignored" || true

if ! ready; then
    echo "gonka-venv.sh: gonka_openai does not import in $DIR" >&2
    exit 1
fi
echo "gonka venv built in $(( $(date +%s) - start ))s: $DIR"

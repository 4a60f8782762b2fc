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
# Every package pinned to what this resolved to on Python 3.11, so runs are reproducible.
CONSTRAINTS="$(mktemp)"
trap 'rm -f "$CONSTRAINTS"' EXIT
cat >"$CONSTRAINTS" <<'PINS'
annotated-types==0.8.0
anyio==4.16.0
bech32==1.2.0
certifi==2026.10.19.post1
cffi==2.1.1
charset-normalizer==3.5.3
distro==1.9.0
ecdsa==0.19.2
h11==0.16.0
httpcore==1.0.9
httpx==0.29.0
idna==3.20
jiter==0.19.0
protobuf==7.36.2
pycparser==3.12
pydantic==2.14.4
pydantic_core==2.50.5
python-dotenv==1.2.4
requests==2.34.2
secp256k1==0.14.0
six==1.17.0
sniffio==1.3.1
tqdm==4.70.1
typing-inspection==0.4.5
typing_extensions==4.16.0
urllib3==2.8.0
PINS
"$DIR/bin/pip" install --disable-pip-version-check --no-input --quiet -c "$CONSTRAINTS" \
    "gonka-openai==0.2.6" "openai==2.54.0" 2>&1 | grep -v "is ignored" || true

if ! ready; then
    echo "gonka-venv.sh: gonka_openai does not import in $DIR" >&2
    exit 1
fi
echo "gonka venv built in $(( $(date +%s) - start ))s: $DIR"

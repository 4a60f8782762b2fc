#!/usr/bin/env bash
# Build a virtual environment with Ritual's real `infernet-client` 1.4.0 (library and CLI),
# for the end-to-end tests that drive our node with the unmodified client.
#
# Usage: scripts/client-venv.sh [DIR]      (default: .venv-client in the repo root)
#
# Idempotent: if DIR/bin/infernet-client --help already works, nothing is done.
#
# Why not `pip install infernet-client==1.4.0`: the 1.4.0 wheel's metadata requires
# infernet-ml>=2.0.0.81, which does not exist on PyPI (newest is 2.0.0). So we install
# infernet-ml 2.0.0 plus the client's real runtime dependencies, then the client with --no-deps
# (client-contract.md §1, trap 15). infernet-ml uses enum.StrEnum, so Python >= 3.11 is required.
# The client pins web3 6 while the node uses web3 8: hence a separate venv.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="${1:-$ROOT/.venv-client}"
PYTHON="${CLIENT_PYTHON:-}"

log() { echo "client-venv: $*"; }
die() { echo "client-venv.sh: $*" >&2; exit 1; }
# shellcheck source=lock.sh
source "$ROOT/scripts/lock.sh"

ready() { [[ -x "$DIR/bin/infernet-client" ]] && "$DIR/bin/infernet-client" --help >/dev/null 2>&1; }

if ready; then
    echo "client venv ready: $DIR"
    exit 0
fi

# One builder at a time (two test runs may start together); the loser reuses the result.
mkdir -p "$(dirname "$DIR")"
LOCK_FILE="${TMPDIR:-/tmp}/client-venv-$(printf '%s' "$DIR" | sha1sum | cut -c1-12).lock"
exec 9<>"$LOCK_FILE"
take_lock 9 "$LOCK_FILE" "one build of $DIR at a time" 1800
if ready; then
    echo "client venv ready: $DIR"
    exit 0
fi

# Only ever delete a directory that is a (broken) venv, or empty.
if [[ -e "$DIR" && ! -f "$DIR/pyvenv.cfg" ]] && [[ -n "$(ls -A "$DIR" 2>/dev/null)" ]]; then
    die "$DIR exists and is not a virtual environment; refusing to replace it"
fi

if [[ -z "$PYTHON" ]]; then
    for candidate in python3.11 python3.12 python3.13 python3; do
        if command -v "$candidate" >/dev/null 2>&1 \
            && "$candidate" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
            PYTHON="$candidate"
            break
        fi
    done
fi
if [[ -z "$PYTHON" ]]; then
    die "need Python >= 3.11 with venv (set CLIENT_PYTHON)"
fi

start=$(date +%s)
log "building $DIR with $PYTHON: infernet-client 1.4.0 and its dependencies (about a minute)"
rm -rf "$DIR"
"$PYTHON" -m venv "$DIR" || die "$PYTHON -m venv failed (on Debian: apt-get install python3-venv)"
PIP=("$DIR/bin/pip" install --disable-pip-version-check --no-input --quiet)

# pip without its noise: a pip.conf naming index folders that are absent here makes pip warn
# "Location ... is ignored" for every package (about 110 lines). Errors still show, and count.
pip_install() {
    local output status=0
    output=$(mktemp)
    "${PIP[@]}" "$@" >"$output" 2>&1 || status=$?
    grep -v "is ignored: it is neither a file nor a directory" "$output" || true
    rm -f "$output"
    return "$status"
}

# The contract's recipe: infernet-ml 2.0.0 plus the client's ranges, then the client itself
# with --no-deps. Every package is pinned (constraints below) to what this resolved to on
# Python 3.11 (top level: web3 6.20.4, aiohttp 3.14.5, click 8.5.1, Quart 0.22.0; and
# eth-account 0.11.3, hexbytes 0.3.1, as in client-contract.md §1), so runs are reproducible.
CONSTRAINTS="$(mktemp)"
trap 'rm -f "$CONSTRAINTS"' EXIT
cat >"$CONSTRAINTS" <<'PINS'
aiofiles==25.1.0
aiohappyeyeballs==2.7.1
aiohttp==3.14.5
aiosignal==1.4.0
annotated-types==0.8.0
arrow==1.4.0
attrs==26.1.0
bitarray==3.12.3
blinker==1.9.0
bounded-pool-executor==0.0.3
certifi==2026.10.18
charset-normalizer==3.5.2
ckzg==1.0.2
click==8.5.1
cytoolz==1.2.0
decorator==5.3.1
ecdsa==0.19.2
erlang_py==2.0.7
eth-account==0.11.3
eth-hash==0.8.0
eth-keyfile==0.10.0
eth-keys==0.8.0
eth-rlp==1.0.1
eth-typing==4.4.0
eth-utils==4.1.1
eth_abi==6.0.0
filelock==4.2.11
Flask==3.1.3
frozenlist==1.8.0
fsspec==2026.9.0
h11==0.16.0
h2==4.4.1
hexbytes==0.3.1
hpack==4.2.0
huggingface-hub==0.25.1
Hypercorn==0.18.0
hyperframe==6.1.0
idna==3.20
infernet-ml==2.0.0
itsdangerous==2.2.0
Jinja2==3.1.6
jsonschema==4.26.0
jsonschema-specifications==2025.9.1
lru-dict==1.2.0
MarkupSafe==3.0.4
multidict==7.2.1
nicelog==0.3
packaging==26.3
parsimonious==0.10.0
pqdm==0.2.0
priority==2.0.0
propcache==0.5.4
protobuf==7.36.2
py-ecc==8.0.0
pyasn1==0.6.5
pycryptodome==3.24.1
pydantic==2.14.3
pydantic_core==2.50.4
Pygments==2.21.0
python-dateutil==4.0.0
python-dotenv==1.2.4
python-jose==3.5.0
pyunormalize==18.0.0
PyYAML==6.0.3
Quart==0.22.0
referencing==0.37.0
regex==2026.11.15
requests==2.34.2
retry2==0.9.5
ritual-arweave==0.1.1
ritual-pyarweave==0.1.2
rlp==5.0.0
rpds-py==2026.9.1
rsa==4.9.1
six==1.17.0
toolz==1.2.0
tqdm==4.70.1
typing-inspection==0.4.5
typing_extensions==4.16.0
tzdata==2026.6
urllib3==2.8.0
web3==6.20.4
websockets==13.1
Werkzeug==3.1.9
wsproto==1.3.2
yarl==1.25.1
PINS
pip_install -c "$CONSTRAINTS" \
    "infernet-ml==2.0.0" "aiohttp>=3.9.2,<4" "click>=8.1.7,<9" "quart>=0.19,<1" "web3>=6.19,<7" \
    || die "installing infernet-ml and the client's dependencies failed"
pip_install --no-deps "infernet-client==1.4.0" || die "installing infernet-client 1.4.0 failed"

"$DIR/bin/infernet-client" --help >/dev/null
echo "client venv built in $(( $(date +%s) - start ))s: $DIR"

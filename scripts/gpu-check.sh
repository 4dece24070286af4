#!/usr/bin/env bash
# The GPU check: on a GPU host with no compiler and no network, checks the CUDA build against
# the committed Hugging Face references, runs evaluations end to end, measures throughput, and
# writes a short table. Sized to finish in a few minutes.
#
#   scripts/gpu-check.sh [CARRY_DIR] [OUT_DIR]
#
# CARRY_DIR holds what scripts/build-cuda.sh made (muscle, engine_tests, engine_bench,
# plain or .xz); OUT_DIR receives gpu-check.md and the logs (default: $OUT, else ./gpu-check).
# CHECK_DEVICE=cpu runs the same checks on the CPU (to try the script without a GPU).
set -uo pipefail
cd "$(dirname "$0")/.."

CARRY=${1:-target/cuda/carry}
OUT=${2:-${OUT:-gpu-check}}
DEVICE=${CHECK_DEVICE:-cuda}
mkdir -p "$OUT/bin"
for name in muscle engine_tests engine_bench; do
    if [ -f "$CARRY/$name.xz" ]; then
        xz -dc "$CARRY/$name.xz" > "$OUT/bin/$name"
    elif [ -f "$CARRY/$name" ]; then
        cp "$CARRY/$name" "$OUT/bin/$name"
    fi
    [ -f "$OUT/bin/$name" ] && chmod +x "$OUT/bin/$name"
done
BIN=$OUT/bin

# The CUDA libraries the binary links to come with PyTorch's wheels on the GPU hosts.
if [ "$DEVICE" != cpu ]; then
    libs=$(python3 -c 'import nvidia, os
for p in nvidia.__path__:
    for sub in ("cu13/lib", "cublas/lib", "curand/lib", "cuda_runtime/lib", "cuda_nvrtc/lib"):
        d = os.path.join(p, sub)
        if os.path.isdir(d):
            print(d)' 2>/dev/null | paste -sd:)
    export LD_LIBRARY_PATH=${libs}${libs:+:}/usr/local/nvidia/lib64:/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
    CARD=$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | head -1)
else
    CARD="CPU: $(lscpu | awk -F: '/Model name/ {gsub(/^ +/, "", $2); print $2}') ($(nproc) cores)"
fi

REPORT=$OUT/gpu-check.md
{
    echo "# GPU check, $(date -u +%Y-%m-%dT%H:%MZ)"
    echo
    echo "Device: $CARD; muscle $("$BIN/muscle" --version 2>/dev/null | awk '{print $2}')"
    echo
    echo "| check | result | detail |"
    echo "|---|---|---|"
} > "$REPORT"
row() { echo "| $1 | $2 | $3 |" >> "$REPORT"; }

# 1. The engine against transformers + PEFT + lm-eval numbers, f32 (1e-4) and bf16.
#    (the engine_reference module of the engine test binary, tests/engine)
if [ -x "$BIN/engine_tests" ]; then
    MUSCLE_TEST_DEVICE=$DEVICE MUSCLE_ENGINE_FIXTURES=$PWD/tests/fixtures/engine \
        timeout 300 "$BIN/engine_tests" engine_reference:: --test-threads 1 > "$OUT/engine_reference.log" 2>&1
    code=$?
    while read -r _ name _ outcome; do
        row "reference: ${name#engine_reference::}" "$outcome" "tests/fixtures/engine/reference.json"
    done < <(grep -E '^test .* \.\.\. (ok|FAILED)' "$OUT/engine_reference.log")
    [ $code -eq 0 ] || row "reference tests" "FAILED (exit $code)" "see engine_reference.log"
else
    row "reference tests" "skipped" "no engine_tests binary in $CARRY"
fi

# 2. Evaluations end to end (queue, workers, engine, report) in f32 and bf16, and the same f32
#    evaluation on the CPU: the reports must agree.
run_eval() {
    local device=$1 dtype=$2 out=$3
    python3 - "$dtype" > "$OUT/spec-$dtype.json" <<'EOF'
import json, sys
spec = json.load(open("examples/tiny/eval.json"))
for side in ("old", "new"):
    spec[side]["dtype"] = sys.argv[1]
print(json.dumps(spec))
EOF
    MUSCLE_DEVICE=$device MUSCLE_MODEL_DIR=examples MUSCLE_DATA_DIR=$OUT/data \
        timeout 300 "$BIN/muscle" eval "$OUT/spec-$dtype.json" --out "$out" 2> "$out.log"
}
for dtype in f32 bf16; do
    start=$(date +%s.%N)
    run_eval "$DEVICE" "$dtype" "$OUT/eval-$DEVICE-$dtype.json"
    code=$?
    secs=$(python3 -c "import time; print(f'{time.time() - $start:.1f}')")
    detail=$(python3 -c "import json; r = json.load(open('$OUT/eval-$DEVICE-$dtype.json'))
print(f\"n={r['n']} acc old {r['old']['accuracy']:.3f} new {r['new']['accuracy']:.3f} nfr {r['metrics']['nfr']:.4f}, ${secs}s\")" 2>/dev/null || echo "no report")
    row "eval $DEVICE $dtype" "$([ $code -le 1 ] && echo ok || echo "FAILED (exit $code)")" "$detail"
done
if [ "$DEVICE" != cpu ]; then
    run_eval cpu f32 "$OUT/eval-cpu-f32.json"
    same=$(python3 -c "import json
a = json.load(open('$OUT/eval-$DEVICE-f32.json')); b = json.load(open('$OUT/eval-cpu-f32.json'))
print('ok' if a['counts'] == b['counts'] and a['old'] == b['old'] and a['new'] == b['new'] else 'DIFFERENT')" 2>/dev/null || echo "FAILED")
    row "eval f32 $DEVICE vs cpu" "$same" "same counts and accuracies"
fi

# 3. Throughput against transformers and lm-evaluation-harness, when the bench binary came along.
if [ -x "$BIN/engine_bench" ] && [ -f scripts/bench/engine_bench.py ]; then
    for dtype in f32 bf16; do
        printf '\n### Throughput, %s on %s\n\n' "$dtype" "$DEVICE" >> "$OUT/bench.md"
        timeout 300 python3 scripts/bench/engine_bench.py --device "$DEVICE" --dtype "$dtype" \
            --bench-bin "$BIN/engine_bench" --variants fused --limit "${BENCH_LIMIT:-200}" \
            --data "$OUT/bench" >> "$OUT/bench.md" 2>> "$OUT/bench.log"
    done
    code=$?
    row "throughput" "$([ $code -eq 0 ] && echo ok || echo "FAILED (exit $code)")" "table below"
else
    row "throughput" "skipped" "no engine_bench binary in $CARRY"
fi

{ echo; [ -f "$OUT/bench.md" ] && cat "$OUT/bench.md"; } >> "$REPORT"
cat "$REPORT"

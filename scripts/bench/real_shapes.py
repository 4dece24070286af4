#!/usr/bin/env python3
"""Whole-process multiple-choice evaluation on models with real shapes, side by side with the
peers in the same run (issue "Speed on real model shapes"). See BENCHMARKS.md, "Real shapes".

    /work/venv-ref/bin/python scripts/bench/make_bench_model.py /tmp/smol --shape smollm2-135m --adapter --items 150
    /work/venv-ref/bin/python scripts/bench/real_shapes.py /tmp/smol [--rounds 2] [--batch 8] [--bin target/release/muscle]

The job, for every engine: old = the base model, new = base + the LoRA adapter, every item of
DATA/mc.jsonl scored by both (lm-eval's multiple_choice: the continuation " " + choice, summed
log-probabilities, argmax). Each round runs, in turn and alternating the order from round to
round, one process per engine:

  muscle    `muscle eval` of that spec (the CLI a pipeline would run), whole process;
  loop      a plain transformers loop in one process: base, then PeftModel(base, adapter); each
            request (context + continuation) is one row of a right-padded batch of --batch rows,
            one forward with the head at every position (no shared prompt);
  lm-eval   lm_eval's HFLM(backend="causal"), twice in one process (pretrained, then peft=the
            adapter), loglikelihood on the Instances its multiple_choice task builds.

Each prints its own scoring time (model loading excluded) and peak RSS (VmHWM); the parent
measures the whole process and notes the 1-minute load average before and after each. The peers
run with torch.set_num_threads(2) and OMP_WAIT_POLICY=PASSIVE, as in engine_bench.py; no engine
adds a BOS (lm-eval's default for these models: add_bos_token=False; muscle: add_bos false). The
script checks that every engine picks the same choice on every item and reports the largest
score difference against the loop. Prints a Markdown table; writes DATA/real-shapes.json.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from engine_bench import quiet_env, vm_hwm  # the same script directory

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve()


LIMIT = None


def items_of(data: Path):
    rows = [json.loads(x) for x in (data / "mc.jsonl").read_text().splitlines() if x.strip()]
    return rows[:LIMIT] if LIMIT else rows


# --------------------------------------------------------------------------- children


def child_loop(a) -> dict:
    quiet_env()
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(2)
    items = items_of(a.data)
    tok = AutoTokenizer.from_pretrained(a.data / "model")
    # lm-eval's split: the whole string encoded, the context's own ids as the context.
    requests = []
    for it in items:
        for c in it["choices"]:
            ctx = tok(it["prompt"], add_special_tokens=False)["input_ids"]
            whole = tok(it["prompt"] + " " + c, add_special_tokens=False)["input_ids"]
            requests.append((ctx, whole[len(ctx):]))
    scoring, scores = 0.0, {}
    for side in ("old", "new"):
        model = AutoModelForCausalLM.from_pretrained(a.data / "model", dtype=torch.float32)
        if side == "new":
            model = PeftModel.from_pretrained(model, a.data / "adapter")
        model.eval()
        t = time.perf_counter()
        out = []
        with torch.inference_mode():
            for start in range(0, len(requests), a.batch):
                batch = requests[start:start + a.batch]
                rows = [(ctx + cont)[:-1] for ctx, cont in batch]
                width = max(len(r) for r in rows)
                ids = torch.zeros(len(rows), width, dtype=torch.long)
                mask = torch.zeros(len(rows), width, dtype=torch.long)
                for i, r in enumerate(rows):
                    ids[i, :len(r)] = torch.tensor(r)
                    mask[i, :len(r)] = 1
                logp = torch.log_softmax(model(input_ids=ids, attention_mask=mask).logits.float(), dim=-1)
                for i, (ctx, cont) in enumerate(batch):
                    positions = range(len(ctx) - 1, len(ctx) - 1 + len(cont))
                    out.append(float(sum(logp[i, p, t] for p, t in zip(positions, cont))))
        scoring += time.perf_counter() - t
        scores[side] = out
        del model
    return {"scoring_s": scoring, "peak_rss_bytes": vm_hwm(), "scores": per_item(items, scores)}


def child_lmeval(a) -> dict:
    quiet_env()
    import torch
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    torch.set_num_threads(2)
    items = items_of(a.data)
    scoring, scores = 0.0, {}
    for side in ("old", "new"):
        extra = {"peft": str(a.data / "adapter")} if side == "new" else {}
        lm = HFLM(pretrained=str(a.data / "model"), backend="causal", device="cpu", dtype="float32",
                  batch_size=a.batch, add_bos_token=False, **extra)
        reqs = [Instance("loglikelihood", it, (it["prompt"], " " + c), j, metadata=("bench", i, 0))
                for i, it in enumerate(items) for j, c in enumerate(it["choices"])]
        t = time.perf_counter()
        res = lm.loglikelihood(reqs, disable_tqdm=True)
        scoring += time.perf_counter() - t
        scores[side] = [float(r[0]) for r in res]
        del lm
    return {"scoring_s": scoring, "peak_rss_bytes": vm_hwm(), "scores": per_item(items, scores)}


def per_item(items, flat):
    out = {}
    for side, values in flat.items():
        k, rows = 0, []
        for it in items:
            rows.append(values[k:k + len(it["choices"])])
            k += len(it["choices"])
        out[side] = rows
    return out


# --------------------------------------------------------------------------- parent


def loadavg() -> float:
    return float(open("/proc/loadavg").read().split()[0])


def timed(cmd, env=None):
    """Runs cmd; (wall seconds, stdout)."""
    t = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)
    out, err = p.communicate()
    wall = time.perf_counter() - t
    if p.returncode != 0:
        sys.exit(f"{cmd[:3]} failed:\n{err[-4000:]}")
    return wall, out


def run_peer(kind, a):
    env = dict(os.environ, OMP_WAIT_POLICY=os.environ.get("OMP_WAIT_POLICY", "PASSIVE"))
    limit = ["--limit", str(a.limit)] if a.limit else []
    wall, out = timed([sys.executable, str(HERE), str(a.data), "--child", kind, "--batch", str(a.batch)] + limit, env)
    r = json.loads(out.strip().splitlines()[-1])
    r["wall_s"] = wall
    return r


def run_muscle(a, work: Path):
    items = items_of(a.data)
    dataset = work / "mc-muscle.jsonl"
    dataset.write_text("".join(json.dumps({"id": str(i), "prompt": it["prompt"], "choices": it["choices"],
                                           "answer": it["gold"]}) + "\n" for i, it in enumerate(items)))
    spec = work / "spec.json"
    spec.write_text(json.dumps({"old": {"model": "model"}, "new": {"model": "model", "adapter": "adapter"},
                                "dataset": {"path": str(dataset)}, "task": {"type": "multiple_choice"},
                                "options": {"batch_size": a.batch, "add_bos": False}}))
    rows = work / "instances.jsonl"
    data_dir = tempfile.mkdtemp(dir=work)
    cmd = ["/usr/bin/time", "-f", "%M", str(a.bin), "eval", str(spec), "--out", str(work / "report.json"),
           "--instances", str(rows), "--model-dir", str(a.data), "--data-dir", data_dir]
    t = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=dict(os.environ, RUST_LOG="warn"))
    wall = time.perf_counter() - t
    if p.returncode != 0:
        sys.exit(f"muscle eval failed:\n{p.stderr[-4000:]}")
    peak_kb = int(p.stderr.strip().splitlines()[-1])
    by_index = {}
    for line in rows.read_text().splitlines():
        r = json.loads(line)
        by_index[r["index"]] = r
    scores = {side: [by_index[i][side]["scores"] for i in range(len(items))] for side in ("old", "new")}
    return {"wall_s": wall, "scoring_s": None, "peak_rss_bytes": peak_kb * 1024, "scores": scores}


def argmax(row):
    return max(range(len(row)), key=lambda j: (row[j], -j))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", type=Path)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--bin", type=Path, default=REPO / "target/release/muscle")
    ap.add_argument("--engines", default="muscle,loop,lm-eval")
    ap.add_argument("--limit", type=int, help="only the first N items")
    ap.add_argument("--child", choices=["loop", "lm-eval"])
    a = ap.parse_args()
    global LIMIT
    LIMIT = a.limit
    if a.child:
        print(json.dumps((child_loop if a.child == "loop" else child_lmeval)(a)))
        return
    engines = a.engines.split(",")
    weights = (a.data / "model" / "model.safetensors").stat().st_size
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for rnd in range(a.rounds):
            order = engines if rnd % 2 == 0 else engines[::-1]
            for engine in order:
                before = loadavg()
                r = run_muscle(a, Path(tmp)) if engine == "muscle" else run_peer(engine, a)
                r.update(engine=engine, round=rnd + 1, load_before=before, load_after=loadavg())
                runs.append(r)
                print(f"round {rnd + 1} {engine}: {r['wall_s']:.1f} s whole, "
                      f"peak {r['peak_rss_bytes'] / 2**20:.0f} MiB (load {before:.2f} -> {r['load_after']:.2f})",
                      file=sys.stderr)
    reference = next((r for r in runs if r["engine"] == "loop"), runs[0])
    for r in runs:
        agree, diff = 0, 0.0
        for side in ("old", "new"):
            for mine, ref in zip(r["scores"][side], reference["scores"][side]):
                agree += argmax(mine) == argmax(ref)
                diff = max(diff, max(abs(x - y) for x, y in zip(mine, ref)))
        r["agree"], r["max_score_diff"] = agree, diff
    print(f"| round | engine | whole process | scoring alone | vs loop (whole) | peak RSS | RSS / weights "
          f"| load before -> after | picks equal to the loop's | max score diff |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    n = 2 * len(items_of(a.data))
    for r in runs:
        loop = next(x for x in runs if x["engine"] == "loop" and x["round"] == r["round"]) \
            if any(x["engine"] == "loop" for x in runs) else r
        scoring = f"{r['scoring_s']:.1f} s" if r["scoring_s"] is not None else "-"
        print(f"| {r['round']} | {r['engine']} | {r['wall_s']:.1f} s | {scoring} | {loop['wall_s'] / r['wall_s']:.2f}x "
              f"| {r['peak_rss_bytes'] / 2**20:.0f} MiB | {r['peak_rss_bytes'] / weights:.2f} "
              f"| {r['load_before']:.2f} -> {r['load_after']:.2f} | {r['agree']}/{n} | {r['max_score_diff']:.1e} |")
    (a.data / "real-shapes.json").write_text(json.dumps(
        [{k: v for k, v in r.items() if k != "scores"} for r in runs], indent=1))


if __name__ == "__main__":
    main()

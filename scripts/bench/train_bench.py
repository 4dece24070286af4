#!/usr/bin/env python3
"""LoRA training throughput: `muscle train` against PEFT + transformers, same adapter, same model.

    /path/to/venv/bin/python scripts/bench/train_bench.py [--rows 1600] [--epochs 2] [--batch 16]
                                                          [--shape-dir DIR]

Model: examples/model-update (new-base, a tiny Llama; old-base + old-task as the old teacher,
new-task as the start of the compatibility run). Data: the first --rows rows of its train.jsonl.
With --shape-dir, a folder written by make_bench_model.py --adapter (a real model shape, e.g.
smollm2-135m) instead: DIR/model is the base, the old teacher is the base alone, DIR/adapter is
the new task model's adapter (the compatibility run's start and new teacher), and the rows are
DIR/mc.jsonl's items with their correct choice.
Hyperparameters of the example (examples/model_update/main.rs): r=8, alpha=16, every linear
layer but lm_head, dropout 0, batch 16, AdamW (wd 0), 20 warm-up steps then linear decay, grad
norm clip 1.0, lr 2e-3 (task) / 3e-3 (compatibility), loss on the answer tokens, T=2, the
paper's mask. Both sides hold out 20% of the rows for a validation pass after every epoch
(muscle always does; PEFT mirrors it so the timed work matches), and that pass is timed in.

Each run is its own process under /usr/bin/time -v (peak RSS = "Maximum resident set size").
tokens = non-padding tokens of the training sequences x epochs; seconds = the training loop
(muscle: its "training done" log line, which times `Trainer::run`; PEFT: the same loop here),
so model loading, tokenisation and muscle's queue/database set-up are outside it; the process
wall time is reported too. Needs a release build (cargo build --release) and torch,
transformers and peft in the Python running this script.
"""

import argparse
import json
import math
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "model-update"
BIN = ROOT / "target" / "release" / "muscle"
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
LR = {"task": 2e-3, "compatibility": 3e-3}
WARMUP, RANK, ALPHA, TEMP, VAL_FRACTION = 20, 8, 16.0, 2.0, 0.2
BATCH = 16  # --batch


class Models:
    """Where the base, the task adapters and the rows come from."""

    def __init__(self, shape_dir=None):
        if shape_dir is None:
            self.root = EXAMPLE
            self.new_base, self.new_task = "new-base", "new-task"
            self.old_base, self.old_task = "old-base", "old-task"
        else:
            self.root = Path(shape_dir).resolve()
            self.new_base, self.new_task = "model", "adapter"
            self.old_base, self.old_task = "model", None
        self.shape = shape_dir is not None

    def path(self, name):
        return self.root / name

    def rows(self, n):
        """Up to n training rows, as lines of muscle's multiple-choice JSONL."""
        if not self.shape:
            return (EXAMPLE / "train.jsonl").read_text().splitlines()[:n]
        items = [json.loads(line) for line in (self.root / "mc.jsonl").read_text().splitlines()]
        return [json.dumps({"id": f"r{i}", "prompt": r["prompt"], "choices": r["choices"],
                            "answer": r["gold"]}) for i, r in enumerate(items[:n])]


MODELS = Models()


def timed(cmd, env=None):
    """Runs cmd under /usr/bin/time -v: (stdout, stderr, wall seconds, peak RSS MiB)."""
    t0 = time.perf_counter()
    p = subprocess.run(["/usr/bin/time", "-v", *cmd], capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        sys.exit(f"{cmd} failed ({p.returncode}):\n{p.stderr[-4000:]}")
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", p.stderr).group(1))
    return p.stdout, p.stderr, wall, rss / 1024


def muscle_run(objective, rows_path, epochs, work):
    m = MODELS
    if m.shape:
        models, prefix = m.root, ""  # the bench folder itself: no copy of its weights
    else:
        models, prefix = work / f"models-{objective}", "model-update/"
        (models / "model-update").mkdir(parents=True)
        for d in ["new-base", "new-task", "old-base", "old-task"]:
            shutil.copytree(EXAMPLE / d, models / "model-update" / d)
    spec = {
        "objective": objective,
        "new": {"model": prefix + m.new_base},
        "dataset": {"path": str(rows_path)},
        "output": f"bench-out/{work.name}-{objective}",
        "hyperparameters": {
            "rank": RANK, "alpha": ALPHA, "dropout": 0.0, "target_modules": TARGETS,
            "learning_rate": LR[objective], "epochs": epochs, "batch_size": BATCH,
            "warmup_steps": WARMUP, "validation_fraction": VAL_FRACTION, "seed": 0,
        },
    }
    if objective == "compatibility":
        spec["new"]["adapter"] = prefix + m.new_task
        spec["old"] = {"model": prefix + m.old_base}
        if m.old_task:
            spec["old"]["adapter"] = prefix + m.old_task
    spec_path = work / f"spec-{objective}.json"
    spec_path.write_text(json.dumps(spec))
    env = dict(os.environ, RUST_LOG="muscle=info", MUSCLE_LOG_FORMAT="json")
    out, err, wall, rss = timed(
        [str(BIN), "train", str(spec_path), "--model-dir", str(models),
         "--data-dir", str(work / f"data-{objective}")], env)
    done = None
    for line in err.splitlines():
        if "training done" in line:
            done = json.loads(line)
    if done is None:
        sys.exit(f"no 'training done' log line from muscle:\n{err[-3000:]}")
    fields = done.get("fields", done)
    result = json.loads(out)
    if m.shape:
        shutil.rmtree(m.root / "bench-out" / f"{work.name}-{objective}", ignore_errors=True)
    return {"steps": result["steps"], "tokens": int(fields["tokens"]),
            "seconds": float(fields["seconds"]), "wall": wall, "rss": rss,
            "validation_ce": result["history"][-1].get("validation_ce")}


# ---------------------------------------------------------------- PEFT side (child process)

def peft_child(objective, rows_path, epochs):
    import torch
    import torch.nn.functional as F
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoTokenizer, LlamaForCausalLM

    torch.set_num_threads(2)
    torch.manual_seed(0)
    t_load = time.perf_counter()
    m = MODELS
    tok = AutoTokenizer.from_pretrained(m.path(m.new_base))
    rows = [json.loads(line) for line in open(rows_path)]
    examples = []
    for r in rows:  # prompt + " " + correct choice; loss on the answer tokens (as muscle does)
        ctx = tok(r["prompt"], add_special_tokens=False)["input_ids"]
        ids = tok(r["prompt"] + " " + r["choices"][r["answer"]], add_special_tokens=False)["input_ids"]
        examples.append((ids, len(ctx)))
    order = list(range(len(examples)))
    random.Random(0).shuffle(order)
    n_val = max(1, min(len(order) - 1, round(len(order) * VAL_FRACTION)))
    val = [examples[i] for i in sorted(order[:n_val])]
    train = [examples[i] for i in sorted(order[n_val:])]
    pad = tok.eos_token_id

    base = LlamaForCausalLM.from_pretrained(m.path(m.new_base), dtype=torch.float32)
    if objective == "task":
        cfg = LoraConfig(r=RANK, lora_alpha=ALPHA, lora_dropout=0.0, target_modules=TARGETS,
                         task_type="CAUSAL_LM")
        model = get_peft_model(base, cfg)
        teachers = None
    else:
        model = PeftModel.from_pretrained(base, m.path(m.new_task), is_trainable=True)
        # Frozen teachers with their adapters merged into the weights (the fastest PEFT form).
        def teacher(base_name, task):
            t = LlamaForCausalLM.from_pretrained(m.path(base_name), dtype=torch.float32)
            if task:
                t = PeftModel.from_pretrained(t, m.path(task)).merge_and_unload()
            return t.eval()
        old = teacher(m.old_base, m.old_task)
        new = teacher(m.new_base, m.new_task)
        for t in (old, new):
            for p in t.parameters():
                p.requires_grad_(False)
        teachers = (old, new)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    steps_per_epoch = math.ceil(len(train) / BATCH)
    total = steps_per_epoch * epochs
    opt = torch.optim.AdamW(params, lr=LR[objective], weight_decay=0.0, betas=(0.9, 0.999), eps=1e-8)

    def lr_at(step):  # src/train/schedule.rs
        if step < WARMUP:
            return (step + 1) / WARMUP
        return min(1.0, max(0.0, (total - step) / max(1, total - WARMUP)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)

    # Right padding under the causal mask: no real position attends to padding, so, as muscle
    # does, no attention_mask is passed (with one, transformers 5.24 builds a padded mask per
    # forward and this tiny model runs ~5x slower); the loss rows skip padding either way.
    def collate(batch):
        t = max(len(ids) for ids, _ in batch)
        ids = torch.full((len(batch), t), pad, dtype=torch.long)
        att = torch.zeros((len(batch), t), dtype=torch.long)
        rows_b, rows_j, targets = [], [], []
        for k, (e, loss_from) in enumerate(batch):
            ids[k, :len(e)] = torch.tensor(e)
            att[k, :len(e)] = 1
            for j in range(max(1, loss_from), len(e)):
                rows_b.append(k)
                rows_j.append(j - 1)
                targets.append(e[j])
        return ids, att, torch.tensor(rows_b), torch.tensor(rows_j), torch.tensor(targets)

    def loss_of(batch):
        ids, att, rb, rj, y = collate(batch)
        z = model(input_ids=ids).logits[rb, rj]
        if teachers is None:
            return F.cross_entropy(z, y)
        with torch.no_grad():
            z_old = teachers[0](input_ids=ids).logits[rb, rj]
            z_new = teachers[1](input_ids=ids).logits[rb, rj]
            m = (z.argmax(-1) != y).float()  # the paper's mask: the student is wrong
        log_s = F.log_softmax(z / TEMP, -1)

        def kl(zt):  # KL(teacher || student) per token, at temperature T (no T^2, as muscle)
            log_t = F.log_softmax(zt / TEMP, -1)
            return (log_t.exp() * (log_t - log_s)).sum(-1)

        return (m * kl(z_old) + (1 - m) * kl(z_new)).mean()

    load_s = time.perf_counter() - t_load
    tokens, steps = 0, 0
    t0 = time.perf_counter()
    for epoch in range(epochs):
        ep_order = list(range(len(train)))
        random.Random(1000 + epoch).shuffle(ep_order)
        for s in range(0, len(ep_order), BATCH):
            batch = [train[i] for i in ep_order[s:s + BATCH]]
            tokens += sum(len(ids) for ids, _ in batch)
            loss = loss_of(batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            steps += 1
        model.eval()  # validation cross-entropy, as muscle runs after every epoch
        ce_sum, ce_n = 0.0, 0
        with torch.no_grad():
            for s in range(0, len(val), BATCH):
                ids, att, rb, rj, y = collate(val[s:s + BATCH])
                ce = F.cross_entropy(model(input_ids=ids).logits[rb, rj], y)
                ce_sum, ce_n = ce_sum + ce.item() * len(y), ce_n + len(y)
        model.train()
    seconds = time.perf_counter() - t0
    hwm = 0
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            hwm = int(line.split()[1]) / 1024
    print(json.dumps({"steps": steps, "tokens": tokens, "seconds": seconds, "load_s": load_s,
                      "vmhwm_mib": hwm, "validation_ce": ce_sum / ce_n}))


def peft_run(objective, rows_path, epochs):
    shape = ["--shape-dir", str(MODELS.root)] if MODELS.shape else []
    out, _, wall, rss = timed([sys.executable, __file__, "--peft-child", objective,
                               "--rows-file", str(rows_path), "--epochs", str(epochs),
                               "--batch", str(BATCH), *shape])
    r = json.loads(out.strip().splitlines()[-1])
    return {"steps": r["steps"], "tokens": r["tokens"], "seconds": r["seconds"], "wall": wall,
            "rss": rss, "validation_ce": r["validation_ce"]}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1600)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--objectives", default="task,compatibility")
    ap.add_argument("--peft-child")
    ap.add_argument("--rows-file")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--shape-dir")
    args = ap.parse_args()
    global BATCH, MODELS
    BATCH, MODELS = args.batch, Models(args.shape_dir)
    if args.peft_child:
        return peft_child(args.peft_child, args.rows_file, args.epochs)
    if not BIN.exists():
        sys.exit(f"{BIN} is missing: run cargo build --release")
    work = Path(tempfile.mkdtemp(prefix="train-bench-"))
    try:
        rows_path = work / "rows.jsonl"
        lines = MODELS.rows(args.rows)
        rows_path.write_text("\n".join(lines) + "\n")
        load = os.getloadavg()
        print(f"load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}", file=sys.stderr)
        results = []
        for objective in args.objectives.split(","):
            for engine, fn in [("muscle", lambda: muscle_run(objective, rows_path, args.epochs, work)),
                               ("PEFT + transformers", lambda: peft_run(objective, rows_path, args.epochs))]:
                r = fn()
                print(f"{objective} {engine}: {r}", file=sys.stderr)
                results.append((objective, engine, r))
        load = os.getloadavg()
        print(f"load average after: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}", file=sys.stderr)
        print("| objective | engine | steps | tokens | train s | tokens/s | ratio vs PEFT | process wall s | peak RSS MiB |")
        print("|---|---|---|---|---|---|---|---|---|")
        for objective, engine, r in results:
            ref = next(x for o, e, x in results if o == objective and e != "muscle")
            tps = r["tokens"] / r["seconds"]
            ratio = tps / (ref["tokens"] / ref["seconds"])
            print(f"| {objective} | {engine} | {r['steps']} | {r['tokens']} | {r['seconds']:.2f} | "
                  f"{tps:,.0f} | {ratio:.2f}x | {r['wall']:.2f} | {r['rss']:.0f} |")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

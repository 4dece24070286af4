#!/usr/bin/env python3
"""llama.cpp as the CPU anchor: muscle, the transformers loop and llama.cpp (llama-cpp-python, the
same weights converted to GGUF f32) scoring the same multiple-choice requests in one run, with the
CPU's own f32 peak measured beside them. See BENCHMARKS.md, "Real shapes".

    PY=~/.cache/muscle/endpoint-venv/bin/python      # scripts/endpoints/install.sh makes it
    $PY scripts/bench/make_bench_model.py /tmp/smol --shape smollm2-135m --adapter --items 150
    $PY scripts/bench/llamacpp_bench.py /tmp/smol [DATA ...] [--workload plain|fewshot|both]
        [--rounds 2] [--limit N] [--threads 2] [--batch 8] [--bin target/release/muscle]
        [--engines muscle,loop,llama.cpp] [--llama-share seqs|rewind] [--peak-n 4096]

The job is real_shapes.py's: old = the base model, new = base + the LoRA adapter, every item of a
workload scored by both (the continuation " " + choice, summed log-probabilities, argmax), and no
engine adds a BOS. Workloads (--workload):

  plain     DATA/mc.jsonl as it is (prompts of 40-80 tokens, 4 choices of 3-10 tokens);
  fewshot   DATA/fewshot/mc.jsonl, written here from DATA/mc.jsonl: before each item's prompt,
            solved examples (another item's prompt + " " + its gold choice), joined by "\\n\\n",
            taken in turn from the items after it (wrapping round, all of DATA/mc.jsonl, so --limit
            does not change a prompt) until the prompt has at least 150 tokens, skipping an
            example that would take it past 300. Deterministic. DATA/fewshot/model and adapter
            hold hard links to DATA's files, so every engine reads the identical weights.

Each round runs, in turn and alternating the order from round to round, one process per engine:

  muscle     `muscle eval` of the spec real_shapes.py writes (real_shapes.run_muscle), whole
             process; RAYON_NUM_THREADS=--threads;
  loop       real_shapes.py's transformers loop (real_shapes.run_peer): base, then
             PeftModel(base, adapter); right-padded batches of --batch requests, context +
             continuation, head at every position; torch 2 threads, OMP_WAIT_POLICY=PASSIVE;
  llama.cpp  this script's child: llama-cpp-python's low-level API (llama_cpp.llama_decode) on
             DATA/gguf/base-f32.gguf, then DATA/gguf/new-f32.gguf, n_threads = n_threads_batch =
             --threads, f32 KV cache, flash attention off, one context per model.

llama.cpp's inputs are the Hugging Face tokenizer's ids (the loop's split: the context's ids, then
the rest of the ids of context + " " + choice), never llama.cpp's own tokenizer, and no BOS: the
parent tokenizes and hands the child the ids in a file, so the child imports neither transformers
nor torch (its peak RSS is llama.cpp's and numpy's). The
prompt is shared across choices: per item, one llama_decode of the prompt whose tokens belong to
every choice's sequence (n_seq_id = number of choices, a unified KV cache), with the head only at
its last position (its logits score every choice's first token); then one llama_decode of all
choices' tokens but their last, choice j as sequence j at positions after the prompt, head at each
of them. --llama-share rewind instead decodes the choices one after another in sequence 0, each
after removing the previous one's cells (llama_memory_seq_rm), as llama_cpp.Llama.eval does when
it rewinds n_tokens. Log-softmax in float64 with numpy from the returned f32 logits.

The new side for llama.cpp is the adapter MERGED into the base (PEFT merge_and_unload in f32,
save_pretrained), converted like the base with llama.cpp's own convert_hf_to_gguf.py --outtype f32
(vendor/llama.cpp of llama-cpp-python's sdist, --llama-cpp), the way
scripts/endpoints/convert_fixture_gguf.py runs it: the bench tokenizers use Qwen2's split regex,
which the converter's table of known tokenizers does not know by hash, so a tokenizer.json that
really has Qwen2's normalizer and regex is labelled "qwen2" (only the GGUF's own tokenizer, which
is not used for scoring, depends on it). muscle also merges the adapter at load for scoring, so
both run the same dense f32 matrices; the loop runs PEFT's unmerged LoRA. The GGUFs are made once
and reused while newer than DATA/model and DATA/adapter.

The CPU's peak: a child process with torch.set_num_threads(--threads) times torch.mm of two
--peak-n square f32 matrices (one warm-up, best of 5): 2 n^3 / t.

Effective GFLOP/s = (2 x body parameters x tokens + 2 x hidden x vocab x head positions) x 2 sides
/ seconds, where body parameters = every weight but the embedding and the output head (attention's
own products, norms and the LoRA's extra factors are not counted). Two counts of the work:

  useful    the same for every engine: per item, the prompt once plus every choice's tokens but
            its last; the head at the prompt's last position and at those choice tokens;
  computed  what the engine runs: llama.cpp exactly the useful work (no padding); muscle the
            useful work plus its padding, as its planner pads (replicated here from
            engine/scoring.rs: chunks of max(8 x batch, 32) items, groups of up to `batch`
            prompts padded to the longest, choice rows in batches of up to `batch` padded to the
            longest; max_batch_tokens 8192); the loop every request's context + continuation
            but the last token, padded to the batch's longest row, head at every position.

Seconds: each peer reports its scoring time (models loaded before the clock starts); muscle
reports none, so its GFLOP/s and items/s are over its whole process (loading included), which
can only understate it. "whole" is every engine's whole process, as the parent measures it.
Every engine's picks and scores are compared with the loop's (and llama.cpp's also with
muscle's). Prints a Markdown table; writes DATA/llamacpp-bench.json.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import real_shapes  # the same script directory: muscle's and the loop's runs, items_of, timed
from engine_bench import quiet_env, vm_hwm

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve()
VENV = Path(os.environ.get("MUSCLE_ENDPOINT_VENV", Path.home() / ".cache/muscle/endpoint-venv"))
FEWSHOT_MIN, FEWSHOT_MAX = 150, 300
SIDES = ("old", "new")


# --------------------------------------------------------------------------- workloads


def read_items(path: Path):
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def fewshot_prompts(items, count):
    """Each item's prompt behind solved examples from the items after it (see the docstring)."""
    solved = [it["prompt"] + " " + it["choices"][it["gold"]] for it in items]
    out = []
    for i, it in enumerate(items):
        shots = []
        for k in range(1, len(items)):
            if count("\n\n".join(shots + [it["prompt"]])) >= FEWSHOT_MIN:
                break
            shot = solved[(i + k) % len(items)]
            if count("\n\n".join(shots + [shot, it["prompt"]])) <= FEWSHOT_MAX:
                shots.append(shot)
        out.append(dict(it, prompt="\n\n".join(shots + [it["prompt"]])))
    return out


def workload_dir(data: Path, workload: str) -> Path:
    """A DATA-like folder (model/, adapter/, mc.jsonl) holding the workload's items."""
    if workload == "plain":
        return data
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(data / "model")
    items = fewshot_prompts(read_items(data / "mc.jsonl"),
                            lambda s: len(tok(s, add_special_tokens=False)["input_ids"]))
    wdir = data / "fewshot"
    wdir.mkdir(exist_ok=True)
    # Hard links (muscle refuses a model folder reached through a symbolic link), made anew
    # every run so that a remade DATA/model is never shadowed by links to the old files.
    for name in ("model", "adapter"):
        shutil.rmtree(wdir / name, ignore_errors=True)
        shutil.copytree(data / name, wdir / name, copy_function=link_or_copy)
    text = "".join(json.dumps(it) + "\n" for it in items)
    if not (wdir / "mc.jsonl").exists() or (wdir / "mc.jsonl").read_text() != text:
        (wdir / "mc.jsonl").write_text(text)
    return wdir


def link_or_copy(src, dst):
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


# --------------------------------------------------------------------------- GGUF


def ensure_ggufs(data: Path, llama_src: Path):
    """DATA/gguf/base-f32.gguf and new-f32.gguf (base + adapter merged), made when stale."""
    out = data / "gguf"
    out.mkdir(exist_ok=True)
    base, new = out / "base-f32.gguf", out / "new-f32.gguf"
    newest = lambda *dirs: max(p.stat().st_mtime for d in dirs for p in d.iterdir())  # noqa: E731
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    if not base.exists() or base.stat().st_mtime < newest(data / "model"):
        convert(data / "model", base, llama_src, env)
    if not new.exists() or new.stat().st_mtime < newest(data / "model", data / "adapter"):
        merged = out / "merged-hf"
        run_child(["--child", "merge", str(data), "--outdir", str(merged)], env)
        convert(merged, new, llama_src, env)
        shutil.rmtree(merged)
    return base, new


def convert(model_dir: Path, outfile: Path, llama_src: Path, env):
    print(f"converting {model_dir} -> {outfile} (f32)", file=sys.stderr)
    tmp = outfile.with_suffix(".tmp")
    run_child(["--child", "convert", str(model_dir), "--outdir", str(tmp), "--llama-cpp", str(llama_src)], env)
    tmp.rename(outfile)


def run_child(args, env):
    p = subprocess.run([sys.executable, str(HERE)] + args, env=env, cwd=REPO, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"{args[:2]} failed:\n{p.stdout[-2000:]}\n{p.stderr[-4000:]}")
    return p.stdout


def child_merge(a):
    quiet_env()
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(a.data / "model", dtype=torch.float32)
    model = PeftModel.from_pretrained(model, a.data / "adapter").merge_and_unload()
    model.save_pretrained(a.outdir)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(a.data / "model" / name, a.outdir / name)


def child_convert(a):
    """convert_hf_to_gguf.py on a.data (an HF folder), labelling a Qwen2-regex BPE tokenizer qwen2."""
    root = a.llama_cpp.resolve()
    sys.path[:0] = [str(root), str(root / "gguf-py"), str(REPO / "scripts/endpoints")]
    import runpy

    import conversion.base as base  # the converter's own package
    import convert_fixture_gguf as fixture  # qwen2_like: the check that tokenizer.json is Qwen2's split

    original = base.TextModel.get_vocab_base_pre

    def get_vocab_base_pre(self, tokenizer):
        if fixture.qwen2_like(self.dir_model):
            return "qwen2"
        return original(self, tokenizer)

    base.TextModel.get_vocab_base_pre = get_vocab_base_pre
    sys.argv = [str(root / "convert_hf_to_gguf.py"), "--outtype", "f32", "--outfile", str(a.outdir),
                str(a.data.resolve())]
    try:
        runpy.run_path(str(root / "convert_hf_to_gguf.py"), run_name="__main__")
    except SystemExit as e:
        if e.code not in (None, 0):
            raise


# --------------------------------------------------------------------------- llama.cpp


class LlamaScorer:
    """One GGUF model and context of llama-cpp-python's low-level API, scoring shared prompts."""

    def __init__(self, path: Path, threads: int, n_ctx: int, n_batch: int, n_seq: int, share: str):
        import llama_cpp as L

        self.L, self.share = L, share
        mp = L.llama_model_default_params()
        self.model = L.llama_model_load_from_file(str(path).encode(), mp)
        if not self.model:
            raise RuntimeError(f"llama.cpp could not load {path}")
        cp = L.llama_context_default_params()
        cp.n_ctx, cp.n_batch, cp.n_ubatch = n_ctx, n_batch, n_batch
        cp.n_seq_max = n_seq if share == "seqs" else 1
        cp.kv_unified = True  # one token may belong to every choice's sequence
        cp.n_threads = cp.n_threads_batch = threads
        cp.type_k = cp.type_v = L.GGML_TYPE_F32  # the default f16 cache would round keys and values
        cp.flash_attn_type = L.LLAMA_FLASH_ATTN_TYPE_DISABLED
        cp.no_perf = True
        self.ctx = L.llama_init_from_model(self.model, cp)
        if not self.ctx:
            raise RuntimeError("llama_init_from_model failed")
        self.mem = L.llama_get_memory(self.ctx)
        self.batch = L.llama_batch_init(n_batch, 0, cp.n_seq_max)
        self.n_vocab = L.llama_vocab_n_tokens(L.llama_model_get_vocab(self.model))

    def close(self):
        self.L.llama_batch_free(self.batch)
        self.L.llama_free(self.ctx)
        self.L.llama_model_free(self.model)

    def _decode(self, rows):
        """One llama_decode of rows (token, position, sequence ids, wants logits); row i is batch index i."""
        b = self.batch
        for i, (tok, pos, seqs, out) in enumerate(rows):
            b.token[i], b.pos[i], b.n_seq_id[i], b.logits[i] = tok, pos, len(seqs), out
            for k, s in enumerate(seqs):
                b.seq_id[i][k] = s
        b.n_tokens = len(rows)
        rc = self.L.llama_decode(self.ctx, b)
        if rc != 0:
            raise RuntimeError(f"llama_decode returned {rc}")

    def _logprob(self, i, target):
        import numpy as np

        row = np.ctypeslib.as_array(self.L.llama_get_logits_ith(self.ctx, i), shape=(self.n_vocab,))
        x = row.astype(np.float64)
        m = x.max()
        return float(x[target] - m - np.log(np.exp(x - m).sum()))

    def score(self, ctx, conts):
        self.L.llama_memory_clear(self.mem, False)
        p = len(ctx)
        seqs = list(range(len(conts))) if self.share == "seqs" else [0]
        self._decode([(t, q, seqs, q == p - 1) for q, t in enumerate(ctx)])
        out = [self._logprob(p - 1, c[0]) for c in conts]  # every choice's first token
        if self.share == "seqs":
            rows, where = [], []
            for j, c in enumerate(conts):
                for q in range(len(c) - 1):
                    where.append((j, len(rows), c[q + 1]))
                    rows.append((c[q], p + q, [j], True))
            if rows:
                self._decode(rows)
                for j, i, target in where:
                    out[j] += self._logprob(i, target)
        else:
            for j, c in enumerate(conts):
                if len(c) > 1:
                    self.L.llama_memory_seq_rm(self.mem, 0, p, -1)
                    self._decode([(t, p + q, [0], True) for q, t in enumerate(c[:-1])])
                    out[j] += sum(self._logprob(q, c[q + 1]) for q in range(len(c) - 1))
        return out


def requests_of(tok, items):
    """The loop's split: the context's ids, then the rest of context + " " + choice."""
    reqs = []
    for it in items:
        ctx = tok(it["prompt"], add_special_tokens=False)["input_ids"]
        conts = []
        for c in it["choices"]:
            whole = tok(it["prompt"] + " " + c, add_special_tokens=False)["input_ids"]
            conts.append(whole[len(ctx):])
        reqs.append((ctx, conts))
    return reqs


def child_llamacpp(a) -> dict:
    import llama_cpp
    from llama_cpp import _logger

    _logger.set_verbose(False)  # llama.cpp's own log: errors only
    llama_cpp.llama_backend_init()
    reqs = json.loads(a.requests.read_text())  # [[context ids, [continuation ids, ...]], ...]
    longest = max(len(ctx) + sum(len(c) - 1 for c in conts) for ctx, conts in reqs)
    n_batch = max(max(len(ctx), sum(len(c) for c in conts)) for ctx, conts in reqs)
    n_seq = max(len(conts) for _, conts in reqs)
    scoring, scores = 0.0, {}
    for side, path in zip(SIDES, (a.gguf_old, a.gguf_new)):
        eng = LlamaScorer(path, a.threads, n_ctx=-(-longest // 256) * 256, n_batch=n_batch, n_seq=n_seq,
                          share=a.llama_share)
        t = time.perf_counter()
        scores[side] = [eng.score(ctx, conts) for ctx, conts in reqs]
        scoring += time.perf_counter() - t
        eng.close()
    return {"scoring_s": scoring, "peak_rss_bytes": vm_hwm(), "scores": scores,
            "llama_cpp_version": llama_cpp.__version__}


# --------------------------------------------------------------------------- peak and work


def child_peak(a) -> dict:
    import torch

    torch.set_num_threads(a.threads)
    n = a.peak_n
    x, y = torch.randn(n, n), torch.randn(n, n)
    z = torch.empty(n, n)
    torch.mm(x, y, out=z)  # warm-up
    times = []
    for _ in range(5):
        t = time.perf_counter()
        torch.mm(x, y, out=z)
        times.append(time.perf_counter() - t)
    return {"n": n, "threads": a.threads, "best_s": min(times), "times_s": times,
            "gflops": 2 * n ** 3 / min(times) / 1e9, "torch": torch.__version__}


def model_sizes(model_dir: Path) -> dict:
    """Body parameters (all but the embedding and the head), hidden size and vocabulary."""
    cfg = json.loads((model_dir / "config.json").read_text())
    with open(model_dir / "model.safetensors", "rb") as f:
        header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
    body = 0
    for name, t in header.items():
        if name == "__metadata__" or "embed_tokens" in name or name.startswith("lm_head"):
            continue
        n = 1
        for d in t["shape"]:
            n *= d
        body += n
    return {"body_params": body, "hidden": cfg["hidden_size"], "vocab": cfg["vocab_size"]}


def work_counts(shapes, batch) -> dict:
    """(tokens through the body, head positions) per side, for each way of counting the work."""
    useful = [sum(p + sum(n - 1 for n in conts) for p, conts in shapes),
              sum(1 + sum(n - 1 for n in conts) for p, conts in shapes)]
    # The loop: requests in order, `batch` rows, each row context + continuation but its last token.
    rows = [p + n - 1 for p, conts in shapes for n in conts]
    loop = sum(len(b) * max(b) for b in (rows[s:s + batch] for s in range(0, len(rows), batch)))
    # muscle: multiple_choice_shared's plan within run.rs's chunks (see the docstring).
    tokens = head = 0
    chunk, max_tokens = max(8 * batch, 32), 8192
    for c0 in range(0, len(shapes), chunk):
        order = sorted(range(c0, min(len(shapes), c0 + chunk)), key=lambda i: (-shapes[i][0], i))
        start = 0
        while start < len(order):
            p, end = shapes[order[start]][0], start
            while end < len(order):
                conts = shapes[order[end]][1]
                widest = min(batch, len(conts)) * (p + max(conts))
                if end > start and (end + 1 - start > batch or (end + 1 - start) * p > max_tokens
                                    or widest > max_tokens):
                    break
                end += 1
            tokens += (end - start) * p
            head += end - start
            flat = [n - 1 for i in order[start:end] for n in shapes[i][1] if n > 1]
            s = 0
            while s < len(flat):
                e, t = s, 0
                while e < len(flat):
                    tt = max(t, flat[e])
                    if e > s and (e + 1 - s > batch or (e + 1 - s) * (p + tt) > max_tokens):
                        break
                    t, e = tt, e + 1
                tokens += (e - s) * t
                head += sum(flat[s:e])
                s = e
            start = end
    return {"useful": useful, "llama.cpp": useful, "muscle": [tokens, head], "loop": [loop, loop]}


def gflop(counts, sizes) -> float:
    tokens, head = counts
    return len(SIDES) * (2 * sizes["body_params"] * tokens + 2 * sizes["hidden"] * sizes["vocab"] * head) / 1e9


# --------------------------------------------------------------------------- parent


def run_llamacpp(a, requests: Path, ggufs):
    wall, out = real_shapes.timed([sys.executable, str(HERE), "--child", "llama.cpp", "--requests", str(requests),
                                   "--gguf-old", str(ggufs[0]), "--gguf-new", str(ggufs[1]),
                                   "--threads", str(a.threads), "--llama-share", a.llama_share])
    r = json.loads(out.strip().splitlines()[-1])
    r["wall_s"] = wall
    return r


def run_engine(engine, a, wdir: Path, ggufs, work: Path):
    ns = argparse.Namespace(data=wdir, batch=a.batch, limit=a.limit, bin=a.bin)
    if engine == "muscle":
        return real_shapes.run_muscle(ns, work)
    if engine == "loop":
        return real_shapes.run_peer("loop", ns)
    return run_llamacpp(a, work / "llama-requests.json", ggufs)


def compare(r, ref):
    agree, diff = 0, 0.0
    for side in SIDES:
        for mine, theirs in zip(r["scores"][side], ref["scores"][side]):
            agree += real_shapes.argmax(mine) == real_shapes.argmax(theirs)
            diff = max(diff, max(abs(x - y) for x, y in zip(mine, theirs)))
    return agree, diff


def bench_workload(a, data, workload, ggufs, sizes):
    wdir = workload_dir(data, workload)
    real_shapes.LIMIT = a.limit  # items_of in real_shapes' muscle run
    items = real_shapes.items_of(wdir)
    from transformers import AutoTokenizer

    reqs = requests_of(AutoTokenizer.from_pretrained(wdir / "model"), items)
    shapes = [[len(ctx), [len(c) for c in conts]] for ctx, conts in reqs]
    engines = a.engines.split(",")
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "llama-requests.json").write_text(json.dumps(reqs))
        for rnd in range(a.rounds):
            for engine in (engines if rnd % 2 == 0 else engines[::-1]):
                before = real_shapes.loadavg()
                r = run_engine(engine, a, wdir, ggufs, Path(tmp))
                r.update(data=str(data), workload=workload, engine=engine, round=rnd + 1,
                         load_before=before, load_after=real_shapes.loadavg())
                runs.append(r)
                print(f"{data.name} {workload} round {rnd + 1} {engine}: {r['wall_s']:.1f} s whole, "
                      f"peak {r['peak_rss_bytes'] / 2**20:.0f} MiB (load {before:.2f} -> {r['load_after']:.2f})",
                      file=sys.stderr)
    counts = work_counts(shapes, a.batch)
    prompt_tokens = [p for p, _ in shapes]
    loop = next((r for r in runs if r["engine"] == "loop"), None)
    mus = next((r for r in runs if r["engine"] == "muscle"), None)
    for r in runs:
        r["agree"], r["max_score_diff"] = compare(r, loop) if loop else (None, None)
        if r["engine"] == "llama.cpp" and mus:
            r["agree_muscle"], r["max_score_diff_muscle"] = compare(r, mus)
        seconds = r["scoring_s"] if r.get("scoring_s") is not None else r["wall_s"]
        r["seconds_for_rates"] = seconds
        r["items_per_s"] = len(items) / seconds
        r["useful_gflop"] = gflop(counts["useful"], sizes)
        r["computed_gflop"] = gflop(counts[r["engine"]], sizes)
        r["useful_gflops"] = r["useful_gflop"] / seconds
        r["computed_gflops"] = r["computed_gflop"] / seconds
    info = {"data": str(data), "workload": workload, "items": len(items),
            "prompt_tokens_min_mean_max": [min(prompt_tokens), sum(prompt_tokens) / len(prompt_tokens),
                                           max(prompt_tokens)],
            "work_tokens_head_per_side": counts}
    print(f"{data.name} / {workload}: {len(items)} items, prompts of {min(prompt_tokens)}-{max(prompt_tokens)} "
          f"tokens (mean {info['prompt_tokens_min_mean_max'][1]:.0f}); useful work "
          f"{runs[0]['useful_gflop']:.1f} GFLOP (both sides)", file=sys.stderr)
    return info, runs


def print_table(runs, peak, n_items):
    print(f"CPU peak: torch.mm {peak['n']}x{peak['n']} f32, {peak['threads']} threads, best of 5: "
          f"{peak['gflops']:.1f} GFLOP/s")
    print()
    print("| data | workload | round | engine | whole s | scoring s | items/s | useful GFLOP/s | % peak "
          "| computed GFLOP/s | % peak | peak RSS | load | picks equal to the loop's | max score diff vs loop "
          "| vs muscle |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in runs:
        scoring = f"{r['scoring_s']:.1f}" if r.get("scoring_s") is not None else "-"
        agree = f"{r['agree']}/{2 * n_items[r['data'], r['workload']]}" if r["agree"] is not None else "-"
        diff = f"{r['max_score_diff']:.1e}" if r["max_score_diff"] is not None else "-"
        vs_muscle = f"{r['max_score_diff_muscle']:.1e}" if "max_score_diff_muscle" in r else ""
        print(f"| {Path(r['data']).name} | {r['workload']} | {r['round']} | {r['engine']} | {r['wall_s']:.1f} "
              f"| {scoring} | {r['items_per_s']:.2f} | {r['useful_gflops']:.1f} "
              f"| {100 * r['useful_gflops'] / peak['gflops']:.0f}% | {r['computed_gflops']:.1f} "
              f"| {100 * r['computed_gflops'] / peak['gflops']:.0f}% | {r['peak_rss_bytes'] / 2**20:.0f} MiB "
              f"| {r['load_before']:.2f} -> {r['load_after']:.2f} | {agree} | {diff} | {vs_muscle} |")
    print()
    print("items/s and GFLOP/s: over the scoring time where the engine reports one, else (muscle) over the "
          "whole process. Each item is scored by old and new.")
    for key in sorted({(r["data"], r["workload"], r["round"]) for r in runs}):
        by = {r["engine"]: r for r in runs if (r["data"], r["workload"], r["round"]) == key}
        if "muscle" in by and "llama.cpp" in by:
            m, l = by["muscle"], by["llama.cpp"]
            print(f"- {Path(key[0]).name} {key[1]} round {key[2]}: muscle {m['wall_s']:.1f} s whole process, "
                  f"llama.cpp {l['wall_s']:.1f} s whole ({l['scoring_s']:.1f} s scoring): muscle's speed "
                  f"{l['wall_s'] / m['wall_s']:.2f}x llama.cpp's whole process, {l['scoring_s'] / m['wall_s']:.2f}x "
                  f"its scoring alone (asked: >= 1); largest |score difference| between them "
                  f"{l.get('max_score_diff_muscle', float('nan')):.1e} (asked: <= 1e-3)")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", type=Path, nargs="*", help="folders made by make_bench_model.py --adapter")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--limit", type=int, help="only the first N items")
    ap.add_argument("--threads", type=int, default=2,
                    help="llama.cpp's threads, muscle's RAYON_NUM_THREADS and the peak's (the loop uses 2)")
    ap.add_argument("--batch", type=int, default=8, help="muscle's batch_size and the loop's batch")
    ap.add_argument("--bin", type=Path, default=REPO / "target/release/muscle")
    ap.add_argument("--workload", choices=["plain", "fewshot", "both"], default="both")
    ap.add_argument("--engines", default="muscle,loop,llama.cpp")
    ap.add_argument("--llama-share", choices=["seqs", "rewind"], default="seqs",
                    help="prompt sharing in llama.cpp: all choices as sequences of one decode, or one by one")
    ap.add_argument("--llama-cpp", type=Path, default=VENV / "src/llama.cpp",
                    help="vendor/llama.cpp of llama-cpp-python's sdist (convert_hf_to_gguf.py)")
    ap.add_argument("--peak-n", type=int, default=4096)
    ap.add_argument("--child", choices=["llama.cpp", "peak", "merge", "convert"])
    ap.add_argument("--gguf-old", type=Path)
    ap.add_argument("--gguf-new", type=Path)
    ap.add_argument("--outdir", type=Path)
    ap.add_argument("--requests", type=Path, help="llama.cpp child: the token ids, as the parent wrote them")
    a = ap.parse_args()
    real_shapes.LIMIT = a.limit
    if a.child:
        a.data = a.data[0] if a.data else None
        if a.child == "llama.cpp":
            print(json.dumps(child_llamacpp(a)))
        elif a.child == "peak":
            print(json.dumps(child_peak(a)))
        else:
            (child_merge if a.child == "merge" else child_convert)(a)
        return
    if not a.data:
        ap.error("give at least one DATA folder")
    quiet_env()  # offline, quiet transformers for the tokenization here
    os.environ["RAYON_NUM_THREADS"] = str(a.threads)  # muscle's compute pool (candle's thread count)
    workloads = ["plain", "fewshot"] if a.workload == "both" else [a.workload]
    peak = json.loads(run_child(["--child", "peak", "--threads", str(a.threads), "--peak-n", str(a.peak_n)],
                                dict(os.environ)).strip().splitlines()[-1])
    print(f"CPU peak: {peak['gflops']:.1f} GFLOP/s (torch.mm {a.peak_n}^2 f32, {a.threads} threads, "
          f"best of 5)", file=sys.stderr)
    all_runs, infos, n_items = [], [], {}
    for data in a.data:
        ggufs = ensure_ggufs(data, a.llama_cpp) if "llama.cpp" in a.engines.split(",") else None
        sizes = model_sizes(data / "model")
        data_runs, data_infos = [], []
        for workload in workloads:
            info, runs = bench_workload(a, data, workload, ggufs, sizes)
            n_items[str(data), workload] = info["items"]
            data_infos.append(dict(info, **sizes))
            data_runs += runs
        (data / "llamacpp-bench.json").write_text(json.dumps(
            {"peak": peak, "threads": a.threads, "batch": a.batch, "llama_share": a.llama_share,
             "limit": a.limit, "rounds": a.rounds, "workloads": data_infos,
             "runs": [{k: v for k, v in r.items() if k != "scores"} for r in data_runs]},
            indent=1))
        all_runs += data_runs
        infos += data_infos
    print_table(all_runs, peak, n_items)


if __name__ == "__main__":
    main()

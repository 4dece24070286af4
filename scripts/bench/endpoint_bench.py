#!/usr/bin/env python3
"""Endpoint sides against the engine: whole `muscle eval` processes whose two sides are a model
served by an OpenAI-compatible server, against the same job on muscle's own engine on the same
weights (issue 24, item 7). See BENCHMARKS.md, "Endpoint sides".

    V=~/.cache/muscle/endpoint-venv/bin/python          # made by scripts/endpoints/install.sh
    $V scripts/bench/endpoint_bench.py prepare [--work /tmp/muscle-endpoint-bench]
    $V scripts/bench/endpoint_bench.py measure [--work ...] [--reps 3] [--gen-prompts 16]
        [--new-tokens 32] [--mc-items 10] [--in-flight 1,2,4] [--per-request 1,8]
        [--bin target/release/muscle] [--only gen,mc]

prepare (not timed): make_bench_model.py WORK --shape smollm2-135m (random weights in SmolLM2-135M's
    configuration, 538 MB f32, its byte-level BPE tokenizer with Qwen2's split regex), then
    llama.cpp's own convert_hf_to_gguf.py (the copy install.sh keeps in $VENV/src/llama.cpp) to
    WORK/model-f32.gguf through scripts/endpoints/convert_fixture_gguf.py, told that this
    tokenizer's probe hash is Qwen2's pre-tokenizer exactly as it is told for the fixture (after
    the same check that tokenizer.json has Qwen2's normalizer and split regex). The converter
    writes `tokenizer.ggml.add_bos_token = false` for every Llama with a 49,152-token vocabulary
    (its rule for SmolLM/Granite), so the served model adds no BOS; every job below therefore runs
    with `options.add_bos: false`, and the GGUF's tokenization of a few strings is checked to be
    transformers' without special tokens.

measure (one command; prints MEASURING before the first timed process): starts
  llama-cpp-python's server   on WORK/model-f32.gguf as tests/fixtures/endpoint/reference.json's
                              `llama_cpp_server.command` starts it (f32 KV cache, --logits_all true,
                              seed 0), but with --n_threads 2 --n_threads_batch 2 and --n_ctx 512;
  the vLLM wire stand-in      scripts/reference/endpoint_server.py --model WORK/model --threads 2
                              (transformers, float32; OMP_WAIT_POLICY=PASSIVE as the other benches'
                              torch peers),
sends each one completion to warm it, and then runs, REPS times, every variant as its own
`muscle eval SPEC --out REPORT --instances ROWS` process (MUSCLE_MODEL_DIR=WORK, MUSCLE_DATA_DIR a
fresh temporary folder, MUSCLE_ENDPOINT_HOSTS the two servers), in a fixed order on odd
repetitions and reversed on even ones. Both sides of a spec are the same kind, so each time is
one kind's:

  gen engine        old = new = {"model": "model"}: generation, greedy, N prompts x T new tokens;
  gen llama.cpp k   old = new = the llama.cpp server, prompt_format "text",
                    extra_body {"repeat_penalty": 1.0}, one prompt per request, max_in_flight k;
  mc engine         old = new = {"model": "model"}: multiple choice, M items (4 choices each);
  mc stand-in p/k   old = new = the stand-in, token ids, prompts_per_request p, max_in_flight k.

Every job: options {"add_bos": false} and otherwise the defaults (batch_size 16, one worker, one
shard); generation with no stop strings. For each process the script records the wall time, the
muscle process's CPU time and peak RSS (wait4), the servers' CPU time over the run
(/proc/PID/stat), the POST /v1/completions lines in the server's log over the run (the
submission's probe requests included), and the 1-minute load average before and after.
Generated tokens: llama.cpp's usage.completion_tokens for the job's prompts, asked once more after
the timed runs (and checked to be the same answers), times two sides; the same count is used for
the engine's job, whose outputs are checked to be equal. items/s = dataset rows / whole-process
seconds (each row done by both sides).
Agreement: every served run's outputs (generation) or picks and scores (multiple choice) against
the first engine run's, both sides.

The defaults (16 prompts x 32 tokens, 10 items, 3 repetitions of 11 variants) take ~11 minutes on
2 vCPUs: the stand-in scores ~5 choice prompts a second (each choice is its own full forward
pass, head at every position) and llama.cpp generates ~35 tokens a second one prompt at a time,
so 150 MC items would take ~4 minutes per stand-in process.

Prints Markdown tables (per run, then median and min-max per variant) and writes
WORK/endpoint-bench.json.
"""

import argparse
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve()
VENV = Path(os.environ.get("MUSCLE_ENDPOINT_VENV", Path.home() / ".cache/muscle/endpoint-venv"))
SERVED_NAME = "bench"
N_CTX = 512


# --------------------------------------------------------------------------- prepare


def prepare(a):
    work: Path = a.work
    py = str(VENV / "bin/python")
    if not (work / "model" / "model.safetensors").exists():
        run([py, str(REPO / "scripts/bench/make_bench_model.py"), str(work), "--shape", "smollm2-135m",
             "--items", "200", "--prompts", "32"])
    gguf = work / "model-f32.gguf"
    if not gguf.exists():
        run([py, str(HERE), "convert", "--work", str(work)])
    print(f"prepared {work}: model/ ({size(work / 'model/model.safetensors')}), {gguf.name} ({size(gguf)})")


def convert(a):
    """Child of prepare, in the endpoint venv: convert_fixture_gguf.py with this tokenizer's hash."""
    os.environ.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    sys.path.insert(0, str(REPO / "scripts/endpoints"))
    import convert_fixture_gguf as cf
    from hashlib import sha256

    llama_src = VENV / "src/llama.cpp"
    model = (a.work / "model").resolve()
    if not cf.qwen2_like(model):
        sys.exit(f"{model}: tokenizer.json is not Qwen2's normalizer + split regex; qwen2 would be wrong")
    sys.path[:0] = [str(llama_src), str(llama_src / "gguf-py")]
    import conversion.base as base
    from transformers import AutoTokenizer

    chktxt = cf.probe_text(base.TextModel.get_vocab_base_pre)
    cf.FIXTURE_CHKHSH = sha256(str(AutoTokenizer.from_pretrained(model).encode(chktxt)).encode()).hexdigest()
    print(f"bench tokenizer probe hash {cf.FIXTURE_CHKHSH[:12]}...: labelled qwen2 like the fixture's",
          flush=True)

    def check(model_dir, gguf_path):
        import llama_cpp

        hf = AutoTokenizer.from_pretrained(model_dir)
        llm = llama_cpp.Llama(model_path=str(gguf_path), n_ctx=64, vocab_only=True, verbose=False)
        for s in cf.CHECK_STRINGS:
            want = hf.encode(s, add_special_tokens=False)
            got = llm.tokenize(s.encode(), add_bos=True, special=False)  # as the server tokenizes
            if want != got:
                sys.exit(f"GGUF tokenization differs on {s!r}:\n  hf   {want}\n  gguf {got}")
        print(f"GGUF tokenizes {len(cf.CHECK_STRINGS)} probe strings as transformers without special "
              "tokens (the GGUF adds no BOS: jobs run with add_bos false)", flush=True)

    cf.check_tokenization = check
    sys.argv = ["convert_fixture_gguf.py", "--llama-cpp", str(llama_src), "--model", str(model),
                "--outfile", str(a.work / "model-f32.gguf.tmp"), "--outtype", "f32"]
    cf.main()
    (a.work / "model-f32.gguf.tmp").rename(a.work / "model-f32.gguf")


def run(cmd):
    print("+ " + " ".join(cmd), file=sys.stderr, flush=True)
    subprocess.run(cmd, check=True, cwd=REPO)


def size(p: Path) -> str:
    return f"{p.stat().st_size / 1e6:.0f} MB"


# --------------------------------------------------------------------------- servers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, name, cmd, port, log: Path, env=None):
        self.name, self.port, self.log = name, port, log
        self.proc = subprocess.Popen(cmd, stdout=open(log, "w"), stderr=subprocess.STDOUT, cwd=REPO,
                                     env=env or os.environ.copy())
        t = time.perf_counter()
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/models", timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if self.proc.poll() is not None:
                sys.exit(f"{name} exited:\n{log.read_text()[-3000:]}")
            if time.perf_counter() - t > 180:
                self.stop()
                sys.exit(f"{name} did not answer within 180 s:\n{log.read_text()[-3000:]}")
            time.sleep(0.3)
        print(f"{name} answers at {self.url} after {time.perf_counter() - t:.1f} s", file=sys.stderr)

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}/v1"

    def cpu_s(self) -> float:
        """user + system seconds of the server process (all its threads)."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def log_size(self) -> int:
        return self.log.stat().st_size

    def posts_since(self, offset: int) -> int:
        with open(self.log, "rb") as f:
            f.seek(offset)
            return sum(1 for line in f if b'"POST /v1/completions' in line)

    def complete(self, prompt, max_tokens, **extra):
        """Greedy completion of a text prompt: (text, usage.completion_tokens)."""
        body = json.dumps({"model": SERVED_NAME, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0,
                           **extra}).encode()
        req = urllib.request.Request(f"{self.url}/completions", data=body,
                                     headers={"content-type": "application/json"})
        with urllib.request.urlopen(req, timeout=300) as r:
            answer = json.load(r)
        return answer["choices"][0]["text"], answer["usage"]["completion_tokens"]

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def start_servers(work: Path, logs: Path):
    py = str(VENV / "bin/python")
    port = free_port()
    llama = Server("llama-cpp-python", [
        py, "-m", "llama_cpp.server", "--model", str(work / "model-f32.gguf"), "--model_alias", SERVED_NAME,
        "--n_ctx", str(N_CTX), "--logits_all", "true", "--seed", "0", "--chat_format", "chatml",
        "--type_k", "0", "--type_v", "0", "--n_threads", "2", "--n_threads_batch", "2",
        "--host", "127.0.0.1", "--port", str(port)], port, logs / "llama-cpp-server.log")
    port = free_port()
    env = dict(os.environ, OMP_WAIT_POLICY=os.environ.get("OMP_WAIT_POLICY", "PASSIVE"))
    standin = Server("vLLM wire stand-in", [
        py, str(REPO / "scripts/reference/endpoint_server.py"), "--model", str(work / "model"),
        "--served-model-name", SERVED_NAME, "--threads", "2", "--host", "127.0.0.1", "--port", str(port)],
        port, logs / "standin-server.log", env)
    return llama, standin


# --------------------------------------------------------------------------- jobs


def jsonl(path: Path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def variants(a, work: Path, run_dir: Path, llama: Server, standin: Server):
    """(name, kind, server or None, spec) in the order of an odd repetition."""
    gen_rows = [json.loads(x) for x in (work / "gen.jsonl").read_text().splitlines()][:a.gen_prompts]
    mc_rows = [json.loads(x) for x in (work / "mc.jsonl").read_text().splitlines()][:a.mc_items]
    if len(gen_rows) < a.gen_prompts or len(mc_rows) < a.mc_items:
        sys.exit(f"{work} has {len(gen_rows)} prompts and {len(mc_rows)} items")
    jsonl(run_dir / "gen.jsonl", [{"id": f"g{i}", "prompt": r["prompt"], "target": "-"}
                                  for i, r in enumerate(gen_rows)])
    jsonl(run_dir / "mc.jsonl", [{"id": f"m{i}", "prompt": r["prompt"], "choices": r["choices"],
                                  "answer": r["gold"]} for i, r in enumerate(mc_rows)])
    gen_task = {"type": "generation", "max_new_tokens": a.new_tokens}
    options = {"add_bos": False}
    engine = {"model": "model"}

    def spec(side, dataset, task):
        return {"old": side, "new": side, "dataset": {"path": str(run_dir / dataset)}, "task": task,
                "options": options}

    def served(server, **extra):
        return {"endpoint": {"url": server.url, "model": SERVED_NAME, "tokenizer": "model", **extra}}

    out = []
    if "gen" in a.only:
        out.append(("gen engine", "gen", None, spec(engine, "gen.jsonl", gen_task)))
        for k in a.in_flight:
            side = served(llama, max_in_flight=k, prompt_format="text", extra_body={"repeat_penalty": 1.0})
            out.append((f"gen llama.cpp f{k}", "gen", llama, spec(side, "gen.jsonl", gen_task)))
    if "mc" in a.only:
        out.append(("mc engine", "mc", None, spec(engine, "mc.jsonl", {"type": "multiple_choice"})))
        for p in a.per_request:
            for k in a.in_flight:
                side = served(standin, max_in_flight=k, prompts_per_request=p)
                out.append((f"mc stand-in p{p} f{k}", "mc", standin,
                            spec(side, "mc.jsonl", {"type": "multiple_choice"})))
    return out


def loadavg() -> float:
    return float(open("/proc/loadavg").read().split()[0])


def muscle_eval(a, name, spec, run_dir: Path, servers, env):
    tag = re.sub(r"[^a-z0-9]+", "-", name)
    spec_path = run_dir / f"{tag}.json"
    spec_path.write_text(json.dumps(spec, indent=1))
    rows_path = run_dir / f"{tag}.instances.jsonl"
    data_dir = tempfile.mkdtemp(dir=run_dir, prefix="data-")
    cpu0 = {s.name: s.cpu_s() for s in servers}
    logs0 = {s.name: s.log_size() for s in servers}
    load0 = loadavg()
    t = time.perf_counter()
    log = run_dir / f"{tag}.log"
    with open(log, "wb") as f:
        p = subprocess.Popen([str(a.bin), "eval", str(spec_path), "--out", str(run_dir / f"{tag}.report.json"),
                              "--instances", str(rows_path)],
                             stdout=f, stderr=f, cwd=REPO, env=dict(env, MUSCLE_DATA_DIR=data_dir))
        _, status, usage = os.wait4(p.pid, 0)  # its own CPU time and peak RSS
    wall = time.perf_counter() - t
    p.returncode = code = os.waitstatus_to_exitcode(status)
    if code != 0:
        sys.exit(f"muscle eval {spec_path} exited {code}:\n{log.read_text()[-4000:]}")
    rows = sorted((json.loads(x) for x in rows_path.read_text().splitlines() if x.strip()),
                  key=lambda r: r["index"])
    return {
        "wall_s": wall,
        "muscle_cpu_s": usage.ru_utime + usage.ru_stime,
        "muscle_peak_rss_mib": usage.ru_maxrss / 1024,
        "server_cpu_s": {s.name: s.cpu_s() - cpu0[s.name] for s in servers},
        "posts": {s.name: s.posts_since(logs0[s.name]) for s in servers},
        "load_before": load0,
        "load_after": loadavg(),
        "rows": rows,
    }


# --------------------------------------------------------------------------- measure


def measure(a):
    work: Path = a.work.resolve()
    if not (work / "model-f32.gguf").exists():
        sys.exit(f"{work} is not prepared: run `{HERE.name} prepare --work {work}` first")
    if not a.bin.exists():
        sys.exit(f"{a.bin} is missing: build it with `cargo build --release`")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=REPO).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                           text=True, cwd=REPO).stdout.strip()
    binary = {"path": str(a.bin), "commit": commit, "tracked_changes": dirty.splitlines(),
              "mtime": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(a.bin.stat().st_mtime))}
    machine = {
        "cpu": next((l.split(":", 1)[1].strip() for l in subprocess.run(
            ["lscpu"], capture_output=True, text=True).stdout.splitlines() if l.startswith("Model name")), "?"),
        "nproc": os.cpu_count(),
        "mem_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "date": time.strftime("%Y-%m-%d"),
    }
    with tempfile.TemporaryDirectory(prefix="endpoint-bench-") as tmp:
        run_dir = Path(tmp)
        llama, standin = start_servers(work, run_dir)
        try:
            servers = (llama, standin)
            jobs = variants(a, work, run_dir, llama, standin)
            env = dict(os.environ, MUSCLE_MODEL_DIR=str(work), RUST_LOG="warn",
                       MUSCLE_ENDPOINT_HOSTS=",".join(f"127.0.0.1:{s.port}" for s in servers))
            warm_prompt = json.loads((work / "mc.jsonl").read_text().splitlines()[-1])["prompt"]  # in no job
            for s in servers:
                s.complete(warm_prompt, 4)
            print(f"machine: {machine}\nbinary: {binary}\n"
                  f"jobs: {a.gen_prompts} generation prompts x {a.new_tokens} new tokens, {a.mc_items} MC items "
                  f"(both sides each), {a.reps} repetitions of {len(jobs)} variants", flush=True)
            print("MEASURING", flush=True)
            t0 = time.perf_counter()
            runs = []
            for rep in range(a.reps):
                order = jobs if rep % 2 == 0 else jobs[::-1]
                for name, kind, server, spec in order:
                    r = muscle_eval(a, name, spec, run_dir, servers, env)
                    r.update(variant=name, kind=kind, rep=rep + 1,
                             server=server.name if server else None)
                    runs.append(r)
                    posts = r["posts"][server.name] if server else 0
                    print(f"rep {rep + 1} {name}: {r['wall_s']:.2f} s, {posts} POSTs, "
                          f"load {r['load_before']:.2f} -> {r['load_after']:.2f}", file=sys.stderr, flush=True)
            print(f"MEASURED in {time.perf_counter() - t0:.0f} s", flush=True)
            # Generated tokens, counted by llama.cpp: its answers to the job's prompts, asked once more.
            counts = None
            if "gen" in a.only:
                prompts = [json.loads(x)["prompt"] for x in (run_dir / "gen.jsonl").read_text().splitlines()]
                counts = [llama.complete(p, a.new_tokens, repeat_penalty=1.0) for p in prompts]
        finally:
            for s in (llama, standin):
                s.stop()
    summarize(a, work, runs, counts, machine, binary)


def summarize(a, work, runs, counts, machine, binary):
    def outputs(r):
        return [(row["old"].get("output") or "", row["new"].get("output") or "") for row in r["rows"]]

    def scores(r):
        return [(row["old"]["scores"], row["new"]["scores"]) for row in r["rows"]]

    (work / "endpoint-bench-runs.json").write_text(json.dumps(runs))  # raw, in case what follows fails
    ref = {kind: next(r for r in runs if r["kind"] == kind and r["server"] is None)
           for kind in {r["kind"] for r in runs}}
    for r in runs:
        n = len(r["rows"])
        r["items"] = n
        if r["kind"] == "gen":
            mine, base = outputs(r), outputs(ref["gen"])
            pairs = [(x, y) for m, b in zip(mine, base) for x, y in zip(m, b)]
            r["equal"] = sum(x == y for x, y in pairs)
            r["equal_without_fffd"] = sum(x.replace("\ufffd", "") == y.replace("\ufffd", "") for x, y in pairs)
            r["compared"] = len(pairs)
            r["generated_tokens"] = 2 * sum(n for _, n in counts)  # both sides
        else:
            mine, base = scores(r), scores(ref["mc"])
            argmax = lambda v: max(range(len(v)), key=lambda j: (v[j], -j))  # noqa: E731
            pairs = [(x, y) for m, b in zip(mine, base) for x, y in zip(m, b)]
            r["equal"] = sum(argmax(x) == argmax(y) for x, y in pairs)
            r["compared"] = len(pairs)
            r["max_score_diff"] = max(abs(p - q) for x, y in pairs for p, q in zip(x, y))
    if counts:
        engine_outputs = [old for old, _ in outputs(ref["gen"])]
        same = sum(text == out for (text, _), out in zip(counts, engine_outputs))
        print(f"\nllama.cpp asked again for the {len(counts)} prompts: {sum(n for _, n in counts)} tokens "
              f"generated (usage.completion_tokens; at most {a.new_tokens} each: "
              f"{sorted(n for _, n in counts)}), {same} of {len(counts)} answers equal to the engine's outputs")
    for r in runs:
        del r["rows"]

    print("\n| rep | variant | whole process | muscle CPU | server CPU | POSTs | load before -> after "
          "| equal to the engine |")
    print("|---|---|---|---|---|---|---|---|")
    for r in runs:
        server_cpu = f"{r['server_cpu_s'][r['server']]:.1f} s" if r["server"] else "-"
        posts = r["posts"][r["server"]] if r["server"] else "-"
        agree = f"{r['equal']}/{r['compared']}"
        if r["kind"] == "mc":
            agree += f", max diff {r['max_score_diff']:.1e}"
        print(f"| {r['rep']} | {r['variant']} | {r['wall_s']:.2f} s | {r['muscle_cpu_s']:.1f} s | {server_cpu} "
              f"| {posts} | {r['load_before']:.2f} -> {r['load_after']:.2f} | {agree} |")

    names = list(dict.fromkeys(r["variant"] for r in runs))
    summary = []
    for name in names:
        rs = [r for r in runs if r["variant"] == name]
        walls = [r["wall_s"] for r in rs]
        med = statistics.median(walls)
        first = rs[0]
        s = {"variant": name, "kind": first["kind"], "median_s": med, "min_s": min(walls), "max_s": max(walls),
             "spread_pct": 100 * (max(walls) - min(walls)) / med, "items": first["items"],
             "muscle_cpu_s": statistics.median(r["muscle_cpu_s"] for r in rs),
             "peak_rss_mib": max(r["muscle_peak_rss_mib"] for r in rs),
             "equal": [r["equal"] for r in rs], "compared": first["compared"]}
        if first["server"]:
            s["posts"] = statistics.median(r["posts"][first["server"]] for r in rs)
            s["requests_per_s"] = s["posts"] / med
            s["server_cpu_s"] = statistics.median(r["server_cpu_s"][first["server"]] for r in rs)
        if first["kind"] == "gen":
            s["generated_tokens"] = statistics.median(r["generated_tokens"] for r in rs)
            s["tokens_per_s"] = s["generated_tokens"] / med
            s["equal_without_fffd"] = [r["equal_without_fffd"] for r in rs]
        else:
            s["max_score_diff"] = max(r["max_score_diff"] for r in rs)
        s["items_per_s"] = s["items"] / med
        summary.append(s)
    engine = {s["kind"]: s for s in summary if s["variant"].endswith("engine")}
    print("\n| variant | median (min-max, spread) | items/s | requests/s | generated tokens/s "
          "| served s / engine s | muscle CPU | server CPU | peak RSS | equal to the engine |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for s in summary:
        ratio = f"{s['median_s'] / engine[s['kind']]['median_s']:.2f}x" if s["kind"] in engine else "-"
        if s["variant"].endswith("engine"):
            ratio = "1.00x"
        reqs = f"{s['requests_per_s']:.2f} ({s['posts']:.0f})" if "posts" in s else "-"
        toks = f"{s['tokens_per_s']:.0f}" if "tokens_per_s" in s else "-"
        server_cpu = f"{s['server_cpu_s']:.1f} s" if "server_cpu_s" in s else "-"
        agree = ", ".join(f"{e}" for e in s["equal"]) + f" of {s['compared']}"
        if "max_score_diff" in s:
            agree += f"; max diff {s['max_score_diff']:.1e}"
        elif s["equal_without_fffd"] != s["equal"]:
            agree += f" (without U+FFFD: {', '.join(map(str, s['equal_without_fffd']))})"
        print(f"| {s['variant']} | {s['median_s']:.2f} s ({s['min_s']:.2f}-{s['max_s']:.2f}, "
              f"{s['spread_pct']:.0f}%) | {s['items_per_s']:.2f} | {reqs} | {toks} | {ratio} "
              f"| {s['muscle_cpu_s']:.1f} s | {server_cpu} | {s['peak_rss_mib']:.0f} MiB | {agree} |")
    (work / "endpoint-bench.json").write_text(json.dumps(
        {"machine": machine, "binary": binary, "args": {k: str(v) for k, v in vars(a).items()},
         "runs": runs, "summary": summary}, indent=1))
    print(f"\nwrote {work / 'endpoint-bench.json'}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("step", choices=["prepare", "measure", "convert"])
    ap.add_argument("--work", type=Path, default=Path("/tmp/muscle-endpoint-bench"))
    ap.add_argument("--bin", type=Path, default=REPO / "target/release/muscle")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--gen-prompts", type=int, default=16)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--mc-items", type=int, default=10)
    ap.add_argument("--in-flight", default="1,2,4")
    ap.add_argument("--per-request", default="1,8")
    ap.add_argument("--only", default="gen,mc")
    a = ap.parse_args()
    a.in_flight = [int(x) for x in a.in_flight.split(",")]
    a.per_request = [int(x) for x in a.per_request.split(",")]
    a.only = a.only.split(",")
    a.bin = a.bin.resolve()
    {"prepare": prepare, "measure": measure, "convert": convert}[a.step](a)


if __name__ == "__main__":
    main()

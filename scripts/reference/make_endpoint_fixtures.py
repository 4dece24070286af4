#!/usr/bin/env python3
"""Record reference numbers and real server responses for muscle's endpoint sides (models served by
an OpenAI-compatible inference server), against the tiny fixture model
tests/fixtures/engine/models/llama-gqa.

Everything is local, offline and deterministic (greedy decoding, one CPU thread per server). The
script starts and stops the servers itself:

  * llama-cpp-python's server (`python -m llama_cpp.server`, the real one, version pinned in
    scripts/endpoints/requirements.txt) on the fixture converted to GGUF f32 by
    scripts/endpoints/install.sh, with an f32 KV cache so that its numbers agree with transformers'
    to ~1e-5;
  * scripts/reference/endpoint_server.py, this repository's stand-in for vLLM's wire format
    (transformers, float32), since vLLM itself does not run on CPU-only machines.

How to run (from the repository root):

    bash scripts/endpoints/install.sh                      # once: venv + GGUF, ~10-20 minutes
    ~/.cache/muscle/endpoint-venv/bin/python scripts/reference/make_endpoint_fixtures.py

It rewrites tests/fixtures/endpoint/ from scratch:

  mc.jsonl, gen.jsonl   the datasets (muscle's format), fabricated below
  reference.json        lm-eval's HFLM loglikelihoods of mc.jsonl; lm-eval's local-completions and
                        local-chat-completions against the llama-cpp-python server (generations of
                        gen.jsonl, loglikelihoods of mc.jsonl, the exact request options sent);
                        the same against the vLLM-wire reference server
  responses/            JSON bodies of /v1/completions, /v1/chat/completions and /v1/models
                        responses, captured or built from a server's documented format;
                        responses/index.json says for each what was sent and what a correct client
                        must read from it; responses/README.md is the same as a table
  README.md             versions, commands, what the files hold
"""

import hashlib
import importlib.metadata
import json
import os
import platform
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "tests/fixtures/endpoint"
MODEL_REL = "tests/fixtures/engine/models/llama-gqa"
MODEL = ROOT / MODEL_REL
VENV = Path(os.environ.get("MUSCLE_ENDPOINT_VENV", Path.home() / ".cache/muscle/endpoint-venv"))
SERVED = "llama-gqa"
N_CTX = 256
MAX_GEN_TOKS = 16
UNTIL = ["\n\n"]
CHAT_FORMAT = "chatml"
LLAMA_CPP_SEED = 0
TOL = 1e-4

OFFLINE = {
    "HF_DATASETS_OFFLINE": "1",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "TOKENIZERS_PARALLELISM": "false",
}
os.environ.update(OFFLINE)

WORDS = ("cat dog sun moon tree river stone bread milk rain snow wind fire ship road lamp "
         "door book song bird fish hill lake star cloud").split()


# ---------------------------------------------------------------- datasets

def make_datasets(tok):
    rng = random.Random(20261206)
    mc = []
    templates = [
        "Question: What goes with the {s}?\nAnswer:",
        "Q: Which word is closest to {s}?\nA:",
        "The {s} is next to the",
    ]
    for i in range(12):
        subject = rng.choice(WORDS)
        k = 3 if i % 3 else 4
        words = rng.sample([w for w in WORDS if w != subject], k)
        # some longer choices, so per-token and summed scores differ in ranking
        choices = [w if j % 2 == 0 else f"the {w} of the {rng.choice(WORDS)}" for j, w in enumerate(words)]
        mc.append({"id": f"mc{i}", "prompt": templates[i % len(templates)].format(s=subject),
                   "choices": choices, "answer": rng.randrange(k)})
    gen = []
    for i in range(8):
        a, b = rng.randrange(2, 20), rng.randrange(2, 20)
        if i % 2 == 0:
            gen.append({"id": f"gen{i}", "prompt": f"Tom has {a} apples and gets {b} more. How many?\nAnswer:",
                        "target": str(a + b)})
        else:
            w = rng.sample(WORDS, 2)
            gen.append({"id": f"gen{i}", "prompt": f"Write about the {w[0]} and the {w[1]}.\n",
                        "target": f"The {w[0]} and the {w[1]}."})
    for row in mc + gen:
        n = len(tok(row["prompt"])["input_ids"])
        assert n < 60, (row, n)
    return mc, gen


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def pairs(mc):
    """(row id, choice index, context, continuation) in lm-eval's order for multiple choice."""
    return [(row["id"], j, row["prompt"], " " + c) for row in mc for j, c in enumerate(row["choices"])]


# ---------------------------------------------------------------- transformers reference

class HF:
    def __init__(self):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        torch.set_num_threads(1)
        self.torch = torch
        self.tok = AutoTokenizer.from_pretrained(MODEL)
        self.model = AutoModelForCausalLM.from_pretrained(MODEL, dtype=torch.float32).eval()

    def encode_pair(self, context, continuation):
        """lm-eval's _encode_pair for a causal model with the tokenizer's default (BOS added)."""
        whole = self.tok(context + continuation)["input_ids"]
        ctx = self.tok(context)["input_ids"]
        assert whole[: len(ctx)] == ctx, (context, continuation)
        return ctx, whole[len(ctx):]

    def rows(self, ids):
        with self.torch.no_grad():
            logits = self.model(self.torch.tensor([ids])).logits[0].float()
            return self.torch.log_softmax(logits, dim=-1)

    def score(self, ids, ctxlen):
        rows = self.rows(ids)
        per = [float(rows[i - 1, ids[i]]) for i in range(ctxlen, len(ids))]
        greedy = all(int(rows[i - 1].argmax()) == ids[i] for i in range(ctxlen, len(ids)))
        return per, greedy, rows


# ---------------------------------------------------------------- HTTP and processes

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method, url, body=None, headers=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"content-type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            raw, status, hdrs = r.read(), r.status, r.headers
    except urllib.error.HTTPError as e:
        raw, status, hdrs = e.read(), e.code, e.headers
    try:
        parsed = json.loads(raw) if raw else None
    except ValueError:
        parsed = raw.decode(errors="replace")
    # Headers that vary per request are kept with a placeholder value, so the files are stable.
    volatile = {"openai-processing-ms": "(milliseconds, varies)", "x-request-id": "(32 hex digits, varies)"}
    keep = {k.lower(): volatile.get(k.lower(), v) for k, v in hdrs.items()
            if k.lower() in ("server", "content-type", "x-powered-by", "openai-processing-ms", "x-request-id")}
    return status, keep, parsed


class Server:
    def __init__(self, name, cmd, ready_url=None, wait_line=False):
        self.name, self.cmd = name, cmd
        self.log = tempfile.NamedTemporaryFile(prefix=f"{name}-", suffix=".log", delete=False)
        t0 = time.monotonic()
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE if wait_line else self.log,
                                     stderr=self.log, env={**os.environ, **OFFLINE}, text=True)
        if wait_line:
            line = self.proc.stdout.readline()
            if not line.startswith("listening on "):
                self.stop()
                raise SystemExit(f"{name}: unexpected first line {line!r}; log {self.log.name}")
            self.url = line.split("listening on ", 1)[1].strip()
        else:
            self.url = ready_url
        deadline = time.monotonic() + 120
        while True:
            if self.proc.poll() is not None:
                raise SystemExit(f"{name} exited with {self.proc.returncode}; log {self.log.name}")
            try:
                if http("GET", self.url + "/models")[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise SystemExit(f"{name} did not answer in 120 s; log {self.log.name}")
            time.sleep(0.05)
        self.startup_s = time.monotonic() - t0
        print(f"  {name} up at {self.url} in {self.startup_s:.2f} s", flush=True)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def llama_cpp_cmd(gguf, port, extra=()):
    return [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--model_alias", SERVED,
            "--n_ctx", str(N_CTX), "--logits_all", "true", "--seed", str(LLAMA_CPP_SEED),
            "--chat_format", CHAT_FORMAT, "--type_k", "0", "--type_v", "0",
            "--n_threads", "1", "--n_threads_batch", "1", "--host", "127.0.0.1", "--port", str(port), *extra]


def display_cmd(cmd):
    out = []
    for i, c in enumerate(cmd):
        c = str(c)
        if i and str(cmd[i - 1]) == "--port" and c != "0":
            c = "PORT"
        if c == sys.executable:
            c = "python"
        c = c.replace(str(VENV), "$VENV").replace(str(ROOT) + "/", "")
        out.append(c)
    return out


# ---------------------------------------------------------------- lm-eval

class PayloadLog:
    """Records what lm-eval's API models POST (they call requests.post)."""

    def __init__(self):
        import requests
        self.requests, self.sent = requests, []
        self.orig = requests.post

    def __enter__(self):
        def post(url, json=None, **kw):
            self.sent.append({"url": url, "json": json})
            return self.orig(url, json=json, **kw)
        self.requests.post = post
        return self

    def __exit__(self, *exc):
        self.requests.post = self.orig


def lmeval_generate(model_cls, model_args, prompts, chat=False):
    from lm_eval.api.instance import Instance
    from lm_eval.models.api_models import JsonChatStr
    gen_kwargs = {"until": list(UNTIL), "max_gen_toks": MAX_GEN_TOKS, "do_sample": False, "temperature": 0}
    reqs = []
    for i, p in enumerate(prompts):
        arg = JsonChatStr(json.dumps([{"role": "user", "content": p}], ensure_ascii=False)) if chat else p
        reqs.append(Instance(request_type="generate_until", doc={}, arguments=(arg, dict(gen_kwargs)), idx=i))
    with PayloadLog() as log:
        try:
            lm = model_cls(**model_args)
            out = lm.generate_until(reqs, disable_tqdm=True)
            return {"gen_kwargs": gen_kwargs, "outputs": out, "sent": log.sent, "error": None,
                    "model_args": model_args}
        except Exception as e:  # noqa: BLE001 - recorded: the point is what happens
            return {"gen_kwargs": gen_kwargs, "outputs": None, "sent": log.sent, "model_args": model_args,
                    "error": f"{type(e).__name__}: {e}"}


def lmeval_loglikelihood(model_cls, model_args, mc_pairs):
    from lm_eval.api.instance import Instance
    reqs = [Instance(request_type="loglikelihood", doc={}, arguments=(ctx, cont), idx=i)
            for i, (_, _, ctx, cont) in enumerate(mc_pairs)]
    with PayloadLog() as log:
        try:
            lm = model_cls(**model_args)
            out = lm.loglikelihood(reqs, disable_tqdm=True)
            return {"results": [list(x) for x in out], "sent": log.sent, "error": None, "model_args": model_args}
        except Exception as e:  # noqa: BLE001
            return {"results": None, "sent": log.sent, "model_args": model_args,
                    "error": f"{type(e).__name__}: {e}"[:2000]}


def request_options(sent):
    """The options of the first request lm-eval sent, without the prompt/messages."""
    if not sent:
        return None
    body = dict(sent[0]["json"])
    body.pop("prompt", None)
    body.pop("messages", None)
    return body


def first_prompt_shape(sent):
    if not sent:
        return None
    p = sent[0]["json"].get("prompt", sent[0]["json"].get("messages"))
    if isinstance(p, str):
        return "string"
    if isinstance(p, list) and p and isinstance(p[0], dict):
        return "messages"
    if isinstance(p, list) and p and isinstance(p[0], list):
        return "list of lists of token ids" if isinstance(p[0][0], int) else "list"
    if isinstance(p, list) and p and isinstance(p[0], int):
        return "list of token ids"
    if isinstance(p, list) and p and isinstance(p[0], str):
        return "list of strings"
    return repr(type(p))


# ---------------------------------------------------------------- responses/

def normalize(body, name):
    """Fixed id/created so the files are stable; everything else as the server sent it."""
    if not isinstance(body, dict):
        return body
    # Paths inside the venv (in llama-cpp-python's error tracebacks) as $VENV, for stable files.
    body = json.loads(json.dumps(body).replace(str(VENV), "$VENV"))
    if "id" in body:
        body["id"] = f"{'chatcmpl' if body.get('object') == 'chat.completion' else 'cmpl'}-fixture-{name}"
    if "created" in body:
        body["created"] = 0
    for m in body.get("data", []) if body.get("object") == "list" else []:
        if "created" in m:
            m["created"] = 0
        for p in m.get("permission", []):
            p["id"], p["created"] = "modelperm-fixture", 0
    return body


class Responses:
    def __init__(self, folder):
        self.folder = folder
        self.index = []

    def add(self, name, body, **meta):
        (self.folder / f"{name}.json").write_text(json.dumps(normalize(body, name), indent=1, ensure_ascii=False) + "\n")
        self.index.append({"file": f"{name}.json", **meta})


def example_expectation(hf, ctx_ids, cont_ids):
    ids = ctx_ids + cont_ids
    per, greedy, rows = hf.score(ids, len(ctx_ids))
    return {"prompt_token_ids": ids, "context_length": len(ctx_ids), "continuation_token_ids": cont_ids,
            "continuation_logprob": sum(per), "continuation_token_logprobs": per, "is_greedy": greedy}, rows


def bytes_to_unicode():
    """GPT-2's byte <-> printable character table (byte-level BPE)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("\xa1"), ord("\xac") + 1)) + \
        list(range(ord("\xae"), ord("\xff") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


BYTE_OF = {c: b for b, c in bytes_to_unicode().items()}


def hf_greedy_text(hf, ids, n):
    """transformers' greedy continuation, decoded as llama.cpp does (invalid UTF-8 bytes dropped)."""
    seq, out = list(ids), []
    with hf.torch.no_grad():
        for _ in range(n):
            t = int(hf.model(hf.torch.tensor([seq])).logits[0, -1].argmax())
            if t == hf.tok.eos_token_id:
                break
            out.append(t)
            seq.append(t)
    special = set(hf.tok.all_special_ids)  # control tokens (a BOS generated mid-text) render as nothing
    raw = b"".join(bytes(BYTE_OF[c] for c in hf.tok.convert_ids_to_tokens(t)) for t in out if t not in special)
    return raw.decode("utf-8", errors="ignore")


def built_sglang(hf, ids, rows, k=1):
    """SGLang's /v1/completions with echo + logprobs + max_tokens 1 for a token-id prompt, built from
    sglang/srt/entrypoints/openai/serving_completions.py (_build_completion_response,
    _prepare_echo_prompts) and utils.to_openai_style_logprobs: input_token_logprobs (the first one
    None) then output_token_logprobs; top_logprobs holds only the top-k (not the position's own
    token), the first null; text_offset is -1 everywhere ("Not supported yet"); the echoed text is
    tok.decode(prompt, skip_special_tokens=True); `model` is the request's."""
    torch = hf.torch
    g = int(rows[-1].argmax())
    seq = ids + [g]
    tokens = [hf.tok.decode([t]) for t in seq]
    token_lps = [None] + [float(rows[i - 1, seq[i]]) for i in range(1, len(seq))]
    tops = [None]
    for i in range(1, len(seq)):
        vals, idx = torch.topk(rows[i - 1], k)
        tops.append({hf.tok.decode([j]): float(v) for v, j in zip(vals.tolist(), idx.tolist())})
    text = hf.tok.decode(ids, skip_special_tokens=True) + hf.tok.decode([g], skip_special_tokens=True)
    return {
        "id": "cmpl-fixture", "object": "text_completion", "created": 0, "model": SERVED,
        "choices": [{"index": 0, "text": text,
                     "logprobs": {"text_offset": [-1] * len(seq), "token_logprobs": token_lps,
                                  "tokens": tokens, "top_logprobs": tops},
                     "finish_reason": "length", "matched_stop": None}],
        "usage": {"prompt_tokens": len(ids), "total_tokens": len(ids) + 1, "completion_tokens": 1,
                  "prompt_tokens_details": None},
        "metadata": {"weight_version": "default"},
    }


def built_openai(hf, ids, rows, k=1):
    """The OpenAI legacy Completions object (platform.openai.com API reference, "The completion
    object": choices[].logprobs {tokens, token_logprobs, top_logprobs, text_offset}; with echo the
    first token has null log-prob and null top_logprobs; top_logprobs[i] is a dict token text ->
    logprob of the `logprobs` most likely tokens plus the chosen one, up to logprobs + 1 entries)."""
    torch = hf.torch
    g = int(rows[-1].argmax())
    seq = ids + [g]
    tokens = [hf.tok.decode([t]) for t in seq]
    token_lps = [None] + [float(rows[i - 1, seq[i]]) for i in range(1, len(seq))]
    tops, offsets = [None], []
    for i in range(1, len(seq)):
        vals, idx = torch.topk(rows[i - 1], k)
        top = {hf.tok.decode([j]): float(v) for v, j in zip(vals.tolist(), idx.tolist())}
        top.setdefault(tokens[i], token_lps[i])
        tops.append(top)
    pos = 0
    for t in tokens:
        offsets.append(pos)
        pos += len(t)
    return {
        "id": "cmpl-fixture", "object": "text_completion", "created": 0, "model": SERVED,
        "system_fingerprint": "fp_fixture",
        "choices": [{"text": "".join(tokens), "index": 0,
                     "logprobs": {"tokens": tokens, "token_logprobs": token_lps, "top_logprobs": tops,
                                  "text_offset": offsets},
                     "finish_reason": "length"}],
        "usage": {"prompt_tokens": len(ids), "completion_tokens": 1, "total_tokens": len(ids) + 1},
    }


# ---------------------------------------------------------------- main

def main():
    gguf = Path(os.environ.get("MUSCLE_ENDPOINT_GGUF", VENV / "models/llama-gqa-f32.gguf"))
    if not gguf.is_file():
        raise SystemExit(f"{gguf} missing: run scripts/endpoints/install.sh first")
    t_start = time.monotonic()
    from lm_eval.models.huggingface import HFLM
    from lm_eval.models.openai_completions import LocalChatCompletion, LocalCompletionsAPI

    hf = HF()
    mc, gen = make_datasets(hf.tok)
    mc_pairs = pairs(mc)
    timings = {}

    # (a) lm-eval's HFLM, float32, default add_bos_token (the tokenizer adds BOS).
    print("HFLM loglikelihoods", flush=True)
    t0 = time.monotonic()
    hflm = lmeval_loglikelihood(HFLM, {"pretrained": str(MODEL), "dtype": "float32", "device": "cpu",
                                       "batch_size": 1}, mc_pairs)
    assert hflm["error"] is None, hflm["error"]
    timings["hflm_s"] = time.monotonic() - t0
    hflm_rows = []
    for (rid, j, ctx, cont), (ll, greedy) in zip(mc_pairs, hflm["results"]):
        ctx_ids, cont_ids = hf.encode_pair(ctx, cont)
        per, g2, _ = hf.score(ctx_ids + cont_ids, len(ctx_ids))
        assert abs(sum(per) - ll) < 1e-4 and g2 == greedy, (rid, j, ll, sum(per))
        hflm_rows.append({"id": rid, "choice": j, "context": ctx, "continuation": cont,
                          "context_ids": ctx_ids, "continuation_ids": cont_ids, "logprob": ll,
                          "is_greedy": greedy, "token_logprobs": per})
    hflm_ll = [r["logprob"] for r in hflm_rows]

    def diff_vs_hflm(results):
        if not results:
            return None
        return max(abs(a[0] - b) for a, b in zip(results, hflm_ll))
    diff_vs_hflm.hflm = hflm_ll

    shutil.rmtree(OUT, ignore_errors=True)
    (OUT / "responses").mkdir(parents=True)
    write_jsonl(OUT / "mc.jsonl", mc)
    write_jsonl(OUT / "gen.jsonl", gen)
    resp = Responses(OUT / "responses")

    # The example every logprob response file is about: mc0 with its gold answer.
    ex_id, ex_choice = mc[0]["id"], mc[0]["answer"]
    ex_ctx, ex_cont = mc[0]["prompt"], " " + mc[0]["choices"][ex_choice]
    ex_ctx_ids, ex_cont_ids = hf.encode_pair(ex_ctx, ex_cont)
    ex_ids = ex_ctx_ids + ex_cont_ids
    ex_expect, ex_rows = example_expectation(hf, ex_ctx_ids, ex_cont_ids)
    ex_greedy_next = int(ex_rows[-1].argmax())
    example = {"row": ex_id, "choice": ex_choice, "context": ex_ctx, "continuation": ex_cont, **ex_expect,
               "greedy_next_token_id": ex_greedy_next}

    reference = {
        "model": MODEL_REL,
        "served_model_name": SERVED,
        "n_ctx": N_CTX,
        "datasets": {"mc": "mc.jsonl", "gen": "gen.jsonl", "mc_delimiter": " "},
        "hflm": {
            "model": "lm_eval.models.huggingface.HFLM",
            "model_args": {"pretrained": MODEL_REL, "dtype": "float32", "device": "cpu", "batch_size": 1},
            "add_bos_token": "lm-eval default (None): the tokenizer's post-processor adds BOS",
            "pairs": hflm_rows,
        },
    }

    # (b) llama-cpp-python's server.
    print("llama-cpp-python server", flush=True)
    port = free_port()
    lc_cmd = llama_cpp_cmd(gguf, port)
    lc = Server("llama-cpp-python", lc_cmd, ready_url=f"http://127.0.0.1:{port}/v1")
    timings["llama_cpp_startup_s"] = lc.startup_s
    try:
        base = lc.url
        lc_info = {"version": importlib.metadata.version("llama_cpp_python"),
                   "command": display_cmd(lc_cmd), "gguf": display_cmd([gguf])[0],
                   "gguf_sha256": hashlib.sha256(gguf.read_bytes()).hexdigest(),
                   "chat_format": CHAT_FORMAT, "n_ctx": N_CTX, "seed": LLAMA_CPP_SEED,
                   "kv_cache_type": "f32 (--type_k 0 --type_v 0; the default f16 cache moves log-probs by ~1e-3)"}

        status, headers, body = http("GET", base + "/models")
        resp.add("llamacpp_models", body, source="captured", server=f"llama-cpp-python {lc_info['version']}",
                 endpoint="GET /v1/models", status=status, headers=headers,
                 note="id is --model_alias (without it: the --model path); owned_by 'me'; no max_model_len")

        # echo + logprobs + max_tokens 1. Token ids are refused (below), so the prompt is the text.
        ex_text = ex_ctx + ex_cont
        s, h, tokd = http("POST", base.rsplit("/v1", 1)[0] + "/extras/tokenize", {"input": ex_text})
        assert tokd["tokens"] == ex_ids, (tokd, ex_ids)
        req = {"model": SERVED, "prompt": ex_text, "max_tokens": 1, "temperature": 0, "logprobs": 1, "echo": True}
        status, headers, body = http("POST", base + "/completions", req)
        lp = body["choices"][0]["logprobs"]["token_logprobs"]
        n, c = len(ex_ids), len(ex_cont_ids)
        # The list has no entry for BOS: entry i is prompt token i + 1, then the generated token(s).
        assert len(lp) == n - 1 + body["usage"]["completion_tokens"], (len(lp), n)
        own = lp[n - 1 - c: n - 1]
        correct = sum(own)
        naive = sum(lp[len(ex_ctx_ids): -1])
        assert abs(correct - ex_expect["continuation_logprob"]) < TOL, (correct, ex_expect)
        resp.add("llamacpp_completion_echo_logprobs", body, source="captured",
                 server=f"llama-cpp-python {lc_info['version']}", endpoint="POST /v1/completions",
                 request=req, status=status, headers=headers,
                 **{**ex_expect, "continuation_logprob": correct,
                    "continuation_token_logprobs": own,
                    "hf_continuation_logprob": ex_expect["continuation_logprob"]},
                 server_tokenized_prompt=tokd["tokens"],
                 lmeval_indexing_logprob=naive,
                 read="token_logprobs has len(prompt ids) - 1 + usage.completion_tokens entries: no entry "
                      "for BOS (entry 0 is the first token after BOS, its value replaced by null), then the "
                      "generated token(s). The continuation is token_logprobs[ctxlen - 1 : len(prompt ids) - 1] "
                      "(ctxlen counting BOS); lm-eval's [ctxlen:-1] reads one position too far "
                      "(lmeval_indexing_logprob).")

        # max_tokens 1 is not one token when the greedy token is an incomplete UTF-8 sequence: the
        # server keeps generating (up to 4 tokens) until the text decodes, before it checks max_tokens.
        for r in hflm_rows:
            text = r["context"] + r["continuation"]
            req = {"model": SERVED, "prompt": text, "max_tokens": 1, "temperature": 0, "logprobs": 1, "echo": True}
            status, headers, body = http("POST", base + "/completions", req)
            if body["usage"]["completion_tokens"] > 1:
                ids = r["context_ids"] + r["continuation_ids"]
                lp = body["choices"][0]["logprobs"]["token_logprobs"]
                k, cl = body["usage"]["completion_tokens"], len(r["context_ids"])
                assert len(lp) == len(ids) - 1 + k
                own = lp[cl - 1: len(ids) - 1]
                assert abs(sum(own) - r["logprob"]) < TOL
                resp.add("llamacpp_completion_echo_logprobs_multibyte", body, source="captured",
                         server=f"llama-cpp-python {lc_info['version']}", endpoint="POST /v1/completions",
                         request=req, status=status, headers=headers, prompt_token_ids=ids, context_length=cl,
                         continuation_token_ids=r["continuation_ids"], continuation_logprob=sum(own),
                         continuation_token_logprobs=own, hf_continuation_logprob=r["logprob"],
                         is_greedy=r["is_greedy"], mc_row=r["id"], mc_choice=r["choice"],
                         completion_tokens=k, lmeval_indexing_logprob=sum(lp[cl:-1]),
                         read=f"max_tokens 1 yet usage.completion_tokens {k}: the greedy token starts a "
                              "multi-byte UTF-8 character and llama-cpp-python generates until the text "
                              "decodes, skipping its max_tokens check; so the continuation must be read "
                              "from the front, token_logprobs[ctxlen - 1 : len(prompt ids) - 1], not as "
                              "[...:-1] from the end")
                lc_info["multibyte_example"] = {"row": r["id"], "choice": r["choice"], "completion_tokens": k}
                break

        # The greedy next token: the server's own choice, then whether the echo puts it on top.
        req_g = {"model": SERVED, "prompt": ex_text, "max_tokens": 1, "temperature": 0, "logprobs": 1}
        _, _, bg = http("POST", base + "/completions", req_g)
        gtext = bg["choices"][0]["text"]
        _, _, gtok = http("POST", base.rsplit("/v1", 1)[0] + "/extras/tokenize", {"input": ex_text + gtext})
        greedy_id = gtok["tokens"][len(ex_ids)]
        assert gtok["tokens"][: len(ex_ids)] == ex_ids and greedy_id == ex_greedy_next, (gtok, ex_greedy_next)
        req_e = {"model": SERVED, "prompt": ex_text + gtext, "max_tokens": 1, "temperature": 0, "logprobs": 1,
                 "echo": True}
        _, _, be = http("POST", base + "/completions", req_e)
        L = be["choices"][0]["logprobs"]
        at_server = len(ex_ids) - 1        # BOS has no entry
        at_client = len(ex_ids)            # the position in the ids a client sent (BOS at 0)
        top_server = L["top_logprobs"][at_server]
        greedy_check = {
            "prompt_token_ids": ex_ids, "greedy_text": gtext, "greedy_token_id": greedy_id,
            "hf_greedy_token_id": ex_greedy_next,
            "echo_request": req_e,
            "entry_of_greedy_token_in_server_list": at_server,
            "server_entry": {"token": L["tokens"][at_server], "logprob": L["token_logprobs"][at_server],
                             "top_logprobs": top_server},
            "greedy_token_is_top_at_its_own_entry": max(top_server.values()) == L["token_logprobs"][at_server]
            and L["tokens"][at_server] == gtext,
            "entry_at_client_index": {"index": at_client, "token": L["tokens"][at_client],
                                      "logprob": L["token_logprobs"][at_client]},
        }
        lc_info["greedy_check"] = greedy_check

        for name, body_req, note in (
            ("llamacpp_completion_token_ids_rejected",
             {"model": SERVED, "prompt": ex_ids, "max_tokens": 1, "temperature": 0, "logprobs": 1, "echo": True},
             "prompt as a list of token ids: schema is Union[str, List[str]] -> pydantic error reported as 500"),
            ("llamacpp_completion_token_id_batch_rejected",
             {"model": SERVED, "prompt": [ex_ids, ex_ctx_ids], "max_tokens": 1, "temperature": 0, "logprobs": 1,
              "echo": True},
             "prompt as a list of lists of token ids: 500, same validation error"),
            ("llamacpp_completion_string_batch_rejected",
             {"model": SERVED, "prompt": [ex_text, ex_ctx], "max_tokens": 1, "temperature": 0},
             "prompt as a list of 2 strings: `assert len(body.prompt) <= 1` -> 500 with an empty message "
             "(a list of exactly one string is accepted)"),
        ):
            status, headers, body = http("POST", base + "/completions", body_req)
            assert status == 500, (name, status, body)
            resp.add(name, body, source="captured", server=f"llama-cpp-python {lc_info['version']}",
                     endpoint="POST /v1/completions", request=body_req, status=status, headers=headers, note=note)

        g0 = gen[0]
        req = {"model": SERVED, "prompt": g0["prompt"], "max_tokens": MAX_GEN_TOKS, "temperature": 0,
               "stop": UNTIL + ["</s>"], "seed": 1234}
        status, headers, body = http("POST", base + "/completions", req)
        resp.add("llamacpp_completion_generation", body, source="captured",
                 server=f"llama-cpp-python {lc_info['version']}", endpoint="POST /v1/completions", request=req,
                 status=status, headers=headers, prompt_token_ids=hf.tok(g0["prompt"])["input_ids"],
                 expected_text=body["choices"][0]["text"], finish_reason=body["choices"][0]["finish_reason"])
        # llama-cpp-python's server applies repeat_penalty 1.1 by default (also at temperature 0); with
        # 1.0 it is plain greedy, which must be transformers' greedy (text: invalid UTF-8 bytes dropped).
        plain = []
        for g in gen:
            ids = hf.tok(g["prompt"])["input_ids"]
            req = {"model": SERVED, "prompt": g["prompt"], "max_tokens": MAX_GEN_TOKS, "temperature": 0,
                   "repeat_penalty": 1.0}
            _, _, body = http("POST", base + "/completions", req)
            want = hf_greedy_text(hf, ids, MAX_GEN_TOKS)
            plain.append({"id": g["id"], "text": body["choices"][0]["text"], "hf_greedy_text": want,
                          "same": body["choices"][0]["text"].startswith(want) or want.startswith(body["choices"][0]["text"])})
        lc_info["plain_greedy_generations"] = {"request": {k: v for k, v in req.items() if k != "prompt"},
                                               "results": plain}
        req = {"model": SERVED, "messages": [{"role": "user", "content": g0["prompt"]}],
               "max_tokens": MAX_GEN_TOKS, "temperature": 0, "stop": UNTIL, "seed": 1234}
        status, headers, body = http("POST", base + "/chat/completions", req)
        resp.add("llamacpp_chat_completion", body, source="captured",
                 server=f"llama-cpp-python {lc_info['version']}", endpoint="POST /v1/chat/completions",
                 request=req, status=status, headers=headers, chat_format=CHAT_FORMAT,
                 expected_text=body["choices"][0]["message"]["content"])

        # lm-eval's local-completions / local-chat-completions.
        print("  lm-eval local-completions / local-chat-completions", flush=True)
        comp_args = {"model": SERVED, "base_url": base + "/completions", "tokenizer_backend": "huggingface",
                     "tokenizer": str(MODEL), "max_length": N_CTX, "max_retries": 1}
        chat_args = {"model": SERVED, "base_url": base + "/chat/completions", "max_length": N_CTX,
                     "max_retries": 1}
        prompts = [g["prompt"] for g in gen]
        t0 = time.monotonic()
        runs = {
            "generate_until_tokenized_requests_default": lmeval_generate(LocalCompletionsAPI, comp_args, prompts),
            "generate_until_tokenized_requests_false": lmeval_generate(
                LocalCompletionsAPI, {**comp_args, "tokenized_requests": False}, prompts),
            "chat_generate_until": lmeval_generate(LocalChatCompletion, chat_args, prompts, chat=True),
            "loglikelihood_tokenized_requests_default": lmeval_loglikelihood(LocalCompletionsAPI, comp_args, mc_pairs),
            "loglikelihood_tokenized_requests_false": lmeval_loglikelihood(
                LocalCompletionsAPI, {**comp_args, "tokenized_requests": False}, mc_pairs),
            "loglikelihood_tokenized_requests_false_add_bos": lmeval_loglikelihood(
                LocalCompletionsAPI, {**comp_args, "tokenized_requests": False, "add_bos_token": True}, mc_pairs),
        }
        timings["lmeval_vs_llama_cpp_s"] = time.monotonic() - t0
        lc_info["lmeval"] = summarize_lmeval(runs, gen, mc_pairs, diff_vs_hflm)
        for key in ("generate_until_tokenized_requests_false", "chat_generate_until"):
            assert runs[key]["error"] is None, (key, runs[key]["error"])
    finally:
        lc.stop()

    # The same server with BOS switched off (as GGUFs whose tokenizer adds none, e.g. Qwen2's): the
    # echoed values are then the log-probs read at each token's own position.
    port = free_port()
    nb_cmd = llama_cpp_cmd(gguf, port, ("--kv_overrides", "tokenizer.ggml.add_bos_token=bool:false"))
    nb = Server("llama-cpp-python (no BOS)", nb_cmd, ready_url=f"http://127.0.0.1:{port}/v1")
    try:
        req = {"model": SERVED, "prompt": ex_ctx + ex_cont, "max_tokens": 1, "temperature": 0, "logprobs": 1,
               "echo": True}
        status, headers, body = http("POST", nb.url + "/completions", req)
        ids_nb = ex_ids[1:]
        rows_nb = hf.rows(ids_nb)
        lp = body["choices"][0]["logprobs"]["token_logprobs"]
        own_pos = [float(rows_nb[i, ids_nb[i]]) for i in range(len(ids_nb))]
        right = [None] + [float(rows_nb[i - 1, ids_nb[i]]) for i in range(1, len(ids_nb))]
        assert len(lp) == len(ids_nb) and all(abs(a - b) < TOL for a, b in zip(lp[1:], own_pos[1:])), "no-BOS shape"
        c = len(ex_cont_ids)
        resp.add("llamacpp_completion_echo_logprobs_no_bos", body, source="captured",
                 server=f"llama-cpp-python {lc_info['version']} with --kv_overrides tokenizer.ggml.add_bos_token=bool:false",
                 endpoint="POST /v1/completions", request=req, status=status, headers=headers,
                 prompt_token_ids=ids_nb, context_length=len(ex_ctx_ids) - 1, continuation_token_ids=ex_cont_ids,
                 continuation_logprob=None,
                 correct_continuation_logprob_without_bos=sum(right[-c:]),
                 value_read_at_continuation_entries=sum(lp[-c:]),
                 read="not recoverable: entry i is log softmax(logits at position i)[token i], i.e. each token "
                      "scored by the distribution that predicts the NEXT token; the generated token has no "
                      "entry (the list is cut at len(prompt)). A client must reject this server.")
        lc_info["no_bos_command"] = display_cmd(nb_cmd)
    finally:
        nb.stop()
    reference["llama_cpp_server"] = lc_info

    # (c) the vLLM-wire reference server.
    print("reference vLLM-wire server", flush=True)
    ref_cmd = [sys.executable, "scripts/reference/endpoint_server.py", "--model", MODEL_REL,
               "--served-model-name", SERVED, "--host", "127.0.0.1", "--port", "0"]
    ref = Server("reference server", ref_cmd, wait_line=True)
    timings["reference_startup_s"] = ref.startup_s
    try:
        base = ref.url
        who = "scripts/reference/endpoint_server.py (vLLM wire format)"
        status, headers, body = http("GET", base + "/models")
        resp.add("refvllm_models", body, source="captured", server=who, endpoint="GET /v1/models",
                 status=status, headers=headers)
        req = {"model": SERVED, "prompt": ex_ids, "max_tokens": 1, "temperature": 0, "logprobs": 1, "echo": True}
        status, headers, body = http("POST", base + "/completions", req)
        lp = body["choices"][0]["logprobs"]["token_logprobs"]
        ctxlen = len(ex_ctx_ids)
        got = sum(lp[ctxlen:-1])
        assert abs(got - ex_expect["continuation_logprob"]) < TOL
        pl = body["choices"][0]["prompt_logprobs"]
        got_pl = sum(pl[i][str(ex_ids[i])]["logprob"] for i in range(ctxlen, len(ex_ids)))
        assert abs(got_pl - got) < 1e-9
        resp.add("refvllm_completion_echo_logprobs", body, source="captured", server=who,
                 endpoint="POST /v1/completions", request=req, status=status, headers=headers,
                 **{**ex_expect, "continuation_logprob": got, "continuation_token_logprobs": lp[ctxlen:-1],
                    "hf_continuation_logprob": ex_expect["continuation_logprob"]},
                 read="token_logprobs[ctxlen:-1] (one entry per prompt token, BOS first with null, then the "
                      "generated token); the same numbers are prompt_logprobs[i][str(id_i)].logprob for "
                      "i in ctxlen..len(prompt)-1")
        req = {"model": SERVED, "prompt": ex_ids, "max_tokens": 1, "temperature": 0, "prompt_logprobs": 1}
        status, headers, body = http("POST", base + "/completions", req)
        pl = body["choices"][0]["prompt_logprobs"]
        per = [pl[i][str(ex_ids[i])]["logprob"] for i in range(ctxlen, len(ex_ids))]
        assert body["choices"][0]["logprobs"] is None and abs(sum(per) - got) < 1e-9
        resp.add("refvllm_completion_prompt_logprobs", body, source="captured", server=who,
                 endpoint="POST /v1/completions", request=req, status=status, headers=headers,
                 **{**ex_expect, "continuation_logprob": sum(per), "continuation_token_logprobs": per,
                    "hf_continuation_logprob": ex_expect["continuation_logprob"]},
                 read="no echo, no logprobs: choices[0].logprobs is null; read prompt_logprobs[i][str(id_i)]"
                      ".logprob for i in ctxlen..len(prompt)-1 (rank 1 = the most likely token)")
        batch_pairs = [(mc[0]["prompt"], " " + ch) for ch in mc[0]["choices"]]
        batch = []
        for ctx, cont in batch_pairs:
            ci, co = hf.encode_pair(ctx, cont)
            e, _ = example_expectation(hf, ci, co)
            batch.append(e)
        req = {"model": SERVED, "prompt": [b["prompt_token_ids"] for b in batch], "max_tokens": 1,
               "temperature": 0, "logprobs": 1, "echo": True}
        status, headers, body = http("POST", base + "/completions", req)
        for b, ch in zip(batch, body["choices"]):
            tl = ch["logprobs"]["token_logprobs"]
            assert abs(sum(tl[b["context_length"]:-1]) - b["continuation_logprob"]) < TOL
            b["hf_continuation_logprob"] = b["continuation_logprob"]
            b["continuation_token_logprobs"] = tl[b["context_length"]:-1]
            b["continuation_logprob"] = sum(b["continuation_token_logprobs"])
        resp.add("refvllm_completion_batch_echo", body, source="captured", server=who,
                 endpoint="POST /v1/completions", request=req, status=status, headers=headers, choices=batch,
                 read="one choice per prompt, choices[i].index == i; each read as the single echo response")
        req = {"model": SERVED, "prompt": hf.tok(gen[0]["prompt"])["input_ids"], "max_tokens": MAX_GEN_TOKS,
               "temperature": 0, "stop": UNTIL + ["</s>"]}
        status, headers, body = http("POST", base + "/completions", req)
        resp.add("refvllm_completion_generation", body, source="captured", server=who,
                 endpoint="POST /v1/completions", request=req, status=status, headers=headers,
                 prompt_token_ids=req["prompt"], expected_text=body["choices"][0]["text"],
                 finish_reason=body["choices"][0]["finish_reason"])
        for name, body_req, want in (
            ("refvllm_error_unknown_model", {"model": "nope", "prompt": ex_ids, "max_tokens": 1}, 404),
            ("refvllm_error_too_long", {"model": SERVED, "prompt": ex_ids, "max_tokens": N_CTX}, 400),
        ):
            status, headers, body = http("POST", base + "/completions", body_req)
            assert status == want, (name, status)
            resp.add(name, body, source="captured", server=who, endpoint="POST /v1/completions",
                     request=body_req, status=status, headers=headers)

        # Every pair through the reference server, and lm-eval's local-completions against it.
        ref_ll = []
        for r in hflm_rows:
            ids = r["context_ids"] + r["continuation_ids"]
            _, _, b = http("POST", base + "/completions", {"model": SERVED, "prompt": ids, "max_tokens": 1,
                                                           "temperature": 0, "logprobs": 1, "echo": True})
            tl = b["choices"][0]["logprobs"]["token_logprobs"]
            ref_ll.append(sum(tl[len(r["context_ids"]):-1]))
        ref_diff = max(abs(a - b) for a, b in zip(ref_ll, hflm_ll))
        assert ref_diff < TOL, ref_diff
        ref_args = {"model": SERVED, "base_url": base + "/completions", "tokenizer_backend": "huggingface",
                    "tokenizer": str(MODEL), "max_length": N_CTX, "max_retries": 1}
        t0 = time.monotonic()
        runs = {
            "generate_until_tokenized_requests_default": lmeval_generate(LocalCompletionsAPI, ref_args, prompts),
            "generate_until_add_bos": lmeval_generate(LocalCompletionsAPI, {**ref_args, "add_bos_token": True},
                                                      prompts),
            "loglikelihood_tokenized_requests_default": lmeval_loglikelihood(LocalCompletionsAPI, ref_args, mc_pairs),
            "loglikelihood_add_bos": lmeval_loglikelihood(LocalCompletionsAPI, {**ref_args, "add_bos_token": True},
                                                          mc_pairs),
        }
        timings["lmeval_vs_reference_s"] = time.monotonic() - t0
        reference["reference_server"] = {
            "command": display_cmd(ref_cmd),
            "what": "a stand-in for vLLM's wire format computing with transformers in float32 (not vLLM)",
            "echo_logprobs_loglikelihoods": ref_ll,
            "max_abs_diff_vs_hflm": ref_diff,
            "lmeval": summarize_lmeval(runs, gen, mc_pairs, diff_vs_hflm),
        }
        assert reference["reference_server"]["lmeval"]["loglikelihood_add_bos"]["max_abs_diff_vs_hflm"] < TOL
    finally:
        ref.stop()

    # (iii) built from documentation / source.
    resp.add("sglang_doc_completion_echo_logprobs", built_sglang(hf, ex_ids, ex_rows), source="built",
             server="SGLang (format from sgl-project/sglang python/sglang/srt/entrypoints/openai/"
                    "serving_completions.py and utils.to_openai_style_logprobs; numbers from transformers)",
             endpoint="POST /v1/completions",
             request={"model": SERVED, "prompt": ex_ids, "max_tokens": 1, "temperature": 0, "logprobs": 1,
                      "echo": True},
             **ex_expect,
             read="token_logprobs[ctxlen:-1] as for vLLM (every prompt token has an entry, BOS first with "
                  "null); top_logprobs hold only the k most likely tokens, not necessarily the position's "
                  "own token; text_offset is all -1; the echoed text drops special tokens")
    resp.add("openai_doc_completion_echo_logprobs", built_openai(hf, ex_ids, ex_rows), source="built",
             server="OpenAI legacy Completions object (platform.openai.com API reference; numbers from "
                    "transformers; system_fingerprint invented)",
             endpoint="POST /v1/completions",
             request={"model": SERVED, "prompt": ex_ids, "max_tokens": 1, "temperature": 0, "logprobs": 1,
                      "echo": True},
             **ex_expect,
             read="token_logprobs[ctxlen:-1]; top_logprobs is a list of dicts {token text: logprob} (the "
                  "first null), up to logprobs + 1 entries: the top ones and the position's own token")

    reference["example"] = example
    reference["request_options"] = {
        "multiple_choice": {"max_tokens": 1, "temperature": 0, "echo": True, "logprobs": 1,
                            "seed": 1234, "note": "as lm-eval's local-completions sends for loglikelihood"},
        "generation_completions": request_options(
            reference["reference_server"]["lmeval"]["generate_until_add_bos"]["sent_sample"]),
        "generation_chat": request_options(lc_info["lmeval"]["chat_generate_until"]["sent_sample"]),
        "max_gen_toks": MAX_GEN_TOKS, "until": UNTIL, "chat_format": CHAT_FORMAT,
    }
    versions = {p: importlib.metadata.version(p) for p in
                ("lm_eval", "transformers", "torch", "tokenizers", "llama_cpp_python", "gguf", "numpy")}
    reference["versions"] = {**versions, "python": platform.python_version()}
    (OUT / "reference.json").write_text(json.dumps(reference, indent=1, ensure_ascii=False) + "\n")
    (OUT / "responses/index.json").write_text(json.dumps(resp.index, indent=1, ensure_ascii=False) + "\n")
    write_responses_readme(resp.index)
    write_readme(versions, reference)
    total = sum(p.stat().st_size for p in OUT.rglob("*") if p.is_file())
    timings["total_s"] = time.monotonic() - t_start
    print(f"wrote {OUT.relative_to(ROOT)}: {sum(1 for p in OUT.rglob('*') if p.is_file())} files, "
          f"{total / 1024:.0f} KiB", flush=True)
    print("timings: " + ", ".join(f"{k} {v:.1f}" for k, v in timings.items()), flush=True)


def summarize_lmeval(runs, gen, mc_pairs, diff_vs_hflm):
    out = {}
    for key, r in runs.items():
        args = {k: (MODEL_REL if k in ("tokenizer", "pretrained") else
                    "http://127.0.0.1:PORT/v1/" + v.split("/v1/")[-1] if k == "base_url" else v)
                for k, v in r["model_args"].items()}
        item = {"model_args": args, "error": r["error"] and r["error"].replace(r["model_args"].get("base_url", "@@"), "http://127.0.0.1:PORT/v1/" + r["model_args"].get("base_url", "/v1/").split("/v1/")[-1]),
                "prompt_sent_as": first_prompt_shape(r["sent"]),
                "requests_sent": len(r["sent"]),
                "sent_sample": r["sent"][:1] and [{"url": "/v1/" + r["sent"][0]["url"].split("/v1/")[-1],
                                                   "json": r["sent"][0]["json"]}]}
        if "gen_kwargs" in r:
            item["gen_kwargs"] = r["gen_kwargs"]
            item["request_options"] = request_options(r["sent"])
            if r["outputs"] is not None:
                item["outputs"] = [{"id": g["id"], "prompt": g["prompt"], "output": o}
                                   for g, o in zip(gen, r["outputs"])]
        else:
            item["request_options"] = request_options(r["sent"])
            if r["results"] is not None:
                item["results"] = [{"id": rid, "choice": j, "logprob": ll, "is_greedy": g}
                                   for (rid, j, _, _), (ll, g) in zip(mc_pairs, r["results"])]
                item["max_abs_diff_vs_hflm"] = diff_vs_hflm(r["results"])
                item["pairs_off_by_more_than_1e-3"] = [
                    f"{rid}/{j}" for (rid, j, _, _), (ll, _), h in zip(mc_pairs, r["results"], diff_vs_hflm.hflm)
                    if abs(ll - h) > 1e-3]
        out[key] = item
    return out


def write_responses_readme(index):
    lines = ["# Inference-server responses for the endpoint client tests", "",
             "Written by `scripts/reference/make_endpoint_fixtures.py` (do not edit by hand). Each",
             "`*.json` is one response body. `index.json` holds, per file, the request sent, the HTTP",
             "status and headers, the prompt token ids, the context length (tokens before the",
             "continuation, BOS included), the continuation's token ids and the summed continuation",
             "log-prob a correct client must read (`continuation_logprob`), with `read` saying how.",
             "`id` and `created` (and /v1/models' `created` and permission ids) were replaced by fixed",
             "values and the venv's path by `$VENV`, so the files are stable; everything else is as the",
             "server sent it.",
             "",
             "- **captured**: a real HTTP response of the server named, started by the generator.",
             "  llama-cpp-python's server is the real one (pinned in scripts/endpoints/requirements.txt)",
             "  on the fixture converted to GGUF f32 (f32 KV cache, one thread).",
             "  `refvllm_*` come from scripts/reference/endpoint_server.py, this repository's stand-in",
             "  for vLLM's wire format (its docstring says which vLLM source files it follows); vLLM",
             "  itself cannot run on these CPU machines.",
             "- **built**: written by the generator in the format the named server's source or",
             "  documentation gives, with the fixture model's real numbers (transformers, float32).",
             "",
             "| file | source | endpoint | status | prompt ids | ctx len | continuation ids | continuation log-prob |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for e in index:
        ids = e.get("prompt_token_ids")
        lines.append("| {} | {} | {} | {} | {} | {} | {} | {} |".format(
            e["file"], e["source"], e["endpoint"], e.get("status", "-"),
            "-" if ids is None else f"{len(ids)} ids",
            e.get("context_length", "-"), e.get("continuation_token_ids", "-"),
            "-" if e.get("continuation_logprob") is None else f"{e['continuation_logprob']:.6f}"))
    lines += ["", "## How to read each", ""]
    for e in index:
        lines.append(f"- `{e['file']}` ({e['server']}): " + (e.get("read") or e.get("note") or
                     "as the table says").rstrip(".") + ".")
    (OUT / "responses/README.md").write_text("\n".join(lines) + "\n")


def write_readme(versions, ref):
    lc = ref["llama_cpp_server"]
    lm = lc["lmeval"]
    g = lc["greedy_check"]
    nob = lm["loglikelihood_tokenized_requests_false"]
    wb = lm["loglikelihood_tokenized_requests_false_add_bos"]
    plain = lc["plain_greedy_generations"]["results"]
    (OUT / "README.md").write_text(f"""# Endpoint sides: reference numbers and server responses

Written by `scripts/reference/make_endpoint_fixtures.py` (do not edit by hand) with
{", ".join(f"{k} {v}" for k, v in versions.items())}, Python {platform.python_version()}, CPU, float32.
Setup: `bash scripts/endpoints/install.sh` (a venv outside the repo, the GGUF conversion), then
`$VENV/bin/python scripts/reference/make_endpoint_fixtures.py` (starts and stops the servers itself).

- `mc.jsonl` ({len(ref['hflm']['pairs'])} (prompt, " " + choice) pairs), `gen.jsonl`: muscle's dataset format.
- `reference.json`:
  - `hflm`: lm-eval's `HFLM(pretrained={MODEL_REL}, dtype=float32)` loglikelihood and is_greedy of
    every pair, with the token ids lm-eval scored (BOS first) and the per-token log-probs.
  - `llama_cpp_server`: `{" ".join(lc['command'])}` (the `--model` is the GGUF
    written by install.sh; `--type_k 0 --type_v 0` is an f32 KV cache). `lmeval` holds lm-eval's
    `local-completions` / `local-chat-completions` runs against it, each with the exact request lm-eval
    sent (`sent_sample`), its options (`request_options`), the outputs or loglikelihoods, and `error`
    where lm-eval failed:
    - lm-eval's default `tokenized_requests=True` sends token ids, which this server refuses with
      HTTP 500 (its schema takes a string or a list of strings): `error` of the `*_default` runs.
    - `tokenized_requests=False` sends text. Generations: recorded. Loglikelihoods (lm-eval's default
      add_bos_token=False): lm-eval's ctxlen has no BOS and the server leaves its own BOS out of the
      echo, so the indices agree, except where the greedy next token starts a multi-byte UTF-8
      character: the server then generates up to 4 tokens despite `max_tokens: 1` and lm-eval's
      `[ctxlen:-1]` adds the extra ones ({", ".join(nob['pairs_off_by_more_than_1e-3']) or "none"}; max
      |diff| vs HFLM {nob['max_abs_diff_vs_hflm']:.3f}). With `add_bos_token=True` every pair is wrong
      (max |diff| {wb['max_abs_diff_vs_hflm']:.3f}): the decoded text starts with `<s>`, the server adds
      a second BOS, and lm-eval counts a BOS the echo does not list.
    - These generations use the server's defaults, among them `repeat_penalty` 1.1 (applied at
      temperature 0 too). `plain_greedy_generations` sends `repeat_penalty: 1.0` and matches
      transformers' greedy text (invalid UTF-8 bytes dropped) for {sum(p['same'] for p in plain)} of
      {len(plain)} prompts.
    - `greedy_check`: the server's greedy next token after the example prompt is id
      {g['greedy_token_id']} ({g['greedy_text']!r}); echoing prompt + that token, its entry (index
      {g['entry_of_greedy_token_in_server_list']} of the server's list, BOS having no entry) has it on
      top: {g['greedy_token_is_top_at_its_own_entry']}; at the client's index
      {g['entry_at_client_index']['index']} (BOS counted) stands {g['entry_at_client_index']['token']!r}.
  - `reference_server`: the same against scripts/reference/endpoint_server.py (vLLM wire format,
    token-id prompts): its echo loglikelihoods agree with HFLM to
    {ref['reference_server']['max_abs_diff_vs_hflm']:.1e}; lm-eval's local-completions agrees with
    HFLM when given `add_bos_token=True` (lm-eval's API default False scores without BOS).
  - `request_options`: what to send for generation so a client reproduces these runs (lm-eval adds
    the tokenizer's EOS string `</s>` to `until` for local-completions; none for chat).
  - `example`: the pair every log-prob response file in `responses/` is about.
- `responses/`: see responses/README.md.
""")


if __name__ == "__main__":
    main()

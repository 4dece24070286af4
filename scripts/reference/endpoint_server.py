#!/usr/bin/env python3
"""A small stand-in for vLLM's OpenAI-compatible server, for muscle's endpoint tests on CPU.

It is NOT vLLM. vLLM does not run on these CPU-only machines, so this server computes with
transformers (float32, model.eval(), torch.no_grad(), log_softmax in float32, CPU) on a model
folder and answers in vLLM's wire format, so that muscle's client can be tested against the shape
a vLLM server sends, with numbers that can be checked against lm-evaluation-harness's HFLM.

    python scripts/reference/endpoint_server.py --model tests/fixtures/engine/models/llama-gqa \
        --served-model-name llama-gqa --host 127.0.0.1 --port 0 [--api-key KEY]

It prints exactly one line on stdout, `listening on http://127.0.0.1:PORT/v1` (PORT is the port it
got when --port 0 asked for a free one), flushes, and serves until killed. Every response carries
the header `server: muscle-reference-vllm-wire/1` (vLLM itself sends uvicorn's `server: uvicorn`).

What the format is based on: vLLM's own source, read from the vllm-project/vllm repository
(vllm/entrypoints/openai/completion/protocol.py: CompletionRequest, CompletionLogProbs,
CompletionResponseChoice, CompletionResponse; completion/serving.py:
request_output_to_completion_response and _create_completion_logprobs;
vllm/tokenizers/detokenizer_utils.py: convert_ids_list_to_tokens; models/protocol.py: ModelCard).
The rules followed from there:

  * `prompt`: a list of token ids, a list of lists of token ids (a batch: one choice per prompt,
    `index` in order), a string or a list of strings. Strings are tokenized with the model's
    tokenizer, special tokens added (`add_special_tokens`, default true: BOS for llama-gqa);
    token ids are used exactly as sent (no BOS added).
  * `max_tokens` (default 16; null means 16), `temperature` (0 = greedy; > 0 samples with `seed`,
    `top_p`, `top_k`, which is not vLLM's sampler bit for bit), `stop` (a string or a list: the
    text is cut before the first stop string found in the generated text, finish_reason "stop" and
    stop_reason the stop string; the tokens stay in `logprobs`, as in vLLM), `stop_token_ids`,
    `ignore_eos`, `include_stop_str_in_output`, `return_token_ids`, `n` (1 only), `stream` (false
    only), `echo`, `logprobs` (int), `prompt_logprobs` (int, -1 = whole vocabulary).
  * The end-of-sequence token ends generation with finish_reason "stop", stop_reason null; it is
    in the tokens and log-probabilities but not in `text` (skip_special_tokens).
  * `echo`: `text` is the prompt text (a token-id prompt is decoded, special tokens kept) followed
    by the generated text; `logprobs.token_logprobs` covers every prompt token, the first one
    null, then the generated tokens. With `echo` vLLM asks the engine for prompt log-probabilities
    (`prompt_logprobs` defaults to `logprobs`), so the choice's `prompt_logprobs` is filled too.
    `echo` with `max_tokens: 0` returns the prompt alone (vLLM generates one token internally and
    counts it in `usage.completion_tokens`).
  * `logprobs.top_logprobs[i]`: a dict `{decoded token: logprob}` holding the position's own token
    first, then the `logprobs` most likely tokens (so 1 or `logprobs + 1` entries; tokens that
    decode to the same string collapse), null where token_logprobs is null. `tokens[i]` is
    `tokenizer.decode([id])`; `text_offset` accumulates their lengths from 0. Log-probs are
    clamped at -9999.0 there.
  * `prompt_logprobs` (choice level): `[null, {"<id>": {"logprob", "rank", "decoded_token"}, ...}]`,
    one dict per prompt token after the first, the prompt token first, then the top-k with ranks
    1..k; the prompt token's rank is the number of vocabulary entries whose log-prob is >= its own
    (vLLM's batched_count_greater_than), so 1 when it is the most likely.
  * Response: `id` "cmpl-...", `object` "text_completion", `created`, `model` (the served name),
    `choices` [{`index`, `text`, `logprobs`, `finish_reason`, `stop_reason`, `token_ids`,
    `prompt_logprobs`, `prompt_token_ids`}], `service_tier` null, `system_fingerprint` null,
    `usage` {`prompt_tokens`, `total_tokens`, `completion_tokens`, `prompt_tokens_details`},
    `kv_transfer_params` null: every field written out, null when unset, as vLLM's
    `JSONResponse(content=response.model_dump())` does. Fields of the newest vLLM only
    (routed_experts, ec_transfer_params, metrics) are left out.
  * `GET /v1/models`: `{"object": "list", "data": [ModelCard]}` with `id` (the served name),
    `object` "model", `created`, `owned_by` "vllm", `root` (the model folder), `parent` null,
    `max_model_len`, `permission` [one ModelPermission]. `GET /health`: 200, empty body.
  * Errors: `{"error": {"message", "type", "param", "code"}}` with 400 (BadRequestError) for a bad
    request, a prompt or prompt + max_tokens longer than max_model_len, or a token id outside the
    vocabulary; 404 (NotFoundError) for a `model` that is not the served name. With --api-key (or
    VLLM_API_KEY), /v1/* needs `Authorization: Bearer KEY`, else 401 `{"error": "Unauthorized"}`.

Requests are answered one at a time (a lock around the model); batches are run prompt by prompt.
"""

import argparse
import json
import os
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

SERVER_HEADER = "muscle-reference-vllm-wire/1"
LOGPROB_FLOOR = -9999.0


class ApiError(Exception):
    def __init__(self, status, message, kind="BadRequestError", param=None):
        super().__init__(message)
        self.status, self.message, self.kind, self.param = status, message, kind, param

    def body(self):
        return {"error": {"message": self.message, "type": self.kind, "param": self.param,
                          "code": self.status}}


def bad(message, param=None):
    return ApiError(400, message, "BadRequestError", param)


class Engine:
    def __init__(self, model_dir, served_name, max_model_len=None, threads=1):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        torch.set_num_threads(threads)
        self.torch = torch
        self.model_dir = str(model_dir)
        self.served_name = served_name
        self.tok = AutoTokenizer.from_pretrained(model_dir)
        self.model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
        cfg = self.model.config
        self.vocab = cfg.vocab_size
        self.max_model_len = int(max_model_len or getattr(cfg, "max_position_embeddings", None)
                                 or self.tok.model_max_length)
        eos = self.model.generation_config.eos_token_id
        if eos is None:
            eos = self.tok.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        self.lock = threading.Lock()
        self.created = int(time.time())

    # -- vLLM's detokenization of single tokens (convert_ids_list_to_tokens) --
    def piece(self, token_id):
        return self.tok.decode([token_id])

    def logprob_dict(self, row, token_id, k):
        """vLLM's per-position dict: the position's own token first, then the top k, rank-ordered."""
        torch = self.torch
        own = float(row[token_id])
        # vLLM's rank: how many vocabulary entries have a log-prob >= the token's (1 = the top).
        out = {token_id: {"logprob": own, "rank": int((row >= row[token_id]).sum()),
                          "decoded_token": self.piece(token_id)}}
        if k:
            k = self.vocab if k == -1 else min(k, self.vocab)
            vals, ids = torch.topk(row, k)
            # A top-k entry for the same token replaces the value, keeping the first position.
            for rank, (v, i) in enumerate(zip(vals.tolist(), ids.tolist()), start=1):
                out[i] = {"logprob": float(v), "rank": rank, "decoded_token": self.piece(i)}
        return out

    def run(self, ids, max_new, params, prompt_k):
        """One prompt: its log-prob rows, the generated tokens and their rows."""
        torch = self.torch
        with self.lock, torch.no_grad():
            out = self.model(torch.tensor([ids]), use_cache=True)
            rows = torch.log_softmax(out.logits[0].float(), dim=-1)
            past = out.past_key_values
            prompt_lp = None
            if prompt_k is not None:
                prompt_lp = [None] + [self.logprob_dict(rows[i - 1], ids[i], prompt_k)
                                      for i in range(1, len(ids))]
            gen, gen_rows = [], []
            finish, stop_reason, text, by_token = "length", None, "", False
            row = rows[-1]
            gen_rng = None
            if params["temperature"] > 0:
                gen_rng = torch.Generator().manual_seed(int(params["seed"] or 0))
            for step in range(max_new):
                tid = self.choose(row, params, gen_rng)
                gen.append(tid)
                gen_rows.append(row)
                if tid in params["stop_token_ids"] or (tid in self.eos_ids and not params["ignore_eos"]):
                    finish, stop_reason, by_token = "stop", (None if tid in self.eos_ids else tid), True
                    break
                text = self.tok.decode(gen, skip_special_tokens=params["skip_special_tokens"])
                hit = first_stop(text, params["stop"])
                if hit is not None:
                    at, s = hit
                    text = text[: at + len(s)] if params["include_stop_str_in_output"] else text[:at]
                    finish, stop_reason = "stop", s
                    break
                if step + 1 == max_new:
                    break
                out = self.model(torch.tensor([[tid]]), past_key_values=past, use_cache=True)
                past = out.past_key_values
                row = torch.log_softmax(out.logits[0, -1].float(), dim=-1)
            if by_token:  # the ending token is not part of the text
                text = self.tok.decode(gen[:-1], skip_special_tokens=params["skip_special_tokens"])
            return prompt_lp, gen, gen_rows, text, finish, stop_reason

    def choose(self, row, params, rng):
        torch = self.torch
        if params["temperature"] <= 0:
            return int(torch.argmax(row))
        logits = row / params["temperature"]
        if params["top_k"] and params["top_k"] > 0:
            kth = torch.topk(logits, min(params["top_k"], self.vocab)).values[-1]
            logits = torch.where(logits < kth, torch.full_like(logits, float("-inf")), logits)
        probs = torch.softmax(logits, dim=-1)
        if params["top_p"] is not None and params["top_p"] < 1.0:
            sp, si = torch.sort(probs, descending=True)
            keep = torch.cumsum(sp, 0) - sp < params["top_p"]
            probs = torch.zeros_like(probs).scatter(0, si[keep], sp[keep])
            probs = probs / probs.sum()
        return int(torch.multinomial(probs, 1, generator=rng))

    # -- /v1/completions --
    def completions(self, body):
        if not isinstance(body, dict):
            raise bad("The request body must be a JSON object.")
        model = body.get("model")
        if model is not None and model != self.served_name:
            raise ApiError(404, f"The model `{model}` does not exist.", "NotFoundError", "model")
        if body.get("stream"):
            raise bad("stream is not supported by this reference server", "stream")
        if body.get("n", 1) not in (1, None):
            raise bad("n > 1 is not supported by this reference server", "n")
        prompts = self.prompts(body.get("prompt"), body.get("add_special_tokens", True))
        max_tokens = body.get("max_tokens")
        max_tokens = 16 if max_tokens is None else max_tokens
        if not isinstance(max_tokens, int) or max_tokens < 0:
            raise bad("max_tokens must be a non-negative integer.", "max_tokens")
        echo = bool(body.get("echo"))
        logprobs = int_or_none(body, "logprobs")
        prompt_logprobs = int_or_none(body, "prompt_logprobs")
        if prompt_logprobs is None and echo:
            prompt_logprobs = logprobs          # vLLM: CompletionRequest.to_sampling_params
        if max_tokens == 0 and not echo:
            raise bad("max_tokens must be at least 1, got 0.", "max_tokens")
        stop = body.get("stop") or []
        stop = [stop] if isinstance(stop, str) else list(stop)
        temperature = body.get("temperature")
        params = {
            "temperature": 1.0 if temperature is None else float(temperature),
            "top_p": body.get("top_p"), "top_k": body.get("top_k"), "seed": body.get("seed"),
            "stop": stop, "stop_token_ids": set(body.get("stop_token_ids") or []),
            "ignore_eos": bool(body.get("ignore_eos")),
            "include_stop_str_in_output": bool(body.get("include_stop_str_in_output")),
            "skip_special_tokens": body.get("skip_special_tokens", True),
        }
        return_token_ids = bool(body.get("return_token_ids"))

        choices, n_prompt, n_gen = [], 0, 0
        for text_prompt, ids in prompts:
            gen_budget = max(max_tokens, 1)
            if len(ids) + gen_budget > self.max_model_len:
                raise bad(f"This model's maximum context length is {self.max_model_len} tokens. "
                          f"However, you requested {len(ids) + gen_budget} tokens ({len(ids)} in the "
                          f"messages, {gen_budget} in the completion). Please reduce the length of "
                          "the messages or completion.", "max_tokens")
            prompt_lp, gen, gen_rows, gen_text, finish, stop_reason = self.run(
                ids, gen_budget, params, prompt_logprobs)
            out_lp = None
            if logprobs is not None:
                out_lp = [self.logprob_dict(r, t, logprobs) for r, t in zip(gen_rows, gen)]
            prompt_text = text_prompt if text_prompt is not None else self.tok.decode(ids)
            if echo and max_tokens == 0:
                token_ids, seq_lp, text = ids, prompt_lp, prompt_text
            elif echo:
                token_ids = ids + gen
                seq_lp = None if logprobs is None else prompt_lp + out_lp
                text = prompt_text + gen_text
            else:
                token_ids, seq_lp, text = gen, out_lp, gen_text
            choices.append({
                "index": len(choices),
                "text": text,
                "logprobs": None if logprobs is None else self.completion_logprobs(token_ids, seq_lp, logprobs),
                "finish_reason": finish,
                "stop_reason": stop_reason,
                "token_ids": gen if return_token_ids else None,
                "prompt_logprobs": None if prompt_lp is None else [
                    None if d is None else {str(k): v for k, v in d.items()} for d in prompt_lp],
                "prompt_token_ids": ids if return_token_ids else None,
            })
            n_prompt += len(ids)
            n_gen += len(gen)
        return {
            "id": f"cmpl-{uuid.uuid4().hex}",
            "object": "text_completion",
            "created": int(time.time()),
            "model": self.served_name,
            "choices": choices,
            "service_tier": None,
            "system_fingerprint": None,
            "usage": {"prompt_tokens": n_prompt, "total_tokens": n_prompt + n_gen,
                      "completion_tokens": n_gen, "prompt_tokens_details": None},
            "kv_transfer_params": None,
        }

    def completion_logprobs(self, token_ids, steps, k):
        """vLLM's OpenAIServingCompletion._create_completion_logprobs."""
        offsets, token_lps, tokens, tops = [], [], [], []
        last_len = 0
        for tid, step in zip(token_ids, steps):
            if step is None:
                token = self.piece(tid)
                tokens.append(token)
                token_lps.append(None)
                tops.append(None)
            else:
                token = step[tid]["decoded_token"]
                tokens.append(token)
                token_lps.append(max(step[tid]["logprob"], LOGPROB_FLOOR))
                top = {}
                for i, lp in enumerate(step.values()):
                    if k >= i:
                        top[lp["decoded_token"]] = max(lp["logprob"], LOGPROB_FLOOR)
                tops.append(top)
            offsets.append(0 if not offsets else offsets[-1] + last_len)
            last_len = len(token)
        return {"text_offset": offsets, "token_logprobs": token_lps, "tokens": tokens, "top_logprobs": tops}

    def prompts(self, prompt, add_special_tokens):
        """[(text or None, token ids)] for vLLM's four prompt shapes."""
        def ids_ok(ids):
            if not ids:
                raise bad("Either prompt or prompt_embeds must be provided and non-empty.", "prompt")
            for t in ids:
                if isinstance(t, bool) or not isinstance(t, int) or t < 0:
                    raise bad("prompt token ids must be non-negative integers", "prompt")
                if t >= self.vocab:
                    raise bad(f"Token id {t} is out of vocabulary", "prompt")
            return list(ids)

        def encode(s):
            if not s:
                raise bad("Either prompt or prompt_embeds must be provided and non-empty.", "prompt")
            return s, self.tok(s, add_special_tokens=add_special_tokens)["input_ids"]

        if isinstance(prompt, str):
            return [encode(prompt)]
        if isinstance(prompt, list) and prompt:
            if all(isinstance(p, int) and not isinstance(p, bool) for p in prompt):
                return [(None, ids_ok(prompt))]
            if all(isinstance(p, list) for p in prompt):
                return [(None, ids_ok(p)) for p in prompt]
            if all(isinstance(p, str) for p in prompt):
                return [encode(p) for p in prompt]
        raise bad("prompt must be a string, a list of strings, a list of token ids or a list of "
                  "lists of token ids", "prompt")

    def models(self):
        return {"object": "list", "data": [{
            "id": self.served_name, "object": "model", "created": self.created, "owned_by": "vllm",
            "root": self.model_dir, "parent": None, "max_model_len": self.max_model_len,
            "permission": [{
                "id": f"modelperm-{uuid.uuid4().hex}", "object": "model_permission",
                "created": self.created, "allow_create_engine": False, "allow_sampling": True,
                "allow_logprobs": True, "allow_search_indices": False, "allow_view": True,
                "allow_fine_tuning": False, "organization": "*", "group": None, "is_blocking": False,
            }],
        }]}


def int_or_none(body, name):
    v = body.get(name)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or (v < 0 and v != -1):
        raise bad(f"`{name}` must be a positive value or -1.", name)
    return v


def first_stop(text, stops):
    best = None
    for s in stops:
        if not s:
            continue
        at = text.find(s)
        if at != -1 and (best is None or at < best[0]):
            best = (at, s)
    return best


def make_handler(engine, api_key):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = SERVER_HEADER
        sys_version = ""

        def version_string(self):
            return SERVER_HEADER

        def log_message(self, fmt, *args):
            sys.stderr.write("%s - %s\n" % (self.address_string(), fmt % args))

        def send_json(self, status, obj):
            data = b"" if obj is None else json.dumps(obj).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def authorized(self):
            if not api_key or not self.path.startswith("/v1"):
                return True
            if self.headers.get("Authorization", "") == f"Bearer {api_key}":
                return True
            self.send_json(401, {"error": "Unauthorized"})
            return False

        def do_GET(self):
            path = self.path.split("?")[0].rstrip("/")
            if path == "/health":
                return self.send_json(200, None)
            if not self.authorized():
                return
            if path == "/v1/models":
                return self.send_json(200, engine.models())
            self.send_json(404, {"detail": "Not Found"})

        def do_POST(self):
            length = int(self.headers.get("content-length") or 0)
            raw = self.rfile.read(length) if length else b""
            if not self.authorized():
                return
            path = self.path.split("?")[0].rstrip("/")
            if path != "/v1/completions":
                return self.send_json(404, {"detail": "Not Found"})
            try:
                try:
                    body = json.loads(raw or b"null")
                except ValueError as e:
                    raise bad(f"Invalid JSON: {e}")
                return self.send_json(200, engine.completions(body))
            except ApiError as e:
                return self.send_json(e.status, e.body())
            except Exception as e:  # noqa: BLE001 - reported as vLLM reports internal errors
                return self.send_json(500, {"error": {"message": repr(e), "type": "InternalServerError",
                                                      "param": None, "code": 500}})

    return Handler


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, type=Path, help="a transformers model folder")
    ap.add_argument("--served-model-name", default=None, help="the model id (default: --model as given)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    ap.add_argument("--max-model-len", type=int, default=None)
    ap.add_argument("--api-key", default=os.environ.get("VLLM_API_KEY"))
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    engine = Engine(args.model, args.served_model_name or str(args.model), args.max_model_len, args.threads)
    httpd = ThreadingHTTPServer((args.host, args.port), make_handler(engine, args.api_key))
    httpd.daemon_threads = True
    host, port = httpd.server_address[:2]
    print(f"listening on http://{host}:{port}/v1", flush=True)
    try:
        httpd.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()

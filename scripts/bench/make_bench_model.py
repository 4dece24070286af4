#!/usr/bin/env python3
"""Fabricate the engine benchmark's model and data, offline and deterministically.

    /work/venv-ref/bin/python scripts/bench/make_bench_model.py OUT_DIR [--shape bench] [--adapter]
                                                                [--vocab N] [--items 200] [--prompts 32]

Writes (nothing of it belongs in the repository; the weights are ~230 MB for the default shape):

  OUT_DIR/model/      a float32 model of the chosen --shape (below), model.safetensors +
                      config.json + generation_config.json + tokenizer.json + tokenizer_config.json
  OUT_DIR/mc.jsonl    200 HellaSwag-like multiple-choice items: {"prompt", "choices" (4),
                      "gold"}; prompts of 40-80 tokens, choices of 3-10 tokens (the choice is
                      scored as " " + choice, as lm-eval's multiple_choice does)
  OUT_DIR/gen.jsonl   32 generation prompts: {"prompt", "max_new_tokens": 32}
  OUT_DIR/adapter/    only with --adapter: a PEFT LoRA adapter for the model (below)

Shapes (--shape; the vocabulary size comes from the shape unless --vocab overrides it; all have
2048 positions):

  bench         (default) LlamaForCausalLM, hidden 512, 8 layers, 8 heads / 4 kv heads,
                intermediate 1408, untied head, vocab 32000, rope_theta 1e4, rms_norm_eps 1e-5;
                56.4M parameters, ~225 MB. Output is byte-identical to what the script wrote
                before --shape existed.
  smollm2-135m  SmolLM2-135M's shape: LlamaForCausalLM, hidden 576, 30 layers, 9 heads / 3 kv
                heads, intermediate 1536, tied embeddings, vocab 49152, rope_theta 1e5,
                rms_norm_eps 1e-5; 134.5M parameters, ~540 MB.
  qwen2.5-0.5b  Qwen2.5-0.5B's shape: Qwen2ForCausalLM (q/k/v biases), hidden 896, 24 layers,
                14 heads / 2 kv heads, intermediate 4864, tied embeddings, vocab 151936,
                rope_theta 1e6, rms_norm_eps 1e-6 (positions cut to 2048); 494.0M parameters, ~2 GB.
  phi-2-scaled  Phi-2's block (PhiForCausalLM: parallel attention + MLP behind one LayerNorm,
                partial_rotary_factor 0.4, gelu_new, qk_layernorm false, biases everywhere,
                untied head with bias, vocab 51200, rope_theta 1e4, layer_norm_eps 1e-5) but
                SCALED DOWN: Phi-2 itself (hidden 2560, 32 layers, 32 heads, intermediate 10240)
                is 2.7B parameters, ~11 GB in float32, too big to fabricate and run on a 24 GB,
                2-core machine. Here: hidden 1280, 8 layers, 16 heads (no GQA), intermediate 5120.
                The head_dim stays Phi-2's 80 on purpose: 0.4 x 80 = 32 rotary dims, whereas at
                hidden 1024 / 16 heads (head_dim 64) 0.4 x 64 = 25.6 gives an odd rotary width that
                transformers' Phi cannot run (no hidden size near 1024 allows a head_dim of 80).
                288.5M parameters, ~1.15 GB.

The tokenizer is a byte-level BPE trained on generated text: sentences over a lexicon of ~24,000
pseudo-words drawn with Zipf frequencies, plus numbers and punctuation, rich enough for the trainer
to reach the full vocabulary of bench, smollm2-135m and phi-2-scaled, so the output head costs
what a real head of that size costs. The corpus tops out at ~99,000 BPE entries, so for a larger
vocabulary (qwen2.5-0.5b's 151,936) the trained vocabulary is PADDED with unused special added
tokens "<|unused_N|>" (ids after the trained ones, never produced by encoding the generated text)
until len(tokenizer) == vocab_size; the head still has vocab_size rows. Special tokens:
<unk> 0, <s> 1 (BOS, prepended), </s> 2 (EOS).

The weights are random (fixed seed) and scaled so that the logits are far from flat (log-probabilities
of different choices differ by whole nats, greedy outputs vary): norm weights 1 + 0.1 N(0,1), biases
0.02 N(0,1), linears N(0,1)/sqrt(fan_in), untied embeddings 0.5 N(0,1), head (and tied embeddings)
0.12 sqrt(512/hidden) N(0,1), which keeps the logits' spread about that of the bench shape.

--adapter writes OUT_DIR/adapter/ with peft's get_peft_model + save_pretrained: a LoRA adapter
(task_type CAUSAL_LM, r 8, lora_alpha 16, lora_dropout 0) on every linear layer of the blocks
(Llama/Qwen2: q_proj k_proj v_proj o_proj gate_proj up_proj down_proj; Phi: q_proj k_proj v_proj
dense fc1 fc2; not the head), adapter_config.json + adapter_model.safetensors (float32) + peft's
README.md. Unlike peft's default init, lora_B is NOT zero: lora_B = 0.02 N(0,1) and
lora_A = N(0,1)/sqrt(fan_in), seeded, so the adapter visibly changes the logits.
base_model_name_or_path is "model", the sibling folder named relative to OUT_DIR: load it with
PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(OUT_DIR/"model"), OUT_DIR/"adapter")
(AutoPeftModelForCausalLM resolves "model" only when run from OUT_DIR).

The script is deterministic: rerunning gives identical files (peft's README.md aside, which names
the peft version). Rough wall times on 2 cores: bench ~20 s, smollm2-135m (with --adapter) ~21 s.
"""

import argparse
import contextlib
import dataclasses
import itertools
import json
import os
import random
import shutil
import sys
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch  # noqa: E402
from tokenizers import (  # noqa: E402
    AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers,
)
from transformers import (  # noqa: E402
    AutoTokenizer, LlamaConfig, LlamaForCausalLM, PhiConfig, PhiForCausalLM, Qwen2Config, Qwen2ForCausalLM,
)

BOS, EOS, UNK = "<s>", "</s>", "<unk>"
# Qwen2's pre-tokenizer regex, as in scripts/reference/make_engine_fixtures.py.
PRETOKENIZE_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)

ONSETS = ["", "b", "br", "c", "ch", "d", "dr", "f", "fl", "g", "gr", "h", "j", "k", "kl", "l", "m", "n", "p",
          "pl", "qu", "r", "s", "sh", "sk", "st", "t", "th", "tr", "v", "w", "y", "z"]
VOWELS = ["a", "e", "i", "o", "u", "ai", "ea", "ou", "y", "ie", "oo"]
CODAS = ["", "", "n", "r", "s", "t", "l", "m", "nd", "st", "ck", "ng", "x", "rd", "sh"]
FUNCTION = ["the", "a", "and", "of", "to", "in", "is", "was", "then", "with", "on", "he", "she", "they",
            "it", "his", "her", "their", "at", "for", "from", "as", "but", "while", "after", "before"]


@dataclasses.dataclass(frozen=True)
class Shape:
    model_class: type
    config_class: type
    vocab: int
    hidden: int
    tied: bool
    lora_targets: tuple[str, ...]
    config: dict  # the rest of the config's arguments, besides vocab_size / hidden_size / tie_word_embeddings


LLAMA_LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
PHI_LINEARS = ("q_proj", "k_proj", "v_proj", "dense", "fc1", "fc2")
MAX_POSITIONS = 2048

SHAPES = {
    "bench": Shape(LlamaForCausalLM, LlamaConfig, 32000, 512, False, LLAMA_LINEARS, dict(
        intermediate_size=1408, num_hidden_layers=8, num_attention_heads=8, num_key_value_heads=4,
        max_position_embeddings=MAX_POSITIONS, rms_norm_eps=1e-5,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
    )),
    "smollm2-135m": Shape(LlamaForCausalLM, LlamaConfig, 49152, 576, True, LLAMA_LINEARS, dict(
        intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
        max_position_embeddings=MAX_POSITIONS, rms_norm_eps=1e-5,
        rope_parameters={"rope_type": "default", "rope_theta": 100000.0},
    )),
    "qwen2.5-0.5b": Shape(Qwen2ForCausalLM, Qwen2Config, 151936, 896, True, LLAMA_LINEARS, dict(
        intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
        max_position_embeddings=MAX_POSITIONS, rms_norm_eps=1e-6, use_sliding_window=False,
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
    )),
    # Phi-2's block, scaled down from hidden 2560 / 32 layers / 32 heads / intermediate 10240 (2.7B),
    # keeping head_dim 80 so that partial_rotary_factor 0.4 gives Phi-2's 32 rotary dims.
    "phi-2-scaled": Shape(PhiForCausalLM, PhiConfig, 51200, 1280, False, PHI_LINEARS, dict(
        intermediate_size=5120, num_hidden_layers=8, num_attention_heads=16, num_key_value_heads=16,
        max_position_embeddings=MAX_POSITIONS, layer_norm_eps=1e-5, hidden_act="gelu_new", qk_layernorm=False,
        resid_pdrop=0.0, embd_pdrop=0.0, attention_dropout=0.0,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.4},
    )),
}


def lexicon(n: int, rng: random.Random) -> list[str]:
    words, seen = [], set()
    while len(words) < n:
        w = "".join(rng.choice(ONSETS) + rng.choice(VOWELS) + rng.choice(CODAS) for _ in range(rng.choice([1, 2, 2, 3, 3, 4])))
        if len(w) > 1 and w not in seen:
            seen.add(w)
            words.append(w)
    return words


class Text:
    def __init__(self, seed: int):
        self.rng = random.Random(seed)
        self.words = lexicon(24000, random.Random(1234))
        # Zipf weights over the lexicon, plus function words.
        self.cum = list(itertools.accumulate(1.0 / (i + 10) ** 0.9 for i in range(len(self.words))))

    def word(self) -> str:
        r = self.rng
        if r.random() < 0.3:
            return r.choice(FUNCTION)
        w = r.choices(self.words, cum_weights=self.cum)[0]
        return w.capitalize() if r.random() < 0.08 else w

    def sentence(self, lo=5, hi=16) -> str:
        r = self.rng
        n = r.randint(lo, hi)
        ws = [self.word() for _ in range(n)]
        ws[0] = ws[0].capitalize()
        if r.random() < 0.2:
            ws.insert(r.randrange(len(ws)), str(r.randrange(2000)))
        if r.random() < 0.15:
            i = r.randrange(len(ws))
            ws[i] = ws[i] + ","
        return " ".join(ws) + r.choice([".", ".", ".", "!", "?", ";"])

    def phrase(self, lo, hi) -> str:
        return " ".join(self.word() for _ in range(self.rng.randint(lo, hi)))


def build_tokenizer(vocab: int) -> Tokenizer:
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab,
        special_tokens=[UNK, BOS, EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    text = Text(seed=1)
    corpus = [" ".join(text.sentence() for _ in range(4)) for _ in range(60000)]
    # every lexicon word at least a few times, so rare words are reachable too
    corpus += [" ".join(text.words[i:i + 12]) for i in range(0, len(text.words), 12)] * 3
    tok.train_from_iterator(corpus, trainer)
    trained = tok.get_vocab_size()
    if trained < vocab:
        # The corpus cannot feed the trainer this many merges: pad with unused added tokens.
        print(f"BPE reached {trained} entries; padding to {vocab} with unused added tokens", file=sys.stderr)
        tok.add_special_tokens([AddedToken(f"<|unused_{i}|>", special=True, normalized=False)
                                for i in range(vocab - trained)])
    assert tok.get_vocab_size() == vocab, f"vocab {tok.get_vocab_size()} != {vocab}"
    tok.post_processor = processors.Sequence(
        [
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, 1)]),
        ]
    )
    return tok


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    ap.add_argument("--shape", choices=list(SHAPES), default="bench")
    ap.add_argument("--vocab", type=int, default=None, help="override the shape's vocabulary size")
    ap.add_argument("--items", type=int, default=200)
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--adapter", action="store_true", help="also write OUT_DIR/adapter/ (PEFT LoRA)")
    a = ap.parse_args()
    shape = SHAPES[a.shape]
    if a.vocab is None:
        a.vocab = shape.vocab
    torch.set_num_threads(2)
    out: Path = a.out
    mdir = out / "model"
    adir = out / "adapter"
    for d in (mdir, adir):
        if d.exists():
            shutil.rmtree(d)
    mdir.mkdir(parents=True)

    tok = build_tokenizer(a.vocab)
    tok.save(str(mdir / "tokenizer.json"))
    (mdir / "tokenizer_config.json").write_text(json.dumps({
        "add_bos_token": True, "add_eos_token": False, "bos_token": BOS, "eos_token": EOS, "unk_token": UNK,
        "pad_token": EOS, "clean_up_tokenization_spaces": False, "model_max_length": MAX_POSITIONS,
        "tokenizer_class": "PreTrainedTokenizerFast",
    }, indent=2) + "\n")

    cfg = shape.config_class(
        vocab_size=a.vocab, hidden_size=shape.hidden, **shape.config,
        tie_word_embeddings=shape.tied, bos_token_id=1, eos_token_id=2, pad_token_id=None,
    )
    torch.manual_seed(0)
    model = shape.model_class(cfg).eval()
    head_std = 0.12 * (512 / shape.hidden) ** 0.5  # exactly 0.12 for the bench shape
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            noise = torch.randn(p.shape, generator=g, dtype=torch.float32)
            if name.endswith(".bias"):  # Qwen2's q/k/v, Phi's linears, LayerNorms and head
                p.copy_(0.02 * noise)
            elif "norm" in name:
                p.copy_(1.0 + 0.1 * noise)
            elif "embed_tokens" in name:  # with tied embeddings this is the head too
                p.copy_((head_std if shape.tied else 0.5) * noise)
            elif "lm_head" in name:
                p.copy_(head_std * noise)
            else:  # linears [out, in]
                p.copy_(noise / p.shape[1] ** 0.5)
    model.save_pretrained(mdir)

    hf = AutoTokenizer.from_pretrained(mdir)
    enc = lambda s: hf.encode(s, add_special_tokens=False)  # noqa: E731
    raw = Tokenizer.from_file(str(mdir / "tokenizer.json"))
    text = Text(seed=2)
    with open(out / "mc.jsonl", "w") as f:
        for i in range(a.items):
            while True:
                prompt = " ".join(text.sentence() for _ in range(text.rng.randint(3, 6)))
                n = len(enc(prompt))
                if 40 <= n <= 80:
                    break
            choices = []
            while len(choices) < 4:
                c = text.phrase(2, 7) + "."
                if 3 <= len(enc(" " + c)) <= 10 and c not in choices:
                    choices.append(c)
            assert raw.encode(prompt, add_special_tokens=False).ids == enc(prompt)
            f.write(json.dumps({"prompt": prompt, "choices": choices, "gold": text.rng.randrange(4)}) + "\n")
    with open(out / "gen.jsonl", "w") as f:
        for i in range(a.prompts):
            prompt = " ".join(text.sentence() for _ in range(text.rng.randint(1, 5)))
            f.write(json.dumps({"prompt": prompt, "max_new_tokens": 32}) + "\n")
    params = sum(p.numel() for p in model.parameters())
    info = {"model": str(mdir), "parameters": params, "weights_bytes": params * 4, "vocab": a.vocab}
    if a.shape != "bench":
        info["shape"] = a.shape
    if a.adapter:
        info.update(write_adapter(model, shape, adir))
    print(json.dumps(info), file=sys.stderr)


def write_adapter(model, shape: Shape, adir: Path) -> dict:
    """A LoRA adapter on the blocks' linears, with non-zero lora_B; base_model_name_or_path "model"."""
    from peft import LoraConfig, get_peft_model

    lcfg = LoraConfig(task_type="CAUSAL_LM", r=8, lora_alpha=16, lora_dropout=0.0,
                      target_modules=list(shape.lora_targets))
    torch.manual_seed(0)
    pm = get_peft_model(model, lcfg)  # wraps (and modifies) model in place; it is saved already
    g = torch.Generator().manual_seed(11)
    n = 0
    with torch.no_grad():
        for name, p in sorted(pm.named_parameters()):
            if "lora_A" in name:  # [r, in]
                p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float32) / p.shape[1] ** 0.5)
            elif "lora_B" in name:  # [out, r]
                p.copy_(0.02 * torch.randn(p.shape, generator=g, dtype=torch.float32))
            else:
                continue
            n += p.numel()
    pm.peft_config["default"].base_model_name_or_path = "model"  # the sibling folder, relative to OUT_DIR
    adir = adir.resolve()
    with contextlib.chdir(adir.parent):  # so that peft's look-up of "model"/config.json succeeds
        pm.save_pretrained(adir)
    # peft keeps target_modules as a set, written in hash order: sort it so that reruns are identical.
    cpath = adir / "adapter_config.json"
    acfg = json.loads(cpath.read_text())
    acfg["target_modules"] = sorted(acfg["target_modules"])
    cpath.write_text(json.dumps(acfg, indent=2, sort_keys=True) + "\n")
    return {"adapter": str(adir), "adapter_parameters": n}


if __name__ == "__main__":
    main()

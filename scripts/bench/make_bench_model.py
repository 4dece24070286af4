#!/usr/bin/env python3
"""Fabricate the engine benchmark's model and data, offline and deterministically.

    /work/venv-ref/bin/python scripts/bench/make_bench_model.py OUT_DIR [--vocab 32000]

Writes (nothing of it belongs in the repository; the weights are ~230 MB):

  OUT_DIR/model/      a Llama-shaped float32 model (hidden 512, 8 layers, 8 heads / 4 kv heads,
                      intermediate 1408, untied head, vocab 32000, max positions 2048),
                      model.safetensors + config.json + tokenizer.json + tokenizer_config.json
  OUT_DIR/mc.jsonl    200 HellaSwag-like multiple-choice items: {"prompt", "choices" (4),
                      "gold"}; prompts of 40-80 tokens, choices of 3-10 tokens (the choice is
                      scored as " " + choice, as lm-eval's multiple_choice does)
  OUT_DIR/gen.jsonl   32 generation prompts: {"prompt", "max_new_tokens": 32}

The tokenizer is a byte-level BPE trained on generated text: sentences over a lexicon of ~24,000
pseudo-words drawn with Zipf frequencies, plus numbers and punctuation, rich enough for the trainer
to reach the full vocabulary, so the output head costs what a real 32k-vocabulary head costs. The
weights are random (fixed seed) and scaled so that the logits are far from flat (log-probabilities
of different choices differ by whole nats, greedy outputs vary). The script is deterministic:
rerunning gives identical files.
"""

import argparse
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
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers  # noqa: E402
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM  # noqa: E402

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
    assert tok.get_vocab_size() == vocab, f"vocab {tok.get_vocab_size()} < {vocab}: corpus too poor"
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
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--items", type=int, default=200)
    ap.add_argument("--prompts", type=int, default=32)
    a = ap.parse_args()
    torch.set_num_threads(2)
    out: Path = a.out
    mdir = out / "model"
    if mdir.exists():
        shutil.rmtree(mdir)
    mdir.mkdir(parents=True)

    tok = build_tokenizer(a.vocab)
    tok.save(str(mdir / "tokenizer.json"))
    (mdir / "tokenizer_config.json").write_text(json.dumps({
        "add_bos_token": True, "add_eos_token": False, "bos_token": BOS, "eos_token": EOS, "unk_token": UNK,
        "pad_token": EOS, "clean_up_tokenization_spaces": False, "model_max_length": 2048,
        "tokenizer_class": "PreTrainedTokenizerFast",
    }, indent=2) + "\n")

    cfg = LlamaConfig(
        vocab_size=a.vocab, hidden_size=512, intermediate_size=1408, num_hidden_layers=8,
        num_attention_heads=8, num_key_value_heads=4, max_position_embeddings=2048, rms_norm_eps=1e-5,
        tie_word_embeddings=False, bos_token_id=1, eos_token_id=2, pad_token_id=None,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).eval()
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            noise = torch.randn(p.shape, generator=g, dtype=torch.float32)
            if "norm" in name:
                p.copy_(1.0 + 0.1 * noise)
            elif "embed_tokens" in name:
                p.copy_(0.5 * noise)
            elif "lm_head" in name:
                p.copy_(0.12 * noise)
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
    print(json.dumps({"model": str(mdir), "parameters": params, "weights_bytes": params * 4,
                      "vocab": a.vocab}), file=sys.stderr)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Fabricate the reference fixtures for the Rust (candle) inference engine.

Everything is made locally from fixed seeds; no network and no Hugging Face hub
access is needed (the script forces HF_HUB_OFFLINE=1). Running it twice gives
byte-identical files.

How to run (from the repository root):

    python3 -m venv /work/venv-ref            # any folder outside the repo
    /work/venv-ref/bin/pip install -r scripts/reference/engine-requirements.txt
    /work/venv-ref/bin/python scripts/reference/make_engine_fixtures.py

(The default PyPI torch wheel is a large CUDA build; it runs fine on CPU.)

It rewrites tests/fixtures/engine/ from scratch:

  models/<name>/      tiny random float32 models (save_pretrained, safetensors)
                      + tokenizer.json + tokenizer_config.json (same tokenizer in all)
  adapters/<name>/    PEFT LoRA adapters (adapter_config.json + adapter_model.safetensors)
                      bad-* adapters are deliberately broken, for refusal tests
  reference.json      what transformers/PEFT compute (log-likelihoods scored the way
                      lm-evaluation-harness scores them, cross-checked against lm_eval's
                      HFLM; last-position logits; greedy generations)
  README.md           a short description of the quirks of each model/adapter

Scoring conventions (lm-evaluation-harness, docs: /work/shared/reference/muscle.md s.3):
  * no BOS by default (add_bos false); add_bos true prepends the tokenizer's BOS id;
  * trailing whitespace of the context moves to the front of the continuation;
  * context+continuation are encoded jointly, the continuation ids are the tail beyond
    the length of the context-alone encoding;
  * logprob = sum of log_softmax (computed in the model dtype, as lm_eval does) over the
    continuation tokens, is_greedy = every continuation token is the argmax.
"""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import copy  # noqa: E402
import importlib.metadata  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import random  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from safetensors import safe_open  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers  # noqa: E402
from transformers import (  # noqa: E402
    AutoModelForCausalLM,
    AutoTokenizer,
    GenerationConfig,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)
from transformers.utils import logging as hf_logging  # noqa: E402

import peft  # noqa: E402
from peft import LoraConfig, PeftModel, get_peft_model  # noqa: E402

warnings.filterwarnings("ignore")
hf_logging.set_verbosity_error()
hf_logging.disable_progress_bar()
logging.getLogger("lm_eval").setLevel(logging.ERROR)
logging.getLogger("peft").setLevel(logging.ERROR)

torch.set_num_threads(1)  # fixed reduction order -> reproducible floats
torch.manual_seed(0)

REPO = Path(__file__).resolve().parents[2]
OUT = REPO / "tests" / "fixtures" / "engine"
SCRIPT_REL = "scripts/reference/make_engine_fixtures.py"

VOCAB = 448
BOS, EOS, UNK = "<s>", "</s>", "<unk>"
MAX_NEW_TOKENS = 12
F32_TOL = 1e-5


# ----------------------------------------------------------------------------- text


NAMES = ["Zorvik", "Plemba", "Kavo", "Trisa", "Mendor", "Quilla", "Obrun", "Fessa", "Yarrow", "Doune",
         "Halvic", "Seppo", "Brindle", "Wexa", "Jorum", "Tallis"]
THINGS = ["tribs", "glorps", "vanes", "brells", "mots", "cades", "wickets", "lanterns", "shovels"]
COLORS = ["red", "blue", "green", "amber", "grey", "violet", "yellow", "black", "white"]
PLACES = ["the north", "Lake Ulm", "the old mill", "Port Sedge", "the quiet market", "Hollow Bridge"]


def corpus(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        k = rng.randrange(7)
        a, b = rng.choice(NAMES), rng.choice(NAMES)
        t, c = rng.choice(THINGS), rng.choice(COLORS)
        if k == 0:
            out.append(f"The {t[:-1]} of {a} is {c}.")
        elif k == 1:
            out.append(f"{a} has {rng.randrange(100)} {t}, and {rng.randrange(10)} are {c}!")
        elif k == 2:
            out.append(f"Is {a} in {rng.choice(PLACES)}? Yes: {rng.randrange(1000)}.")
        elif k == 3:
            out.append(f'{a} said "{c}" at {rng.randrange(24)}:{rng.randrange(60):02d}; then left.')
        elif k == 4:
            out.append(f"Q: What color is {a}'s {t[:-1]}?\nA: {c}")
        elif k == 5:
            out.append(f"{a} and {b} met in {rng.choice(PLACES)} (day {rng.randrange(31) + 1}).")
        else:
            out.append(f"{a} - {rng.randrange(10)}.{rng.randrange(100)} {t} - {c}; déjà vu, café.")
    return out


# ------------------------------------------------------------------------ tokenizer


# Qwen2's pre-tokenizer regex (digits one by one). transformers v5 rebuilds the normalizer /
# pre-tokenizer from the model type for some models (qwen2 -> Qwen2Tokenizer, ignoring those in
# tokenizer.json), so the one tokenizer shared by every folder uses exactly that pipeline; then
# transformers and a plain tokenizer.json reader (the Rust engine) agree for every model type.
PRETOKENIZE_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)


def build_tokenizer() -> Tokenizer:
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
        vocab_size=VOCAB,
        special_tokens=[UNK, BOS, EOS],  # ids 0, 1, 2
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus(4000, seed=1), trainer)
    assert tok.get_vocab_size() == VOCAB, tok.get_vocab_size()
    assert tok.token_to_id(UNK) == 0 and tok.token_to_id(BOS) == 1 and tok.token_to_id(EOS) == 2
    # Llama-style: the tokenizer adds BOS when asked for special tokens. lm_eval's default
    # (and ours) encodes WITHOUT special tokens, so an engine that encodes with
    # add_special_tokens=true by mistake gets a BOS too many and fails the fixtures.
    tok.post_processor = processors.Sequence(
        [
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(
                single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, 1)]
            ),
        ]
    )
    return tok


TOKENIZER_CONFIG = {
    "add_bos_token": True,
    "add_eos_token": False,
    "bos_token": BOS,
    "clean_up_tokenization_spaces": False,
    "eos_token": EOS,
    "model_max_length": 256,
    "pad_token": EOS,
    "tokenizer_class": "PreTrainedTokenizerFast",
    "unk_token": UNK,
}


class Tok:
    """A folder's tokenizer.json read by `tokenizers` (what the Rust engine reads), checked on every
    call against transformers' AutoTokenizer for the same folder (which is what lm_eval uses)."""

    def __init__(self, folder: Path):
        self.raw = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.hf = AutoTokenizer.from_pretrained(folder)
        self.bos_token_id, self.eos_token_id = 1, 2
        assert (self.hf.bos_token_id, self.hf.eos_token_id) == (1, 2), folder
        assert len(self.hf) == VOCAB, (folder, len(self.hf), type(self.hf).__name__)
        for s in ("The", "Zorvik has 12 tribs."):
            assert self.encode(s, True)[0] == 1 and self.encode(s, True)[1:] == self.encode(s)

    def encode(self, s: str, add_special_tokens: bool = False) -> list[int]:
        ids = self.raw.encode(s, add_special_tokens=add_special_tokens).ids
        hf = self.hf.encode(s, add_special_tokens=add_special_tokens)
        assert ids == hf, (s, ids, hf, type(self.hf).__name__)
        return ids

    def decode(self, ids: list[int]) -> str:
        t = self.raw.decode(ids, skip_special_tokens=False)
        assert t == self.hf.decode(ids, skip_special_tokens=False), (ids, t)
        return t


def write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")


# --------------------------------------------------------------------------- models


def rope(theta, **scaling):
    return {"rope_type": scaling.pop("rope_type", "default"), "rope_theta": float(theta), **scaling}


LLAMA3_SCALING = dict(
    rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0, original_max_position_embeddings=32
)

COMMON = dict(
    vocab_size=VOCAB,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    max_position_embeddings=256,
    bos_token_id=1,
    eos_token_id=2,
    pad_token_id=None,
)

# name -> (class, config, seed, config.json rewrite, save kwargs, description)
MODEL_SPECS = {
    "llama-gqa": (
        LlamaForCausalLM,
        LlamaConfig(
            **COMMON, num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5,
            tie_word_embeddings=False, rope_parameters=rope(10000.0),
        ),
        101,
        "legacy-toplevel",
        {},
        "Llama, 4 heads / 2 kv heads (GQA), head_dim 16, untied; config.json in the pre-v5 layout: "
        "rope_theta 10000 top-level, rope_scaling null, no rope_parameters",
    ),
    "llama-tied-llama3rope": (
        LlamaForCausalLM,
        LlamaConfig(
            **COMMON, num_attention_heads=2, num_key_value_heads=2, rms_norm_eps=1e-5,
            tie_word_embeddings=True, rope_parameters=rope(500000.0, **LLAMA3_SCALING),
        ),
        102,
        None,
        {},
        "Llama, 2 heads MHA, head_dim 32, tied embeddings (no lm_head.weight in the file); "
        "llama3 rope (factor 8, low 1, high 4, original_max_position_embeddings 32; head_dim 32 puts one "
        "frequency, wavelength 14.3, in the smooth-interpolation band) with "
        "rope_theta 500000 INSIDE rope_parameters (transformers v5 layout, as saved)",
    ),
    "qwen2-bias": (
        Qwen2ForCausalLM,
        Qwen2Config(
            **COMMON, num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-6,
            tie_word_embeddings=False, use_sliding_window=False, rope_parameters=rope(1000000.0),
        ),
        103,
        None,
        {},
        "Qwen2, q/k/v bias, 4 heads / 2 kv heads, rope_theta 1e6 inside rope_parameters, rms_norm_eps 1e-6",
    ),
    "llama-sharded": (
        LlamaForCausalLM,
        LlamaConfig(
            **COMMON, num_attention_heads=4, num_key_value_heads=4, rms_norm_eps=1e-5,
            tie_word_embeddings=False, rope_parameters=rope(500000.0, **LLAMA3_SCALING),
        ),
        104,
        "legacy-llama3",
        {"max_shard_size": "150KB"},
        "Llama, 4 heads MHA, untied, sharded safetensors + model.safetensors.index.json; config.json "
        "in the Llama-3.1 (pre-v5) layout: rope_theta 500000 top-level and llama3 rope_scaling "
        "(head_dim 16: no frequency falls in the smooth band)",
    ),
    "mistral": (
        MistralForCausalLM,
        MistralConfig(
            **COMMON, num_attention_heads=4, num_key_value_heads=1, rms_norm_eps=1e-5,
            tie_word_embeddings=False, sliding_window=None, rope_parameters=rope(10000.0),
        ),
        105,
        None,
        {},
        "Mistral, 4 heads / 1 kv head (MQA), sliding_window null, rope inside rope_parameters",
    ),
}


def init_weights(model: torch.nn.Module, seed: int) -> None:
    """Large-std random init so logits are far from flat and greedy outputs vary."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):  # tied lm_head is not listed separately
            noise = torch.randn(p.shape, generator=g, dtype=torch.float32)
            if "norm" in name:
                p.copy_(1.0 + 0.2 * noise)
            elif name.endswith(".bias"):
                p.copy_(0.2 * noise)
            elif "embed_tokens" in name or "lm_head" in name:
                p.copy_(0.25 * noise)
            else:
                p.copy_(0.15 * noise)


def rewrite_rope_legacy(cfg_path: Path, kind: str) -> None:
    cfg = json.loads(cfg_path.read_text())
    rp = cfg.pop("rope_parameters")
    cfg["rope_theta"] = rp["rope_theta"]
    if kind == "legacy-toplevel":
        assert rp["rope_type"] == "default"
        cfg["rope_scaling"] = None
    elif kind == "legacy-llama3":
        cfg["rope_scaling"] = {k: v for k, v in rp.items() if k != "rope_theta"}
    else:
        raise ValueError(kind)
    write_json(cfg_path, cfg)


PROBE = "Zorvik has 12 tribs, and 3 are red! Is Kavo in Lake Ulm? Yes: 415. The glorp of Fessa is violet."


@torch.no_grad()
def logits_of(model, ids) -> torch.Tensor:
    return model(torch.tensor([ids])).logits[0].float()


def build_models(tok_dir: Path, hf_tok) -> dict:
    info = {}
    probe_ids = hf_tok.encode(PROBE)
    for name, (cls, cfg, seed, rewrite, save_kw, desc) in MODEL_SPECS.items():
        d = OUT / "models" / name
        model = cls(copy.deepcopy(cfg)).eval()
        init_weights(model, seed)
        model.save_pretrained(d, **save_kw)
        for f in ("tokenizer.json", "tokenizer_config.json"):
            shutil.copyfile(tok_dir / f, d / f)
        if rewrite:
            rewrite_rope_legacy(d / "config.json", rewrite)
        # the folder as written must load (through AutoConfig/AutoModel) to the very same logits
        ref = logits_of(model, probe_ids)
        loaded = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).eval()
        diff = (logits_of(loaded, probe_ids) - ref).abs().max().item()
        assert diff == 0.0, (name, diff)
        lrp = loaded.config.rope_parameters
        assert lrp == cfg.rope_parameters, (name, lrp, cfg.rope_parameters)
        # rope settings must matter at these lengths (so a wrong theta would be noticed)
        alt = copy.deepcopy(cfg)
        alt.rope_parameters = dict(cfg.rope_parameters, rope_theta=cfg.rope_parameters["rope_theta"] * 3.0)
        m_alt = cls(alt).eval()
        m_alt.load_state_dict(model.state_dict())
        rope_sens = (logits_of(m_alt, probe_ids) - ref).abs().max().item()
        assert rope_sens > 1e-3, (name, rope_sens)
        files = sorted(p.name for p in d.iterdir())
        if name == "llama-sharded":
            assert "model.safetensors.index.json" in files and sum(f.startswith("model-0000") for f in files) >= 2
        if cfg.tie_word_embeddings:
            with safe_open(d / "model.safetensors", "pt") as f:
                assert "lm_head.weight" not in f.keys()
        top1 = ref.argmax(-1)
        info[name] = dict(
            desc=desc,
            files=files,
            logit_std=round(ref.std().item(), 3),
            distinct_argmax=len(set(top1.tolist())),
            rope_sensitivity=round(rope_sens, 4),
            rope_config_keys=sorted(k for k in json.loads((d / "config.json").read_text()) if "rope" in k),
        )
    return info


# ------------------------------------------------------------------------- adapters

QWEN_REGEX = r"model\.layers\.\d+\.(self_attn\.(q|k|v)_proj|mlp\.down_proj)"
ALL_ATTN_MLP = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

# name -> (base model, LoraConfig kwargs, seed, description)
ADAPTER_SPECS = {
    "llama-gqa-lora-list": (
        "llama-gqa",
        dict(target_modules=["q_proj", "v_proj"], r=4, lora_alpha=8),
        201,
        "target_modules list [q_proj, v_proj], r 4, alpha 8 (scaling 2)",
    ),
    "llama-gqa-lora-all": (
        "llama-gqa",
        dict(target_modules="all-linear", r=8, lora_alpha=16, use_rslora=True),
        202,
        'target_modules "all-linear" (7 linears x 2 layers, not lm_head), r 8, alpha 16, use_rslora '
        "(scaling 16/sqrt(8))",
    ),
    "qwen2-lora-regex": (
        "qwen2-bias",
        dict(
            target_modules=QWEN_REGEX,
            r=4,
            lora_alpha=8,
            rank_pattern={"layers.1.self_attn.v_proj": 6},
            alpha_pattern={"layers.1.self_attn.v_proj": 3},
        ),
        203,
        f"target_modules regex string {QWEN_REGEX!r} (q/k/v + down_proj), r 4 alpha 8; "
        "rank_pattern/alpha_pattern give layers.1.self_attn.v_proj r 6 alpha 3 (scaling 0.5)",
    ),
    "llama-tied-lora": (
        "llama-tied-llama3rope",
        dict(target_modules=ALL_ATTN_MLP, r=8, lora_alpha=16),
        204,
        "on the tied llama3-rope model: q/k/v/o + gate/up/down, r 8, alpha 16",
    ),
}

BAD_SPECS = {
    "bad-dora": "use_dora true (lora_magnitude_vector tensors)",
    "bad-shape": "layers.0.self_attn.v_proj lora_B is [33, 4] instead of [32, 4]",
    "bad-unmapped": "extra lora_A/lora_B pair for model.layers.5.self_attn.q_proj (the model has 2 layers), "
    "otherwise a copy of llama-gqa-lora-list",
    "bad-modules-to-save": "modules_to_save [lm_head] with base_model.model.lm_head.weight in the file",
}


def randomise_lora(pm, seed: int) -> None:
    """lora_A and lora_B from our own generator, in sorted-name order (PEFT creates modules in
    set order, so its own RNG consumption is not reproducible). lora_B != 0 -> not a no-op."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(pm.named_parameters()):
            if ".lora_A." in name:
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p.shape[1]))
            elif ".lora_B." in name:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))


def load_base(name: str, dtype=torch.float32):
    return AutoModelForCausalLM.from_pretrained(OUT / "models" / name, dtype=dtype).eval()


def make_adapter(name: str, base: str, kw: dict, seed: int) -> tuple:
    d = OUT / "adapters" / name
    model = load_base(base)
    pm = get_peft_model(model, LoraConfig(task_type="CAUSAL_LM", lora_dropout=0.0, bias="none", **kw))
    randomise_lora(pm, seed)
    pm.eval()
    pm.save_pretrained(d)
    (d / "README.md").unlink(missing_ok=True)  # model card: noise
    cfg_path = d / "adapter_config.json"
    cfg = json.loads(cfg_path.read_text())
    # PEFT stores list targets (and the expansion of "all-linear") in set order: make it stable,
    # and keep "all-linear" as written by the user (PEFT expands it again when loading).
    if isinstance(kw["target_modules"], str):
        cfg["target_modules"] = kw["target_modules"]
    else:
        cfg["target_modules"] = sorted(cfg["target_modules"])
    cfg["base_model_name_or_path"] = f"models/{base}"  # relative to tests/fixtures/engine
    write_json(cfg_path, cfg)
    return pm, d


def build_adapters(hf_tok) -> dict:
    info = {}
    probe_ids = hf_tok.encode(PROBE)
    for name, (base, kw, seed, desc) in ADAPTER_SPECS.items():
        pm, d = make_adapter(name, base, kw, seed)
        ref = logits_of(pm, probe_ids)
        reloaded = PeftModel.from_pretrained(load_base(base), d).eval()
        diff = (logits_of(reloaded, probe_ids) - ref).abs().max().item()
        assert diff == 0.0, (name, diff)
        effect = (ref - logits_of(load_base(base), probe_ids)).abs().max().item()
        assert effect > 0.05, (name, effect)
        with safe_open(d / "adapter_model.safetensors", "pt") as f:
            assert f.metadata() == {"format": "pt"}
            shapes = {k: f.get_slice(k).get_shape() for k in f.keys()}
        info[name] = dict(desc=desc, base=base, tensors=len(shapes), effect=round(effect, 3))
        if name == "qwen2-lora-regex":
            assert shapes["base_model.model.model.layers.1.self_attn.v_proj.lora_A.weight"] == [6, 64]
            assert shapes["base_model.model.model.layers.0.self_attn.v_proj.lora_A.weight"] == [4, 64]
            assert not any("o_proj" in k or "up_proj" in k or "gate_proj" in k for k in shapes)
        if name == "llama-gqa-lora-all":
            assert len(shapes) == 2 * 7 * 2 and not any("lm_head" in k for k in shapes)

    # ---- deliberately broken adapters (the engine must refuse them loudly)
    base_kw = dict(target_modules=["q_proj", "v_proj"], r=4, lora_alpha=8)
    make_adapter("bad-dora", "llama-gqa", dict(base_kw, use_dora=True), 301)
    pm, d = make_adapter("bad-modules-to-save", "llama-gqa", dict(base_kw, modules_to_save=["lm_head"]), 302)
    st = load_file(d / "adapter_model.safetensors")
    assert "base_model.model.lm_head.weight" in st
    g = torch.Generator().manual_seed(303)
    st["base_model.model.lm_head.weight"] += 0.1 * torch.randn(st["base_model.model.lm_head.weight"].shape, generator=g)
    save_file(st, d / "adapter_model.safetensors", metadata={"format": "pt"})

    good = OUT / "adapters" / "llama-gqa-lora-list"
    for bad in ("bad-shape", "bad-unmapped"):
        d = OUT / "adapters" / bad
        d.mkdir(parents=True)
        shutil.copyfile(good / "adapter_config.json", d / "adapter_config.json")
        st = load_file(good / "adapter_model.safetensors")
        g = torch.Generator().manual_seed(304 if bad == "bad-shape" else 305)
        if bad == "bad-shape":
            k = "base_model.model.model.layers.0.self_attn.v_proj.lora_B.weight"
            assert list(st[k].shape) == [32, 4]
            st[k] = 0.1 * torch.randn(33, 4, generator=g)
        else:
            pre = "base_model.model.model.layers.5.self_attn.q_proj"
            st[pre + ".lora_A.weight"] = torch.randn(4, 64, generator=g) / 8.0
            st[pre + ".lora_B.weight"] = 0.1 * torch.randn(64, 4, generator=g)
        save_file(st, d / "adapter_model.safetensors", metadata={"format": "pt"})

    # What PEFT itself does with them (reported, not stored in reference.json).
    probe = torch.tensor([probe_ids])
    for bad, desc in BAD_SPECS.items():
        d = OUT / "adapters" / bad
        try:
            with warnings.catch_warnings(record=True) as w:
                warnings.simplefilter("always")
                m = PeftModel.from_pretrained(load_base("llama-gqa"), d).eval()
                with torch.no_grad():
                    eff = (m(probe).logits - load_base("llama-gqa")(probe).logits).abs().max().item()
            msgs = [str(x.message).splitlines()[0][:90] for x in w if "nexpected" in str(x.message)]
            peft_says = f"loads; logits change {eff:.3g}" + (f"; warns: {msgs[0]}" if msgs else "")
        except Exception as e:  # noqa: BLE001
            lines_ = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
            detail = next((ln for ln in lines_ if "size mismatch" in ln), lines_[0])
            peft_says = f"raises {type(e).__name__}: {detail[:150]}"
        info[bad] = dict(desc=desc, base="llama-gqa", peft=peft_says)
    return info


# -------------------------------------------------------------------------- scoring

LOGLIK_ITEMS = [
    # (context, continuation, add_bos)
    ("The glorp of Kavo is", " blue.", False),
    ("Zorvik has 12 tribs, and 3 are ", "red!", False),  # context ends in a space
    ("Is Trisa in Port Sedge? Yes:", " 415.", False),  # digits
    ('Quilla said "', 'amber" at 9:05; then left.', False),
    ("Obrun and Doune met in Lake Ulm (day", " 17).", False),
    ('Kavo said "red" at 12:30;  ', "then left.", False),  # two trailing spaces
    ("Q: What color is Fessa's vane?\nA:", " violet", False),  # newline inside the context
    ("Mendor - 4.25 mots -", " grey; déjà vu, café.", False),  # non-ASCII
    ("Doune - 7.3 cades - amber; deja", " vu, cafe\u0301.", False),  # NFD input: the normalizer (NFC) matters
    ("The brell of Yarrow is", " green.", True),  # BOS prepended
    ("Plemba has 7 cades, and 1 are ", "amber!", True),  # BOS + trailing space
]

MC_ITEMS = [
    # (prompt, choices, delimiter, answer); several contexts are shared by all their choices
    ("Q: What color is Zorvik's trib?\nA:", ["red", "violet", "dark amber grey", "blue"], " ", 1),
    ("The mot of Trisa is", ["green.", "grey.", "blue, like the old mill."], " ", 0),
    ("Zorvik has 12 tribs, and 3 are", ["red!", "déjà vu", "café au lait!", "12"], " ", 2),
    ("Is Obrun in Lake Ulm? Yes: ", ["4.", "415.", "99 and 7."], "", 1),  # prompt ends in a space
]

LAST_LOGITS_TEXTS = [
    "The",  # a single token
    "Is Kavo in the old mill? Yes:",
    "Zorvik has 12 tribs, and 3 are red! Is Kavo in Lake Ulm? Yes: 415. "
    'Fessa said "violet" at 7:45; then left. The glorp of Doune is',  # ~40 tokens (> 32)
]

GREEDY_PROMPTS = [
    "The",
    "Obrun has 4 glorps, and",
    'Q: What color is Quilla\'s brell?\nA: green\nMendor said "',
]


class Scorer:
    """Tokenisation and scoring exactly as lm-evaluation-harness (HFLM, causal) does it."""

    def __init__(self, tok, model, dtype):
        self.tok, self.model, self.dtype = tok, model, dtype

    def enc(self, s: str) -> list[int]:
        return self.tok.encode(s)

    def encode_pair(self, context: str, continuation: str, add_bos: bool):
        n = len(context) - len(context.rstrip())
        if n > 0:
            continuation = context[-n:] + continuation
            context = context[:-n]
        whole = self.enc(context + continuation)
        ctx = self.enc(context)
        cont = whole[len(ctx):]
        if add_bos:
            ctx = [self.tok.bos_token_id] + ctx
        return ctx, cont

    @torch.no_grad()
    def score(self, ctx_ids, cont_ids):
        inp = torch.tensor([(ctx_ids + cont_ids)[:-1]])
        logits = self.model(inp).logits  # model dtype
        lp = F.log_softmax(logits, dim=-1)[0, -len(cont_ids):]  # softmax in the model dtype, like lm_eval
        cont = torch.tensor(cont_ids)
        is_greedy = bool((lp.argmax(-1) == cont).all())
        logprob = float(torch.gather(lp, 1, cont[:, None]).squeeze(-1).sum())
        return logprob, is_greedy

    @torch.no_grad()
    def last_logits(self, ids):
        return self.model(torch.tensor([ids])).logits[0, -1].float().tolist()

    @torch.no_grad()
    def greedy(self, ids):
        gc = GenerationConfig(
            do_sample=False, num_beams=1, max_new_tokens=MAX_NEW_TOKENS,
            eos_token_id=self.tok.eos_token_id, pad_token_id=self.tok.eos_token_id,
            bos_token_id=self.tok.bos_token_id,
        )
        inp = torch.tensor([ids])
        out = self.model.generate(input_ids=inp, attention_mask=torch.ones_like(inp), generation_config=gc)
        new = out[0, len(ids):].tolist()
        # cross-check against a cache-free argmax loop
        seq, manual = list(ids), []
        for _ in range(MAX_NEW_TOKENS):
            t = int(self.model(torch.tensor([seq])).logits[0, -1].argmax())
            manual.append(t)
            seq.append(t)
            if t == self.tok.eos_token_id:
                break
        return new, manual


def greedy_item(sc: Scorer):
    """One model-specific item whose continuation IS the greedy continuation (is_greedy true)."""
    for context in ["Zorvik has 12 tribs, and", "The vane of Mendor is", "Is Kavo in", "Fessa said",
                    "Q: What color is Seppo's", "Halvic and Wexa met in", "Tallis - 3.14 shovels -"]:
        ids = sc.enc(context)
        for n in (3, 2, 1):
            seq = list(ids)
            with torch.no_grad():
                for _ in range(n):
                    seq.append(int(sc.model(torch.tensor([seq])).logits[0, -1].argmax()))
            if any(t < 3 for t in seq[len(ids):]):
                continue
            cont = sc.tok.decode(seq[len(ids):])
            c_ids, k_ids = sc.encode_pair(context, cont, False)
            if c_ids == ids and k_ids == seq[len(ids):] and sc.score(c_ids, k_ids)[1]:
                return context, cont
    return None


def run_case(model_name, adapter, dtype_name):
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype_name]
    # Loaded the way lm_eval's HFLM loads it (from_pretrained(dtype=...)), which keeps the rope
    # inv_freq buffer in float32; model.to(bfloat16) would round inv_freq to bf16 as well.
    model = load_base(model_name, dtype)
    if adapter:
        # autocast_adapter_dtype=False: LoRA weights in the model dtype too (PEFT's default would
        # keep them in float32 under a bf16 base).
        model = PeftModel.from_pretrained(
            model, OUT / "adapters" / adapter, autocast_adapter_dtype=False
        ).eval()
        assert all(p.dtype == dtype for p in model.parameters())
    tok = Tok(OUT / "models" / model_name)
    sc = Scorer(tok, model, dtype)

    items = list(LOGLIK_ITEMS)
    gi = greedy_item(sc)
    if gi:
        items.append((gi[0], gi[1], False))
    loglik = []
    for context, continuation, add_bos in items:
        c_ids, k_ids = sc.encode_pair(context, continuation, add_bos)
        lp, g = sc.score(c_ids, k_ids)
        loglik.append(dict(context=context, continuation=continuation, add_bos=add_bos,
                           context_ids=c_ids, continuation_ids=k_ids, logprob=lp, is_greedy=g))

    mc = []
    for prompt, choices, delim, answer in MC_ITEMS:
        lps = []
        for ch in choices:
            c_ids, k_ids = sc.encode_pair(prompt, delim + ch, False)
            lps.append(sc.score(c_ids, k_ids)[0])
        acc = max(range(len(lps)), key=lambda i: (lps[i], -i))
        norm = [lp / len(ch) for lp, ch in zip(lps, choices)]
        acc_norm = max(range(len(norm)), key=lambda i: (norm[i], -i))
        mc.append(dict(prompt=prompt, choices=choices, delimiter=delim, answer=answer,
                       logprobs=lps, acc_pred=acc, acc_norm_pred=acc_norm))

    last = []
    for text in LAST_LOGITS_TEXTS:
        ids = sc.enc(text)
        last.append(dict(text=text, ids=ids, logits=sc.last_logits(ids)))

    greedy, greedy_mismatch = [], 0
    for prompt in GREEDY_PROMPTS:
        ids = sc.enc(prompt)
        new, manual = sc.greedy(ids)
        if new != manual:
            greedy_mismatch += 1
            assert dtype_name != "float32", (model_name, adapter, prompt, new, manual)
        greedy.append(dict(prompt=prompt, prompt_ids=ids, max_new_tokens=MAX_NEW_TOKENS, output_ids=new,
                           output_text=tok.decode(new)))

    # lm_eval's HFLM loads adapters with PEFT's default autocast_adapter_dtype=True (LoRA weights
    # float32 under a bf16 base). Score the same requests that way too, to show that this is the
    # only difference between the stored bf16 adapter reference and HFLM.
    alt = None
    if adapter and dtype_name != "float32":
        m2 = PeftModel.from_pretrained(load_base(model_name, dtype), OUT / "adapters" / adapter).eval()
        sc2 = Scorer(tok, m2, dtype)
        alt = [sc2.score(it["context_ids"], it["continuation_ids"])[0] for it in loglik]
        for mcit in mc:
            alt += [sc2.score(*sc2.encode_pair(mcit["prompt"], mcit["delimiter"] + ch, False))[0]
                    for ch in mcit["choices"]]

    case = {"model": model_name, "adapter": adapter, "dtype": dtype_name, "loglikelihood": loglik,
            "multiple_choice": mc, "last_logits": last, "greedy": greedy}
    stats = dict(greedy_item=bool(gi), greedy_mismatch=greedy_mismatch,
                 hit_eos=sum(tok.eos_token_id in g["output_ids"] for g in greedy))
    return case, stats, alt


# ---------------------------------------------------------------------- lm_eval check


def lm_eval_check(case, alt) -> dict:
    """Score every request again through lm_eval's HFLM (local folders, offline)."""
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    model_dir = str(OUT / "models" / case["model"])
    peft_dir = str(OUT / "adapters" / case["adapter"]) if case["adapter"] else None
    reqs = [(it["context"], it["continuation"], it["add_bos"], it["context_ids"], it["continuation_ids"],
             it["logprob"], it["is_greedy"]) for it in case["loglikelihood"]]
    for mc in case["multiple_choice"]:
        for ch, lp in zip(mc["choices"], mc["logprobs"]):
            reqs.append((mc["prompt"], mc["delimiter"] + ch, False, None, None, lp, None))
    alt = alt if alt is not None else [r[5] for r in reqs]
    reqs = [r + (a,) for r, a in zip(reqs, alt, strict=True)]

    max_diff, max_diff_alt, n = 0.0, 0.0, 0
    for add_bos in (False, True):
        sub = [r for r in reqs if r[2] == add_bos]
        lm = HFLM(pretrained=model_dir, peft=peft_dir, backend="causal", device="cpu", dtype=case["dtype"],
                  batch_size=1, add_bos_token=add_bos)
        for r in sub:
            c_ids, k_ids = lm._encode_pair(r[0], r[1])
            if r[3] is not None:
                assert (c_ids, k_ids) == (r[3], r[4]), (case["model"], r[0], c_ids, k_ids, r[3], r[4])
        res = lm.loglikelihood(
            [Instance("loglikelihood", {}, (r[0], r[1]), i) for i, r in enumerate(sub)], disable_tqdm=True
        )
        for r, (lp, g) in zip(sub, res):
            d = abs(lp - r[5])
            max_diff = max(max_diff, d)
            max_diff_alt = max(max_diff_alt, abs(lp - r[7]))
            n += 1
            if case["dtype"] == "float32":
                assert d <= F32_TOL, (case["model"], case["adapter"], r[0], r[1], lp, r[5])
                if r[6] is not None:
                    assert g == r[6], (case["model"], r[0], r[1])
        del lm
    assert max_diff_alt <= (F32_TOL if case["dtype"] == "float32" else 1e-3), max_diff_alt
    return dict(n=n, max_diff=max_diff, max_diff_alt=max_diff_alt)


# ----------------------------------------------------------------------------- main


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main() -> None:
    if OUT.exists():
        shutil.rmtree(OUT)
    (OUT / "models").mkdir(parents=True)
    (OUT / "adapters").mkdir(parents=True)

    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX as QWEN2_REGEX

    assert PRETOKENIZE_REGEX == QWEN2_REGEX
    tok_dir = OUT / "_tokenizer_tmp"
    tok_dir.mkdir()
    build_tokenizer().save(str(tok_dir / "tokenizer.json"))
    write_json(tok_dir / "tokenizer_config.json", TOKENIZER_CONFIG)
    hf_tok = Tok(tok_dir)

    model_info = build_models(tok_dir, hf_tok)
    shutil.rmtree(tok_dir)
    adapter_info = build_adapters(hf_tok)

    plan = [(m, None, "float32") for m in MODEL_SPECS]
    plan += [(spec[0], a, "float32") for a, spec in ADAPTER_SPECS.items()]
    plan += [("llama-gqa", None, "bfloat16"), ("llama-gqa", "llama-gqa-lora-list", "bfloat16")]

    cases, report = [], []
    for model_name, adapter, dtype_name in plan:
        case, stats, alt = run_case(model_name, adapter, dtype_name)
        chk = lm_eval_check(case, alt)
        cases.append(case)
        report.append((model_name, adapter, dtype_name, stats, chk))

    versions = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": importlib.metadata.version("transformers"),
        "peft": peft.__version__,
        "tokenizers": importlib.metadata.version("tokenizers"),
        "lm_eval": importlib.metadata.version("lm_eval"),
    }
    reference = {"generator": {"script": SCRIPT_REL, "versions": versions}, "cases": cases}
    (OUT / "reference.json").write_text(json.dumps(reference, ensure_ascii=False) + "\n", encoding="utf-8")

    lines = ["# Engine reference fixtures", "",
             f"Generated by `{SCRIPT_REL}` (do not edit by hand; rerun the script).", "",
             "Tokenizer (same in every model folder): byte-level BPE, vocab 448, <unk>=0 <s>=1 </s>=2; "
             "tokenizer.json's post-processor adds <s> when special tokens are requested, the fixtures "
             "encode WITHOUT special tokens unless add_bos is true.", "", "## Models", ""]
    lines += [f"- `models/{k}`: {v['desc']}." for k, v in model_info.items()]
    lines += ["", "## Adapters", ""]
    lines += [f"- `adapters/{k}` (base `{v['base']}`): {v['desc']}." for k, v in adapter_info.items()
              if k in ADAPTER_SPECS]
    lines += [f"- `adapters/{k}` (base `{v['base']}`, must be refused): {v['desc']}; PEFT: {v['peft']}."
              for k, v in adapter_info.items() if k in BAD_SPECS]
    lines += ["", "## reference.json", "",
              "float32 cases for every model and every good adapter (PeftModel.from_pretrained, not merged); "
              "bfloat16 cases for llama-gqa and llama-gqa-lora-list (from_pretrained(dtype=bfloat16), "
              "rope inv_freq stays float32, LoRA weights bf16; log_softmax and the sum in bf16 as lm_eval "
              "does, then cast). Every float32 logprob was checked against lm_eval's HFLM to 1e-5 (add_bos false "
              "items with HFLM(add_bos_token=False), add_bos true items with add_bos_token=True: lm_eval "
              "0.4.13's default add_bos_token=None follows the tokenizer, which here WOULD add BOS). HFLM "
              "keeps LoRA weights float32 under a bf16 base (PEFT autocast_adapter_dtype), so the bf16 "
              "adapter case differs from HFLM by up to ~0.5 nats; scored with float32 LoRA it matches.", ""]
    (OUT / "README.md").write_text("\n".join(lines) + "\n", encoding="utf-8")

    # ---- summary
    print("versions:", json.dumps(versions))
    print("\nmodels:")
    for k, v in model_info.items():
        print(f"  {k:24s} logit_std={v['logit_std']} distinct_argmax={v['distinct_argmax']} "
              f"rope_keys={v['rope_config_keys']} files={len(v['files'])}")
    print("adapters:")
    for k, v in adapter_info.items():
        extra = f"tensors={v['tensors']} effect={v['effect']}" if "tensors" in v else f"PEFT: {v['peft']}"
        print(f"  {k:24s} base={v['base']:22s} {extra}")
    print("cases (lm_eval HFLM check):")
    for model_name, adapter, dtype_name, stats, chk in report:
        print(f"  {model_name:22s} {str(adapter):22s} {dtype_name:9s} lm_eval n={chk['n']} "
              f"max|diff|={chk['max_diff']:.3g} (HFLM-style LoRA dtype: {chk['max_diff_alt']:.3g}) greedy_item={stats['greedy_item']} "
              f"generate!=argmax_loop={stats['greedy_mismatch']} eos_hit={stats['hit_eos']}")
    outs = {tuple(g["output_ids"]) for c in cases for g in c["greedy"]}
    print(f"distinct greedy outputs: {len(outs)} / {sum(len(c['greedy']) for c in cases)}")
    print(f"fixture folder: {du(OUT) / 1e6:.2f} MB (reference.json {(OUT / 'reference.json').stat().st_size / 1e6:.2f} MB)")
    assert du(OUT) < 8_000_000


if __name__ == "__main__":
    sys.exit(main())

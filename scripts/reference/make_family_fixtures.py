#!/usr/bin/env python3
"""Fabricate reference fixtures for the other model families of the Rust (candle) engine.

A sibling of make_engine_fixtures.py (the "base" script): same tokenizer (copied from
tests/fixtures/engine/models/llama-gqa, not retrained), same scoring code, same reference.json
schema, read by tests/engine/engine_reference.rs. Everything is made locally from fixed seeds, offline;
running it twice gives byte-identical files.

How to run (from the repository root, after make_engine_fixtures.py has written
tests/fixtures/engine/, which is committed):

    python3 -m venv /work/venv-ref            # any folder outside the repo
    /work/venv-ref/bin/pip install -r scripts/reference/engine-requirements.txt
    /work/venv-ref/bin/python scripts/reference/make_family_fixtures.py

It rewrites tests/fixtures/families/ from scratch:

  models/<name>/      tiny random float32 models, one per architectural peculiarity
                      (Phi partial rotary / qk_layernorm, Phi-3 fused projections + longrope,
                      Gemma (1+w) norms / head_dim != hidden/heads, Gemma-2 softcapping + sliding
                      window, Gemma-3 q/k norms + per-layer-type rope, Qwen-3 q/k norms)
  adapters/<name>/    PEFT LoRA adapters on those models
  reference.json      what transformers/PEFT compute (schema of tests/fixtures/engine/reference.json)
  README.md           the quirks of each model/adapter and the items added to the base lists

The base script's functions read its module globals OUT (fixture folder), LOGLIK_ITEMS,
LAST_LOGITS_TEXTS and GREEDY_PROMPTS when they are called; this script rebinds those (base.OUT ->
tests/fixtures/families, the item lists -> base lists + EXTRA_*) and then calls base.run_case,
base.lm_eval_check, base.make_adapter, ... unchanged, so tests/fixtures/engine is untouched.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import make_engine_fixtures as base  # noqa: E402  (sets the offline env, torch threads, warnings)

import copy  # noqa: E402
import importlib.metadata  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402
from safetensors import safe_open  # noqa: E402
from transformers import (  # noqa: E402
    AutoModelForCausalLM,
    Gemma2Config,
    Gemma2ForCausalLM,
    Gemma3ForCausalLM,
    Gemma3TextConfig,
    GemmaConfig,
    GemmaForCausalLM,
    Phi3Config,
    Phi3ForCausalLM,
    PhiConfig,
    PhiForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
)

import peft  # noqa: E402
from peft import PeftModel  # noqa: E402

REPO = base.REPO
OUT = REPO / "tests" / "fixtures" / "families"
TOKENIZER_SRC = REPO / "tests" / "fixtures" / "engine" / "models" / "llama-gqa"
SCRIPT_REL = "scripts/reference/make_family_fixtures.py"
VOCAB = base.VOCAB

# ------------------------------------------------------------------------ extra items
# Added to the base lists: they sit on both sides of the longrope switch (original_max_position_embeddings
# 32) at token level, and are longer than every sliding window. The loglikelihood and greedy ones go into
# every case, the last_logits ones only into the phi3-longrope cases (448 floats each: size budget).

LONG_CTX = "Tallis and Jorum met in the quiet market (day 9). The cade of Brindle is white. Is Obrun in"  # 29 tokens
EXTRA_LOGLIK = [
    # (context, continuation, add_bos, expected len(context_ids + continuation_ids))
    (LONG_CTX, " Lake Ulm", False, 33),  # model input 32 tokens: the SHORT factors
    (LONG_CTX, " Lake Ulm?", False, 34),  # model input 33 tokens: the LONG factors
    ('Halvic has 31 vanes, and 4 are grey! Is Seppo in Port Sedge? Yes: 208. Wexa said "',
     'black" at 6:15; then left.', False, 49),  # continuation alone spans the 32 boundary
]
EXTRA_LAST_LOGITS = [
    (LONG_CTX + " the north?", 32),  # 32 tokens: short factors
    (LONG_CTX + " Lake Ulm", 33),  # 33 tokens: long factors
]
EXTRA_GREEDY = [
    ("Yarrow has 5 lanterns, and 2 are blue! Q: What color is Doune's wicket?\nA:", 27),  # 27 + 12 > 32
]

# -------------------------------------------------------------------------- models

COMMON = dict(vocab_size=VOCAB, max_position_embeddings=256, bos_token_id=1, eos_token_id=2, pad_token_id=None)

LONGROPE_SHORT = [1.0, 1.1, 1.25, 1.5, 1.75, 2.0]
LONGROPE_LONG = [1.05, 1.4, 1.9, 2.3, 2.7, 3.0]
LONGROPE_OMP = 32
GEMMA3_LAYER_TYPES = ["sliding_attention", "sliding_attention", "full_attention"]

# name -> (class, config, seed, config.json rewrite, description). The seeds were picked among a few
# so that the greedy outputs are not one token repeated (tiny random models fall into loops easily).
MODEL_SPECS = {
    "phi-partial05": (
        PhiForCausalLM,
        PhiConfig(
            **COMMON, hidden_size=64, intermediate_size=72, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=4, hidden_act="gelu_new", layer_norm_eps=1e-5, qk_layernorm=False,
            tie_word_embeddings=False,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.5},
        ),
        13,
        None,
        "Phi (phi-1.5 style): parallel attention + MLP off ONE input LayerNorm (with bias), biases on "
        "q/k/v/dense/fc1/fc2 and lm_head, gelu_new, 4 heads MHA (head_dim 16), partial_rotary_factor 0.5 "
        "(rotary on the first 8 dims of each head, rotate_half within those 8), untied; config.json as "
        "transformers v5 saves it (rope_theta and partial_rotary_factor inside rope_parameters)",
    ),
    "phi-qkln04": (
        PhiForCausalLM,
        PhiConfig(
            **COMMON, hidden_size=64, intermediate_size=72, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, hidden_act="gelu_new", layer_norm_eps=1e-5, qk_layernorm=True,
            tie_word_embeddings=False,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.4},
        ),
        12,
        "legacy-phi",
        "Phi (phi-2 style config.json: rope_theta and partial_rotary_factor top-level, rope_scaling null, "
        "no rope_parameters), 4 heads / 2 kv heads, qk_layernorm true (LayerNorm with bias over head_dim 16, "
        "per head, before rope), partial_rotary_factor 0.4: rotary dims int(16*0.4) = 6 (3 frequencies, "
        "rotate_half over 6 dims)",
    ),
    "phi3-longrope": (
        Phi3ForCausalLM,
        Phi3Config(
            **COMMON, hidden_size=64, intermediate_size=72, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, hidden_act="silu", rms_norm_eps=1e-5, tie_word_embeddings=True,
            original_max_position_embeddings=LONGROPE_OMP, sliding_window=None,
            rope_parameters={
                "rope_type": "longrope", "rope_theta": 10000.0, "partial_rotary_factor": 0.75,
                "short_factor": LONGROPE_SHORT, "long_factor": LONGROPE_LONG,
                "original_max_position_embeddings": LONGROPE_OMP,
            },
        ),
        403,
        "legacy-phi3",
        "Phi-3 / Phi-4-mini: fused qkv_proj [q|k|v] and gate_up_proj [gate|up], 4 heads / 2 kv heads "
        "(head_dim 16), tied embeddings (as Phi-4-mini), no biases; longrope (short_factor "
        f"{LONGROPE_SHORT}, long_factor {LONGROPE_LONG}; max_position_embeddings 256 / "
        f"original_max_position_embeddings {LONGROPE_OMP} -> attention_factor sqrt(1 + ln 8 / ln 32) on cos "
        "and sin) with partial_rotary_factor 0.75 (12 rotary dims of 16, 6 factors); config.json in the "
        "Phi-4-mini hub layout: rope_scaling {type: longrope, short_factor, long_factor}, rope_theta, "
        "partial_rotary_factor and original_max_position_embeddings top-level, no rope_parameters",
    ),
    "gemma": (
        GemmaForCausalLM,
        GemmaConfig(
            **COMMON, hidden_size=64, intermediate_size=72, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=1, head_dim=32, hidden_act="gelu_pytorch_tanh", rms_norm_eps=1e-6,
            tie_word_embeddings=True, rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        ),
        11,
        None,
        "Gemma: head_dim 32 with hidden 64 / 4 heads (q_proj 64->128, o_proj 128->64), 1 kv head (MQA), "
        "gelu_pytorch_tanh (GeGLU), RMSNorm x*(1+w) in float32 (w stored around 0; the final norm's "
        "around 7), embeddings (std 0.03) times sqrt(64) = 8, tied embeddings (no lm_head.weight in the file)",
    ),
    "gemma2": (
        Gemma2ForCausalLM,
        Gemma2Config(
            **COMMON, hidden_size=64, intermediate_size=72, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, head_dim=16, hidden_activation="gelu_pytorch_tanh", rms_norm_eps=1e-6,
            tie_word_embeddings=True, rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
            query_pre_attn_scalar=24, sliding_window=8, attn_logit_softcapping=5.0,
            final_logit_softcapping=3.0,
        ),
        11,
        None,
        "Gemma-2: 4 heads / 2 kv heads, head_dim 16, query_pre_attn_scalar 24 (scores * 24^-0.5, not "
        "head_dim^-0.5), "
        "attn_logit_softcapping 5 (tanh on the scaled scores, before the mask), final_logit_softcapping 3, "
        "layer_types [sliding_attention, full_attention] with sliding_window 8, four (1+w) RMSNorms per layer "
        "(input, post_attention, pre_feedforward, post_feedforward), tied; weights initialised as for gemma",
    ),
    "gemma3": (
        Gemma3ForCausalLM,
        Gemma3TextConfig(
            **COMMON, hidden_size=64, intermediate_size=72, num_hidden_layers=3, num_attention_heads=4,
            num_key_value_heads=1, head_dim=32, hidden_activation="gelu_pytorch_tanh", rms_norm_eps=1e-6,
            tie_word_embeddings=True, query_pre_attn_scalar=20, sliding_window=8,
            layer_types=list(GEMMA3_LAYER_TYPES), attn_logit_softcapping=None, final_logit_softcapping=None,
            rope_parameters={
                "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
                "full_attention": {"rope_type": "linear", "factor": 2.0, "rope_theta": 1000000.0},
            },
        ),
        13,
        None,
        "Gemma-3 text (model_type gemma3_text): 3 layers [sliding, sliding, full], sliding_window 8, "
        "q_norm/k_norm ((1+w) RMSNorm over head_dim 32, before rope), 4 heads / 1 kv head, head_dim 32 "
        "(q_proj 64->128), "
        "query_pre_attn_scalar 20, rope per layer type: sliding layers theta 10000 default, full layers "
        "theta 1e6 with linear scaling factor 2 (inv_freq / 2); no softcapping; tied (init as for gemma); config.json as "
        "transformers v5 saves it (rope_parameters nested by layer type, layer_types listed)",
    ),
    "qwen3": (
        Qwen3ForCausalLM,
        Qwen3Config(
            **COMMON, hidden_size=64, intermediate_size=72, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, head_dim=32, hidden_act="silu", rms_norm_eps=1e-6,
            tie_word_embeddings=False, use_sliding_window=False, attention_bias=False,
            rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
        ),
        407,
        None,
        "Qwen-3: explicit head_dim 32 with hidden 64 / 4 heads / 2 kv heads, q_norm/k_norm (plain RMSNorm "
        "over head_dim, before rope), no q/k/v bias, rope_theta 1e6, untied",
    ),
}
GEMMA_FAMILY = {"gemma", "gemma2", "gemma3"}


GEMMA_EMBED_STD = 0.03  # x sqrt(64) = 8 in the model: ~0.25, what the other models feed their first layer
GEMMA_FINAL_NORM_W = 7.0  # final norm scale 1 + w ~ 8: logits of the usual size through the tied head


def init_family_weights(model: torch.nn.Module, name: str, seed: int) -> None:
    """base.init_weights, then corrections on the same random draw (so still one stream):
    * LayerNorm biases (Phi) -> around 0 instead of around 1 (base puts every "norm" parameter around 1);
    * Gemma norms hold w of a (1+w) scale -> around 0 (std 0.2) instead of around 1;
    * Gemma embeddings std 0.03 instead of 0.25 and the final norm w around 7: with the sqrt(hidden)
      normaliser and std 0.25 the token's own embedding dominates the residual stream and the tied
      lm_head maps every position back to its input token (greedy = the last prompt token repeated)."""
    base.init_weights(model, seed)
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if "norm" in pname and (pname.endswith(".bias") or name in GEMMA_FAMILY):
                p.sub_(1.0)
            if name in GEMMA_FAMILY and pname == "model.embed_tokens.weight":
                p.mul_(GEMMA_EMBED_STD / 0.25)
            if name in GEMMA_FAMILY and pname == "model.norm.weight":
                p.add_(GEMMA_FINAL_NORM_W)


def to_legacy(cfg_path: Path, kind: str) -> None:
    """Rewrite a v5 config.json into the layout the hub checkpoints of that family carry."""
    cfg = json.loads(cfg_path.read_text())
    rp = cfg.pop("rope_parameters")
    if kind == "legacy-phi":  # microsoft/phi-2
        assert rp["rope_type"] == "default"
        cfg["rope_theta"] = rp["rope_theta"]
        cfg["partial_rotary_factor"] = rp["partial_rotary_factor"]
        cfg["rope_scaling"] = None
    elif kind == "legacy-phi3":  # microsoft/Phi-4-mini-instruct
        assert rp["rope_type"] == "longrope" and rp["original_max_position_embeddings"] == LONGROPE_OMP
        assert cfg["original_max_position_embeddings"] == LONGROPE_OMP
        cfg["rope_theta"] = rp["rope_theta"]
        cfg["partial_rotary_factor"] = rp["partial_rotary_factor"]
        cfg["rope_scaling"] = {"type": "longrope", "short_factor": rp["short_factor"], "long_factor": rp["long_factor"]}
    else:
        raise ValueError(kind)
    base.write_json(cfg_path, cfg)


def rope_params_equal(a: dict, b: dict) -> bool:
    strip = lambda d: {k: (strip(v) if isinstance(v, dict) else v) for k, v in d.items() if k != "type"}  # noqa: E731
    return strip(a) == strip(b)


def alt_logits(cls, cfg, state, ids, **changes) -> torch.Tensor:
    """Logits of the same weights under a changed config (strict=False: qk_layernorm off drops tensors)."""
    alt = copy.deepcopy(cfg)
    for k, v in changes.items():
        setattr(alt, k, v)
    m = cls(alt).eval()
    missing, unexpected = m.load_state_dict(state, strict=False)
    assert not missing, missing
    return base.logits_of(m, ids)


def sensitivity(name, cls, cfg, model, ids) -> dict:
    """Each peculiarity must change the logits of the probe (so that getting it wrong is noticed)."""
    ref = base.logits_of(model, ids)
    st = model.state_dict()
    d = lambda **ch: (alt_logits(cls, cfg, st, ids, **ch) - ref).abs().max().item()  # noqa: E731
    rp = cfg.rope_parameters
    out = {}
    if name == "gemma3":
        for lt in ("sliding_attention", "full_attention"):
            r = copy.deepcopy(rp)
            r[lt]["rope_theta"] *= 3.0
            out[f"rope_theta[{lt}]x3"] = d(rope_parameters=r)
        r = copy.deepcopy(rp)
        r["full_attention"] = {"rope_type": "default", "rope_theta": rp["full_attention"]["rope_theta"]}
        out["no_linear_factor"] = d(rope_parameters=r)
        r = copy.deepcopy(rp)  # the two layer types swapped: which rope goes to which layer matters
        r["sliding_attention"], r["full_attention"] = r["full_attention"], r["sliding_attention"]
        out["rope_swapped"] = d(rope_parameters=r)
    else:
        out["rope_theta_x3"] = d(rope_parameters=dict(rp, rope_theta=rp["rope_theta"] * 3.0))
    if name.startswith("phi-"):
        out["partial_rotary_1.0"] = d(rope_parameters=dict(rp, partial_rotary_factor=1.0))
    if name == "phi-qkln04":
        out["qk_layernorm_off"] = d(qk_layernorm=False)
    if name == "phi3-longrope":
        out["long_factor=short_factor"] = d(rope_parameters=dict(rp, long_factor=list(rp["short_factor"])))
        out["attention_factor_1"] = d(rope_parameters=dict(rp, attention_factor=1.0))
        # at <= 32 tokens the long factors are not used at all
        short_ids = ids[:LONGROPE_OMP]
        a = alt_logits(cls, cfg, st, short_ids, rope_parameters=dict(rp, long_factor=list(rp["short_factor"])))
        assert (a - base.logits_of(model, short_ids)).abs().max().item() == 0.0
    if name in ("gemma2", "gemma3"):
        out["sliding_window_4096"] = d(sliding_window=4096)  # None breaks the cache layers: "no window"
        out["sliding_window+1"] = d(sliding_window=cfg.sliding_window + 1)  # catches q-k < w vs q-k <= w
        out["query_pre_attn_scalar=head_dim"] = d(query_pre_attn_scalar=cfg.head_dim)
    if name == "gemma2":
        out["attn_softcap_none"] = d(attn_logit_softcapping=None)
        out["final_softcap_none"] = d(final_logit_softcapping=None)
        assert out["attn_softcap_none"] > 1e-2 and out["final_softcap_none"] > 1e-2, out
    if name == "gemma3":
        out["all_full_attention"] = d(layer_types=["full_attention"] * cfg.num_hidden_layers)
    for k, v in out.items():
        assert v > 1e-3, (name, k, v)
    return {k: round(v, 4) for k, v in out.items()}


def safetensors_names(d: Path) -> list[str]:
    with safe_open(d / "model.safetensors", "pt") as f:
        return sorted(f.keys())


def build_models(hf_tok) -> dict:
    info = {}
    probe_ids = hf_tok.encode(base.PROBE)
    assert len(probe_ids) > LONGROPE_OMP
    for name, (cls, cfg, seed, rewrite, desc) in MODEL_SPECS.items():
        d = OUT / "models" / name
        model = cls(copy.deepcopy(cfg)).eval()
        init_family_weights(model, name, seed)
        model.save_pretrained(d)
        for f in ("tokenizer.json", "tokenizer_config.json"):
            shutil.copyfile(TOKENIZER_SRC / f, d / f)
        if rewrite:
            to_legacy(d / "config.json", rewrite)
        ref = base.logits_of(model, probe_ids)
        loaded = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).eval()
        assert type(loaded) is cls, (name, type(loaded))
        diff = (base.logits_of(loaded, probe_ids) - ref).abs().max().item()
        assert diff == 0.0, (name, diff)
        assert rope_params_equal(loaded.config.rope_parameters, cfg.rope_parameters), (
            name, loaded.config.rope_parameters, cfg.rope_parameters)
        names = safetensors_names(d)
        if cfg.tie_word_embeddings:
            assert "lm_head.weight" not in names, name
        else:
            assert "lm_head.weight" in names, name
        saved = json.loads((d / "config.json").read_text())
        if name in ("gemma2", "gemma3"):
            lt = saved["layer_types"]
            assert "sliding_attention" in lt and "full_attention" in lt, (name, lt)
        if name == "phi3-longrope":
            re = loaded.model.rotary_emb
            assert re.inv_freq.shape == (6,), re.inv_freq.shape
            assert abs(re.attention_scaling - math.sqrt(1 + math.log(8) / math.log(32))) < 1e-12
        sens = sensitivity(name, cls, cfg, model, probe_ids)
        top1 = ref.argmax(-1)
        info[name] = dict(
            desc=desc,
            files=sorted(p.name for p in d.iterdir()),
            logit_std=round(ref.std().item(), 3),
            distinct_argmax=len(set(top1.tolist())),
            sensitivity=sens,
            tensors=names,
        )
    return info


# ------------------------------------------------------------------------- adapters

QWEN3_REGEX = r"model\.layers\.\d+\.(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up)_proj)"

# name -> (base model, LoraConfig kwargs, seed, expected tensor count, description)
ADAPTER_SPECS = {
    "phi-lora": (
        "phi-qkln04",
        dict(target_modules=["q_proj", "k_proj", "v_proj", "dense", "fc1", "fc2"], r=4, lora_alpha=8),
        501,
        2 * 6 * 2,
        "q/k/v_proj + dense + fc1 + fc2 (the Phi names; base layers have biases, LoRA does not), r 4, alpha 8",
    ),
    "phi3-lora": (
        "phi3-longrope",
        dict(target_modules=["qkv_proj", "o_proj", "gate_up_proj", "down_proj"], r=4, lora_alpha=8),
        502,
        2 * 4 * 2,
        "on the FUSED projections: qkv_proj (lora_B [128, 4] = q 64 | k 32 | v 32), o_proj, gate_up_proj "
        "(lora_B [144, 4] = gate 72 | up 72), down_proj, r 4, alpha 8",
    ),
    "gemma2-lora": (
        "gemma2",
        dict(target_modules=base.ALL_ATTN_MLP, r=8, lora_alpha=16),
        503,
        2 * 7 * 2,
        "q/k/v/o + gate/up/down, r 8, alpha 16 (on the softcapped sliding/full model)",
    ),
    "gemma3-lora": (
        "gemma3",
        dict(target_modules="all-linear", r=4, lora_alpha=8, use_rslora=True),
        504,
        3 * 7 * 2,
        'target_modules "all-linear" (7 linears x 3 layers; not lm_head, which is tied), r 4, alpha 8, '
        "use_rslora (scaling 8/sqrt(4) = 4)",
    ),
    "qwen3-lora": (
        "qwen3",
        dict(target_modules=QWEN3_REGEX, r=4, lora_alpha=16),
        505,
        2 * 6 * 2,
        f"target_modules regex string {QWEN3_REGEX!r} (q/k/v/o + gate/up, not down_proj), r 4, alpha 16 "
        "(scaling 4)",
    ),
}


def build_adapters(hf_tok) -> dict:
    info = {}
    probe_ids = hf_tok.encode(base.PROBE)
    for name, (model_name, kw, seed, n_tensors, desc) in ADAPTER_SPECS.items():
        pm, d = base.make_adapter(name, model_name, kw, seed)
        ref = base.logits_of(pm, probe_ids)
        reloaded = PeftModel.from_pretrained(base.load_base(model_name), d).eval()
        diff = (base.logits_of(reloaded, probe_ids) - ref).abs().max().item()
        assert diff == 0.0, (name, diff)
        effect = (ref - base.logits_of(base.load_base(model_name), probe_ids)).abs().max().item()
        assert effect > 0.05, (name, effect)
        with safe_open(d / "adapter_model.safetensors", "pt") as f:
            assert f.metadata() == {"format": "pt"}
            shapes = {k: f.get_slice(k).get_shape() for k in f.keys()}
        assert len(shapes) == n_tensors, (name, len(shapes), sorted(shapes))
        assert not any("lm_head" in k or "embed" in k for k in shapes), name
        if name == "phi3-lora":
            assert shapes["base_model.model.model.layers.0.self_attn.qkv_proj.lora_B.weight"] == [128, 4]
            assert shapes["base_model.model.model.layers.0.mlp.gate_up_proj.lora_B.weight"] == [144, 4]
        if name == "qwen3-lora":
            assert not any("down_proj" in k for k in shapes)
        if name == "gemma3-lora":
            cfg = json.loads((d / "adapter_config.json").read_text())
            assert cfg["target_modules"] == "all-linear" and cfg["use_rslora"] is True
        info[name] = dict(desc=desc, base=model_name, tensors=len(shapes), effect=round(effect, 3),
                          shapes={k: shapes[k] for k in sorted(shapes) if ".layers.0." in k})
    return info


# ----------------------------------------------------------------------------- main


def main() -> None:
    t0 = time.time()
    if OUT.exists():
        shutil.rmtree(OUT)
    (OUT / "models").mkdir(parents=True)
    (OUT / "adapters").mkdir(parents=True)

    # the base functions work on this folder and on the extended item lists
    base.OUT = OUT
    hf_tok = base.Tok(TOKENIZER_SRC)
    for ctx, cont, _, n in EXTRA_LOGLIK:
        assert len(hf_tok.encode(ctx + cont)) == n, (ctx, cont, len(hf_tok.encode(ctx + cont)))
    for text, n in EXTRA_LAST_LOGITS + EXTRA_GREEDY:
        assert len(hf_tok.encode(text)) == n, (text, len(hf_tok.encode(text)))
    base.LOGLIK_ITEMS = list(base.LOGLIK_ITEMS) + [it[:3] for it in EXTRA_LOGLIK]
    last_logits_texts = list(base.LAST_LOGITS_TEXTS)
    base.GREEDY_PROMPTS = list(base.GREEDY_PROMPTS) + [t for t, _ in EXTRA_GREEDY]

    model_info = build_models(hf_tok)
    adapter_info = build_adapters(hf_tok)

    plan = [(m, None, "float32") for m in MODEL_SPECS]
    plan += [(spec[0], a, "float32") for a, spec in ADAPTER_SPECS.items()]
    plan += [("gemma2", None, "bfloat16"), ("phi-qkln04", None, "bfloat16"), ("phi-qkln04", "phi-lora", "bfloat16")]

    cases, report = [], []
    for model_name, adapter, dtype_name in plan:
        # 448 logits per text: the two boundary texts only where they matter (size budget)
        extra = [t for t, _ in EXTRA_LAST_LOGITS] if model_name == "phi3-longrope" else []
        base.LAST_LOGITS_TEXTS = last_logits_texts + extra
        case, stats, alt = base.run_case(model_name, adapter, dtype_name)
        chk = base.lm_eval_check(case, alt)
        cases.append(case)
        report.append((model_name, adapter, dtype_name, stats, chk))
        print(f"  done {model_name} {adapter} {dtype_name} ({time.time() - t0:.0f}s)", flush=True)

    # the long items really cross the longrope switch in every phi3 case
    for c in cases:
        if c["model"] == "phi3-longrope":
            lens = [len(it["context_ids"]) + len(it["continuation_ids"]) - 1 for it in c["loglikelihood"]]
            assert LONGROPE_OMP in lens and LONGROPE_OMP + 1 in lens and max(lens) > LONGROPE_OMP + 8
            assert any(len(g["prompt_ids"]) < LONGROPE_OMP < len(g["prompt_ids"]) + len(g["output_ids"])
                       for g in c["greedy"]), "no greedy output crosses the longrope switch"

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

    lines = ["# Model-family reference fixtures", "",
             f"Generated by `{SCRIPT_REL}` (do not edit by hand; rerun the script). Same tokenizer "
             "(copied from tests/fixtures/engine/models/llama-gqa), same scoring conventions and the same "
             "reference.json schema as tests/fixtures/engine/ (see its README).", "",
             "All models: float32, vocab 448, bos 1 / eos 2, random weights (large std, fixed seeds).", "",
             "## Models", ""]
    lines += [f"- `models/{k}`: {v['desc']}." for k, v in model_info.items()]
    lines += ["", "## Adapters", ""]
    lines += [f"- `adapters/{k}` (base `{v['base']}`): {v['desc']}." for k, v in adapter_info.items()]
    lines += ["", "## Items added to the base script's lists", "",
              "The loglikelihood and greedy items below are in every case, the last_logits texts only in "
              "the phi3-longrope cases (with and without phi3-lora).", "",
              "Phi-3 longrope switches from short_factor to long_factor when the sequence given to the "
              f"model is longer than original_max_position_embeddings ({LONGROPE_OMP}) tokens "
              "(max(position_ids) + 1 > 32); these items sit on both sides of that switch. transformers' "
              "Phi-3 generate() drops its KV cache and recomputes the whole sequence at the step where "
              "the input first reaches 33 tokens, so the greedy outputs equal a cache-free argmax loop.", ""]
    for ctx, cont, add_bos, n in EXTRA_LOGLIK:
        lines.append(f"- loglikelihood: context {json.dumps(ctx, ensure_ascii=False)}, continuation "
                     f"{json.dumps(cont, ensure_ascii=False)}, add_bos {str(add_bos).lower()} "
                     f"({n} tokens together, the model sees {n - 1})")
    for text, n in EXTRA_LAST_LOGITS:
        lines.append(f"- last_logits: {json.dumps(text, ensure_ascii=False)} ({n} tokens)")
    for text, n in EXTRA_GREEDY:
        lines.append(f"- greedy: {json.dumps(text, ensure_ascii=False)} ({n} tokens + 12 new)")
    lines += ["", "## reference.json", "",
              "float32 cases for every model and every adapter (PeftModel.from_pretrained, not merged); "
              "bfloat16 cases for gemma2, phi-qkln04 and phi-lora on phi-qkln04, loaded and scored as in "
              "tests/fixtures/engine (from_pretrained(dtype=bfloat16), LoRA weights bf16). Every float32 "
              "logprob was checked against lm_eval's HFLM to 1e-5. As in tests/fixtures/engine, HFLM keeps LoRA "
              "weights float32 under a bf16 base, so the bf16 phi-lora case differs from HFLM by up to ~0.5 nats; "
              "scored with float32 LoRA it matches.", ""]
    (OUT / "README.md").write_text("\n".join(lines) + "\n", encoding="utf-8")

    # ---- summary
    print("versions:", json.dumps(versions))
    print("\nmodels:")
    for k, v in model_info.items():
        print(f"  {k:16s} logit_std={v['logit_std']} distinct_argmax={v['distinct_argmax']} "
              f"sensitivity={v['sensitivity']}")
    print("adapters:")
    for k, v in adapter_info.items():
        print(f"  {k:14s} base={v['base']:14s} tensors={v['tensors']} effect={v['effect']}")
    print("cases (lm_eval HFLM check):")
    for model_name, adapter, dtype_name, stats, chk in report:
        print(f"  {model_name:14s} {str(adapter):12s} {dtype_name:9s} lm_eval n={chk['n']} "
              f"max|diff|={chk['max_diff']:.3g} (HFLM-style LoRA dtype: {chk['max_diff_alt']:.3g}) "
              f"greedy_item={stats['greedy_item']} generate!=argmax_loop={stats['greedy_mismatch']} "
              f"eos_hit={stats['hit_eos']}")
    outs = {tuple(g["output_ids"]) for c in cases for g in c["greedy"]}
    print(f"distinct greedy outputs: {len(outs)} / {sum(len(c['greedy']) for c in cases)}")
    size = base.du(OUT)
    print(f"fixture folder: {size / 1e6:.2f} MB (reference.json {(OUT / 'reference.json').stat().st_size / 1e6:.2f} MB)"
          f"; {time.time() - t0:.0f}s")
    assert size < 4_000_000, size


if __name__ == "__main__":
    sys.exit(main())

//! Llama, Mistral and Qwen2: pre-norm blocks with RMSNorm, SwiGLU, full RoPE (default, linear or
//! llama3 scaling); Qwen2 with q/k/v bias, Mistral (and Qwen2 with `use_sliding_window`) with a
//! sliding window.

use super::Family;
use super::common::{self, AttnShape};
use crate::engine::config::ModelConfig;
use crate::engine::decoder::{Block, Parts, Residual};
use crate::engine::error::Result;
use crate::engine::layers::{Attention, Norm};
use crate::engine::weights::WeightLoader;

#[derive(Debug)]
pub struct Llama;

pub const LINEARS: &[&str] = &[
    "self_attn.q_proj",
    "self_attn.k_proj",
    "self_attn.v_proj",
    "self_attn.o_proj",
    "mlp.gate_proj",
    "mlp.up_proj",
    "mlp.down_proj",
];

impl Family for Llama {
    fn name(&self) -> &'static str {
        "llama"
    }

    fn architectures(&self) -> &'static [(&'static str, &'static str)] {
        &[
            ("LlamaForCausalLM", "llama"),
            ("MistralForCausalLM", "mistral"),
            ("Qwen2ForCausalLM", "qwen2"),
        ]
    }

    fn load(&self, cfg: &ModelConfig, w: &mut WeightLoader<'_>) -> Result<Parts> {
        let f = cfg.fields();
        let qwen2 = cfg.architecture == "Qwen2ForCausalLM";
        let attention_bias = f.bool_or("attention_bias", false)?;
        let window = match cfg.architecture.as_str() {
            "MistralForCausalLM" => f.opt_usize("sliding_window")?,
            "Qwen2ForCausalLM" if f.bool_or("use_sliding_window", false)? => {
                f.opt_usize("sliding_window")?
            }
            _ => None,
        };
        let max_window_layers = f.opt_usize("max_window_layers")?.unwrap_or(0);
        let variant = Variant {
            qkv_bias: qwen2 || attention_bias,
            o_bias: !qwen2 && attention_bias,
            qk_norm: false,
            window,
            windowed: common::windowed_layers(cfg, |i| !qwen2 || i >= max_window_layers)?,
        };
        build(cfg, w, variant)
    }
}

/// What distinguishes the Llama-shaped families from each other.
pub struct Variant {
    pub qkv_bias: bool,
    pub o_bias: bool,
    /// Qwen3's `q_norm` / `k_norm`: RMSNorm over each head before RoPE.
    pub qk_norm: bool,
    pub window: Option<usize>,
    /// Per layer: whether it uses the window.
    pub windowed: Vec<bool>,
}

/// A Llama-shaped decoder: `model.embed_tokens`, `model.layers.N.{input_layernorm,
/// self_attn.{q,k,v,o}_proj, post_attention_layernorm, mlp.{gate,up,down}_proj}`, `model.norm`,
/// `lm_head` (or tied).
pub fn build(cfg: &ModelConfig, w: &mut WeightLoader<'_>, v: Variant) -> Result<Parts> {
    let f = cfg.fields();
    let s = AttnShape::parse(cfg)?;
    let h = cfg.hidden_size;
    let eps = f.f64_or("rms_norm_eps", 1e-6)?;
    let mlp_bias = f.bool_or("mlp_bias", false)?;
    let act = common::activation(cfg, &["hidden_act"], "silu")?;
    let intermediate = f.usize("intermediate_size")?;
    let embed = w.tensor("model.embed_tokens.weight", &[cfg.vocab_size, h])?;
    let mut blocks = Vec::with_capacity(cfg.num_hidden_layers);
    for (i, &win) in v.windowed.iter().enumerate() {
        let p = format!("model.layers.{i}");
        let (qkv, o) = common::separate_qkv(
            w,
            &format!("{p}.self_attn"),
            s,
            h,
            v.qkv_bias,
            "o_proj",
            v.o_bias,
        )?;
        let head_norm = |w: &mut WeightLoader<'_>, n: &str| -> Result<Option<Norm>> {
            v.qk_norm
                .then(|| Norm::rms(w, &format!("{p}.self_attn.{n}"), s.head_dim, eps))
                .transpose()
        };
        blocks.push(Block {
            residual: Residual::Sequential {
                attn_norm: Norm::rms(w, &format!("{p}.input_layernorm"), h, eps)?,
                mlp_norm: Norm::rms(w, &format!("{p}.post_attention_layernorm"), h, eps)?,
            },
            attn: Attention {
                q_norm: head_norm(w, "q_norm")?,
                k_norm: head_norm(w, "k_norm")?,
                windowed: win && v.window.is_some(),
                ..s.attention(qkv, o)
            },
            mlp: common::gated_mlp(w, &format!("{p}.mlp"), h, intermediate, mlp_bias, act)?,
        });
    }
    let final_norm = Norm::rms(w, "model.norm", h, eps)?;
    let tied = f.bool_or("tie_word_embeddings", false)?;
    let head = common::head(cfg, w, &embed, tied, false)?;
    let rope = common::rope(cfg, s.rotary_dim(&f)?, 10000.0, w)?;
    Ok(Parts {
        embed,
        embed_scale: None,
        blocks,
        final_norm,
        head,
        final_softcap: None,
        ropes: vec![rope],
        sliding_window: v.window,
        linear_suffixes: LINEARS,
    })
}

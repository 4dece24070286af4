//! Phi-3 (also Phi-3.5 and Phi-4-mini configs): Llama-shaped blocks with one fused `qkv_proj`
//! (q | k | v) and one fused `gate_up_proj` (gate | up), LongRoPE, optional partial rotary and
//! sliding window.

use super::Family;
use super::common::{self, AttnShape};
use crate::engine::config::ModelConfig;
use crate::engine::decoder::{Block, Parts, Residual};
use crate::engine::error::Result;
use crate::engine::layers::{Attention, Mlp, Norm, Proj, Qkv};
use crate::engine::weights::WeightLoader;

#[derive(Debug)]
pub struct Phi3;

const LINEARS: &[&str] = &[
    "self_attn.qkv_proj",
    "self_attn.o_proj",
    "mlp.gate_up_proj",
    "mlp.down_proj",
];

impl Family for Phi3 {
    fn name(&self) -> &'static str {
        "phi3"
    }

    fn architectures(&self) -> &'static [(&'static str, &'static str)] {
        &[("Phi3ForCausalLM", "phi3")]
    }

    fn load(&self, cfg: &ModelConfig, w: &mut WeightLoader<'_>) -> Result<Parts> {
        let f = cfg.fields();
        let s = AttnShape::parse(cfg)?;
        let h = cfg.hidden_size;
        let eps = f.f64_or("rms_norm_eps", 1e-5)?;
        let bias = f.bool_or("attention_bias", false)?;
        let window = f.opt_usize("sliding_window")?;
        let windowed = common::windowed_layers(cfg, |_| true)?;
        let act = common::activation(cfg, &["hidden_act"], "silu")?;
        let intermediate = f.usize("intermediate_size")?;
        let (nq, nkv) = (s.heads * s.head_dim, s.kv_heads * s.head_dim);
        let embed = w.tensor("model.embed_tokens.weight", &[cfg.vocab_size, h])?;
        let mut blocks = Vec::with_capacity(cfg.num_hidden_layers);
        for (i, &win) in windowed.iter().enumerate() {
            let p = format!("model.layers.{i}");
            let qkv = Proj::load(w, &format!("{p}.self_attn.qkv_proj"), nq + 2 * nkv, h, bias)?;
            blocks.push(Block {
                residual: Residual::Sequential {
                    attn_norm: Norm::rms(w, &format!("{p}.input_layernorm"), h, eps)?,
                    mlp_norm: Norm::rms(w, &format!("{p}.post_attention_layernorm"), h, eps)?,
                },
                attn: Attention {
                    windowed: win && window.is_some(),
                    ..s.attention(
                        Qkv::Fused(qkv),
                        Proj::load(w, &format!("{p}.self_attn.o_proj"), h, nq, bias)?,
                    )
                },
                mlp: Mlp::FusedGated {
                    gate_up: Proj::load(
                        w,
                        &format!("{p}.mlp.gate_up_proj"),
                        2 * intermediate,
                        h,
                        false,
                    )?,
                    down: Proj::load(w, &format!("{p}.mlp.down_proj"), h, intermediate, false)?,
                    act,
                },
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
            sliding_window: window,
            linear_suffixes: LINEARS,
        })
    }
}

//! Qwen3: Llama-shaped, with `q_norm` / `k_norm` (RMSNorm over each head before RoPE), an
//! explicit `head_dim`, optional attention bias and sliding window on the upper layers.

use super::Family;
use super::common;
use super::llama::{self, Variant};
use crate::engine::config::ModelConfig;
use crate::engine::decoder::Parts;
use crate::engine::error::Result;
use crate::engine::weights::WeightLoader;

#[derive(Debug)]
pub struct Qwen3;

impl Family for Qwen3 {
    fn name(&self) -> &'static str {
        "qwen3"
    }

    fn architectures(&self) -> &'static [(&'static str, &'static str)] {
        &[("Qwen3ForCausalLM", "qwen3")]
    }

    fn load(&self, cfg: &ModelConfig, w: &mut WeightLoader<'_>) -> Result<Parts> {
        let f = cfg.fields();
        let bias = f.bool_or("attention_bias", false)?;
        let window = if f.bool_or("use_sliding_window", false)? {
            f.opt_usize("sliding_window")?
        } else {
            None
        };
        let max_window_layers = f.opt_usize("max_window_layers")?.unwrap_or(0);
        let variant = Variant {
            qkv_bias: bias,
            o_bias: bias,
            qk_norm: true,
            window,
            windowed: common::windowed_layers(cfg, |i| i >= max_window_layers)?,
        };
        llama::build(cfg, w, variant)
    }
}

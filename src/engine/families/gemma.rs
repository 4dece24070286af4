//! Gemma, Gemma 2 and Gemma 3 (text): (1 + w) RMSNorm computed in f32, embeddings times
//! sqrt(hidden_size), tied head, GeGLU with gelu_pytorch_tanh. Gemma 2 adds norms after
//! attention and around the MLP, `query_pre_attn_scalar`, attention and final-logit
//! soft-capping, and a sliding window on alternate layers; Gemma 3 adds q/k norms and a local
//! rope base for its sliding layers.

use serde_json::Value;

use super::Family;
use super::common::{self, AttnShape};
use crate::engine::config::ModelConfig;
use crate::engine::decoder::{Block, Parts, Residual};
use crate::engine::error::Result;
use crate::engine::layers::{Attention, Norm};
use crate::engine::weights::WeightLoader;

#[derive(Debug)]
pub struct Gemma;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Generation {
    One,
    Two,
    Three,
}

impl Family for Gemma {
    fn name(&self) -> &'static str {
        "gemma"
    }

    fn architectures(&self) -> &'static [(&'static str, &'static str)] {
        &[
            ("GemmaForCausalLM", "gemma"),
            ("Gemma2ForCausalLM", "gemma2"),
            ("Gemma3ForCausalLM", "gemma3_text"),
        ]
    }

    fn load(&self, cfg: &ModelConfig, w: &mut WeightLoader<'_>) -> Result<Parts> {
        let version = match cfg.architecture.as_str() {
            "GemmaForCausalLM" => Generation::One,
            "Gemma2ForCausalLM" => Generation::Two,
            _ => Generation::Three,
        };
        let f = cfg.fields();
        let s = AttnShape::parse(cfg)?;
        let h = cfg.hidden_size;
        let eps = f.f64_or("rms_norm_eps", 1e-6)?;
        let bias = f.bool_or("attention_bias", false)?;
        let act = common::activation(
            cfg,
            &["hidden_activation", "hidden_act"],
            "gelu_pytorch_tanh",
        )?;
        let intermediate = f.usize("intermediate_size")?;
        let scale = match version {
            Generation::One => 1.0 / (s.head_dim as f64).sqrt(),
            _ => 1.0 / f.f64_or("query_pre_attn_scalar", s.head_dim as f64)?.sqrt(),
        };
        // Gemma 3's attention takes no soft-cap, whatever its config says (transformers'
        // Gemma3Attention never passes `attn_logit_softcapping` on).
        let softcap = match version {
            Generation::Two => f.opt_f64("attn_logit_softcapping")?,
            _ => None,
        };
        let window = match version {
            Generation::One => None,
            _ => f.opt_usize("sliding_window")?,
        };
        let pattern = f.opt_usize("sliding_window_pattern")?.unwrap_or(6).max(1);
        let windowed = common::windowed_layers(cfg, |i| match version {
            Generation::One => false,
            Generation::Two => (i + 1) % 2 != 0,
            Generation::Three => (i + 1) % pattern != 0,
        })?;
        let (ropes, local_rope) = ropes(cfg, version, s, w)?;
        let embed = w.tensor("model.embed_tokens.weight", &[cfg.vocab_size, h])?;
        let mut blocks = Vec::with_capacity(cfg.num_hidden_layers);
        for (i, &win) in windowed.iter().enumerate() {
            let p = format!("model.layers.{i}");
            let a = format!("{p}.self_attn");
            let (qkv, o) = common::separate_qkv(w, &a, s, h, bias, "o_proj", bias)?;
            let norm = |w: &mut WeightLoader<'_>, n: &str| {
                Norm::rms_one_plus(w, &format!("{p}.{n}"), h, eps)
            };
            let residual = match version {
                Generation::One => Residual::Sequential {
                    attn_norm: norm(w, "input_layernorm")?,
                    mlp_norm: norm(w, "post_attention_layernorm")?,
                },
                _ => Residual::Sandwich {
                    attn_in: norm(w, "input_layernorm")?,
                    attn_out: norm(w, "post_attention_layernorm")?,
                    mlp_in: norm(w, "pre_feedforward_layernorm")?,
                    mlp_out: norm(w, "post_feedforward_layernorm")?,
                },
            };
            let head_norm = |w: &mut WeightLoader<'_>, n: &str| -> Result<Option<Norm>> {
                (version == Generation::Three)
                    .then(|| Norm::rms_one_plus(w, &format!("{a}.{n}"), s.head_dim, eps))
                    .transpose()
            };
            let windowed = win && window.is_some();
            blocks.push(Block {
                residual,
                attn: Attention {
                    q_norm: head_norm(w, "q_norm")?,
                    k_norm: head_norm(w, "k_norm")?,
                    scale,
                    softcap,
                    windowed,
                    rope: if windowed { local_rope } else { 0 },
                    ..s.attention(qkv, o)
                },
                mlp: common::gated_mlp(w, &format!("{p}.mlp"), h, intermediate, false, act)?,
            });
        }
        let final_norm = Norm::rms_one_plus(w, "model.norm", h, eps)?;
        let tied = f.bool_or("tie_word_embeddings", true)?;
        let head = common::head(cfg, w, &embed, tied, false)?;
        let embed_scale = Some(common::round_to((h as f64).sqrt(), w.dtype, w)?);
        Ok(Parts {
            embed,
            embed_scale,
            blocks,
            final_norm,
            head,
            final_softcap: match version {
                Generation::One => None,
                _ => f.opt_f64("final_logit_softcapping")?,
            },
            ropes,
            sliding_window: window,
            linear_suffixes: super::llama::LINEARS,
        })
    }
}

/// The rotary tables and the index of the one sliding layers use. Gemma 3 gives its sliding
/// layers their own base (`rope_local_base_freq`, or `rope_parameters.sliding_attention` in the
/// transformers v5 layout, where `full_attention` holds the global settings).
fn ropes(
    cfg: &ModelConfig,
    version: Generation,
    s: AttnShape,
    w: &WeightLoader<'_>,
) -> Result<(Vec<crate::engine::layers::Rope>, usize)> {
    let f = cfg.fields();
    let dim = s.rotary_dim(&f)?;
    if version != Generation::Three {
        return Ok((vec![common::rope(cfg, dim, 10000.0, w)?], 0));
    }
    let per_type = f
        .get("rope_parameters")
        .filter(|p| p.get("full_attention").is_some() || p.get("sliding_attention").is_some());
    let (global, local) = match per_type {
        Some(p) => (
            common::rope_object(cfg, p.get("full_attention"), 1_000_000.0)?,
            common::rope_object(cfg, p.get("sliding_attention"), 10000.0)?,
        ),
        None => {
            let scaling = f
                .get("rope_scaling")
                .or(f.get("rope_parameters"))
                .filter(|x| x.is_object());
            let global = common::rope_settings(cfg, scaling, 1_000_000.0)?;
            let base = f.f64_or("rope_local_base_freq", 10000.0)?;
            (global, common::rope_object(cfg, None::<&Value>, base)?)
        }
    };
    Ok((
        vec![
            common::rope_table(cfg, global, dim, w)?,
            common::rope_table(cfg, local, dim, w)?,
        ],
        1,
    ))
}

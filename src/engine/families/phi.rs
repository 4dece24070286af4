//! Phi (phi-1, phi-1.5, phi-2): one LayerNorm per block feeding attention and MLP in parallel,
//! biases everywhere, partial rotary, optional per-head q/k LayerNorm, gelu_new MLP
//! (`fc1`, `fc2`), `final_layernorm`, and an output head with a bias.

use super::Family;
use super::common::{self, AttnShape};
use crate::engine::config::ModelConfig;
use crate::engine::decoder::{Block, Parts, Residual};
use crate::engine::error::Result;
use crate::engine::layers::{Attention, Mlp, Norm, Proj};
use crate::engine::weights::WeightLoader;

#[derive(Debug)]
pub struct Phi;

const LINEARS: &[&str] = &[
    "self_attn.q_proj",
    "self_attn.k_proj",
    "self_attn.v_proj",
    "self_attn.dense",
    "mlp.fc1",
    "mlp.fc2",
];

impl Family for Phi {
    fn name(&self) -> &'static str {
        "phi"
    }

    fn architectures(&self) -> &'static [(&'static str, &'static str)] {
        &[("PhiForCausalLM", "phi")]
    }

    fn load(&self, cfg: &ModelConfig, w: &mut WeightLoader<'_>) -> Result<Parts> {
        let f = cfg.fields();
        let s = AttnShape::parse(cfg)?;
        let h = cfg.hidden_size;
        let eps = f.f64_or("layer_norm_eps", 1e-5)?;
        let qk_layernorm = f.bool_or("qk_layernorm", false)?;
        let act = common::activation(cfg, &["hidden_act"], "gelu_new")?;
        let intermediate = f.usize("intermediate_size")?;
        let embed = w.tensor("model.embed_tokens.weight", &[cfg.vocab_size, h])?;
        let mut blocks = Vec::with_capacity(cfg.num_hidden_layers);
        for i in 0..cfg.num_hidden_layers {
            let p = format!("model.layers.{i}");
            let a = format!("{p}.self_attn");
            let (qkv, o) = common::separate_qkv(w, &a, s, h, true, "dense", true)?;
            let head_norm = |w: &mut WeightLoader<'_>, n: &str| -> Result<Option<Norm>> {
                qk_layernorm
                    .then(|| Norm::layer(w, &format!("{a}.{n}"), s.head_dim, eps))
                    .transpose()
            };
            blocks.push(Block {
                residual: Residual::Parallel {
                    norm: Norm::layer(w, &format!("{p}.input_layernorm"), h, eps)?,
                },
                attn: Attention {
                    q_norm: head_norm(w, "q_layernorm")?,
                    k_norm: head_norm(w, "k_layernorm")?,
                    ..s.attention(qkv, o)
                },
                mlp: Mlp::Plain {
                    fc1: Proj::load(w, &format!("{p}.mlp.fc1"), intermediate, h, true)?,
                    fc2: Proj::load(w, &format!("{p}.mlp.fc2"), h, intermediate, true)?,
                    act,
                },
            });
        }
        let final_norm = Norm::layer(w, "model.final_layernorm", h, eps)?;
        let tied = f.bool_or("tie_word_embeddings", false)?;
        let head = common::head(cfg, w, &embed, tied, true)?;
        let rope = common::rope(cfg, s.rotary_dim(&f)?, 10000.0, w)?;
        Ok(Parts {
            embed,
            embed_scale: None,
            blocks,
            final_norm,
            head,
            final_softcap: None,
            ropes: vec![rope],
            sliding_window: None,
            linear_suffixes: LINEARS,
        })
    }
}

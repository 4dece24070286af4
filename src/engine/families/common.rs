//! Config readings and tensor layouts that several families share.

use candle_core::{DType, Tensor};
use candle_nn::Linear;
use serde_json::Value;

use crate::engine::config::{Fields, ModelConfig};
use crate::engine::error::Result;
use crate::engine::layers::{Activation, Attention, Mlp, Proj, Qkv, Rope, RopeScaling};
use crate::engine::weights::WeightLoader;

/// Heads and head size of the attention layers.
#[derive(Debug, Clone, Copy)]
pub struct AttnShape {
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
}

impl AttnShape {
    pub fn parse(cfg: &ModelConfig) -> Result<Self> {
        let f = cfg.fields();
        let heads = f.usize("num_attention_heads")?;
        let kv_heads = f.opt_usize("num_key_value_heads")?.unwrap_or(heads);
        if heads == 0 || kv_heads == 0 || heads % kv_heads != 0 {
            return Err(f.error(format!(
                "num_attention_heads {heads} is not a multiple of num_key_value_heads {kv_heads}"
            )));
        }
        let head_dim = f.opt_usize("head_dim")?.unwrap_or(cfg.hidden_size / heads);
        if head_dim == 0 || !head_dim.is_multiple_of(2) {
            return Err(f.error(format!("head_dim {head_dim} must be even and positive")));
        }
        Ok(Self {
            heads,
            kv_heads,
            head_dim,
        })
    }

    /// Attention of this shape with the usual settings (see `Attention::new`).
    pub fn attention(&self, qkv: Qkv, o: Proj) -> Attention {
        Attention::new(qkv, o, self.heads, self.kv_heads, self.head_dim)
    }

    /// The rotated dimensions under `partial_rotary_factor` (transformers: `int(head_dim * f)`).
    /// The factor is top-level in older files, inside `rope_parameters` in transformers v5's.
    pub fn rotary_dim(&self, f: &Fields<'_>) -> Result<usize> {
        let nested = match f.get("rope_parameters").filter(|p| p.is_object()) {
            Some(p) => f.nested(p).opt_f64("partial_rotary_factor")?,
            None => None,
        };
        let factor = match f.opt_f64("partial_rotary_factor")? {
            Some(x) => x,
            None => nested.unwrap_or(1.0),
        };
        let dim = (self.head_dim as f64 * factor) as usize;
        if !(factor > 0.0 && factor <= 1.0) || dim == 0 || !dim.is_multiple_of(2) {
            return Err(f.error(format!(
                "partial_rotary_factor {factor} gives {dim} rotary dimensions of head_dim {}; they must be even and positive",
                self.head_dim
            )));
        }
        Ok(dim)
    }
}

/// `rope_theta` and the scaling of a rope settings object (`rope_parameters`, `rope_scaling`),
/// with the top-level `rope_theta` of older files taking precedence.
pub fn rope_settings(
    cfg: &ModelConfig,
    params: Option<&Value>,
    default_theta: f64,
) -> Result<(f32, RopeScaling)> {
    let theta = cfg.fields().opt_f64("rope_theta")?.unwrap_or(default_theta);
    rope_object(cfg, params, theta)
}

/// The theta (`rope_theta` inside the object, else `default_theta`) and scaling of one rope
/// settings object.
pub fn rope_object(
    cfg: &ModelConfig,
    params: Option<&Value>,
    default_theta: f64,
) -> Result<(f32, RopeScaling)> {
    let f = cfg.fields();
    let Some(p) = params.filter(|x| x.is_object()).map(|x| f.nested(x)) else {
        return Ok((default_theta as f32, RopeScaling::Default));
    };
    let theta = p.f64_or("rope_theta", default_theta)?;
    let kind = match p.opt_str("rope_type")? {
        Some(k) => k,
        None => p.opt_str("type")?.unwrap_or("default"),
    };
    let num = |key: &str| -> Result<f32> {
        p.opt_f64(key)?
            .map(|x| x as f32)
            .ok_or_else(|| f.error(format!("rope scaling \"{kind}\" needs \"{key}\"")))
    };
    let scaling = match kind {
        "default" => RopeScaling::Default,
        "linear" => RopeScaling::Linear {
            factor: num("factor")?,
        },
        "llama3" => RopeScaling::Llama3 {
            factor: num("factor")?,
            low_freq_factor: num("low_freq_factor")?,
            high_freq_factor: num("high_freq_factor")?,
            original_max_position_embeddings: num("original_max_position_embeddings")?,
        },
        "longrope" | "su" => longrope(cfg, &p)?,
        other => {
            return Err(f.error(format!(
                "unsupported rope_type {other:?} (supported: default, linear, llama3, longrope)"
            )));
        }
    };
    Ok((theta as f32, scaling))
}

/// transformers' `_compute_longrope_parameters`: the original context length from the config
/// (top level first), the attention factor from the extension ratio when not given.
fn longrope(cfg: &ModelConfig, p: &Fields<'_>) -> Result<RopeScaling> {
    let f = cfg.fields();
    let factors = |key: &str| -> Result<Vec<f32>> {
        p.get(key)
            .and_then(Value::as_array)
            .and_then(|a| a.iter().map(|x| x.as_f64().map(|x| x as f32)).collect())
            .ok_or_else(|| f.error(format!("longrope needs \"{key}\", a list of numbers")))
    };
    let original = match f.opt_usize("original_max_position_embeddings")? {
        Some(o) => o,
        None => p
            .opt_usize("original_max_position_embeddings")?
            .unwrap_or(cfg.max_position_embeddings),
    };
    if original == 0 {
        return Err(f.error("original_max_position_embeddings must be positive"));
    }
    let factor = cfg.max_position_embeddings as f64 / original as f64;
    let attention_factor = match p.opt_f64("attention_factor")? {
        Some(a) => a,
        None if factor <= 1.0 => 1.0,
        None => (1.0 + factor.ln() / (original as f64).ln()).sqrt(),
    };
    Ok(RopeScaling::LongRope {
        short_factor: factors("short_factor")?,
        long_factor: factors("long_factor")?,
        original_max_position_embeddings: original,
        attention_factor: attention_factor as f32,
    })
}

/// The rotary table of a config whose settings live in `rope_parameters` or `rope_scaling`.
pub fn rope(
    cfg: &ModelConfig,
    rotary_dim: usize,
    default_theta: f64,
    w: &WeightLoader<'_>,
) -> Result<Rope> {
    let f = cfg.fields();
    let params = f
        .get("rope_parameters")
        .filter(|x| x.is_object())
        .or(f.get("rope_scaling").filter(|x| x.is_object()));
    rope_table(
        cfg,
        rope_settings(cfg, params, default_theta)?,
        rotary_dim,
        w,
    )
}

/// A rotary table from its settings, checking LongRoPE's factor lists against the dimensions.
pub fn rope_table(
    cfg: &ModelConfig,
    (theta, scaling): (f32, RopeScaling),
    rotary_dim: usize,
    w: &WeightLoader<'_>,
) -> Result<Rope> {
    if let RopeScaling::LongRope {
        short_factor,
        long_factor,
        ..
    } = &scaling
        && (short_factor.len() != rotary_dim / 2 || long_factor.len() != rotary_dim / 2)
    {
        return Err(cfg.fields().error(format!(
            "longrope short_factor and long_factor need {} entries (rotary dimensions / 2), not {} and {}",
            rotary_dim / 2,
            short_factor.len(),
            long_factor.len()
        )));
    }
    Rope::new(rotary_dim, theta, &scaling, &w.device)
}

/// Which layers attend through the sliding window: config.json's `layer_types` when present
/// (transformers v5 writes it), else `default(layer)`.
pub fn windowed_layers(cfg: &ModelConfig, default: impl Fn(usize) -> bool) -> Result<Vec<bool>> {
    let f = cfg.fields();
    let n = cfg.num_hidden_layers;
    let Some(types) = f.get("layer_types") else {
        return Ok((0..n).map(default).collect());
    };
    let types: Vec<&str> = types
        .as_array()
        .and_then(|a| a.iter().map(Value::as_str).collect())
        .ok_or_else(|| f.error("\"layer_types\" must be a list of strings"))?;
    if types.len() != n {
        return Err(f.error(format!(
            "\"layer_types\" lists {} layers, num_hidden_layers is {n}",
            types.len()
        )));
    }
    types
        .iter()
        .map(|t| match *t {
            "sliding_attention" => Ok(true),
            "full_attention" => Ok(false),
            other => Err(f.error(format!(
                "layer type {other:?} is not supported (sliding_attention, full_attention)"
            ))),
        })
        .collect()
}

/// `hidden_act` (or `hidden_activation`) with a family default.
pub fn activation(cfg: &ModelConfig, keys: &[&str], default: &str) -> Result<Activation> {
    let f = cfg.fields();
    let mut name = default;
    for k in keys {
        if let Some(n) = f.opt_str(k)? {
            name = n;
            break;
        }
    }
    Activation::parse(name).map_err(|e| f.error(e.to_string()))
}

/// `q_proj`, `k_proj`, `v_proj` and `o_proj` under `prefix` (`model.layers.N.self_attn`).
pub fn separate_qkv(
    w: &mut WeightLoader<'_>,
    prefix: &str,
    s: AttnShape,
    hidden: usize,
    qkv_bias: bool,
    o_name: &str,
    o_bias: bool,
) -> Result<(Qkv, Proj)> {
    let (nq, nkv) = (s.heads * s.head_dim, s.kv_heads * s.head_dim);
    let qkv = Qkv::Separate {
        q: Proj::load(w, &format!("{prefix}.q_proj"), nq, hidden, qkv_bias)?,
        k: Proj::load(w, &format!("{prefix}.k_proj"), nkv, hidden, qkv_bias)?,
        v: Proj::load(w, &format!("{prefix}.v_proj"), nkv, hidden, qkv_bias)?,
    };
    let o = Proj::load(w, &format!("{prefix}.{o_name}"), hidden, nq, o_bias)?;
    Ok((qkv, o))
}

/// `gate_proj`, `up_proj` and `down_proj` under `prefix` (`model.layers.N.mlp`).
pub fn gated_mlp(
    w: &mut WeightLoader<'_>,
    prefix: &str,
    hidden: usize,
    intermediate: usize,
    bias: bool,
    act: Activation,
) -> Result<Mlp> {
    Ok(Mlp::Gated {
        gate: Proj::load(
            w,
            &format!("{prefix}.gate_proj"),
            intermediate,
            hidden,
            bias,
        )?,
        up: Proj::load(w, &format!("{prefix}.up_proj"), intermediate, hidden, bias)?,
        down: Proj::load(
            w,
            &format!("{prefix}.down_proj"),
            hidden,
            intermediate,
            bias,
        )?,
        act,
    })
}

/// The output head `lm_head`: the embedding matrix when tied (a LoRA on a tied head unties it:
/// the delta applies to the head only), else its own weight, with an optional bias.
pub fn head(
    cfg: &ModelConfig,
    w: &mut WeightLoader<'_>,
    embed: &Tensor,
    tied: bool,
    bias: bool,
) -> Result<Proj> {
    let h = cfg.hidden_size;
    if !tied {
        let weight = w.linear("lm_head", cfg.vocab_size, h, bias)?;
        return Ok(Proj::as_stored("lm_head", weight));
    }
    let weight = if w.has_lora("lm_head") {
        w.merge_lora("lm_head", embed.to_dtype(DType::F32)?)?
            .to_dtype(w.dtype)?
    } else {
        embed.clone()
    };
    let b = if bias {
        Some(w.tensor("lm_head.bias", &[cfg.vocab_size])?)
    } else {
        None
    };
    Ok(Proj::as_stored("lm_head", Linear::new(weight, b)))
}

/// `x` rounded to `dtype` and back, as transformers rounds a scale it builds as a tensor of the
/// hidden states' dtype (Gemma's embedding normaliser).
pub fn round_to(x: f64, dtype: DType, w: &WeightLoader<'_>) -> Result<f64> {
    let t = Tensor::new(x as f32, &w.device)?
        .to_dtype(dtype)?
        .to_dtype(DType::F32)?;
    Ok(f64::from(t.to_scalar::<f32>()?))
}

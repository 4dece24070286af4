//! The Llama-family decoder (Llama, Mistral, Qwen2) on candle ops.
//!
//! Two paths compute the same function: `fused = false` uses only plain differentiable ops (for
//! LoRA training later), `fused = true` uses candle's fused softmax / rms_norm / rope kernels.
//! Logits are computed only at the positions the caller asks for.

use candle_core::{D, DType, Device, Module, Tensor};
use candle_nn::Linear;

use super::config::ModelConfig;
use super::error::Result;
use super::rope::{self, Rope};
use super::weights::WeightLoader;

#[derive(Debug, Clone)]
struct RmsNorm {
    weight: Tensor,
    eps: f64,
}

impl RmsNorm {
    fn forward(&self, x: &Tensor, fused: bool) -> Result<Tensor> {
        if fused {
            return Ok(candle_nn::ops::rms_norm(
                &x.contiguous()?,
                &self.weight,
                self.eps as f32,
            )?);
        }
        // transformers' LlamaRMSNorm: normalise in f32, cast back, then scale.
        let dtype = x.dtype();
        let xf = x.to_dtype(DType::F32)?;
        let var = xf.sqr()?.mean_keepdim(D::Minus1)?;
        let normed = xf.broadcast_mul(&(var + self.eps)?.sqrt()?.recip()?)?;
        Ok(normed.to_dtype(dtype)?.broadcast_mul(&self.weight)?)
    }
}

/// An unmerged LoRA path on a linear layer: `y = W x + scaling * B (A dropout(x))`. With `a`
/// and `b` taken from candle `Var`s, gradients flow to them (training); the base stays frozen.
#[derive(Debug, Clone)]
pub struct LoraPath {
    /// `[r, in_features]`
    pub a: Tensor,
    /// `[out_features, r]`
    pub b: Tensor,
    pub scaling: f64,
    /// Dropout on the LoRA input while the decoder is in training mode.
    pub dropout: f32,
}

/// A linear layer of a decoder block, with an optional unmerged LoRA path.
#[derive(Debug, Clone)]
struct Proj {
    base: Linear,
    lora: Option<LoraPath>,
}

impl From<Linear> for Proj {
    fn from(base: Linear) -> Self {
        Self { base, lora: None }
    }
}

impl Proj {
    fn forward(&self, x: &Tensor, training: bool) -> Result<Tensor> {
        let y = self.base.forward(x)?;
        let Some(l) = &self.lora else {
            return Ok(y);
        };
        let mut h = x.to_dtype(l.a.dtype())?;
        if training && l.dropout > 0.0 {
            h = candle_nn::ops::dropout(&h, l.dropout)?;
        }
        let down = Linear::new(l.a.clone(), None).forward(&h)?;
        let up = (Linear::new(l.b.clone(), None).forward(&down)? * l.scaling)?;
        let up = up.to_dtype(y.dtype())?;
        Ok((y + up)?)
    }

    fn dims(&self) -> Result<(usize, usize)> {
        Ok(self.base.weight().dims2()?)
    }
}

#[derive(Debug, Clone)]
struct Attention {
    q: Proj,
    k: Proj,
    v: Proj,
    o: Proj,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
}

#[derive(Debug, Clone)]
struct Mlp {
    gate: Proj,
    up: Proj,
    down: Proj,
}

/// The adaptable linear layers of one decoder block, by their module-name suffix.
pub const BLOCK_LINEARS: [&str; 7] = [
    "self_attn.q_proj",
    "self_attn.k_proj",
    "self_attn.v_proj",
    "self_attn.o_proj",
    "mlp.gate_proj",
    "mlp.up_proj",
    "mlp.down_proj",
];

#[derive(Debug, Clone)]
struct Layer {
    input_norm: RmsNorm,
    attn: Attention,
    post_norm: RmsNorm,
    mlp: Mlp,
}

/// Per-layer key/value cache for incremental decoding: `[b, kv_heads, T, head_dim]` after RoPE.
#[derive(Debug, Clone, Default)]
pub struct KvCache {
    layers: Vec<Option<(Tensor, Tensor)>>,
}

impl KvCache {
    pub fn len(&self) -> usize {
        self.layers
            .first()
            .and_then(|l| l.as_ref())
            .and_then(|(k, _)| k.dim(2).ok())
            .unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Replaces the cache by rows `rows` of its batch axis (row i of the result = row `rows[i]`):
    /// a batch of prompts becomes the cache of their choices, one row per choice.
    pub fn select_batch(&mut self, rows: &[u32]) -> Result<()> {
        let Some(dev) = self
            .layers
            .iter()
            .flatten()
            .next()
            .map(|(k, _)| k.device().clone())
        else {
            return Ok(());
        };
        let idx = Tensor::from_slice(rows, rows.len(), &dev)?;
        for (k, v) in self.layers.iter_mut().flatten() {
            *k = k.index_select(&idx, 0)?;
            *v = v.index_select(&idx, 0)?;
        }
        Ok(())
    }

    /// Repeats a batch-of-one cache `n` times along the batch axis (shared prompt, many choices).
    pub fn repeat_batch(&mut self, n: usize) -> Result<()> {
        for (k, v) in self.layers.iter_mut().flatten() {
            let rep = |x: &Tensor| -> Result<Tensor> {
                let (_, h, t, d) = x.dims4()?;
                Ok(x.broadcast_as((n, h, t, d))?.contiguous()?)
            };
            *k = rep(k)?;
            *v = rep(v)?;
        }
        Ok(())
    }
}

/// Inputs of one forward pass.
pub struct Step<'a> {
    /// Token ids `[b, t]` (u32).
    pub ids: &'a Tensor,
    /// Positions (u32) for RoPE: `[b, t]`, or `[t]` shared by every row.
    pub positions: &'a Tensor,
    /// Additive mask `[b or 1, 1, t, past + t]` (f32): 0 where attention is allowed, a large
    /// negative number elsewhere.
    pub mask: &'a Tensor,
}

#[derive(Debug, Clone)]
pub struct Decoder {
    pub config: ModelConfig,
    embed: Tensor,
    layers: Vec<Layer>,
    norm: RmsNorm,
    lm_head: Tensor,
    rope: Rope,
    pub dtype: DType,
    pub device: Device,
    /// Number of parameters (elements loaded from the weights).
    pub parameters: u64,
    /// Use candle's fused kernels (no gradient) instead of plain ops.
    pub fused: bool,
    /// Training mode: dropout on the LoRA paths is active.
    pub training: bool,
}

/// Large negative additive mask value; finite so fully masked (padding) rows give no NaN.
pub const MASKED: f32 = -1e30;

impl Decoder {
    pub fn load(cfg: &ModelConfig, w: &mut WeightLoader<'_>) -> Result<Self> {
        let h = cfg.hidden_size;
        let (nh, nkv, hd) = (
            cfg.num_attention_heads,
            cfg.num_key_value_heads,
            cfg.head_dim,
        );
        let eps = cfg.rms_norm_eps;
        let embed = w.tensor("model.embed_tokens.weight", &[cfg.vocab_size, h])?;
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for i in 0..cfg.num_hidden_layers {
            let p = format!("model.layers.{i}");
            let attn = Attention {
                q: Proj::from(w.linear(
                    &format!("{p}.self_attn.q_proj"),
                    nh * hd,
                    h,
                    cfg.qkv_bias,
                )?),
                k: Proj::from(w.linear(
                    &format!("{p}.self_attn.k_proj"),
                    nkv * hd,
                    h,
                    cfg.qkv_bias,
                )?),
                v: Proj::from(w.linear(
                    &format!("{p}.self_attn.v_proj"),
                    nkv * hd,
                    h,
                    cfg.qkv_bias,
                )?),
                o: Proj::from(w.linear(
                    &format!("{p}.self_attn.o_proj"),
                    h,
                    nh * hd,
                    cfg.o_bias,
                )?),
                heads: nh,
                kv_heads: nkv,
                head_dim: hd,
            };
            let i_sz = cfg.intermediate_size;
            let mlp = Mlp {
                gate: Proj::from(w.linear(&format!("{p}.mlp.gate_proj"), i_sz, h, cfg.mlp_bias)?),
                up: Proj::from(w.linear(&format!("{p}.mlp.up_proj"), i_sz, h, cfg.mlp_bias)?),
                down: Proj::from(w.linear(&format!("{p}.mlp.down_proj"), h, i_sz, cfg.mlp_bias)?),
            };
            layers.push(Layer {
                input_norm: RmsNorm {
                    weight: w.tensor(&format!("{p}.input_layernorm.weight"), &[h])?,
                    eps,
                },
                attn,
                post_norm: RmsNorm {
                    weight: w.tensor(&format!("{p}.post_attention_layernorm.weight"), &[h])?,
                    eps,
                },
                mlp,
            });
        }
        let norm = RmsNorm {
            weight: w.tensor("model.norm.weight", &[h])?,
            eps,
        };
        let lm_head = if cfg.tie_word_embeddings {
            // A LoRA on a tied head unties it: the delta applies to the head only.
            if w.has_lora("lm_head") {
                w.merge_lora("lm_head", embed.to_dtype(DType::F32)?)?
                    .to_dtype(w.dtype)?
            } else {
                embed.clone()
            }
        } else {
            let t = w.tensor_f32("lm_head.weight", &[cfg.vocab_size, h])?;
            w.merge_lora("lm_head", t)?.to_dtype(w.dtype)?
        };
        w.finish()?;
        Ok(Self {
            config: cfg.clone(),
            embed,
            layers,
            norm,
            lm_head,
            rope: Rope::new(hd, cfg.rope_theta, &cfg.rope_scaling, &w.device)?,
            dtype: w.dtype,
            device: w.device.clone(),
            parameters: w.elements,
            fused: false,
            training: false,
        })
    }

    /// The adaptable linear layers: (module name, out_features, in_features), in layer order.
    pub fn linear_modules(&self) -> Result<Vec<(String, usize, usize)>> {
        let mut out = Vec::new();
        for (i, layer) in self.layers.iter().enumerate() {
            for (suffix, proj) in BLOCK_LINEARS.iter().zip(Self::block_projs(layer)) {
                let (o, n) = proj.dims()?;
                out.push((format!("model.layers.{i}.{suffix}"), o, n));
            }
        }
        Ok(out)
    }

    fn block_projs(layer: &Layer) -> [&Proj; 7] {
        let (a, m) = (&layer.attn, &layer.mlp);
        [&a.q, &a.k, &a.v, &a.o, &m.gate, &m.up, &m.down]
    }

    /// Sets (or with None removes) the unmerged LoRA path of `module`
    /// (e.g. `model.layers.0.self_attn.q_proj`), checking the factor shapes.
    pub fn set_lora(&mut self, module: &str, lora: Option<LoraPath>) -> Result<()> {
        let bad = |m: String| super::error::EngineError::InvalidRequest(m);
        let rest = module
            .strip_prefix("model.layers.")
            .ok_or_else(|| bad(format!("{module} is not an adaptable linear layer")))?;
        let (index, suffix) = rest
            .split_once('.')
            .ok_or_else(|| bad(format!("{module} is not an adaptable linear layer")))?;
        let layer = index
            .parse::<usize>()
            .ok()
            .and_then(|i| self.layers.get_mut(i))
            .ok_or_else(|| bad(format!("{module}: no such layer")))?;
        let (a, m) = (&mut layer.attn, &mut layer.mlp);
        let proj = match suffix {
            "self_attn.q_proj" => &mut a.q,
            "self_attn.k_proj" => &mut a.k,
            "self_attn.v_proj" => &mut a.v,
            "self_attn.o_proj" => &mut a.o,
            "mlp.gate_proj" => &mut m.gate,
            "mlp.up_proj" => &mut m.up,
            "mlp.down_proj" => &mut m.down,
            _ => return Err(bad(format!("{module} is not an adaptable linear layer"))),
        };
        if let Some(l) = &lora {
            let (out, inp) = proj.dims()?;
            let (r, a_in) = l.a.dims2()?;
            let (b_out, rb) = l.b.dims2()?;
            if a_in != inp || b_out != out || rb != r {
                return Err(bad(format!(
                    "{module}: lora_A {:?} and lora_B {:?} do not fit the weight [{out}, {inp}]",
                    l.a.dims(),
                    l.b.dims()
                )));
            }
        }
        proj.lora = lora;
        Ok(())
    }

    /// Bytes held by the weights.
    pub fn weight_bytes(&self) -> u64 {
        self.parameters * self.dtype.size_in_bytes() as u64
    }

    fn softmax(&self, x: &Tensor) -> Result<Tensor> {
        if self.fused {
            Ok(candle_nn::ops::softmax_last_dim(x)?)
        } else {
            Ok(candle_nn::ops::softmax(x, D::Minus1)?)
        }
    }

    fn attention(
        &self,
        a: &Attention,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        mask: &Tensor,
        cache: Option<&mut Option<(Tensor, Tensor)>>,
    ) -> Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        let shape = |y: Tensor, n: usize| -> Result<Tensor> {
            Ok(y.reshape((b, t, n, a.head_dim))?
                .transpose(1, 2)?
                .contiguous()?)
        };
        let tr = self.training;
        let q = shape(a.q.forward(x, tr)?, a.heads)?;
        let k = shape(a.k.forward(x, tr)?, a.kv_heads)?;
        let v = shape(a.v.forward(x, tr)?, a.kv_heads)?;
        let q = rope::apply(&q, cos, sin, self.fused)?;
        let mut k = rope::apply(&k, cos, sin, self.fused)?;
        let mut v = v;
        if let Some(slot) = cache {
            if let Some((pk, pv)) = slot.as_ref() {
                k = Tensor::cat(&[pk, &k], 2)?;
                v = Tensor::cat(&[pv, &v], 2)?;
            }
            *slot = Some((k.clone(), v.clone()));
        }
        let rep = a.heads / a.kv_heads;
        let repeat = |y: Tensor| -> Result<Tensor> {
            if rep == 1 {
                return Ok(y);
            }
            let (b, kvh, tk, d) = y.dims4()?;
            Ok(y.unsqueeze(2)?
                .expand((b, kvh, rep, tk, d))?
                .reshape((b, kvh * rep, tk, d))?)
        };
        let k = repeat(k)?;
        let v = repeat(v)?;
        let scale = 1.0 / (a.head_dim as f64).sqrt();
        let scores = (q.matmul(&k.t()?)? * scale)?.to_dtype(DType::F32)?;
        let scores = scores.broadcast_add(mask)?;
        let probs = self.softmax(&scores)?.to_dtype(self.dtype)?;
        let out = probs.matmul(&v.contiguous()?)?;
        let out = out.transpose(1, 2)?.reshape((b, t, a.heads * a.head_dim))?;
        a.o.forward(&out, tr)
    }

    /// Runs the layers; returns hidden states `[b, t, hidden]` before the final norm.
    pub fn hidden(&self, step: &Step<'_>, mut cache: Option<&mut KvCache>) -> Result<Tensor> {
        let (b, t) = step.ids.dims2()?;
        let mut x = self
            .embed
            .index_select(&step.ids.flatten_all()?, 0)?
            .reshape((b, t, self.config.hidden_size))?;
        let (cos, sin) = self.rope.cos_sin(step.positions, self.dtype)?;
        if let Some(c) = cache.as_deref_mut()
            && c.layers.len() != self.layers.len()
        {
            c.layers = vec![None; self.layers.len()];
        }
        for (i, layer) in self.layers.iter().enumerate() {
            let slot = cache.as_deref_mut().map(|c| &mut c.layers[i]);
            let hn = layer.input_norm.forward(&x, self.fused)?;
            let att = self.attention(&layer.attn, &hn, &cos, &sin, step.mask, slot)?;
            x = (x + att)?;
            let hn = layer.post_norm.forward(&x, self.fused)?;
            let gate = layer.mlp.gate.forward(&hn, self.training)?.silu()?;
            let up = layer.mlp.up.forward(&hn, self.training)?;
            x = (x + layer.mlp.down.forward(&(gate * up)?, self.training)?)?;
        }
        Ok(x)
    }

    /// Final norm + output head on hidden states `[n, hidden]`; logits `[n, vocab]` in f32.
    pub fn head(&self, hidden: &Tensor) -> Result<Tensor> {
        let h = self.norm.forward(hidden, self.fused)?;
        Ok(h.matmul(&self.lm_head.t()?)?.to_dtype(DType::F32)?)
    }

    /// Logits `[rows.len(), vocab]` (f32) at flat positions `row = batch_index * t + position`.
    pub fn logits_at(
        &self,
        step: &Step<'_>,
        rows: &[u32],
        cache: Option<&mut KvCache>,
    ) -> Result<Tensor> {
        let (b, t) = step.ids.dims2()?;
        let hidden = self.hidden(step, cache)?;
        let flat = hidden.reshape((b * t, self.config.hidden_size))?;
        let idx = Tensor::from_slice(rows, rows.len(), &self.device)?;
        self.head(&flat.index_select(&idx, 0)?)
    }
}

/// Positions and additive mask for continuations that follow right-padded prompts in the KV cache.
///
/// Row i continues a prompt of `prompt_lens[i]` real tokens stored in a cache of `padded` slots
/// (slots `prompt_lens[i]..padded` are padding); its `t` new tokens sit at positions
/// `prompt_lens[i]..` and attend to the real prompt slots and, causally, to each other. Positions
/// `[b, t]`, mask `[b, 1, t, padded + t]`.
pub fn continuation_positions_and_mask(
    t: usize,
    prompt_lens: &[usize],
    padded: usize,
    sliding_window: Option<usize>,
    device: &Device,
) -> Result<(Tensor, Tensor)> {
    let b = prompt_lens.len();
    let tk = padded + t;
    let mut pos = Vec::with_capacity(b * t);
    let mut mask = Vec::with_capacity(b * t * tk);
    for &lp in prompt_lens {
        for qi in 0..t {
            let q_abs = lp + qi;
            pos.push(q_abs as u32);
            for k in 0..tk {
                let k_abs = if k < padded {
                    Some(k).filter(|&k| k < lp)
                } else {
                    Some(lp + k - padded).filter(|&a| a <= q_abs)
                };
                let ok = match k_abs {
                    Some(a) => sliding_window.is_none_or(|w| q_abs - a < w),
                    None => false,
                };
                mask.push(if ok { 0.0 } else { MASKED });
            }
        }
    }
    Ok((
        Tensor::from_vec(pos, (b, t), device)?,
        Tensor::from_vec(mask, (b, 1, t, tk), device)?,
    ))
}

/// Builds the positions and the additive attention mask for a batch.
///
/// `left_pad[i]` pad tokens precede row i's real tokens (left padding, as in generation); pass
/// zeros for right-padded batches, whose pad tokens come last and are never attended to by real
/// tokens under the causal mask. `past` is the KV-cache length. `sliding_window` restricts keys
/// to the last `w` positions, as Mistral does.
///
/// Without left padding every row shares positions `[t]` and mask `[1, 1, t, past + t]`
/// (broadcast over the batch); otherwise positions are `[b, t]` and the mask `[b, 1, t, past + t]`.
pub fn positions_and_mask(
    t: usize,
    past: usize,
    left_pad: &[usize],
    sliding_window: Option<usize>,
    device: &Device,
) -> Result<(Tensor, Tensor)> {
    let shared = left_pad.iter().all(|&p| p == 0);
    let pads: &[usize] = if shared { &[0] } else { left_pad };
    let b = pads.len();
    let tk = past + t;
    let mut pos = Vec::with_capacity(b * t);
    let mut mask = Vec::with_capacity(b * t * tk);
    for &pad in pads {
        for qi in 0..t {
            let q_abs = past + qi;
            pos.push(q_abs.saturating_sub(pad) as u32);
            for k_abs in 0..tk {
                let mut ok = k_abs <= q_abs && k_abs >= pad;
                if let Some(w) = sliding_window {
                    ok &= q_abs - k_abs < w;
                }
                mask.push(if ok { 0.0 } else { MASKED });
            }
        }
    }
    let pos = if shared {
        Tensor::from_vec(pos, t, device)?
    } else {
        Tensor::from_vec(pos, (b, t), device)?
    };
    Ok((pos, Tensor::from_vec(mask, (b, 1, t, tk), device)?))
}

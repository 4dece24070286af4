//! Multi-head attention with grouped-query heads, optional per-head q/k norms, partial RoPE,
//! logit soft-capping, a sliding window and a KV cache.

use candle_core::{D, DType, Tensor};

use super::batched_matmul::batched_matmul;
use super::elementwise::softmax_last_dim;
use super::kv_cache::LayerKv;
use super::linear::{Pass, Proj};
use super::mask::AttnMask;
use super::norm::Norm;
use super::rope;
use crate::engine::autograd::attach_backward;
use crate::engine::error::Result;

/// The query, key and value projections: three layers, or one whose output is `q | k | v`
/// (Phi-3's `qkv_proj`).
#[derive(Debug, Clone)]
pub enum Qkv {
    Separate { q: Proj, k: Proj, v: Proj },
    Fused(Proj),
}

#[derive(Debug, Clone)]
pub struct Attention {
    pub qkv: Qkv,
    pub o: Proj,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    /// Norms over each head's query / key vector before RoPE (Qwen3, Gemma 3, Phi's qk_layernorm).
    pub q_norm: Option<Norm>,
    pub k_norm: Option<Norm>,
    /// Multiplies the scores (1/sqrt(head_dim) unless the family says otherwise).
    pub scale: f64,
    /// Gemma 2's `tanh(s / c) * c` on the scaled scores.
    pub softcap: Option<f64>,
    /// Whether this layer attends through the sliding-window mask.
    pub windowed: bool,
    /// Which of the decoder's rotary tables this layer uses (Gemma 3: local or global).
    pub rope: usize,
}

/// What the layers of one forward pass share: the masks and each rotary table's cos/sin.
#[derive(Debug, Clone)]
pub struct Context {
    pub mask: AttnMask,
    pub cos_sin: Vec<(Tensor, Tensor)>,
    pub fused: bool,
    pub pass: Pass,
    pub dtype: DType,
}

impl Attention {
    /// Attention as most families have it: scores scaled by 1/sqrt(head_dim), no q/k norms, no
    /// soft-cap, no window, the first rotary table. Families change fields with `..`.
    pub fn new(qkv: Qkv, o: Proj, heads: usize, kv_heads: usize, head_dim: usize) -> Self {
        Self {
            qkv,
            o,
            heads,
            kv_heads,
            head_dim,
            q_norm: None,
            k_norm: None,
            scale: 1.0 / (head_dim as f64).sqrt(),
            softcap: None,
            windowed: false,
            rope: 0,
        }
    }

    /// The projections in PEFT's module order.
    pub fn projs(&self) -> Vec<&Proj> {
        match &self.qkv {
            Qkv::Separate { q, k, v } => vec![q, k, v, &self.o],
            Qkv::Fused(qkv) => vec![qkv, &self.o],
        }
    }

    pub fn projs_mut(&mut self) -> Vec<&mut Proj> {
        match &mut self.qkv {
            Qkv::Separate { q, k, v } => vec![q, k, v, &mut self.o],
            Qkv::Fused(qkv) => vec![qkv, &mut self.o],
        }
    }

    pub fn project(&self, x: &Tensor, pass: Pass) -> Result<(Tensor, Tensor, Tensor)> {
        match &self.qkv {
            Qkv::Separate { q, k, v } => Ok((
                q.forward(x, pass)?,
                k.forward(x, pass)?,
                v.forward(x, pass)?,
            )),
            Qkv::Fused(qkv) => {
                let y = qkv.forward(x, pass)?;
                let (nq, nkv) = (self.heads * self.head_dim, self.kv_heads * self.head_dim);
                Ok((
                    y.narrow(D::Minus1, 0, nq)?,
                    y.narrow(D::Minus1, nq, nkv)?,
                    y.narrow(D::Minus1, nq + nkv, nkv)?,
                ))
            }
        }
    }

    pub fn forward(&self, x: &Tensor, cx: &Context, cache: Option<&mut LayerKv>) -> Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        let hd = self.head_dim;
        let (q, k, v) = self.project(x, cx.pass)?;
        let heads = |y: Tensor, n: usize, norm: Option<&Norm>| -> Result<Tensor> {
            let mut y = y.reshape((b, t, n, hd))?;
            if let Some(norm) = norm {
                y = norm.forward(&y, cx.fused)?;
            }
            Ok(y.transpose(1, 2)?.contiguous()?)
        };
        let q = heads(q, self.heads, self.q_norm.as_ref())?;
        let k = heads(k, self.kv_heads, self.k_norm.as_ref())?;
        let v = heads(v, self.kv_heads, None)?;
        let (cos, sin) = &cx.cos_sin[self.rope];
        let q = rope::apply(&q, cos, sin, cx.fused)?;
        let k = rope::apply(&k, cos, sin, cx.fused)?;
        let (k, v) = match cache {
            Some(layer) => layer.append(k, v)?,
            None => (k, v),
        };
        // Grouped-query attention without copying K and V once per query head: the `rep` query
        // heads that share a kv head (heads kv*rep .. kv*rep+rep, HF's repeat_kv layout) are
        // stacked along the query axis, [b, kvh, rep * t, d], and multiply that kv head's keys
        // and values directly.
        let rep = self.heads / self.kv_heads;
        let tk = k.dim(2)?;
        let grouped = q.reshape((b, self.kv_heads, rep * t, hd))?;
        let scores = (batched_matmul(&grouped, &k.t()?)? * self.scale)?.to_dtype(DType::F32)?;
        let mut scores = scores.reshape((b, self.heads, t, tk))?;
        if let Some(c) = self.softcap {
            scores = ((scores / c)?.tanh()? * c)?;
        }
        let mask = cx.mask.for_layer(self.windowed);
        let probs = if cx.fused {
            masked_softmax(&scores, mask)?
        } else {
            candle_nn::ops::softmax(&scores.broadcast_add(mask)?, D::Minus1)?
        };
        let probs = probs
            .to_dtype(cx.dtype)?
            .reshape((b, self.kv_heads, rep * t, tk))?;
        let out = batched_matmul(&probs, &v)?.reshape((b, self.heads, t, hd))?;
        let out = out.transpose(1, 2)?.reshape((b, t, self.heads * hd))?;
        self.o.forward(&out, cx.pass)
    }
}

/// `softmax(scores + mask)` over the last axis in one pass; on scores with a graph,
/// the backward `p (dy - sum(dy p))` (the mask is a constant).
fn masked_softmax(scores: &Tensor, mask: &Tensor) -> Result<Tensor> {
    let probs = softmax_last_dim(&scores.detach().broadcast_add(mask)?)?;
    Ok(attach_backward(scores, probs, |_, p, dy| {
        let dot = (dy * p)?.sum_keepdim(D::Minus1)?;
        p * dy.broadcast_sub(&dot)?
    })?)
}

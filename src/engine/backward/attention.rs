//! The backward of self-attention (rotary positions, grouped-query, no KV cache), its linear
//! layers frozen but for LoRA.

use candle_core::{D, Tensor};

use super::{Grads, bytes, proj, rows};
use crate::engine::error::Result;
use crate::engine::layers::attention::{Attention, Context, Qkv};
use crate::engine::layers::batched_matmul::batched_matmul;
use crate::engine::layers::elementwise::softmax_last_dim;

/// Whether `Tape` covers `attn` in the context `cx`: no q/k norms, no soft-capping, rotary
/// embeddings over the whole head.
pub fn supports(attn: &Attention, cx: &Context) -> bool {
    let full_rotary = cx
        .cos_sin
        .get(attn.rope)
        .and_then(|(cos, _)| cos.dim(D::Minus1).ok())
        .is_some_and(|half| half * 2 == attn.head_dim);
    attn.q_norm.is_none() && attn.k_norm.is_none() && attn.softcap.is_none() && full_rotary
}

/// What the backward reads of a forward pass, the products' outputs: the rotated queries
/// (grouped by kv head, `[b, kv_heads, rep * t, hd]`), keys and values (`[b, kv_heads, t, hd]`).
/// The input (a norm's output), the attention probabilities and the output projection's input
/// (their product with the values) are cheaper to recompute than to keep: the products with
/// `t` columns are a few percent of the block's.
pub struct Tape {
    q: Tensor,
    k: Tensor,
    v: Tensor,
}

/// The output projection's input, `probs · v` with the heads side by side, `[b, t, heads * hd]`.
fn mixed(attn: &Attention, probs: &Tensor, v: &Tensor) -> Result<Tensor> {
    let (b, _, t, hd) = v.dims4()?;
    Ok(batched_matmul(probs, v)?
        .reshape((b, attn.heads, t, hd))?
        .transpose(1, 2)?
        .reshape((b, t, attn.heads * hd))?)
}

/// The attention probabilities `softmax(q kᵀ · scale + mask)`, `[b, kv_heads, rep * t, t]`.
fn probabilities(attn: &Attention, q: &Tensor, k: &Tensor, cx: &Context) -> Result<Tensor> {
    let (b, kv_heads, rows, _) = q.dims4()?;
    let t = k.dim(2)?;
    let scores = (batched_matmul(q, &k.t()?)? * attn.scale)?.reshape((b, attn.heads, t, t))?;
    let mask = cx.mask.for_layer(attn.windowed);
    Ok(softmax_last_dim(&scores.broadcast_add(mask)?)?.reshape((b, kv_heads, rows, t))?)
}

impl Tape {
    /// The forward of `Attention::forward` without a cache (same ops, same values), without a
    /// graph; returns the output too.
    pub fn forward(attn: &Attention, x: &Tensor, cx: &Context) -> Result<(Self, Tensor)> {
        let (b, t, _) = x.dims3()?;
        let (hd, heads, kv_heads) = (attn.head_dim, attn.heads, attn.kv_heads);
        let (q, k, v) = attn.project(x, cx.pass)?;
        let split = |y: Tensor, n: usize| -> Result<Tensor> {
            Ok(y.detach()
                .reshape((b, t, n, hd))?
                .transpose(1, 2)?
                .contiguous()?)
        };
        let (q, k, v) = (split(q, heads)?, split(k, kv_heads)?, split(v, kv_heads)?);
        let (cos, sin) = &cx.cos_sin[attn.rope];
        let q = candle_nn::rotary_emb::rope(&q, cos, sin)?;
        let k = candle_nn::rotary_emb::rope(&k, cos, sin)?;
        let rep = heads / kv_heads;
        let q = q.reshape((b, kv_heads, rep * t, hd))?;
        let probs = probabilities(attn, &q, &k, cx)?;
        let out = mixed(attn, &probs, &v)?;
        let y = attn.o.forward(&out, cx.pass)?.detach();
        let tape = Self { q, k, v };
        Ok((tape, y))
    }

    /// The bytes the tape holds.
    pub fn bytes(&self) -> usize {
        bytes(&[&self.q, &self.k, &self.v])
    }

    /// The gradient of the input `x` (`[b, t, d]`, what `forward` was given) for the output
    /// gradient `dy`.
    pub fn backward(
        &self,
        attn: &Attention,
        x: &Tensor,
        dy: &Tensor,
        cx: &Context,
        grads: &mut Grads,
    ) -> Result<Tensor> {
        let shape = x.shape().clone();
        let (b, t, _) = x.dims3()?;
        let (hd, heads, kv_heads) = (attn.head_dim, attn.heads, attn.kv_heads);
        let rep = heads / kv_heads;
        let probs = probabilities(attn, &self.q, &self.k, cx)?;
        let out = mixed(attn, &probs, &self.v)?;
        let d_out = proj::backward(&attn.o, &rows(&out)?, &rows(dy)?, cx.pass, grads, None)?;
        let d_out = d_out
            .reshape((b, t, heads, hd))?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((b, kv_heads, rep * t, hd))?;
        let d_probs = batched_matmul(&d_out, &self.v.t()?)?;
        let d_v = batched_matmul(&probs.t()?, &d_out)?;
        // softmax: dz = p ⊙ (dp - Σ dp ⊙ p); then the scale of q kᵀ.
        let dot = (&d_probs * &probs)?.sum_keepdim(D::Minus1)?;
        let d_scores = ((&probs * d_probs.broadcast_sub(&dot)?)? * attn.scale)?;
        let d_q = batched_matmul(&d_scores, &self.k)?.reshape((b, heads, t, hd))?;
        let d_k = batched_matmul(&d_scores.t()?, &self.q)?;
        // A rotation's transpose is the rotation by the opposite angle.
        let (cos, sin) = &cx.cos_sin[attn.rope];
        let neg_sin = sin.neg()?;
        let d_q = candle_nn::rotary_emb::rope(&d_q, cos, &neg_sin)?;
        let d_k = candle_nn::rotary_emb::rope(&d_k.contiguous()?, cos, &neg_sin)?;
        let flat = |y: Tensor, n: usize| -> Result<Tensor> {
            Ok(y.transpose(1, 2)?.reshape((b * t, n * hd))?)
        };
        let (d_q, d_k, d_v) = (
            flat(d_q, heads)?,
            flat(d_k, kv_heads)?,
            flat(d_v, kv_heads)?,
        );
        let x = rows(x)?;
        let dx = match &attn.qkv {
            Qkv::Separate { q, k, v } => {
                let dx = proj::backward(q, &x, &d_q, cx.pass, grads, None)?;
                let dx = proj::backward(k, &x, &d_k, cx.pass, grads, Some(dx))?;
                proj::backward(v, &x, &d_v, cx.pass, grads, Some(dx))?
            }
            Qkv::Fused(qkv) => {
                let d = Tensor::cat(&[&d_q, &d_k, &d_v], 1)?;
                proj::backward(qkv, &x, &d, cx.pass, grads, None)?
            }
        };
        Ok(dx.reshape(shape)?)
    }
}

//! Hand-written backward passes of whole blocks for LoRA training (frozen base weights).
//!
//! A checkpointed block's backward recomputes its forward without a graph, keeping what the
//! backward reads, and computes the gradients with the products and element-wise ops the maths
//! needs. candle's own backward of the same block allocates a zeroed gradient and an addition for
//! every operand of every op and computes gradients nothing reads (those of masks, rotary tables,
//! the output gradient itself): on the SmolLM2 shape it cost about three forward passes.
//! `supports` says which blocks this covers (sequential RMS-norm blocks with rotary
//! attention and a SiLU-gated feed-forward layer: Llama, Mistral, Qwen2, SmolLM2, Phi-3...);
//! the others go through candle's backward.

mod attention;
mod mlp;
mod norm;
mod proj;
mod silu_gate;

pub use norm::{backward as norm_backward, supports as norm_supported};

use candle_core::{D, DType, Tensor};

use super::decoder::{Block, Residual};
use super::error::Result;
use super::layers::Pass;
use super::layers::attention::Context;

/// (LoRA factor, its gradient) pairs, a factor possibly more than once.
pub type Grads = Vec<(Tensor, Tensor)>;

/// Whether `backward` covers `block` in the context `cx`.
pub fn supports(block: &Block, cx: &Context) -> bool {
    let Residual::Sequential {
        attn_norm,
        mlp_norm,
    } = &block.residual
    else {
        return false;
    };
    cx.fused
        && cx.dtype == DType::F32
        && matches!(cx.pass, Pass::Training { .. } | Pass::Replay { .. })
        && norm::supports(attn_norm)
        && norm::supports(mlp_norm)
        && attention::supports(&block.attn, cx)
        && mlp::supports(&block.mlp)
}

/// The gradient of the block's input `x` for the output gradient `dy` (`[b, t, d]`), and the
/// gradients of its LoRA factors; the block's forward is recomputed here.
pub fn backward(block: &Block, x: &Tensor, dy: &Tensor, cx: &Context) -> Result<(Tensor, Grads)> {
    let Residual::Sequential {
        attn_norm,
        mlp_norm,
    } = &block.residual
    else {
        unreachable!("supports() excludes other residual layouts");
    };
    let mut grads = Grads::new();
    let n1 = attn_norm.forward(x, true)?;
    let (attn, att) = attention::Tape::forward(&block.attn, &n1, cx)?;
    let mid = (x + att)?;
    let n2 = mlp_norm.forward(&mid, true)?;
    let (mlp, _) = mlp::Tape::forward(&block.mlp, &n2, cx.pass)?;
    let d_n2 = mlp.backward(&block.mlp, dy, cx.pass, &mut grads)?;
    drop(mlp);
    let d_mid = (dy + norm::backward(mlp_norm, &mid, &d_n2)?)?;
    let d_n1 = attn.backward(&block.attn, &d_mid, cx, &mut grads)?;
    let dx = (&d_mid + norm::backward(attn_norm, x, &d_n1)?)?;
    Ok((dx, grads))
}

/// `[.., d]` as `[n, d]` rows.
fn rows(x: &Tensor) -> Result<Tensor> {
    let d = x.dim(D::Minus1)?;
    Ok(x.reshape(((), d))?)
}

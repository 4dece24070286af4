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
use super::layers::attention::Context;
use super::layers::{Norm, Pass};

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

/// What a block's backward reads of its forward pass: its sub-layers' tapes and the residual
/// stream between them. Recorded in the first pass where memory allows (`Decoder::hidden`
/// keeps tapes up to a budget), else in the backward by running the block again.
pub struct Tape {
    attn: attention::Tape,
    mid: Tensor,
    mlp: mlp::Tape,
}

fn norms(block: &Block) -> (&Norm, &Norm) {
    let Residual::Sequential {
        attn_norm,
        mlp_norm,
    } = &block.residual
    else {
        unreachable!("supports() excludes other residual layouts");
    };
    (attn_norm, mlp_norm)
}

impl Tape {
    /// The block's forward on `x` (`[b, t, d]`; the values of `Block::forward`) without a graph,
    /// and its tape.
    pub fn record(block: &Block, x: &Tensor, cx: &Context) -> Result<(Self, Tensor)> {
        let tape = Self::rebuild(block, x, cx)?;
        let y = (&tape.mid + tape.mlp.output(&block.mlp, cx.pass)?)?;
        Ok((tape, y))
    }

    /// The tape alone: the block's forward up to the MLP's activation (its down projection
    /// makes only the output, which the backward does not read).
    fn rebuild(block: &Block, x: &Tensor, cx: &Context) -> Result<Self> {
        let (attn_norm, mlp_norm) = norms(block);
        let (attn, att) = attention::Tape::forward(&block.attn, &attn_norm.forward(x, true)?, cx)?;
        let mid = (x + att)?;
        let mlp = mlp::Tape::record(&block.mlp, &mlp_norm.forward(&mid, true)?, cx.pass)?;
        Ok(Self { attn, mid, mlp })
    }

    /// The bytes the tape holds.
    pub fn bytes(&self) -> usize {
        self.attn.bytes() + bytes(&[&self.mid]) + self.mlp.bytes()
    }

    /// The gradient of the block's input `x` for the output gradient `dy` (`[b, t, d]`), and
    /// the gradients of its LoRA factors.
    pub fn backward(
        self,
        block: &Block,
        x: &Tensor,
        dy: &Tensor,
        cx: &Context,
    ) -> Result<(Tensor, Grads)> {
        let (attn_norm, mlp_norm) = norms(block);
        let mut grads = Grads::new();
        let n2 = mlp_norm.forward(&self.mid, true)?;
        let d_n2 = self
            .mlp
            .backward(&block.mlp, &n2, dy, cx.pass, &mut grads)?;
        drop((n2, self.mlp));
        let d_mid = (dy + norm::backward(mlp_norm, &self.mid, &d_n2)?)?;
        drop(self.mid);
        let n1 = attn_norm.forward(x, true)?;
        let d_n1 = self
            .attn
            .backward(&block.attn, &n1, &d_mid, cx, &mut grads)?;
        let dx = (&d_mid + norm::backward(attn_norm, x, &d_n1)?)?;
        Ok((dx, grads))
    }
}

/// How many bytes of tapes a forward pass may still keep. A block keeps its tape while what is
/// left covers a tape as large as the last one kept (blocks are alike), so the first block keeps
/// its tape under any budget but 0.
pub struct TapeBudget {
    left: usize,
    last: usize,
}

impl TapeBudget {
    pub fn new(bytes: usize) -> Self {
        Self {
            left: bytes,
            last: 0,
        }
    }

    pub fn allows(&self) -> bool {
        self.left > 0 && self.left >= self.last
    }

    pub fn spend(&mut self, bytes: usize) {
        self.left = self.left.saturating_sub(bytes);
        self.last = bytes;
    }
}

/// `Tape::backward` of a block whose tape was not kept: its forward runs again first.
pub fn backward(block: &Block, x: &Tensor, dy: &Tensor, cx: &Context) -> Result<(Tensor, Grads)> {
    Tape::rebuild(block, x, cx)?.backward(block, x, dy, cx)
}

/// The bytes the tensors hold (views of one tensor count each its own elements).
fn bytes(tensors: &[&Tensor]) -> usize {
    tensors
        .iter()
        .map(|t| t.elem_count() * t.dtype().size_in_bytes())
        .sum()
}

/// `[.., d]` as `[n, d]` rows.
fn rows(x: &Tensor) -> Result<Tensor> {
    let d = x.dim(D::Minus1)?;
    Ok(x.reshape(((), d))?)
}

//! The backward of a gated feed-forward layer (SiLU), its linear layers frozen but for LoRA.

use candle_core::{D, Tensor};

use super::silu_gate::{Halves, silu_gate_backward};
use super::{Grads, bytes, proj, rows};
use crate::engine::error::Result;
use crate::engine::layers::elementwise::silu_mul;
use crate::engine::layers::{Activation, Mlp, Pass, Proj};

/// Whether `Tape` covers `mlp`.
pub fn supports(mlp: &Mlp) -> bool {
    matches!(
        mlp,
        Mlp::Gated {
            act: Activation::Silu,
            ..
        } | Mlp::FusedGated {
            act: Activation::Silu,
            ..
        }
    )
}

fn down(mlp: &Mlp) -> &Proj {
    match mlp {
        Mlp::Gated { down, .. } | Mlp::FusedGated { down, .. } => down,
        Mlp::Plain { .. } => unreachable!("supports() excludes plain feed-forward layers"),
    }
}

/// What the backward reads of a forward pass: the gate before the activation and the up
/// projection (the products' outputs). The input (a norm's output) and the activation's
/// element-wise results are cheaper to recompute than to keep.
pub struct Tape {
    gate: Tensor,
    up: Tensor,
}

impl Tape {
    /// The tape of `Mlp::forward` on `x` (its products up to the activation, the same ops), without
    /// a graph.
    pub fn record(mlp: &Mlp, x: &Tensor, pass: Pass) -> Result<Self> {
        let (gate, up) = match mlp {
            Mlp::Gated { gate, up, .. } => (
                gate.forward(x, pass)?.detach(),
                up.forward(x, pass)?.detach(),
            ),
            Mlp::FusedGated { gate_up, .. } => {
                let y = gate_up.forward(x, pass)?.detach();
                let n = y.dim(D::Minus1)? / 2;
                (y.narrow(D::Minus1, 0, n)?, y.narrow(D::Minus1, n, n)?)
            }
            Mlp::Plain { .. } => unreachable!("supports() excludes plain feed-forward layers"),
        };
        Ok(Self { gate, up })
    }

    /// The layer's output from the tape (the rest of `Mlp::forward`: same ops, same values).
    pub fn output(&self, mlp: &Mlp, pass: Pass) -> Result<Tensor> {
        let product = silu_mul(&self.gate, &self.up)?;
        Ok(down(mlp).forward(&product, pass)?.detach())
    }

    /// The bytes the tape holds (the gate and up halves may share one tensor).
    pub fn bytes(&self) -> usize {
        bytes(&[&self.gate, &self.up])
    }

    /// The gradient of the input `x` (`[b, t, d]`, what `forward` was given) for the output
    /// gradient `dy`.
    pub fn backward(
        &self,
        mlp: &Mlp,
        x: &Tensor,
        dy: &Tensor,
        pass: Pass,
        grads: &mut Grads,
    ) -> Result<Tensor> {
        let shape = x.shape().clone();
        let x = rows(x)?;
        let (gate, up) = (rows(&self.gate)?, rows(&self.up)?);
        let product = silu_mul(&gate, &up)?;
        let d_product = proj::backward(down(mlp), &product, &rows(dy)?, pass, grads, None)?;
        drop(product);
        let halves = match mlp {
            Mlp::FusedGated { .. } => Halves::SideBySide,
            _ => Halves::Stacked,
        };
        let both = match silu_gate_backward(&d_product, &gate, &up, halves)? {
            Some(both) => both,
            None => {
                let d_up = (&d_product * gate.silu()?)?;
                // silu'(g) = σ(g) (1 + g (1 - σ(g)))
                let sigma = candle_nn::ops::sigmoid(&gate)?;
                let slope = (&sigma * (&gate * sigma.affine(-1.0, 1.0)?)?.affine(1.0, 1.0)?)?;
                let d_gate = ((d_product * up)? * slope)?;
                match halves {
                    Halves::SideBySide => Tensor::cat(&[&d_gate, &d_up], 1)?,
                    Halves::Stacked => Tensor::stack(&[&d_gate, &d_up], 0)?,
                }
            }
        };
        let dx = match mlp {
            Mlp::Gated { gate, up, .. } => {
                let dx = proj::backward(gate, &x, &both.get(0)?, pass, grads, None)?;
                proj::backward(up, &x, &both.get(1)?, pass, grads, Some(dx))?
            }
            Mlp::FusedGated { gate_up, .. } => {
                proj::backward(gate_up, &x, &both, pass, grads, None)?
            }
            Mlp::Plain { .. } => unreachable!("supports() excludes plain feed-forward layers"),
        };
        Ok(dx.reshape(shape)?)
    }
}

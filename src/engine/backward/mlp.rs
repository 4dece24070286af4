//! The backward of a gated feed-forward layer (SiLU), its linear layers frozen but for LoRA.

use candle_core::{D, Tensor};

use super::{Grads, proj, rows};
use crate::engine::error::Result;
use crate::engine::layers::{Activation, Mlp, Pass};

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

/// What the backward reads of a forward pass: the input, the gate before and after the
/// activation, the up projection and their product (the down projection's input).
pub struct Tape {
    x: Tensor,
    gate: Tensor,
    act: Tensor,
    up: Tensor,
    product: Tensor,
}

impl Tape {
    /// The forward of `Mlp::forward` (same ops, same values), without a graph; returns the
    /// output too.
    pub fn forward(mlp: &Mlp, x: &Tensor, pass: Pass) -> Result<(Self, Tensor)> {
        let (gate, up, down) = match mlp {
            Mlp::Gated { gate, up, down, .. } => (
                gate.forward(x, pass)?.detach(),
                up.forward(x, pass)?.detach(),
                down,
            ),
            Mlp::FusedGated { gate_up, down, .. } => {
                let y = gate_up.forward(x, pass)?.detach();
                let n = y.dim(D::Minus1)? / 2;
                (y.narrow(D::Minus1, 0, n)?, y.narrow(D::Minus1, n, n)?, down)
            }
            Mlp::Plain { .. } => unreachable!("supports() excludes plain feed-forward layers"),
        };
        let act = gate.silu()?;
        let product = (&act * &up)?;
        let y = down.forward(&product, pass)?.detach();
        let tape = Self {
            x: x.clone(),
            gate,
            act,
            up,
            product,
        };
        Ok((tape, y))
    }

    /// The gradient of the input for the output gradient `dy` (`[b, t, d]`).
    pub fn backward(
        &self,
        mlp: &Mlp,
        dy: &Tensor,
        pass: Pass,
        grads: &mut Grads,
    ) -> Result<Tensor> {
        let (x, shape) = (rows(&self.x)?, self.x.shape().clone());
        let down = match mlp {
            Mlp::Gated { down, .. } | Mlp::FusedGated { down, .. } => down,
            Mlp::Plain { .. } => unreachable!("supports() excludes plain feed-forward layers"),
        };
        let d_product = proj::backward(down, &rows(&self.product)?, &rows(dy)?, pass, grads)?;
        let d_up = (&d_product * rows(&self.act)?)?;
        // silu'(g) = σ(g) (1 + g (1 - σ(g)))
        let gate = rows(&self.gate)?;
        let sigma = candle_nn::ops::sigmoid(&gate)?;
        let slope = (&sigma * (&gate * sigma.affine(-1.0, 1.0)?)?.affine(1.0, 1.0)?)?;
        let d_gate = ((d_product * rows(&self.up)?)? * slope)?;
        let dx = match mlp {
            Mlp::Gated { gate, up, .. } => {
                (proj::backward(gate, &x, &d_gate, pass, grads)?
                    + proj::backward(up, &x, &d_up, pass, grads)?)?
            }
            Mlp::FusedGated { gate_up, .. } => {
                let d = Tensor::cat(&[&d_gate, &d_up], 1)?;
                proj::backward(gate_up, &x, &d, pass, grads)?
            }
            Mlp::Plain { .. } => unreachable!("supports() excludes plain feed-forward layers"),
        };
        Ok(dx.reshape(shape)?)
    }
}

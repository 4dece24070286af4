//! Feed-forward blocks: gated (Llama, Gemma), gated with one fused gate|up layer (Phi-3), and
//! plain two-layer (Phi).

use candle_core::{D, Tensor};

use super::elementwise::silu_mul;
use super::linear::{Pass, Proj};
use crate::engine::error::{EngineError, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    Silu,
    /// The tanh approximation (`gelu_new`, `gelu_pytorch_tanh`, `gelu_fast`).
    GeluTanh,
    /// The exact, erf-based GELU (`gelu`).
    GeluErf,
}

impl Activation {
    /// transformers' ACT2FN names.
    pub fn parse(name: &str) -> Result<Self> {
        match name {
            "silu" | "swish" => Ok(Self::Silu),
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Ok(Self::GeluTanh),
            "gelu" => Ok(Self::GeluErf),
            other => Err(EngineError::InvalidRequest(format!(
                "unsupported activation {other:?} (supported: silu, gelu, gelu_new, gelu_pytorch_tanh, gelu_fast)"
            ))),
        }
    }

    /// `act(gate) ⊙ up`.
    pub fn gated(self, gate: &Tensor, up: &Tensor) -> Result<Tensor> {
        match self {
            Self::Silu => silu_mul(gate, up),
            _ => Ok((self.apply(gate)? * up)?),
        }
    }

    pub fn apply(self, x: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Self::Silu => x.silu()?,
            Self::GeluTanh => x.gelu()?,
            Self::GeluErf => x.gelu_erf()?,
        })
    }
}

#[derive(Debug, Clone)]
pub enum Mlp {
    /// `down(act(gate(x)) * up(x))`
    Gated {
        gate: Proj,
        up: Proj,
        down: Proj,
        act: Activation,
    },
    /// `gate | up = gate_up(x)`, then `down(act(gate) * up)`.
    FusedGated {
        gate_up: Proj,
        down: Proj,
        act: Activation,
    },
    /// `fc2(act(fc1(x)))`
    Plain {
        fc1: Proj,
        fc2: Proj,
        act: Activation,
    },
}

impl Mlp {
    pub fn forward(&self, x: &Tensor, pass: Pass) -> Result<Tensor> {
        match self {
            Self::Gated {
                gate,
                up,
                down,
                act,
            } => {
                let g = gate.forward(x, pass)?;
                down.forward(&act.gated(&g, &up.forward(x, pass)?)?, pass)
            }
            Self::FusedGated { gate_up, down, act } => {
                let y = gate_up.forward(x, pass)?;
                let n = y.dim(D::Minus1)? / 2;
                let (g, up) = (y.narrow(D::Minus1, 0, n)?, y.narrow(D::Minus1, n, n)?);
                down.forward(&act.gated(&g, &up)?, pass)
            }
            Self::Plain { fc1, fc2, act } => fc2.forward(&act.apply(&fc1.forward(x, pass)?)?, pass),
        }
    }

    /// The projections in PEFT's module order.
    pub fn projs(&self) -> Vec<&Proj> {
        match self {
            Self::Gated { gate, up, down, .. } => vec![gate, up, down],
            Self::FusedGated { gate_up, down, .. } => vec![gate_up, down],
            Self::Plain { fc1, fc2, .. } => vec![fc1, fc2],
        }
    }

    pub fn projs_mut(&mut self) -> Vec<&mut Proj> {
        match self {
            Self::Gated { gate, up, down, .. } => vec![gate, up, down],
            Self::FusedGated { gate_up, down, .. } => vec![gate_up, down],
            Self::Plain { fc1, fc2, .. } => vec![fc1, fc2],
        }
    }
}

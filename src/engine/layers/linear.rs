//! A linear layer with an optional bias and an optional unmerged LoRA path.

use candle_core::{Module, Tensor};
use candle_nn::Linear;

use crate::engine::error::{EngineError, Result};
use crate::engine::weights::WeightLoader;

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

/// A linear layer named by its module path (`model.layers.0.self_attn.q_proj`, PEFT's key).
#[derive(Debug, Clone)]
pub struct Proj {
    pub name: String,
    base: Linear,
    pub lora: Option<LoraPath>,
}

impl Proj {
    /// `<name>.weight` `[out, in]` (the adapter's delta merged, if the loader has one) and, with
    /// `bias`, `<name>.bias`.
    pub fn load(
        w: &mut WeightLoader<'_>,
        name: &str,
        out: usize,
        inp: usize,
        bias: bool,
    ) -> Result<Self> {
        Ok(Self::new(name, w.linear(name, out, inp, bias)?))
    }

    pub fn new(name: &str, base: Linear) -> Self {
        Self {
            name: name.to_string(),
            base,
            lora: None,
        }
    }

    pub fn forward(&self, x: &Tensor, training: bool) -> Result<Tensor> {
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

    /// `(out_features, in_features)`.
    pub fn dims(&self) -> Result<(usize, usize)> {
        Ok(self.base.weight().dims2()?)
    }

    pub fn weight(&self) -> &Tensor {
        self.base.weight()
    }

    /// Sets (or with None removes) the unmerged LoRA path, checking the factor shapes.
    pub fn set_lora(&mut self, lora: Option<LoraPath>) -> Result<()> {
        if let Some(l) = &lora {
            let (out, inp) = self.dims()?;
            let (r, a_in) = l.a.dims2()?;
            let (b_out, rb) = l.b.dims2()?;
            if a_in != inp || b_out != out || rb != r {
                return Err(EngineError::InvalidRequest(format!(
                    "{}: lora_A {:?} and lora_B {:?} do not fit the weight [{out}, {inp}]",
                    self.name,
                    l.a.dims(),
                    l.b.dims()
                )));
            }
        }
        self.lora = lora;
        Ok(())
    }
}

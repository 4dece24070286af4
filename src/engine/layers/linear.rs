//! A linear layer with an optional bias and an optional unmerged LoRA path.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp2, Layout, Module, Shape, Tensor};
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
        let y = if training {
            frozen_base(&self.base, x)?
        } else {
            self.base.forward(x)?
        };
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

/// The frozen base path of a linear layer while training: `y = x Wᵀ + b`, whose backward passes
/// the gradient on to `x` alone (`dy W`). Through candle's own matmul the backward would also
/// compute a gradient for W that nothing reads: as large as the weight for every batch row,
/// and as costly as the forward.
fn frozen_base(base: &Linear, x: &Tensor) -> Result<Tensor> {
    let y = base.forward(&x.detach())?;
    Ok(x.apply_op2(
        &y,
        InputGradOnly {
            weight: base.weight().clone(),
        },
    )?)
}

/// Returns its second argument (the base output, computed without a graph); its backward gives
/// the first argument (the input) the gradient `dy W`.
struct InputGradOnly {
    /// `[out, in]`
    weight: Tensor,
}

impl CustomOp2 for InputGradOnly {
    fn name(&self) -> &'static str {
        "frozen-linear"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        y: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        whole(layout)?;
        Ok((y.try_clone(layout)?, layout.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        _: &candle_core::CudaStorage,
        _: &Layout,
        y: &candle_core::CudaStorage,
        layout: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        whole(layout)?;
        Ok((y.try_clone(layout)?, layout.shape().clone()))
    }

    fn bwd(
        &self,
        _x: &Tensor,
        _y: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        Ok((Some(grad.broadcast_matmul(&self.weight)?), None))
    }
}

/// `try_clone` copies a whole storage: right only for a fresh, contiguous result (a matmul's).
fn whole(layout: &Layout) -> candle_core::Result<()> {
    if layout.is_contiguous() && layout.start_offset() == 0 {
        Ok(())
    } else {
        candle_core::bail!("frozen-linear expects a fresh contiguous base output")
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Var};

    use super::*;

    /// The frozen path gives the input the same gradient as candle's own matmul, and the LoRA
    /// factors theirs, with or without a bias.
    #[test]
    fn frozen_base_passes_the_same_gradients() {
        let dev = Device::Cpu;
        for bias in [false, true] {
            let w = Tensor::randn(0f32, 1.0, (5, 4), &dev).unwrap();
            let b = bias.then(|| Tensor::randn(0f32, 1.0, 5, &dev).unwrap());
            let mut proj = Proj::new("p", Linear::new(w, b));
            let a = Var::from_tensor(&Tensor::randn(0f32, 1.0, (2, 4), &dev).unwrap()).unwrap();
            let bb = Var::from_tensor(&Tensor::randn(0f32, 1.0, (5, 2), &dev).unwrap()).unwrap();
            proj.set_lora(Some(LoraPath {
                a: a.as_tensor().clone(),
                b: bb.as_tensor().clone(),
                scaling: 0.5,
                dropout: 0.0,
            }))
            .unwrap();
            let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (3, 6, 4), &dev).unwrap()).unwrap();
            let weights = Tensor::randn(0f32, 1.0, (3, 6, 5), &dev).unwrap();
            let grads = |training: bool| {
                let y = proj.forward(x.as_tensor(), training).unwrap();
                let loss = (y * &weights).unwrap().sum_all().unwrap();
                let g = loss.backward().unwrap();
                [x.as_tensor(), a.as_tensor(), bb.as_tensor()].map(|t| {
                    g.get(t)
                        .unwrap()
                        .flatten_all()
                        .unwrap()
                        .to_vec1::<f32>()
                        .unwrap()
                })
            };
            let (frozen, plain) = (grads(true), grads(false));
            for (f, p) in frozen.iter().zip(&plain) {
                for (u, v) in f.iter().zip(p) {
                    assert!((u - v).abs() < 1e-5, "{u} vs {v}");
                }
            }
            let y_frozen = proj.forward(x.as_tensor(), true).unwrap();
            let y_plain = proj.forward(x.as_tensor(), false).unwrap();
            let d = (y_frozen - y_plain)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap();
            assert_eq!(d.to_scalar::<f32>().unwrap(), 0.0);
        }
    }
}

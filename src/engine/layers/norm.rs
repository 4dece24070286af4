//! Normalisation layers: Llama's RMSNorm, Gemma's (1 + w) RMSNorm, LayerNorm with bias.

use candle_core::{D, DType, Tensor};

use crate::engine::autograd::{attach_backward, local_grad};
use crate::engine::error::Result;
use crate::engine::weights::WeightLoader;

#[derive(Debug, Clone)]
pub enum Norm {
    /// transformers' LlamaRMSNorm: normalise in f32, cast back, then scale by `weight`.
    Rms { weight: Tensor, eps: f64 },
    /// GemmaRMSNorm: normalise and scale by `1 + w` in f32, then cast back. `scale` holds `1 + w`
    /// in f32, `scale_dtype` the same in the model dtype (for the fused kernel).
    RmsOnePlus {
        scale: Tensor,
        scale_dtype: Tensor,
        eps: f64,
    },
    /// LayerNorm with weight and bias, computed in f32 like torch's CPU and CUDA kernels.
    Layer {
        weight: Tensor,
        bias: Tensor,
        weight_f32: Tensor,
        bias_f32: Tensor,
        eps: f64,
    },
}

impl Norm {
    pub fn rms(w: &mut WeightLoader<'_>, name: &str, dim: usize, eps: f64) -> Result<Self> {
        Ok(Self::Rms {
            weight: w.tensor(&format!("{name}.weight"), &[dim])?,
            eps,
        })
    }

    pub fn rms_one_plus(
        w: &mut WeightLoader<'_>,
        name: &str,
        dim: usize,
        eps: f64,
    ) -> Result<Self> {
        let scale = (w.tensor_f32(&format!("{name}.weight"), &[dim])? + 1.0)?;
        Ok(Self::RmsOnePlus {
            scale_dtype: scale.to_dtype(w.dtype)?,
            scale,
            eps,
        })
    }

    pub fn layer(w: &mut WeightLoader<'_>, name: &str, dim: usize, eps: f64) -> Result<Self> {
        let weight_f32 = w.tensor_f32(&format!("{name}.weight"), &[dim])?;
        let bias_f32 = w.tensor_f32(&format!("{name}.bias"), &[dim])?;
        Ok(Self::Layer {
            weight: weight_f32.to_dtype(w.dtype)?,
            bias: bias_f32.to_dtype(w.dtype)?,
            weight_f32,
            bias_f32,
            eps,
        })
    }

    /// Normalises over the last axis. `fused` uses candle's kernels where they compute the same
    /// function; on an input with a graph their backward is that of the plain ops (the weights
    /// stay frozen: only the input gets a gradient).
    pub fn forward(&self, x: &Tensor, fused: bool) -> Result<Tensor> {
        let y = match fused {
            true => self.kernel(x)?,
            false => None,
        };
        let Some(y) = y else {
            return self.plain(x);
        };
        if !x.track_op() {
            return Ok(y);
        }
        let norm = self.clone();
        Ok(attach_backward(x, y, move |x, _, dy| {
            local_grad(x, dy, |x| norm.plain(x).map_err(candle_core::Error::wrap))
        })?)
    }

    /// candle's fused kernel, where it computes this norm in this dtype.
    fn kernel(&self, x: &Tensor) -> Result<Option<Tensor>> {
        let x = x.detach();
        let f32 = x.dtype() == DType::F32;
        Ok(match self {
            Self::Rms { weight, eps } => Some(candle_nn::ops::rms_norm(
                &x.contiguous()?,
                weight,
                *eps as f32,
            )?),
            // The kernel scales in the input dtype; in f32 that is exactly Gemma's order.
            Self::RmsOnePlus {
                scale_dtype, eps, ..
            } if f32 => Some(candle_nn::ops::rms_norm(
                &x.contiguous()?,
                scale_dtype,
                *eps as f32,
            )?),
            Self::Layer {
                weight, bias, eps, ..
            } if f32 => Some(candle_nn::ops::layer_norm(
                &x.contiguous()?,
                weight,
                bias,
                *eps as f32,
            )?),
            _ => None,
        })
    }

    /// The norm in plain differentiable ops.
    fn plain(&self, x: &Tensor) -> Result<Tensor> {
        let dtype = x.dtype();
        match self {
            Self::Rms { weight, eps } => Ok(rms_normalise(x, *eps)?
                .to_dtype(dtype)?
                .broadcast_mul(weight)?),
            Self::RmsOnePlus { scale, eps, .. } => Ok(rms_normalise(x, *eps)?
                .broadcast_mul(scale)?
                .to_dtype(dtype)?),
            Self::Layer {
                weight_f32,
                bias_f32,
                eps,
                ..
            } => {
                let xf = x.to_dtype(DType::F32)?;
                let mean = xf.mean_keepdim(D::Minus1)?;
                let centred = xf.broadcast_sub(&mean)?;
                let var = centred.sqr()?.mean_keepdim(D::Minus1)?;
                let normed = centred.broadcast_div(&(var + *eps)?.sqrt()?)?;
                Ok(normed
                    .broadcast_mul(weight_f32)?
                    .broadcast_add(bias_f32)?
                    .to_dtype(dtype)?)
            }
        }
    }
}

/// `x / sqrt(mean(x^2) + eps)` in f32.
fn rms_normalise(x: &Tensor, eps: f64) -> Result<Tensor> {
    let xf = x.to_dtype(DType::F32)?;
    let var = xf.sqr()?.mean_keepdim(D::Minus1)?;
    Ok(xf.broadcast_mul(&(var + eps)?.sqrt()?.recip()?)?)
}

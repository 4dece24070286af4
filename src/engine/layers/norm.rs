//! Normalisation layers: Llama's RMSNorm, Gemma's (1 + w) RMSNorm, LayerNorm with bias.

use candle_core::{D, DType, Tensor};

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

    /// Normalises over the last axis. `fused` uses candle's kernels (no gradient).
    pub fn forward(&self, x: &Tensor, fused: bool) -> Result<Tensor> {
        let dtype = x.dtype();
        match self {
            Self::Rms { weight, eps } => {
                if fused {
                    return Ok(candle_nn::ops::rms_norm(
                        &x.contiguous()?,
                        weight,
                        *eps as f32,
                    )?);
                }
                Ok(rms_normalise(x, *eps)?
                    .to_dtype(dtype)?
                    .broadcast_mul(weight)?)
            }
            Self::RmsOnePlus {
                scale,
                scale_dtype,
                eps,
            } => {
                // The kernel scales in the input dtype; in f32 that is exactly Gemma's order.
                if fused && dtype == DType::F32 {
                    return Ok(candle_nn::ops::rms_norm(
                        &x.contiguous()?,
                        scale_dtype,
                        *eps as f32,
                    )?);
                }
                Ok(rms_normalise(x, *eps)?
                    .broadcast_mul(scale)?
                    .to_dtype(dtype)?)
            }
            Self::Layer {
                weight,
                bias,
                weight_f32,
                bias_f32,
                eps,
            } => {
                if fused && dtype == DType::F32 {
                    return Ok(candle_nn::ops::layer_norm(
                        &x.contiguous()?,
                        weight,
                        bias,
                        *eps as f32,
                    )?);
                }
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

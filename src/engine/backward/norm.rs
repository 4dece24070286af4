//! The backward of an RMS norm whose weight is frozen.

use candle_core::{D, Tensor};

use crate::engine::error::{EngineError, Result};
use crate::engine::layers::Norm;

/// Whether `backward` covers `norm`.
pub fn supports(norm: &Norm) -> bool {
    matches!(norm, Norm::Rms { .. } | Norm::RmsOnePlus { .. })
}

/// The gradient of the norm's input `x` for the output gradient `dy` (both `[.., d]`):
/// with `r = 1/sqrt(mean(x²) + eps)`, `x̂ = x r` and `g = dy ⊙ w`, it is `r (g - x̂ mean(g ⊙ x̂))`.
pub fn backward(norm: &Norm, x: &Tensor, dy: &Tensor) -> Result<Tensor> {
    let (weight, eps) = match norm {
        Norm::Rms { weight, eps } => (weight, *eps),
        Norm::RmsOnePlus {
            scale_dtype, eps, ..
        } => (scale_dtype, *eps),
        Norm::Layer { .. } => {
            return Err(EngineError::InvalidRequest(
                "no hand-written backward for a LayerNorm".into(),
            ));
        }
    };
    let rstd = (x.sqr()?.mean_keepdim(D::Minus1)? + eps)?.sqrt()?.recip()?;
    let xhat = x.broadcast_mul(&rstd)?;
    let g = dy.broadcast_mul(weight)?;
    let dot = (&g * &xhat)?.mean_keepdim(D::Minus1)?;
    Ok((g - xhat.broadcast_mul(&dot)?)?.broadcast_mul(&rstd)?)
}

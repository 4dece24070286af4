//! Rotary position embeddings with transformers' inverse-frequency scalings (default, linear, llama3).

use candle_core::{D, DType, Device, Tensor};

use super::config::RopeScaling;
use super::error::Result;

/// Inverse frequencies, computed in f32 the way transformers does.
pub fn inv_freq(head_dim: usize, theta: f32, scaling: &RopeScaling) -> Vec<f32> {
    let base: Vec<f32> = (0..head_dim)
        .step_by(2)
        .map(|i| 1.0f32 / theta.powf(i as f32 / head_dim as f32))
        .collect();
    match *scaling {
        RopeScaling::Default => base,
        RopeScaling::Linear { factor } => base.into_iter().map(|f| f / factor).collect(),
        RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_position_embeddings: old,
        } => {
            let low_wavelen = old / low_freq_factor;
            let high_wavelen = old / high_freq_factor;
            base.into_iter()
                .map(|f| {
                    let wavelen = 2.0 * std::f32::consts::PI / f;
                    let f_llama = if wavelen > low_wavelen { f / factor } else { f };
                    let medium = wavelen >= high_wavelen && wavelen <= low_wavelen;
                    if medium {
                        let smooth = (old / wavelen - low_freq_factor)
                            / (high_freq_factor - low_freq_factor);
                        (1.0 - smooth) * f_llama / factor + smooth * f_llama
                    } else {
                        f_llama
                    }
                })
                .collect()
        }
    }
}

#[derive(Debug, Clone)]
pub struct Rope {
    /// `[1, 1, head_dim/2]` f32
    inv_freq: Tensor,
}

impl Rope {
    pub fn new(
        head_dim: usize,
        theta: f32,
        scaling: &RopeScaling,
        device: &Device,
    ) -> Result<Self> {
        let f = inv_freq(head_dim, theta, scaling);
        let n = f.len();
        Ok(Self {
            inv_freq: Tensor::from_vec(f, (1, 1, n), device)?,
        })
    }

    /// cos and sin `[b, t, head_dim/2]` in `dtype` for integer positions `[b, t]`
    /// (`[t, head_dim/2]` for positions `[t]` shared by the batch).
    pub fn cos_sin(&self, positions: &Tensor, dtype: DType) -> Result<(Tensor, Tensor)> {
        let pos = positions.to_dtype(DType::F32)?.unsqueeze(D::Minus1)?;
        let mut freqs = pos.broadcast_mul(&self.inv_freq)?;
        if positions.rank() == 1 {
            freqs = freqs.squeeze(0)?;
        }
        Ok((freqs.cos()?.to_dtype(dtype)?, freqs.sin()?.to_dtype(dtype)?))
    }
}

fn rotate_half(x: &Tensor) -> Result<Tensor> {
    let d = x.dim(D::Minus1)?;
    let x1 = x.narrow(D::Minus1, 0, d / 2)?;
    let x2 = x.narrow(D::Minus1, d / 2, d - d / 2)?;
    Ok(Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?)
}

/// Applies RoPE (non-interleaved halves, as Llama) to `x` `[b, h, t, d]` with cos/sin
/// `[b, t, d/2]` or `[t, d/2]`.
pub fn apply(x: &Tensor, cos: &Tensor, sin: &Tensor, fused: bool) -> Result<Tensor> {
    if fused {
        return Ok(candle_nn::rotary_emb::rope(&x.contiguous()?, cos, sin)?);
    }
    let full = |c: &Tensor| -> Result<Tensor> {
        let c = Tensor::cat(&[c, c], D::Minus1)?;
        Ok(if c.rank() == 3 { c.unsqueeze(1)? } else { c })
    };
    let (cos, sin) = (full(cos)?, full(sin)?);
    Ok((x.broadcast_mul(&cos)? + rotate_half(x)?.broadcast_mul(&sin)?)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llama3_scaling_bands() {
        let s = RopeScaling::Llama3 {
            factor: 8.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 64.0,
        };
        let base = inv_freq(16, 10000.0, &RopeScaling::Default);
        let scaled = inv_freq(16, 10000.0, &s);
        // High frequencies (short wavelengths) are kept, the lowest ones divided by the factor.
        assert_eq!(base[0], scaled[0]);
        assert!((scaled[7] - base[7] / 8.0).abs() < 1e-12);
    }

    #[test]
    fn fused_and_plain_rope_agree() {
        let dev = Device::Cpu;
        let rope = Rope::new(8, 10000.0, &RopeScaling::Default, &dev).unwrap();
        let x = Tensor::randn(0f32, 1.0, (2, 3, 5, 8), &dev).unwrap();
        let pos = Tensor::new(&[[0u32, 1, 2, 3, 4], [0, 0, 0, 1, 2]], &dev).unwrap();
        let (c, s) = rope.cos_sin(&pos, DType::F32).unwrap();
        let a = apply(&x, &c, &s, true).unwrap();
        let b = apply(&x, &c, &s, false).unwrap();
        let d = (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(d < 1e-6, "{d}");
    }
}

//! Rotary position embeddings with transformers' inverse-frequency scalings (default, linear,
//! llama3, longrope), over all of a head's dimensions or only the first ones (partial rotary).

use candle_core::{D, DType, Device, Tensor};

use crate::engine::autograd::attach_backward;
use crate::engine::error::Result;

/// How RoPE inverse frequencies are scaled (transformers' `rope_type`).
#[derive(Debug, Clone, PartialEq)]
pub enum RopeScaling {
    Default,
    Linear {
        factor: f32,
    },
    Llama3 {
        factor: f32,
        low_freq_factor: f32,
        high_freq_factor: f32,
        original_max_position_embeddings: f32,
    },
    /// Phi-3's LongRoPE ("su"): per-frequency divisors, the long ones for sequences longer
    /// than `original_max_position_embeddings`, and cos/sin scaled by `attention_factor`.
    LongRope {
        short_factor: Vec<f32>,
        long_factor: Vec<f32>,
        original_max_position_embeddings: usize,
        attention_factor: f32,
    },
}

/// Inverse frequencies of `dim` rotated dimensions, computed in f32 the way transformers does
/// (for LongRoPE: the short ones).
pub fn inv_freq(dim: usize, theta: f32, scaling: &RopeScaling) -> Vec<f32> {
    let base: Vec<f32> = (0..dim)
        .step_by(2)
        .map(|i| 1.0f32 / theta.powf(i as f32 / dim as f32))
        .collect();
    match scaling {
        RopeScaling::Default => base,
        RopeScaling::Linear { factor } => base.into_iter().map(|f| f / factor).collect(),
        RopeScaling::LongRope { short_factor, .. } => longrope(dim, theta, short_factor),
        &RopeScaling::Llama3 {
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

/// transformers' `_compute_longrope_parameters`: `1 / (ext_factor * theta^(2i/dim))`.
fn longrope(dim: usize, theta: f32, factors: &[f32]) -> Vec<f32> {
    (0..dim)
        .step_by(2)
        .zip(factors)
        .map(|(i, ext)| 1.0f32 / (ext * theta.powf(i as f32 / dim as f32)))
        .collect()
}

#[derive(Debug, Clone)]
pub struct Rope {
    /// `[1, 1, rotary_dim/2]` f32
    inv_freq: Tensor,
    /// LongRoPE: the long inverse frequencies and the length beyond which they apply.
    long: Option<(Tensor, usize)>,
    /// cos and sin are multiplied by this (LongRoPE's attention factor; 1 otherwise).
    attention_scaling: f64,
    /// The first `rotary_dim` dimensions of each head rotate, the rest pass through.
    pub rotary_dim: usize,
}

impl Rope {
    pub fn new(
        rotary_dim: usize,
        theta: f32,
        scaling: &RopeScaling,
        device: &Device,
    ) -> Result<Self> {
        let table = |f: Vec<f32>| -> Result<Tensor> {
            let n = f.len();
            Ok(Tensor::from_vec(f, (1, 1, n), device)?)
        };
        let (long, attention_scaling) = match scaling {
            RopeScaling::LongRope {
                long_factor,
                original_max_position_embeddings,
                attention_factor,
                ..
            } => (
                Some((
                    table(longrope(rotary_dim, theta, long_factor))?,
                    *original_max_position_embeddings,
                )),
                f64::from(*attention_factor),
            ),
            _ => (None, 1.0),
        };
        Ok(Self {
            inv_freq: table(inv_freq(rotary_dim, theta, scaling))?,
            long,
            attention_scaling,
            rotary_dim,
        })
    }

    /// LongRoPE: the sequence length beyond which the long frequencies apply.
    pub fn switch_len(&self) -> Option<usize> {
        self.long.as_ref().map(|(_, l)| *l)
    }

    /// cos and sin `[b, t, rotary_dim/2]` in `dtype` for integer positions `[b, t]`
    /// (`[t, rotary_dim/2]` for positions `[t]` shared by the batch). `seq_lens` (one per batch
    /// row) picks LongRoPE's short or long frequencies per row, as transformers picks them for a
    /// sequence of that length.
    pub fn cos_sin(
        &self,
        positions: &Tensor,
        seq_lens: &[usize],
        dtype: DType,
    ) -> Result<(Tensor, Tensor)> {
        let pos = positions.to_dtype(DType::F32)?.unsqueeze(D::Minus1)?;
        let inv = match &self.long {
            None => self.inv_freq.clone(),
            Some((long, limit)) => {
                let is_long: Vec<bool> = seq_lens.iter().map(|l| l > limit).collect();
                if is_long.iter().all(|&l| l) {
                    long.clone()
                } else if !is_long.contains(&true) {
                    self.inv_freq.clone()
                } else {
                    let rows: Vec<&Tensor> = is_long
                        .iter()
                        .map(|&l| if l { long } else { &self.inv_freq })
                        .collect();
                    Tensor::cat(&rows, 0)?
                }
            }
        };
        let per_row = inv.dim(0)? > 1;
        let pos = if per_row && positions.rank() == 1 {
            pos.unsqueeze(0)?
                .broadcast_as((inv.dim(0)?, pos.dim(0)?, 1))?
        } else {
            pos
        };
        let mut freqs = pos.broadcast_mul(&inv)?;
        if positions.rank() == 1 && !per_row {
            freqs = freqs.squeeze(0)?;
        }
        let (mut cos, mut sin) = (freqs.cos()?, freqs.sin()?);
        if self.attention_scaling != 1.0 {
            cos = (cos * self.attention_scaling)?;
            sin = (sin * self.attention_scaling)?;
        }
        Ok((cos.to_dtype(dtype)?, sin.to_dtype(dtype)?))
    }
}

fn rotate_half(x: &Tensor) -> Result<Tensor> {
    let d = x.dim(D::Minus1)?;
    let x1 = x.narrow(D::Minus1, 0, d / 2)?;
    let x2 = x.narrow(D::Minus1, d / 2, d - d / 2)?;
    Ok(Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?)
}

/// Applies RoPE (non-interleaved halves, as Llama) to the first `cos.dim(-1) * 2` dimensions of
/// `x` `[b, h, t, d]` with cos/sin `[b, t, r/2]` or `[t, r/2]`; the other dimensions pass.
pub fn apply(x: &Tensor, cos: &Tensor, sin: &Tensor, fused: bool) -> Result<Tensor> {
    let d = x.dim(D::Minus1)?;
    let r = cos.dim(D::Minus1)? * 2;
    if r < d {
        let rotated = apply(&x.narrow(D::Minus1, 0, r)?, cos, sin, fused)?;
        let pass = x.narrow(D::Minus1, r, d - r)?;
        return Ok(Tensor::cat(&[&rotated, &pass], D::Minus1)?.contiguous()?);
    }
    if fused {
        let y = candle_nn::rotary_emb::rope(&x.detach().contiguous()?, cos, sin)?;
        if !x.track_op() {
            return Ok(y);
        }
        // A rotation's transpose is the rotation by the opposite angle.
        let (cos, neg_sin) = (cos.clone(), sin.neg()?);
        return Ok(attach_backward(x, y, move |_, _, dy| {
            candle_nn::rotary_emb::rope(&dy.contiguous()?, &cos, &neg_sin)
        })?);
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
        let (c, s) = rope.cos_sin(&pos, &[5, 5], DType::F32).unwrap();
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

    #[test]
    fn partial_rotary_leaves_the_tail_alone() {
        let dev = Device::Cpu;
        let rope = Rope::new(4, 10000.0, &RopeScaling::Default, &dev).unwrap();
        let x = Tensor::randn(0f32, 1.0, (1, 2, 3, 10), &dev).unwrap();
        let pos = Tensor::new(&[0u32, 1, 2], &dev).unwrap();
        let (c, s) = rope.cos_sin(&pos, &[3], DType::F32).unwrap();
        for fused in [false, true] {
            let y = apply(&x, &c, &s, fused).unwrap();
            let tail = |t: &Tensor| {
                t.narrow(3, 4, 6)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap()
            };
            assert_eq!(tail(&y), tail(&x));
            let head = |t: &Tensor| {
                t.narrow(3, 0, 4)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap()
            };
            assert_ne!(head(&y), head(&x));
        }
    }

    #[test]
    fn longrope_picks_frequencies_per_row_by_length() {
        let dev = Device::Cpu;
        let scaling = RopeScaling::LongRope {
            short_factor: vec![1.0, 1.0],
            long_factor: vec![2.0, 4.0],
            original_max_position_embeddings: 4,
            attention_factor: 1.5,
        };
        let rope = Rope::new(4, 100.0, &scaling, &dev).unwrap();
        let pos = Tensor::new(&[0u32, 1, 2], &dev).unwrap();
        let (c, _) = rope.cos_sin(&pos, &[3, 9], DType::F32).unwrap();
        let c = c.to_vec3::<f32>().unwrap();
        // Row 0 (length 3 <= 4): short factors; row 1: long. Position 1, frequency 0: 1 vs 1/2.
        assert!((c[0][1][0] - 1.5 * 1f32.cos()).abs() < 1e-6);
        assert!((c[1][1][0] - 1.5 * 0.5f32.cos()).abs() < 1e-6);
        let (c, _) = rope.cos_sin(&pos, &[3, 3], DType::F32).unwrap();
        assert_eq!(c.dims(), &[3, 2]);
    }
}

//! Deterministic random initialisation (as transformers' Llama: normal(0, 0.02) for matrices,
//! ones for the norms), from a seeded ChaCha generator so a rerun gives the same bytes.

use std::collections::HashMap;

use candle_core::{Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::shape::BaseShape;

pub const INIT_STD: f64 = 0.02;

/// Standard normal samples by Box-Muller.
fn normals(rng: &mut ChaCha8Rng, n: usize, std: f64) -> Vec<f32> {
    let mut out = Vec::with_capacity(n + 1);
    while out.len() < n {
        let u1: f64 = rng.random::<f64>().max(1e-12);
        let u2: f64 = rng.random::<f64>();
        let r = (-2.0 * u1.ln()).sqrt() * std;
        let t = std::f64::consts::TAU * u2;
        out.push((r * t.cos()) as f32);
        out.push((r * t.sin()) as f32);
    }
    out.truncate(n);
    out
}

/// Freshly initialised f32 weights for `shape`.
pub fn init_weights(
    shape: &BaseShape,
    seed: u64,
    device: &Device,
) -> candle_core::Result<HashMap<String, Tensor>> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut out = HashMap::new();
    for (name, dims) in shape.tensors() {
        let n: usize = dims.iter().product();
        let values = if name.ends_with("norm.weight") {
            vec![1.0f32; n]
        } else {
            normals(&mut rng, n, INIT_STD)
        };
        out.insert(name, Tensor::from_vec(values, dims, device)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_samples_have_the_asked_spread_and_repeat() {
        let mut a = ChaCha8Rng::seed_from_u64(3);
        let xs = normals(&mut a, 20_001, 0.02);
        let mean = xs.iter().map(|&x| f64::from(x)).sum::<f64>() / xs.len() as f64;
        let var = xs
            .iter()
            .map(|&x| (f64::from(x) - mean).powi(2))
            .sum::<f64>()
            / xs.len() as f64;
        assert!(mean.abs() < 1e-3, "{mean}");
        assert!((var.sqrt() - 0.02).abs() < 1e-3, "{}", var.sqrt());
        let mut b = ChaCha8Rng::seed_from_u64(3);
        assert_eq!(normals(&mut b, 10, 0.02), xs[..10]);
    }
}

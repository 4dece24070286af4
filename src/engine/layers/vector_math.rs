//! Element-wise maths on f32 slices with an exp the compiler can vectorise, compiled for
//! AVX-512 and AVX2 besides the baseline and picked at run time. libm's `expf` is a call per
//! element that no loop around it can vectorise: it was 6-7% of a training step's time and of
//! few-shot scoring's (SiLU, its gradient, attention's softmax).

use multiversion::multiversion;

const LOG2E: f32 = std::f32::consts::LOG2_E;
/// ln 2 in two parts (Cody and Waite): `n · LN2_HI` is exact for the `n` an f32 exp can meet.
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
/// Above this `exp` overflows to infinity; below `UNDERFLOW` it is 0 (the smallest normal f32
/// is e^-87.34).
const OVERFLOW: f32 = 88.722_83;
const UNDERFLOW: f32 = -87.336_54;
/// Adding and subtracting 1.5 · 2^23 rounds an f32 of magnitude < 2^22 to the nearest integer.
const ROUND: f32 = 12_582_912.0;

/// `e^x` within 2 ulp of libm's over the normal range (Cephes' `expf` polynomial); 0 below
/// it (where libm gives a subnormal), infinity above it, NaN for NaN (through the arithmetic). Branch-free, so that loops
/// of it vectorise. No fused multiply-adds, so that every build computes the same bits.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    let clamped = x.clamp(UNDERFLOW, OVERFLOW);
    let n = (clamped * LOG2E + ROUND) - ROUND;
    let r = clamped - n * LN2_HI - n * LN2_LO;
    let r2 = r * r;
    let p = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
        + 1.666_666_5e-1)
        * r
        + 0.5;
    let e = p * r2 + r + 1.0;
    // 2^n from its exponent bits; n is in [-126, 128] here, 2^128 split in two factors.
    let half = (n as i32) >> 1;
    let scale_a = f32::from_bits(((half + 127) as u32) << 23);
    let scale_b = f32::from_bits((((n as i32 - half) + 127) as u32) << 23);
    let y = e * scale_a * scale_b;
    if x < UNDERFLOW {
        0.0
    } else if x > OVERFLOW {
        f32::INFINITY
    } else {
        y
    }
}

/// `out = silu(gate) · up`, `silu(g) = g / (1 + e^-g)`.
#[multiversion(targets("x86_64+avx512f+avx512vl+avx512dq+avx512bw", "x86_64+avx2+fma"))]
pub fn silu_mul(gate: &[f32], up: &[f32], out: &mut [f32]) {
    for ((o, &g), &u) in out.iter_mut().zip(gate).zip(up) {
        *o = g / (1.0 + exp(-g)) * u;
    }
}

/// The gradients of `silu(g) · u` for the product's gradient `dp`: `du = dp · silu(g)` and
/// `dg = dp · u · silu'(g)`, `silu'(g) = σ(g) (1 + g (1 - σ(g)))`.
#[multiversion(targets("x86_64+avx512f+avx512vl+avx512dq+avx512bw", "x86_64+avx2+fma"))]
pub fn silu_mul_backward(
    dp: &[f32],
    gate: &[f32],
    up: &[f32],
    d_gate: &mut [f32],
    d_up: &mut [f32],
) {
    let inputs = dp.iter().zip(gate).zip(up);
    for (((&p, &g), &u), (dg, du)) in inputs.zip(d_gate.iter_mut().zip(d_up.iter_mut())) {
        let sigma = 1.0 / (1.0 + exp(-g));
        *du = p * (g * sigma);
        *dg = p * u * (sigma * (1.0 + g * (1.0 - sigma)));
    }
}

/// A softmax of `row` in place: `e^(x - max) / Σ`, the sum taken in order.
#[multiversion(targets("x86_64+avx512f+avx512vl+avx512dq+avx512bw", "x86_64+avx2+fma"))]
pub fn softmax_in_place(row: &mut [f32]) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    for v in row.iter_mut() {
        *v = exp(*v - max);
    }
    let sum: f32 = row.iter().sum();
    for v in row.iter_mut() {
        *v /= sum;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ulps(a: f32, b: f32) -> u32 {
        (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs() as u32
    }

    #[test]
    fn exp_is_within_two_ulp_of_libm_over_the_normal_range() {
        let mut worst = (0u32, 0f32);
        let mut x = UNDERFLOW;
        while x < OVERFLOW {
            let d = ulps(exp(x), x.exp());
            if d > worst.0 {
                worst = (d, x);
            }
            x += 1.3e-4;
        }
        assert!(worst.0 <= 2, "{} ulp at x = {}", worst.0, worst.1);
    }

    #[test]
    fn exp_edges_are_zero_one_infinity_and_nan() {
        assert_eq!(exp(0.0), 1.0);
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp(-1000.0), 0.0);
        assert_eq!(exp(f32::INFINITY), f32::INFINITY);
        assert_eq!(exp(100.0), f32::INFINITY);
        assert!(exp(f32::NAN).is_nan());
        assert!(ulps(exp(OVERFLOW), OVERFLOW.exp()) <= 2);
    }

    #[test]
    fn softmax_rows_sum_to_one_and_masked_entries_are_zero() {
        let mut row = [1.0, f32::NEG_INFINITY, 3.0, -2.0];
        softmax_in_place(&mut row);
        let sum: f32 = row.iter().sum();
        assert!((sum - 1.0).abs() < 1e-6);
        assert_eq!(row[1], 0.0);
        let exact: Vec<f64> = [1.0f64, 3.0, -2.0]
            .iter()
            .map(|v| (v - 3.0).exp())
            .collect();
        let total: f64 = exact.iter().sum();
        for (got, want) in [row[0], row[2], row[3]].iter().zip(&exact) {
            assert!((*got as f64 - want / total).abs() < 1e-7);
        }
    }

    #[test]
    fn silu_and_its_gradient_match_the_plain_formulas() {
        let g: Vec<f32> = (-40..40).map(|i| i as f32 * 0.37).collect();
        let u: Vec<f32> = g.iter().map(|v| 1.0 - v * 0.1).collect();
        let dp: Vec<f32> = g.iter().map(|v| 0.5 + v * 0.01).collect();
        let mut out = vec![0.0; g.len()];
        silu_mul(&g, &u, &mut out);
        let (mut dg, mut du) = (vec![0.0; g.len()], vec![0.0; g.len()]);
        silu_mul_backward(&dp, &g, &u, &mut dg, &mut du);
        for i in 0..g.len() {
            let (gi, ui, pi) = (g[i] as f64, u[i] as f64, dp[i] as f64);
            let sigma = 1.0 / (1.0 + (-gi).exp());
            let close =
                |got: f32, want: f64| (got as f64 - want).abs() <= 1e-6 * (1.0 + want.abs());
            assert!(close(out[i], gi * sigma * ui), "silu at {gi}");
            assert!(close(du[i], pi * gi * sigma), "du at {gi}");
            let slope = sigma * (1.0 + gi * (1.0 - sigma));
            assert!(close(dg[i], pi * ui * slope), "dg at {gi}");
        }
    }
}

//! The gradients of a SiLU-gated product `silu(g) ⊙ u` in one pass, from the product's gradient,
//! the gate before the activation and the up projection (the element-wise ops one by one make
//! six output-sized tensors).

use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Tensor};
use rayon::prelude::*;

use crate::engine::error::Result;
use crate::engine::layers::vector_math::silu_mul_backward;

/// Where the two gradients go: side by side in each row (`[n, 2 I]`, what a fused gate/up
/// projection takes) or one after the other (`[2, n, I]`, two contiguous halves).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Halves {
    SideBySide,
    Stacked,
}

struct SiluGateBackward(Halves);

fn contiguous<'a>(
    name: &str,
    v: &'a [f32],
    l: &Layout,
    n: usize,
) -> candle_core::Result<&'a [f32]> {
    match l.contiguous_offsets() {
        Some((start, end)) if end - start == n => Ok(&v[start..end]),
        _ => candle_core::bail!("silu-gate-backward: {name} is not contiguous"),
    }
}

impl CustomOp3 for SiluGateBackward {
    fn name(&self) -> &'static str {
        "silu-gate-backward"
    }

    fn cpu_fwd(
        &self,
        dp: &CpuStorage,
        dp_l: &Layout,
        gate: &CpuStorage,
        gate_l: &Layout,
        up: &CpuStorage,
        up_l: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (CpuStorage::F32(dp), CpuStorage::F32(gate), CpuStorage::F32(up)) = (dp, gate, up)
        else {
            candle_core::bail!("silu-gate-backward: f32 only");
        };
        let (rows, width) = dp_l.shape().dims2()?;
        let n = rows * width;
        let dp = contiguous("dp", dp, dp_l, n)?;
        let gate = contiguous("gate", gate, gate_l, n)?;
        let up = contiguous("up", up, up_l, n)?;
        let mut out = vec![0f32; 2 * n];
        let row = |r: usize, d_gate: &mut [f32], d_up: &mut [f32]| {
            let at = r * width..(r + 1) * width;
            silu_mul_backward(&dp[at.clone()], &gate[at.clone()], &up[at], d_gate, d_up);
        };
        let shape = match self.0 {
            Halves::SideBySide => {
                out.par_chunks_mut(2 * width)
                    .enumerate()
                    .for_each(|(r, both)| {
                        let (d_gate, d_up) = both.split_at_mut(width);
                        row(r, d_gate, d_up);
                    });
                Shape::from((rows, 2 * width))
            }
            Halves::Stacked => {
                let (d_gate, d_up) = out.split_at_mut(n);
                d_gate
                    .par_chunks_mut(width)
                    .zip(d_up.par_chunks_mut(width))
                    .enumerate()
                    .for_each(|(r, (dg, du))| row(r, dg, du));
                Shape::from((2, rows, width))
            }
        };
        Ok((CpuStorage::F32(out), shape))
    }
}

/// The gradients of `gate` and `up` for the product `silu(gate) ⊙ up` whose gradient is `dp` (all
/// three `[n, I]`), laid out as `halves` says; None where this does not apply (not f32 on the
/// CPU): the caller uses plain ops.
pub fn silu_gate_backward(
    dp: &Tensor,
    gate: &Tensor,
    up: &Tensor,
    halves: Halves,
) -> Result<Option<Tensor>> {
    let cpu_f32 = [dp, gate, up]
        .iter()
        .all(|t| t.device().is_cpu() && t.dtype() == candle_core::DType::F32);
    if !cpu_f32 {
        return Ok(None);
    }
    let (dp, gate, up) = (dp.contiguous()?, gate.contiguous()?, up.contiguous()?);
    Ok(Some(dp.apply_op3_no_bwd(
        &gate,
        &up,
        &SiluGateBackward(halves),
    )?))
}

//! SiLU-gated products and softmaxes on the CPU in one pass each, with `vector_math`'s
//! vectorised exp; candle's ops elsewhere (other devices and dtypes, tensors with a graph).

use candle_core::{CpuStorage, CustomOp1, CustomOp2, DType, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::vector_math;
use crate::engine::error::Result;

/// Elements per parallel task of an element-wise op.
const CHUNK: usize = 1 << 14;

/// Whether `t` can go through this process's CPU kernels: f32 on the CPU, no graph.
pub(super) fn cpu_f32(t: &Tensor) -> bool {
    t.device().is_cpu() && t.dtype() == DType::F32 && !t.track_op()
}

fn contiguous<'a>(name: &str, v: &'a CpuStorage, l: &Layout) -> candle_core::Result<&'a [f32]> {
    let CpuStorage::F32(v) = v else {
        candle_core::bail!("{name}: f32 only");
    };
    match l.contiguous_offsets() {
        Some((start, end)) => Ok(&v[start..end]),
        None => candle_core::bail!("{name}: not contiguous"),
    }
}

struct SiluMul;

impl CustomOp2 for SiluMul {
    fn name(&self) -> &'static str {
        "silu-mul"
    }

    fn cpu_fwd(
        &self,
        gate: &CpuStorage,
        gate_l: &Layout,
        up: &CpuStorage,
        up_l: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (gate, up) = (
            contiguous("silu-mul", gate, gate_l)?,
            contiguous("silu-mul", up, up_l)?,
        );
        if gate_l.shape() != up_l.shape() {
            candle_core::bail!(
                "silu-mul: gate {:?} and up {:?}",
                gate_l.shape(),
                up_l.shape()
            );
        }
        let mut out = vec![0f32; gate.len()];
        out.par_chunks_mut(CHUNK)
            .zip(gate.par_chunks(CHUNK).zip(up.par_chunks(CHUNK)))
            .for_each(|(out, (gate, up))| vector_math::silu_mul(gate, up, out));
        Ok((CpuStorage::F32(out), gate_l.shape().clone()))
    }
}

/// `silu(gate) ⊙ up`.
pub fn silu_mul(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    if cpu_f32(gate) && cpu_f32(up) && gate.shape() == up.shape() {
        let (gate, up) = (gate.contiguous()?, up.contiguous()?);
        return Ok(gate.apply_op2_no_bwd(&up, &SiluMul)?);
    }
    Ok((gate.silu()? * up)?)
}

struct SoftmaxLastDim;

impl CustomOp1 for SoftmaxLastDim {
    fn name(&self) -> &'static str {
        "softmax-last-dim"
    }

    fn cpu_fwd(&self, x: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = contiguous("softmax-last-dim", x, l)?;
        let width = l.dims().last().copied().unwrap_or(1).max(1);
        let mut out = x.to_vec();
        let rows = (CHUNK / width).max(1);
        out.par_chunks_mut(rows * width).for_each(|block| {
            block
                .chunks_mut(width)
                .for_each(vector_math::softmax_in_place)
        });
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }
}

/// A softmax over the last axis (candle's `softmax_last_dim`, without a graph on the CPU).
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    if cpu_f32(x) {
        return Ok(x.contiguous()?.apply_op1_no_bwd(&SoftmaxLastDim)?);
    }
    Ok(candle_nn::ops::softmax_last_dim(x)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// The largest `|a - b| / (1 + |b|)`.
    fn close(a: &Tensor, b: &Tensor) -> f32 {
        let scale = (b.abs().unwrap() + 1.0).unwrap();
        ((a - b).unwrap().abs().unwrap() / scale)
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar()
            .unwrap()
    }

    #[test]
    fn the_fused_ops_give_candles_values() {
        let dev = Device::Cpu;
        let g = Tensor::randn(0f32, 3.0, (3, 37, 301), &dev).unwrap();
        let u = Tensor::randn(0f32, 1.0, (3, 37, 301), &dev).unwrap();
        let want = (g.silu().unwrap() * &u).unwrap();
        assert!(close(&silu_mul(&g, &u).unwrap(), &want) < 1e-6);
        let narrow = g.narrow(2, 1, 100).unwrap();
        let want = (narrow.silu().unwrap() * narrow.clone()).unwrap();
        assert!(close(&silu_mul(&narrow, &narrow).unwrap(), &want) < 1e-6);

        let x = Tensor::randn(0f32, 4.0, (2, 5, 7, 129), &dev)
            .unwrap()
            .broadcast_add(
                &Tensor::from_vec(
                    (0..129)
                        .map(|i| if i % 5 == 0 { -1e30 } else { 0.0 })
                        .collect::<Vec<f32>>(),
                    129,
                    &dev,
                )
                .unwrap(),
            )
            .unwrap();
        let want = candle_nn::ops::softmax_last_dim(&x).unwrap();
        let got = softmax_last_dim(&x).unwrap();
        assert!(close(&got, &want) < 1e-6);
        let masked = got
            .narrow(3, 0, 1)
            .unwrap()
            .abs()
            .unwrap()
            .sum_all()
            .unwrap();
        assert_eq!(masked.to_scalar::<f32>().unwrap(), 0.0);
    }
}

//! Batched products (attention's `q kᵀ`, `p v` and their gradients) split over the batch: each
//! thread runs whole single-threaded products. candle runs the batch one product after another,
//! each split over the threads: attention's products are small (a head's `t x hd` by `hd x t`),
//! so most of their time went to waking and joining the threads, 24 times per product on a
//! batch of 8 with 3 kv heads.

use candle_core::{CpuStorage, CustomOp2, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::elementwise::cpu_f32;
use super::matmul_add::{Strides, gemm_rows, parallelism};
use crate::engine::error::Result;

struct BatchedMatmul;

/// A batched operand: the offset of each batch entry's matrix and the matrix's strides.
struct Operand<'a> {
    data: &'a [f32],
    batch_dims: Vec<(usize, usize)>,
    rows: usize,
    cols: usize,
    strides: Strides,
}

impl<'a> Operand<'a> {
    fn new(storage: &'a CpuStorage, l: &Layout) -> candle_core::Result<Self> {
        let CpuStorage::F32(data) = storage else {
            candle_core::bail!("batched-matmul: f32 only");
        };
        let (dims, strides) = (l.dims(), l.stride());
        let rank = dims.len();
        if rank < 2 {
            candle_core::bail!("batched-matmul: an operand of rank {rank}");
        }
        let operand = Self {
            data: &data[l.start_offset()..],
            batch_dims: dims[..rank - 2]
                .iter()
                .copied()
                .zip(strides[..rank - 2].iter().copied())
                .collect(),
            rows: dims[rank - 2],
            cols: dims[rank - 1],
            strides: Strides {
                row: strides[rank - 2],
                col: strides[rank - 1],
            },
        };
        let last = operand.offset(operand.batches().saturating_sub(1))
            + (operand.rows.max(1) - 1) * operand.strides.row
            + (operand.cols.max(1) - 1) * operand.strides.col;
        if operand.batches() > 0
            && operand.rows > 0
            && operand.cols > 0
            && last >= operand.data.len()
        {
            candle_core::bail!("batched-matmul: an operand is smaller than its strides say");
        }
        Ok(operand)
    }

    fn batches(&self) -> usize {
        self.batch_dims.iter().map(|(d, _)| d).product()
    }

    /// The offset of batch entry `index` (row-major over the batch dims).
    fn offset(&self, mut index: usize) -> usize {
        let mut offset = 0;
        for &(dim, stride) in self.batch_dims.iter().rev() {
            offset += (index % dim) * stride;
            index /= dim;
        }
        offset
    }
}

impl CustomOp2 for BatchedMatmul {
    fn name(&self) -> &'static str {
        "batched-matmul"
    }

    fn cpu_fwd(
        &self,
        lhs: &CpuStorage,
        lhs_l: &Layout,
        rhs: &CpuStorage,
        rhs_l: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (a, b) = (Operand::new(lhs, lhs_l)?, Operand::new(rhs, rhs_l)?);
        let (batch_a, batch_b): (Vec<usize>, Vec<usize>) = (
            a.batch_dims.iter().map(|d| d.0).collect(),
            b.batch_dims.iter().map(|d| d.0).collect(),
        );
        if batch_a != batch_b || a.cols != b.rows {
            candle_core::bail!("batched-matmul: {:?} by {:?}", lhs_l.shape(), rhs_l.shape());
        }
        let (m, k, n) = (a.rows, a.cols, b.cols);
        let batches = a.batches();
        let mut out = vec![0f32; batches * m * n];
        let threads = candle_core::utils::get_num_threads();
        let product = |index: usize, dst: &mut [f32], parallelism: gemm::Parallelism| {
            let (lhs, rhs) = (&a.data[a.offset(index)..], &b.data[b.offset(index)..]);
            // SAFETY: `dst` holds m x n elements, row-major; `Operand::new` checked that every
            // element the strides reach, of every batch entry, is inside its slice.
            unsafe {
                gemm_rows(
                    (m, n, k),
                    dst,
                    false,
                    (lhs, a.strides),
                    (rhs, b.strides),
                    1.0,
                    parallelism,
                )
            }
        };
        if m * n > 0 {
            if threads > 1 && batches >= 2 * threads {
                out.par_chunks_mut(m * n)
                    .enumerate()
                    .for_each(|(i, dst)| product(i, dst, gemm::Parallelism::None));
            } else {
                for (i, dst) in out.chunks_mut(m * n).enumerate() {
                    product(i, dst, parallelism(threads));
                }
            }
        }
        let mut dims = lhs_l.dims().to_vec();
        let rank = dims.len();
        dims[rank - 1] = n;
        Ok((CpuStorage::F32(out), Shape::from(dims)))
    }
}

/// `lhs · rhs` over the last two axes, the leading ones a batch (the same in both): candle's
/// `matmul`, split over the batch on the CPU (f32, no graph).
pub fn batched_matmul(lhs: &Tensor, rhs: &Tensor) -> Result<Tensor> {
    if cpu_f32(lhs) && cpu_f32(rhs) && lhs.rank() >= 3 && lhs.rank() == rhs.rank() {
        return Ok(lhs.apply_op2_no_bwd(rhs, &BatchedMatmul)?);
    }
    Ok(lhs.matmul(rhs)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn batched_products_equal_candles_on_strided_operands() {
        let dev = Device::Cpu;
        let q = Tensor::randn(0f32, 1.0, (3, 4, 37, 16), &dev).unwrap();
        let k = Tensor::randn(0f32, 1.0, (3, 4, 29, 16), &dev).unwrap();
        for (lhs, rhs) in [
            (q.clone(), k.t().unwrap()),
            (
                k.t().unwrap().contiguous().unwrap().t().unwrap(),
                q.t().unwrap(),
            ),
            (q.narrow(2, 3, 20).unwrap(), k.narrow(2, 0, 16).unwrap()),
        ] {
            let want = lhs.matmul(&rhs).unwrap();
            let got = batched_matmul(&lhs, &rhs).unwrap();
            assert_eq!(got.dims(), want.dims());
            let diff = (got - want)
                .unwrap()
                .abs()
                .unwrap()
                .flatten_all()
                .unwrap()
                .max(0)
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert_eq!(diff, 0.0, "{:?} x {:?}", lhs.dims(), rhs.dims());
        }
        let small = Tensor::randn(0f32, 1.0, (1, 5, 7), &dev).unwrap();
        let other = Tensor::randn(0f32, 1.0, (1, 7, 3), &dev).unwrap();
        let want = small
            .matmul(&other)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let got = batched_matmul(&small, &other)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(got, want);
        assert!(batched_matmul(&q, &q).is_err());
    }
}

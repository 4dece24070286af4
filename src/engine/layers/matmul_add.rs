//! `acc += s · lhs rhs` in place, by one gemm that reads `acc`: a LoRA path's up-projection added
//! to its base layer's output, and the input gradients of linear layers that share an input
//! summed as they are made, instead of a product, a scaled copy and a sum (three passes over an
//! output-sized tensor).

use candle_core::{CpuStorage, DType, InplaceOp3, Layout, Tensor};

use crate::engine::error::Result;

/// `[rows, cols]` strides of a matrix operand, in elements.
#[derive(Clone, Copy)]
pub(super) struct Strides {
    pub row: usize,
    pub col: usize,
}

/// How gemm splits a product over `threads` threads.
pub(super) fn parallelism(threads: usize) -> gemm::Parallelism {
    match threads {
        1 => gemm::Parallelism::None,
        n => gemm::Parallelism::Rayon(n),
    }
}

/// `dst = scale · lhs rhs`, or with `accumulate` `dst += scale · lhs rhs`, by one gemm call
/// (`dst` m x n row-major, `lhs` m x k and `rhs` k x n with any strides).
///
/// # Safety
/// `dst` holds m x n elements, and every element the strides of `lhs` and `rhs` reach is inside
/// its slice.
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn gemm_rows(
    (m, n, k): (usize, usize, usize),
    dst: &mut [f32],
    accumulate: bool,
    (lhs, lhs_s): (&[f32], Strides),
    (rhs, rhs_s): (&[f32], Strides),
    scale: f32,
    parallelism: gemm::Parallelism,
) {
    // SAFETY: the caller's contract.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            lhs.as_ptr(),
            lhs_s.col as isize,
            lhs_s.row as isize,
            rhs.as_ptr(),
            rhs_s.col as isize,
            rhs_s.row as isize,
            if accumulate { 1.0 } else { 0.0 },
            scale,
            false,
            false,
            false,
            parallelism,
        );
    }
}

struct AddProduct {
    m: usize,
    n: usize,
    k: usize,
    lhs: Strides,
    rhs: Strides,
    scale: f32,
}

/// The operand's elements from its start, checked to hold every element its strides reach.
fn operand<'a>(
    v: &'a [f32],
    l: &Layout,
    s: Strides,
    rows: usize,
    cols: usize,
) -> candle_core::Result<&'a [f32]> {
    let v = &v[l.start_offset()..];
    let last = (rows - 1) * s.row + (cols - 1) * s.col;
    if rows == 0 || cols == 0 || last < v.len() {
        Ok(v)
    } else {
        candle_core::bail!("add-product: an operand is smaller than its strides say")
    }
}

impl InplaceOp3 for AddProduct {
    fn name(&self) -> &'static str {
        "add-product"
    }

    fn cpu_fwd(
        &self,
        acc: &mut CpuStorage,
        acc_l: &Layout,
        lhs: &CpuStorage,
        lhs_l: &Layout,
        rhs: &CpuStorage,
        rhs_l: &Layout,
    ) -> candle_core::Result<()> {
        let (CpuStorage::F32(acc), CpuStorage::F32(lhs), CpuStorage::F32(rhs)) = (acc, lhs, rhs)
        else {
            candle_core::bail!("add-product: f32 only");
        };
        let (m, n, k) = (self.m, self.n, self.k);
        let acc = &mut acc[acc_l.start_offset()..][..m * n];
        let lhs = operand(lhs, lhs_l, self.lhs, m, k)?;
        let rhs = operand(rhs, rhs_l, self.rhs, k, n)?;
        // SAFETY: `acc` holds m x n elements row-major; `operand` checked that every element the
        // strides of lhs (m x k) and rhs (k x n) reach is inside its slice.
        unsafe {
            gemm_rows(
                (m, n, k),
                acc,
                true,
                (lhs, self.lhs),
                (rhs, self.rhs),
                self.scale,
                parallelism(candle_core::utils::get_num_threads()),
            );
        }
        Ok(())
    }
}

/// A matrix's `(rows, cols, strides)`: a 2-D tensor as laid out, a contiguous one of higher rank
/// as `[elements / last, last]`.
fn matrix(t: &Tensor) -> Option<(usize, usize, Strides)> {
    if let [rows, cols] = *t.dims() {
        let stride = t.stride();
        return Some((
            rows,
            cols,
            Strides {
                row: stride[0],
                col: stride[1],
            },
        ));
    }
    let cols = *t.dims().last()?;
    t.is_contiguous().then(|| {
        (
            t.elem_count() / cols.max(1),
            cols,
            Strides { row: cols, col: 1 },
        )
    })
}

/// Adds `scale · lhs rhs` to `acc` in place (`acc` `[.., n]` holding m rows, `lhs` m x k, `rhs`
/// k x n, any strides for a 2-D operand); true when done, false where this does not apply (not
/// f32 on the CPU, `acc` not contiguous, shapes that do not fit): the caller then adds the
/// product out of place. `acc` must own its storage and carry no graph.
pub fn add_product(acc: &Tensor, lhs: &Tensor, rhs: &Tensor, scale: f64) -> Result<bool> {
    let f32_cpu = |t: &Tensor| t.dtype() == DType::F32 && t.device().is_cpu();
    if !(f32_cpu(acc) && f32_cpu(lhs) && f32_cpu(rhs) && acc.is_contiguous()) {
        return Ok(false);
    }
    let (Some((m, k, lhs_s)), Some((k2, n, rhs_s)), Some((acc_m, acc_n, _))) =
        (matrix(lhs), matrix(rhs), matrix(acc))
    else {
        return Ok(false);
    };
    if k != k2 || acc_m != m || acc_n != n {
        return Ok(false);
    }
    let op = AddProduct {
        m,
        n,
        k,
        lhs: lhs_s,
        rhs: rhs_s,
        scale: scale as f32,
    };
    acc.inplace_op3(lhs, rhs, &op)?;
    Ok(true)
}

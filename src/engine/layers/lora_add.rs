//! `y += s · down Bᵀ` in place: a LoRA path's up-projection added to its base layer's output by
//! one product that reads `y`, instead of a product, a scaled copy and a sum (three passes over
//! an output-sized tensor, for a rank-8 product that is itself cheap).

use candle_core::{CpuStorage, DType, Device, InplaceOp3, Layout, Tensor};

use crate::engine::error::Result;

struct AddScaledProduct {
    rows: usize,
    out: usize,
    rank: usize,
    scaling: f32,
}

impl InplaceOp3 for AddScaledProduct {
    fn name(&self) -> &'static str {
        "lora-add-scaled-product"
    }

    fn cpu_fwd(
        &self,
        dst: &mut CpuStorage,
        dst_l: &Layout,
        down: &CpuStorage,
        down_l: &Layout,
        b: &CpuStorage,
        b_l: &Layout,
    ) -> candle_core::Result<()> {
        let (CpuStorage::F32(dst), CpuStorage::F32(down), CpuStorage::F32(b)) = (dst, down, b)
        else {
            candle_core::bail!("lora-add-scaled-product: f32 only");
        };
        let dst = &mut dst[dst_l.start_offset()..][..self.rows * self.out];
        let down = &down[down_l.start_offset()..][..self.rows * self.rank];
        let b = &b[b_l.start_offset()..][..self.out * self.rank];
        let threads = candle_core::utils::get_num_threads();
        let parallelism = match threads {
            1 => gemm::Parallelism::None,
            n => gemm::Parallelism::Rayon(n),
        };
        // SAFETY: the slices above hold rows x out, rows x rank and out x rank elements, laid out
        // row-major as the strides below say (checked contiguous by `add_scaled_product`).
        unsafe {
            gemm::gemm(
                self.rows,
                self.out,
                self.rank,
                dst.as_mut_ptr(),
                1,
                self.out as isize,
                true,
                down.as_ptr(),
                1,
                self.rank as isize,
                b.as_ptr(),
                self.rank as isize,
                1,
                1.0,
                self.scaling,
                false,
                false,
                false,
                parallelism,
            );
        }
        Ok(())
    }
}

/// Adds `scaling · down Bᵀ` to `y` (`[.., out]`) in place, `down` being `[.., rank]` and `b`
/// `[out, rank]`; true when done, false where this does not apply (not f32 on the CPU, or a
/// layout that is not contiguous): the caller then adds the product out of place. `y` must own
/// its storage and carry no graph.
pub fn add_scaled_product(y: &Tensor, down: &Tensor, b: &Tensor, scaling: f64) -> Result<bool> {
    let whole = |t: &Tensor| t.is_contiguous() && t.dtype() == DType::F32;
    if !(matches!(y.device(), Device::Cpu) && whole(y) && whole(down) && whole(b)) {
        return Ok(false);
    }
    let (out, rank) = b.dims2()?;
    let rows = y.elem_count() / out.max(1);
    if y.dims().last() != Some(&out) || down.elem_count() != rows * rank {
        return Ok(false);
    }
    let op = AddScaledProduct {
        rows,
        out,
        rank,
        scaling: scaling as f32,
    };
    y.inplace_op3(down, b, &op)?;
    Ok(true)
}

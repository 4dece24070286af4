//! The backward of a linear layer with a frozen base and an optional unmerged LoRA path.

use candle_core::Tensor;

use super::Grads;
use crate::engine::error::Result;
use crate::engine::layers::matmul_add::add_product;
use crate::engine::layers::{Pass, Proj};

/// The gradient of `proj`'s input `x` (`[n, in]`) for the output gradient `dy` (`[n, out]`),
/// added to `acc` (in place where it can) when given: `dy W` through the frozen base, plus the
/// LoRA path's share, whose factors' gradients go to `grads`. The forward was
/// `y = x Wᵀ + s · B (A (x ⊙ mask))`.
pub fn backward(
    proj: &Proj,
    x: &Tensor,
    dy: &Tensor,
    pass: Pass,
    grads: &mut Grads,
    acc: Option<Tensor>,
) -> Result<Tensor> {
    let dx = add(acc, dy, &proj.weight()?)?;
    let Some(lora) = &proj.lora else {
        return Ok(dx);
    };
    // Detached: products with the factors (variables) would otherwise record a graph that keeps
    // every block's intermediates alive until the whole backward ends.
    let (a, b) = (lora.a.detach(), lora.b.detach());
    let mask = proj.lora_dropout_mask(x, pass)?;
    let h = match &mask {
        Some(m) => (x * m)?,
        None => x.clone(),
    };
    let down = h.matmul(&a.t()?)?;
    let d_b = (dy.t()?.matmul(&down)? * lora.scaling)?;
    let d_down = (dy.matmul(&b)? * lora.scaling)?;
    let d_a = d_down.t()?.matmul(&h)?;
    grads.push((lora.a.clone(), d_a));
    grads.push((lora.b.clone(), d_b));
    Ok(match &mask {
        None => add(Some(dx), &d_down, &a)?,
        Some(m) => (dx + (d_down.matmul(&a)? * m)?)?,
    })
}

/// `acc + lhs rhs`, in place where it can; `lhs rhs` without `acc`.
fn add(acc: Option<Tensor>, lhs: &Tensor, rhs: &Tensor) -> Result<Tensor> {
    let Some(acc) = acc else {
        return Ok(lhs.matmul(rhs)?);
    };
    if add_product(&acc, lhs, rhs, 1.0)? {
        return Ok(acc);
    }
    Ok((acc + lhs.matmul(rhs)?)?)
}

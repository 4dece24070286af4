//! The training loss from hidden states, a few rows at a time.
//!
//! The logits at the loss positions are `[rows, vocabulary]`: with `loss_tokens: all` on a 49k
//! vocabulary, a batch of 8 x 85 tokens makes each such tensor 134 MB, and the loss keeps ~20 of
//! them for its backward, plus the teachers'. Here the head and the loss run over `LOSS_ROWS`
//! rows at a time, and each chunk's gradient with respect to the student's hidden states is
//! taken at once (the head is frozen), so nothing vocabulary-wide outlives its chunk and the
//! backward only scales the stored gradient.

use candle_core::{DType, Tensor, Var};

use super::loss::{LossConfig, LossValue, Teachers, cross_entropy, logits_gradient, loss};
use crate::engine::autograd::attach_backward;
use crate::engine::decoder::Decoder;

/// Loss positions whose logits exist at once.
const LOSS_ROWS: usize = 32;

/// A frozen teacher's hidden states at the loss positions, and the decoder whose head reads them.
pub struct TeacherStates<'a> {
    pub decoder: &'a Decoder,
    /// `[rows, hidden]`, before the final norm.
    pub hidden: &'a Tensor,
}

fn chunks(n: usize) -> impl Iterator<Item = (usize, usize)> {
    (0..n)
        .step_by(LOSS_ROWS)
        .map(move |start| (start, LOSS_ROWS.min(n - start)))
}

/// The loss of `student`'s head on `hidden` (`[rows, hidden]` at the loss positions, with the
/// graph) against `targets` and, for the compatibility objective, the old and new teachers':
/// the value `loss::loss` gives on the whole rows, whose backward reaches `hidden`.
pub fn head_loss(
    student: &Decoder,
    hidden: &Tensor,
    teachers: Option<(TeacherStates<'_>, TeacherStates<'_>)>,
    targets: &[u32],
    config: LossConfig,
) -> candle_core::Result<LossValue> {
    let n = targets.len();
    let (mut total, mut ce, mut distil, mut old_share) = (0.0, 0.0, 0.0, 0.0);
    let mut grads = Vec::new();
    for (start, len) in chunks(n) {
        let rows = hidden.narrow(0, start, len)?.detach();
        let teacher_logits = |t: &TeacherStates<'_>| -> candle_core::Result<Tensor> {
            t.decoder
                .head(&t.hidden.narrow(0, start, len)?)
                .map_err(candle_core::Error::wrap)
        };
        let zs = match &teachers {
            Some((old, new)) => Some((teacher_logits(old)?, teacher_logits(new)?)),
            None => None,
        };
        let weight = len as f64 / n as f64;
        let (part, grad) = chunk_loss(
            student,
            &rows,
            &targets[start..start + len],
            zs.as_ref().map(|(old, new)| Teachers { old, new }),
            config,
            weight,
        )?;
        let value = f64::from(part.total.to_scalar::<f32>()?);
        total += value * weight;
        ce += part.ce * weight;
        distil += part.distil.unwrap_or(0.0) * weight;
        old_share += part.old_share.unwrap_or(0.0) * weight;
        grads.push(grad);
    }
    let grad = Tensor::cat(&grads, 0)?;
    let value = Tensor::new(total as f32, hidden.device())?;
    let total = attach_backward(hidden, value, move |_, _, dy| {
        grad.broadcast_mul(&dy.to_dtype(DType::F32)?)
    })?;
    let compat = teachers.is_some();
    Ok(LossValue {
        total,
        ce,
        distil: compat.then_some(distil),
        old_share: compat.then_some(old_share),
    })
}

/// One chunk's loss and `weight` times its gradient with respect to `rows` (the student's hidden
/// states there): in closed form where the head is frozen behind an RMS norm, else through
/// candle's backward.
fn chunk_loss(
    student: &Decoder,
    rows: &Tensor,
    targets: &[u32],
    teachers: Option<Teachers<'_>>,
    config: LossConfig,
    weight: f64,
) -> candle_core::Result<(LossValue, Tensor)> {
    let wrap = candle_core::Error::wrap;
    if student.head_is_frozen_rms() {
        let logits = student.head(rows).map_err(wrap)?;
        let part = loss(&logits, targets, teachers, config)?;
        let d_logits = (logits_gradient(&logits, targets, teachers, config)? * weight)?;
        let grad = student.head_backward(rows, &d_logits).map_err(wrap)?;
        return Ok((part, grad));
    }
    let rows = Var::from_tensor(rows)?;
    let logits = student.head(rows.as_tensor()).map_err(wrap)?;
    let part = loss(&logits, targets, teachers, config)?;
    let grads = (&part.total * weight)?.backward()?;
    let grad = match grads.get(rows.as_tensor()) {
        Some(g) => g.clone(),
        None => rows.as_tensor().zeros_like()?,
    };
    Ok((part, grad))
}

/// Mean cross-entropy of `decoder`'s head on `hidden` (`[rows, hidden]`) against `targets`, a
/// chunk of rows at a time, without a graph.
pub fn head_cross_entropy(
    decoder: &Decoder,
    hidden: &Tensor,
    targets: &[u32],
) -> candle_core::Result<f64> {
    let n = targets.len();
    let mut sum = 0.0;
    for (start, len) in chunks(n) {
        let logits = decoder
            .head(&hidden.narrow(0, start, len)?.detach())
            .map_err(candle_core::Error::wrap)?
            .detach();
        let y = Tensor::from_slice(&targets[start..start + len], len, hidden.device())?;
        sum += f64::from(cross_entropy(&logits, &y)?.to_scalar::<f32>()?) * len as f64;
    }
    Ok(sum / n.max(1) as f64)
}

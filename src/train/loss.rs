//! The training losses on logits at the loss positions: cross-entropy, and the MUSCLE
//! compatibility loss (per token, distil from the old model where the mask is 1, else from the
//! new one, at temperature T).

use candle_core::{D, DType, Tensor};

use crate::spec::Mask;

/// The frozen teachers' logits at the same positions, computed without a gradient graph.
#[derive(Clone, Copy)]
pub struct Teachers<'a> {
    pub old: &'a Tensor,
    pub new: &'a Tensor,
}

/// The loss to differentiate and its parts as numbers.
pub struct LossValue {
    /// Scalar with the gradient graph of the student's logits.
    pub total: Tensor,
    pub ce: f64,
    /// The distillation term L (compatibility only).
    pub distil: Option<f64>,
    /// Fraction of tokens distilled from the old model (compatibility only).
    pub old_share: Option<f64>,
}

fn argmax_rows(z: &Tensor) -> candle_core::Result<Vec<u32>> {
    z.detach().argmax(D::Minus1)?.to_vec1::<u32>()
}

/// Mean cross-entropy of `logits` `[n, vocab]` against `targets`, and the per-token
/// log-probabilities of the targets (`[n]`, with the graph).
pub fn cross_entropy(logits: &Tensor, targets: &Tensor) -> candle_core::Result<Tensor> {
    let logp = candle_nn::ops::log_softmax(logits, D::Minus1)?;
    let picked = logp.gather(&targets.unsqueeze(1)?, 1)?.squeeze(1)?;
    picked.mean_all()?.neg()
}

/// Per-token KL(softmax(teacher/T) || softmax(student/T)), `[n]`; the teacher holds no graph.
pub fn kl_per_token(
    teacher: &Tensor,
    student: &Tensor,
    temperature: f64,
) -> candle_core::Result<Tensor> {
    let log_t = candle_nn::ops::log_softmax(&(teacher.detach() / temperature)?, D::Minus1)?;
    let log_s = candle_nn::ops::log_softmax(&(student / temperature)?, D::Minus1)?;
    (log_t.exp()? * (log_t - log_s)?)?.sum(D::Minus1)
}

/// m per token (1: distil from the old model), computed from values only: no gradient flows
/// through the mask.
pub fn mask_values(
    mask: Mask,
    student: &Tensor,
    old: &Tensor,
    targets: &[u32],
) -> candle_core::Result<Vec<f32>> {
    let flags: Vec<bool> = match mask {
        Mask::Muscle => argmax_rows(student)?
            .iter()
            .zip(targets)
            .map(|(p, y)| p != y)
            .collect(),
        Mask::OldCorrect => argmax_rows(old)?
            .iter()
            .zip(targets)
            .map(|(p, y)| p == y)
            .collect(),
        Mask::KdOld => vec![true; targets.len()],
        Mask::Likelihood => {
            let idx = Tensor::from_slice(targets, (targets.len(), 1), student.device())?;
            let p = |z: &Tensor| -> candle_core::Result<Vec<f32>> {
                candle_nn::ops::log_softmax(&z.detach(), D::Minus1)?
                    .gather(&idx, 1)?
                    .squeeze(1)?
                    .to_vec1::<f32>()
            };
            p(student)?
                .iter()
                .zip(p(old)?)
                .map(|(c, o)| *c < o)
                .collect()
        }
    };
    Ok(flags
        .into_iter()
        .map(|f| if f { 1.0 } else { 0.0 })
        .collect())
}

/// Settings of the loss.
#[derive(Debug, Clone, Copy)]
pub struct LossConfig {
    pub temperature: f64,
    pub mask: Mask,
    /// w in L' = (1 - w) L + w CE.
    pub ce_weight: f64,
}

/// The loss over the given positions: plain cross-entropy without teachers, otherwise the
/// MUSCLE loss `mean_i [m_i KL(old_i || C_i) + (1 - m_i) KL(new_i || C_i)]` mixed with
/// cross-entropy by `ce_weight`.
pub fn loss(
    student: &Tensor,
    targets: &[u32],
    teachers: Option<Teachers<'_>>,
    config: LossConfig,
) -> candle_core::Result<LossValue> {
    let student = student.to_dtype(DType::F32)?;
    let y = Tensor::from_slice(targets, targets.len(), student.device())?;
    let ce = cross_entropy(&student, &y)?;
    let ce_value = f64::from(ce.to_scalar::<f32>()?);
    let Some(t) = teachers else {
        return Ok(LossValue {
            total: ce,
            ce: ce_value,
            distil: None,
            old_share: None,
        });
    };
    let m = mask_values(config.mask, &student, t.old, targets)?;
    let old_share = m.iter().map(|&x| f64::from(x)).sum::<f64>() / m.len().max(1) as f64;
    let m = Tensor::from_vec(m, targets.len(), student.device())?;
    let a_old = kl_per_token(&t.old.to_dtype(DType::F32)?, &student, config.temperature)?;
    let a_new = kl_per_token(&t.new.to_dtype(DType::F32)?, &student, config.temperature)?;
    let one_minus = m.affine(-1.0, 1.0)?;
    let distil = ((&m * a_old)? + (one_minus * a_new)?)?.mean_all()?;
    let distil_value = f64::from(distil.to_scalar::<f32>()?);
    let w = config.ce_weight;
    let total = if w > 0.0 {
        ((distil * (1.0 - w))? + (ce * w)?)?
    } else {
        distil
    };
    Ok(LossValue {
        total,
        ce: ce_value,
        distil: Some(distil_value),
        old_share: Some(old_share),
    })
}

/// The gradient of `loss(...).total` with respect to the student's logits `[n, vocab]`, in
/// closed form: cross-entropy gives `(softmax(z) - onehot(y)) / n`, and KL(p || softmax(z/T))
/// gives `(softmax(z/T) - p) / (T n)` with p the softmax(z_t/T) of the teacher the mask picks.
pub fn logits_gradient(
    student: &Tensor,
    targets: &[u32],
    teachers: Option<Teachers<'_>>,
    config: LossConfig,
) -> candle_core::Result<Tensor> {
    let z = student.detach().to_dtype(DType::F32)?;
    let (n, vocab) = z.dims2()?;
    let mut onehot = vec![0f32; n * vocab];
    for (i, &y) in targets.iter().enumerate() {
        if y as usize >= vocab {
            candle_core::bail!("target {y} is outside the vocabulary of {vocab}");
        }
        onehot[i * vocab + y as usize] = 1.0;
    }
    let onehot = Tensor::from_vec(onehot, (n, vocab), z.device())?;
    let rows = n.max(1) as f64;
    let ce = ((candle_nn::ops::softmax_last_dim(&z)? - onehot)? / rows)?;
    let Some(t) = teachers else {
        return Ok(ce);
    };
    let temp = config.temperature;
    let m = mask_values(config.mask, &z, t.old, targets)?;
    let m = Tensor::from_vec(m, (n, 1), z.device())?;
    let soft = |zt: &Tensor| -> candle_core::Result<Tensor> {
        candle_nn::ops::softmax_last_dim(&(zt.detach().to_dtype(DType::F32)? / temp)?)
    };
    let p =
        (soft(t.old)?.broadcast_mul(&m)? + soft(t.new)?.broadcast_mul(&m.affine(-1.0, 1.0)?)?)?;
    let distil = ((soft(&z)? - p)? / (temp * rows))?;
    let w = config.ce_weight;
    if w > 0.0 {
        (distil * (1.0 - w))? + (ce * w)?
    } else {
        Ok(distil)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn t(rows: &[[f32; 3]]) -> Tensor {
        Tensor::from_vec(rows.concat(), (rows.len(), 3), &Device::Cpu).unwrap()
    }

    fn softmax(z: &[f64], temp: f64) -> Vec<f64> {
        let m = z.iter().cloned().fold(f64::MIN, f64::max);
        let e: Vec<f64> = z.iter().map(|x| ((x - m) / temp).exp()).collect();
        let s: f64 = e.iter().sum();
        e.iter().map(|x| x / s).collect()
    }

    fn kl(p: &[f64], q: &[f64]) -> f64 {
        p.iter().zip(q).map(|(p, q)| p * (p / q).ln()).sum()
    }

    #[test]
    fn muscle_loss_matches_a_hand_computation() {
        // Token 0: the student predicts class 0 but the answer is 2 -> m = 1 (old teacher).
        // Token 1: the student predicts class 1, the answer -> m = 0 (new teacher).
        let zc = [[2.0, 0.5, 1.0], [0.0, 3.0, -1.0]];
        let zo = [[0.0, 1.0, 2.0], [1.0, 1.0, 0.0]];
        let zn = [[1.0, 0.0, -1.0], [0.5, 2.0, 0.5]];
        let y = [2u32, 1];
        let temp = 2.0;
        let f = |r: [f32; 3]| r.map(f64::from).to_vec();
        let pc0 = softmax(&f(zc[0]), temp);
        let pc1 = softmax(&f(zc[1]), temp);
        let want_distil =
            (kl(&softmax(&f(zo[0]), temp), &pc0) + kl(&softmax(&f(zn[1]), temp), &pc1)) / 2.0;
        let config = LossConfig {
            temperature: temp,
            mask: Mask::Muscle,
            ce_weight: 0.0,
        };
        let (old, new) = (t(&zo), t(&zn));
        let got = loss(
            &t(&zc),
            &y,
            Some(Teachers {
                old: &old,
                new: &new,
            }),
            config,
        )
        .unwrap();
        let total = f64::from(got.total.to_scalar::<f32>().unwrap());
        assert!(
            (total - want_distil).abs() < 1e-6,
            "{total} vs {want_distil}"
        );
        assert_eq!(got.old_share, Some(0.5));
        // The reverse direction KL(C || teacher) is a different number: the test can tell.
        let reverse =
            (kl(&pc0, &softmax(&f(zo[0]), temp)) + kl(&pc1, &softmax(&f(zn[1]), temp))) / 2.0;
        assert!((reverse - want_distil).abs() > 1e-3);

        // With ce_weight 0.25: 0.75 L + 0.25 CE (CE at temperature 1).
        let ce = -(softmax(&f(zc[0]), 1.0)[2].ln() + softmax(&f(zc[1]), 1.0)[1].ln()) / 2.0;
        let mixed = loss(
            &t(&zc),
            &y,
            Some(Teachers {
                old: &old,
                new: &new,
            }),
            LossConfig {
                ce_weight: 0.25,
                ..config
            },
        )
        .unwrap();
        let value = f64::from(mixed.total.to_scalar::<f32>().unwrap());
        assert!((value - (0.75 * want_distil + 0.25 * ce)).abs() < 1e-6);
        assert!((mixed.ce - ce).abs() < 1e-6);

        // kd_old: every token from the old teacher.
        let kd = loss(
            &t(&zc),
            &y,
            Some(Teachers {
                old: &old,
                new: &new,
            }),
            LossConfig {
                mask: Mask::KdOld,
                ..config
            },
        )
        .unwrap();
        let want =
            (kl(&softmax(&f(zo[0]), temp), &pc0) + kl(&softmax(&f(zo[1]), temp), &pc1)) / 2.0;
        let value = f64::from(kd.total.to_scalar::<f32>().unwrap());
        assert!((value - want).abs() < 1e-6);
    }

    #[test]
    fn ablation_masks() {
        let zc = t(&[[2.0, 0.5, 1.0], [0.0, 3.0, -1.0]]);
        let zo = t(&[[0.0, 1.0, 2.0], [1.0, 1.0, 0.0]]);
        let y = [2u32, 1];
        assert_eq!(
            mask_values(Mask::Muscle, &zc, &zo, &y).unwrap(),
            vec![1.0, 0.0]
        );
        // Old argmax: 2 (right), 0 (ties go to the first; wrong).
        assert_eq!(
            mask_values(Mask::OldCorrect, &zc, &zo, &y).unwrap(),
            vec![1.0, 0.0]
        );
        assert_eq!(
            mask_values(Mask::KdOld, &zc, &zo, &y).unwrap(),
            vec![1.0, 1.0]
        );
        // p_C(y): token 0 low (old higher), token 1 high (old lower).
        assert_eq!(
            mask_values(Mask::Likelihood, &zc, &zo, &y).unwrap(),
            vec![1.0, 0.0]
        );
    }

    #[test]
    fn cross_entropy_gradient_flows_to_the_student_only() {
        let var = candle_core::Var::from_tensor(&t(&[[1.0, 2.0, 3.0]])).unwrap();
        let old = t(&[[3.0, 2.0, 1.0]]);
        let new = t(&[[0.0, 0.0, 5.0]]);
        let value = loss(
            var.as_tensor(),
            &[0],
            Some(Teachers {
                old: &old,
                new: &new,
            }),
            LossConfig {
                temperature: 2.0,
                mask: Mask::Muscle,
                ce_weight: 0.5,
            },
        )
        .unwrap();
        let grads = value.total.backward().unwrap();
        let g = grads
            .get(var.as_tensor())
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        // The gradient of a (softmax-based) loss w.r.t. logits sums to 0 over the vocabulary.
        assert!(g[0].iter().sum::<f32>().abs() < 1e-5);
        assert!(g[0].iter().any(|x| x.abs() > 1e-3));
        assert!(grads.get(&old).is_none());
    }
}

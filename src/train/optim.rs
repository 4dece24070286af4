//! AdamW (decoupled weight decay, as torch.optim.AdamW), gradient accumulation and clipping by
//! the global norm, on candle `Var`s.

use std::collections::HashMap;

use candle_core::{Tensor, Var, backprop::GradStore};

pub const BETA1: f64 = 0.9;
pub const BETA2: f64 = 0.999;
pub const EPS: f64 = 1e-8;

pub struct AdamW {
    pub weight_decay: f64,
    /// Optimizer steps taken.
    pub step: u64,
    /// First and second moments, one per variable, in the variables' order.
    pub m: Vec<Tensor>,
    pub v: Vec<Tensor>,
}

impl AdamW {
    pub fn new(vars: &[&Var], weight_decay: f64) -> candle_core::Result<Self> {
        let zeros = |v: &&Var| v.as_tensor().zeros_like();
        Ok(Self {
            weight_decay,
            step: 0,
            m: vars.iter().map(zeros).collect::<candle_core::Result<_>>()?,
            v: vars.iter().map(zeros).collect::<candle_core::Result<_>>()?,
        })
    }

    /// One update with learning rate `lr`: theta <- theta - lr * (wd * theta + m_hat / (sqrt(v_hat) + eps)).
    pub fn step(&mut self, vars: &[&Var], grads: &[Tensor], lr: f64) -> candle_core::Result<()> {
        self.step += 1;
        let t = self.step as i32;
        let (c1, c2) = (1.0 - BETA1.powi(t), 1.0 - BETA2.powi(t));
        for (i, (var, g)) in vars.iter().zip(grads).enumerate() {
            let m = ((&self.m[i] * BETA1)? + (g * (1.0 - BETA1))?)?;
            let v = ((&self.v[i] * BETA2)? + (g.sqr()? * (1.0 - BETA2))?)?;
            let update = ((&m / c1)? / ((&v / c2)?.sqrt()? + EPS)?)?;
            let theta = var.as_tensor();
            let decayed = if self.weight_decay > 0.0 {
                (theta * (1.0 - lr * self.weight_decay))?
            } else {
                theta.clone()
            };
            var.set(&(decayed - (update * lr)?)?)?;
            self.m[i] = m;
            self.v[i] = v;
        }
        Ok(())
    }

    /// Moments under `optim.m.<key>` / `optim.v.<key>` for a checkpoint.
    pub fn state(&self, keys: &[String]) -> HashMap<String, Tensor> {
        let mut out = HashMap::new();
        for (i, key) in keys.iter().enumerate() {
            out.insert(format!("optim.m.{key}"), self.m[i].clone());
            out.insert(format!("optim.v.{key}"), self.v[i].clone());
        }
        out
    }

    pub fn restore(
        &mut self,
        keys: &[String],
        state: &HashMap<String, Tensor>,
        step: u64,
    ) -> Result<(), String> {
        for (i, key) in keys.iter().enumerate() {
            for (prefix, slot) in [("m", &mut self.m[i]), ("v", &mut self.v[i])] {
                let name = format!("optim.{prefix}.{key}");
                let t = state
                    .get(&name)
                    .ok_or_else(|| format!("the checkpoint lacks {name}"))?;
                if t.dims() != slot.dims() {
                    return Err(format!(
                        "{name}: shape {:?}, expected {:?}",
                        t.dims(),
                        slot.dims()
                    ));
                }
                *slot = t.clone();
            }
        }
        self.step = step;
        Ok(())
    }
}

/// Sums gradients over the micro-batches of one optimizer step.
pub struct Accumulator {
    sums: Vec<Option<Tensor>>,
    pub micro_batches: usize,
}

impl Accumulator {
    pub fn new(n: usize) -> Self {
        Self {
            sums: vec![None; n],
            micro_batches: 0,
        }
    }

    pub fn add(&mut self, vars: &[&Var], grads: &GradStore) -> candle_core::Result<()> {
        for (slot, var) in self.sums.iter_mut().zip(vars) {
            if let Some(g) = grads.get(var.as_tensor()) {
                let g = g.detach();
                *slot = Some(match slot.take() {
                    Some(sum) => (sum + g)?,
                    None => g,
                });
            }
        }
        self.micro_batches += 1;
        Ok(())
    }

    /// The mean gradient per variable (zero where a variable got none).
    pub fn mean(self, vars: &[&Var]) -> candle_core::Result<Vec<Tensor>> {
        let n = self.micro_batches.max(1) as f64;
        self.sums
            .into_iter()
            .zip(vars)
            .map(|(sum, var)| match sum {
                Some(s) => s / n,
                None => var.as_tensor().zeros_like(),
            })
            .collect()
    }
}

/// The L2 norm of all gradients together.
pub fn global_norm(grads: &[Tensor]) -> candle_core::Result<f64> {
    let mut total = 0f64;
    for g in grads {
        total += f64::from(g.sqr()?.sum_all()?.to_scalar::<f32>()?);
    }
    Ok(total.sqrt())
}

/// Scales the gradients so their global norm is at most `max_norm` (0: no clipping); returns the
/// norm before clipping.
pub fn clip_global_norm(grads: &mut [Tensor], max_norm: f64) -> candle_core::Result<f64> {
    let norm = global_norm(grads)?;
    if max_norm > 0.0 && norm > max_norm {
        let scale = max_norm / (norm + 1e-6);
        for g in grads.iter_mut() {
            *g = (&*g * scale)?;
        }
    }
    Ok(norm)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn clipping_bounds_the_global_norm() {
        let mut grads = vec![
            Tensor::new(&[3.0f32, 0.0], &Device::Cpu).unwrap(),
            Tensor::new(&[[0.0f32], [4.0]], &Device::Cpu).unwrap(),
        ];
        let before = clip_global_norm(&mut grads, 1.0).unwrap();
        assert!((before - 5.0).abs() < 1e-9);
        let after = global_norm(&grads).unwrap();
        assert!(after <= 1.0 + 1e-6 && after > 0.999, "{after}");
        // Direction is kept.
        let g0 = grads[0].to_vec1::<f32>().unwrap();
        assert!((g0[0] - 0.6).abs() < 1e-5);
        // Under the bound: untouched; 0 turns clipping off.
        let mut small = vec![Tensor::new(&[0.3f32, 0.4], &Device::Cpu).unwrap()];
        clip_global_norm(&mut small, 1.0).unwrap();
        assert_eq!(small[0].to_vec1::<f32>().unwrap(), vec![0.3, 0.4]);
        let mut off = vec![Tensor::new(&[30f32, 40.0], &Device::Cpu).unwrap()];
        clip_global_norm(&mut off, 0.0).unwrap();
        assert_eq!(off[0].to_vec1::<f32>().unwrap(), vec![30.0, 40.0]);
    }

    #[test]
    fn adamw_first_step_moves_by_the_learning_rate() {
        let var = Var::new(&[1.0f32, -2.0], &Device::Cpu).unwrap();
        let mut opt = AdamW::new(&[&var], 0.1).unwrap();
        let g = Tensor::new(&[0.5f32, -0.25], &Device::Cpu).unwrap();
        opt.step(&[&var], &[g], 0.01).unwrap();
        let got = var.as_tensor().to_vec1::<f32>().unwrap();
        // m_hat = g, v_hat = g^2: the update is sign(g) * lr; decay multiplies by 1 - lr * wd.
        let want = [1.0 * (1.0 - 0.001) - 0.01, -2.0 * (1.0 - 0.001) + 0.01];
        for (g, w) in got.iter().zip(want) {
            assert!((f64::from(*g) - w).abs() < 1e-6, "{got:?}");
        }
    }
}

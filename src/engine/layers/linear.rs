//! A linear layer with an optional bias and an optional unmerged LoRA path.

use candle_core::{Module, Tensor};
use candle_nn::Linear;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::matmul_add::add_product;
use crate::engine::autograd::attach_backward;
use crate::engine::error::{EngineError, Result};
use crate::engine::weights::WeightLoader;

/// An unmerged LoRA path on a linear layer: `y = W x + scaling * B (A dropout(x))`. With `a`
/// and `b` taken from candle `Var`s, gradients flow to them (training); the base stays frozen.
#[derive(Debug, Clone)]
pub struct LoraPath {
    /// `[r, in_features]`
    pub a: Tensor,
    /// `[out_features, r]`
    pub b: Tensor,
    pub scaling: f64,
    /// Dropout on the LoRA input while the decoder is in training mode.
    pub dropout: f32,
}

/// How a forward pass runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    /// No graph: not even LoRA factors that are being trained get a gradient.
    Inference,
    /// LoRA training: the base layers stay frozen (their backward feeds only their input) and
    /// dropout masks are drawn from `seed` and each layer's name.
    Training { seed: u64 },
    /// A training pass's values (the same dropout masks) without a graph: the first pass of a
    /// block whose backward recomputes it by hand, and that recompute.
    Replay { seed: u64 },
}

impl Pass {
    /// This pass without a graph.
    pub fn replay(self) -> Self {
        match self {
            Self::Training { seed } => Self::Replay { seed },
            other => other,
        }
    }
}

/// A linear layer named by its module path (`model.layers.0.self_attn.q_proj`, PEFT's key).
#[derive(Debug, Clone)]
pub struct Proj {
    pub name: String,
    weight: Weight,
    bias: Option<Tensor>,
    pub lora: Option<LoraPath>,
}

/// A frozen weight, laid out for the forward pass `y = x Wᵀ`.
#[derive(Debug, Clone)]
enum Weight {
    /// `Wᵀ`, `[in, out]`, transposed once at load. gemm packs its left operand at every call
    /// unless that operand's columns are contiguous; with `W` as stored it packed a transpose of
    /// the whole weight for every product (12-14% of scoring's samples), with `Wᵀ` the packing is
    /// a plain copy: 1.1-1.35x the speed on SmolLM2's products of 480 rows, 2.3x on 32
    /// (`examples/weight_layout.rs`; BENCHMARKS.md, "Weights laid out for the forward").
    Columns(Tensor),
    /// `W`, `[out, in]`, as stored: the output head. Its products are a few rows against a
    /// vocabulary-wide weight, where this layout is as fast or faster (0.99-1.05x the transposed
    /// one's speed at 8, 128 and 400 rows on SmolLM2's head, 1.3x at 32;
    /// `examples/weight_layout.rs`), and a head tied to the embedding shares it.
    Rows(Tensor),
}

impl Proj {
    /// `<name>.weight` `[out, in]` (the adapter's delta merged, if the loader has one) and, with
    /// `bias`, `<name>.bias`.
    pub fn load(
        w: &mut WeightLoader<'_>,
        name: &str,
        out: usize,
        inp: usize,
        bias: bool,
    ) -> Result<Self> {
        Self::new(name, w.linear(name, out, inp, bias)?)
    }

    /// A layer whose weight is transposed into a copy of its own (see `Weight::Columns`).
    pub fn new(name: &str, base: Linear) -> Result<Self> {
        Ok(Self {
            name: name.to_string(),
            weight: Weight::Columns(base.weight().t()?.contiguous()?),
            bias: base.bias().cloned(),
            lora: None,
        })
    }

    /// A layer that keeps `base`'s weight as stored (see `Weight::Rows`).
    pub fn as_stored(name: &str, base: Linear) -> Self {
        Self {
            name: name.to_string(),
            weight: Weight::Rows(base.weight().clone()),
            bias: base.bias().cloned(),
            lora: None,
        }
    }

    pub fn forward(&self, x: &Tensor, pass: Pass) -> Result<Tensor> {
        let y = match pass {
            Pass::Training { .. } => self.frozen_base(x)?,
            Pass::Inference | Pass::Replay { .. } => self.base(x)?,
        };
        let Some(l) = &self.lora else {
            return Ok(y);
        };
        let mut h = x.to_dtype(l.a.dtype())?;
        if let Some(mask) = self.lora_dropout_mask(&h, pass)? {
            h = seeded(&h, mask)?;
        }
        // Only a training pass builds a graph, even on factors that are being trained.
        let (a, b) = match pass {
            Pass::Training { .. } => (l.a.clone(), l.b.clone()),
            Pass::Inference | Pass::Replay { .. } => (l.a.detach(), l.b.detach()),
        };
        let down = Linear::new(a, None).forward(&h)?;
        if !y.track_op() && !down.track_op() && add_product(&y, &down, &b.t()?, l.scaling)? {
            return Ok(y);
        }
        let up = (Linear::new(b, None).forward(&down)? * l.scaling)?;
        let up = up.to_dtype(y.dtype())?;
        Ok((y + up)?)
    }

    /// The dropout mask a training pass with `pass`'s seed multiplies this layer's LoRA input
    /// `x` by (None without dropout or LoRA).
    pub fn lora_dropout_mask(&self, x: &Tensor, pass: Pass) -> Result<Option<Tensor>> {
        match (&self.lora, pass) {
            (Some(l), Pass::Training { seed } | Pass::Replay { seed }) if l.dropout > 0.0 => Ok(
                Some(dropout_mask(x, l.dropout, seed ^ name_hash(&self.name))?),
            ),
            _ => Ok(None),
        }
    }

    /// `(out_features, in_features)`.
    pub fn dims(&self) -> Result<(usize, usize)> {
        Ok(match &self.weight {
            Weight::Columns(wt) => {
                let (inp, out) = wt.dims2()?;
                (out, inp)
            }
            Weight::Rows(w) => w.dims2()?,
        })
    }

    /// `W`, `[out, in]` (a transposed view where the layer keeps `Wᵀ`).
    pub fn weight(&self) -> Result<Tensor> {
        Ok(match &self.weight {
            Weight::Columns(wt) => wt.t()?,
            Weight::Rows(w) => w.clone(),
        })
    }

    /// `y = x Wᵀ + b` without a graph to `x`'s input of its own.
    fn base(&self, x: &Tensor) -> Result<Tensor> {
        let wt = match &self.weight {
            Weight::Rows(w) => return Ok(Linear::new(w.clone(), self.bias.clone()).forward(x)?),
            Weight::Columns(wt) => wt,
        };
        let (inp, out) = wt.dims2()?;
        let mut dims = x.dims().to_vec();
        let y = x.reshape((x.elem_count() / inp.max(1), inp))?.matmul(wt)?;
        if let Some(last) = dims.last_mut() {
            *last = out;
        }
        let y = y.reshape(dims)?;
        Ok(match &self.bias {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        })
    }

    /// The frozen base path while training: `y = x Wᵀ + b`, whose backward passes the gradient
    /// on to `x` alone (`dy W`). Through candle's own matmul the backward would also compute a
    /// gradient for W that nothing reads: as large as the weight for every batch row, and as
    /// costly as the forward.
    fn frozen_base(&self, x: &Tensor) -> Result<Tensor> {
        let y = self.base(&x.detach())?;
        let weight = self.weight()?;
        Ok(attach_backward(x, y, move |_, _, dy| {
            dy.broadcast_matmul(&weight)
        })?)
    }

    /// Sets (or with None removes) the unmerged LoRA path, checking the factor shapes.
    pub fn set_lora(&mut self, lora: Option<LoraPath>) -> Result<()> {
        if let Some(l) = &lora {
            let (out, inp) = self.dims()?;
            let (r, a_in) = l.a.dims2()?;
            let (b_out, rb) = l.b.dims2()?;
            if a_in != inp || b_out != out || rb != r {
                return Err(EngineError::InvalidRequest(format!(
                    "{}: lora_A {:?} and lora_B {:?} do not fit the weight [{out}, {inp}]",
                    self.name,
                    l.a.dims(),
                    l.b.dims()
                )));
            }
        }
        self.lora = lora;
        Ok(())
    }
}

/// Inverted dropout (PEFT's `lora_dropout`) with a mask drawn from `seed`: the same seed draws
/// the same mask, so a recomputed pass drops what the first one did.
#[cfg(test)]
fn seeded_dropout(x: &Tensor, p: f32, seed: u64) -> Result<Tensor> {
    seeded(x, dropout_mask(x, p, seed)?)
}

/// `x ⊙ mask`, whose backward (where `x` has a graph) multiplies by the mask.
fn seeded(x: &Tensor, mask: Tensor) -> Result<Tensor> {
    let y = (x.detach() * &mask)?;
    Ok(attach_backward(x, y, move |_, _, dy| dy * &mask)?)
}

/// The mask `seeded_dropout` multiplies `x` by: 0 where dropped, 1/(1-p) elsewhere.
fn dropout_mask(x: &Tensor, p: f32, seed: u64) -> Result<Tensor> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let keep = 1.0 / (1.0 - p);
    let mask: Vec<f32> = (0..x.elem_count())
        .map(|_| if rng.random::<f32>() < p { 0.0 } else { keep })
        .collect();
    Ok(Tensor::from_vec(mask, x.shape(), x.device())?.to_dtype(x.dtype())?)
}

/// FNV-1a: a layer's name as a number that is the same in every process and release.
fn name_hash(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Var};

    use super::*;

    /// The frozen path gives the input the same gradient as candle's own matmul, and the LoRA
    /// factors theirs, with or without a bias, the weight transposed or shared; an inference pass
    /// gives the same value and no graph.
    #[test]
    fn frozen_base_passes_the_same_gradients() {
        let dev = Device::Cpu;
        for (bias, shared) in [(false, false), (true, false), (false, true), (true, true)] {
            let w = Tensor::randn(0f32, 1.0, (5, 4), &dev).unwrap();
            let b = bias.then(|| Tensor::randn(0f32, 1.0, 5, &dev).unwrap());
            let base = Linear::new(w.clone(), b.clone());
            let mut proj = match shared {
                true => Proj::as_stored("p", base),
                false => Proj::new("p", base).unwrap(),
            };
            assert_eq!(proj.dims().unwrap(), (5, 4));
            let a = Var::from_tensor(&Tensor::randn(0f32, 1.0, (2, 4), &dev).unwrap()).unwrap();
            let bb = Var::from_tensor(&Tensor::randn(0f32, 1.0, (5, 2), &dev).unwrap()).unwrap();
            proj.set_lora(Some(LoraPath {
                a: a.as_tensor().clone(),
                b: bb.as_tensor().clone(),
                scaling: 0.5,
                dropout: 0.0,
            }))
            .unwrap();
            let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (3, 6, 4), &dev).unwrap()).unwrap();
            let weights = Tensor::randn(0f32, 1.0, (3, 6, 5), &dev).unwrap();
            // candle's own ops on the same function: the gradients to match.
            let plain_forward = || -> candle_core::Result<Tensor> {
                let x = x.as_tensor();
                let base = x.broadcast_matmul(&w.t()?)?;
                let base = match &b {
                    Some(b) => base.broadcast_add(b)?,
                    None => base,
                };
                let lora = x
                    .broadcast_matmul(&a.as_tensor().t()?)?
                    .broadcast_matmul(&bb.as_tensor().t()?)?;
                base + (lora * 0.5)?
            };
            let grads = |pass: Option<Pass>| {
                let y = match pass {
                    Some(pass) => proj.forward(x.as_tensor(), pass).unwrap(),
                    None => plain_forward().unwrap(),
                };
                let loss = (y * &weights).unwrap().sum_all().unwrap();
                let g = loss.backward().unwrap();
                [x.as_tensor(), a.as_tensor(), bb.as_tensor()].map(|t| {
                    g.get(t)
                        .unwrap()
                        .flatten_all()
                        .unwrap()
                        .to_vec1::<f32>()
                        .unwrap()
                })
            };
            let (frozen, plain) = (grads(Some(Pass::Training { seed: 0 })), grads(None));
            for (f, p) in frozen.iter().zip(&plain) {
                for (u, v) in f.iter().zip(p) {
                    assert!((u - v).abs() < 1e-5, "{u} vs {v}");
                }
            }
            let y_frozen = proj
                .forward(x.as_tensor(), Pass::Training { seed: 0 })
                .unwrap();
            let y_plain = proj.forward(x.as_tensor(), Pass::Inference).unwrap();
            let detached = proj
                .forward(&x.as_tensor().detach(), Pass::Inference)
                .unwrap();
            assert!(
                !detached.track_op(),
                "an inference pass tracks the LoRA factors"
            );
            let d = (y_frozen - y_plain)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap();
            assert_eq!(d.to_scalar::<f32>().unwrap(), 0.0);
        }
    }

    /// A seed draws one dropout mask: the same seed again drops the same entries (what a
    /// recomputed pass needs), another seed others; about `p` of them, the rest scaled by
    /// 1/(1-p); the backward multiplies by the same mask.
    #[test]
    fn seeded_dropout_repeats_its_mask() {
        let dev = Device::Cpu;
        let x = Var::from_tensor(&Tensor::ones((64, 64), candle_core::DType::F32, &dev).unwrap())
            .unwrap();
        let drop = |seed| {
            seeded_dropout(x.as_tensor(), 0.25, seed)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        };
        let (a, again, other) = (drop(7), drop(7), drop(8));
        assert_eq!(a, again);
        assert_ne!(a, other);
        let dropped = a.iter().filter(|v| **v == 0.0).count() as f64 / a.len() as f64;
        assert!((dropped - 0.25).abs() < 0.03, "{dropped}");
        assert!(a.iter().all(|v| *v == 0.0 || (*v - 4.0 / 3.0).abs() < 1e-6));
        let y = seeded_dropout(x.as_tensor(), 0.25, 7).unwrap();
        let grad = y.sum_all().unwrap().backward().unwrap();
        let g = grad
            .get(x.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(g, a);
    }
}

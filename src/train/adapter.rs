//! The trainable LoRA: A/B as candle `Var`s on a chosen set of the decoder's linear layers,
//! attached unmerged to a frozen base, optionally started from an existing adapter.

use std::collections::{BTreeMap, HashMap};

use candle_core::{DType, Device, Tensor, Var};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::engine::decoder::{Decoder, LoraPath};
use crate::engine::lora::{LoraAdapter, ModuleFilter};

/// PEFT's key of a factor: `base_model.model.<module>.lora_A.weight`.
pub fn peft_key(module: &str, a: bool) -> String {
    let which = if a { "A" } else { "B" };
    format!("base_model.model.{module}.lora_{which}.weight")
}

pub struct TrainableLora {
    pub r: usize,
    pub alpha: f64,
    pub dropout: f64,
    /// What adapter_config.json's target_modules says (names or suffixes).
    pub target_modules: Vec<String>,
    /// Module -> (A `[r, in]`, B `[out, r]`).
    pub modules: BTreeMap<String, (Var, Var)>,
    /// How the factors were initialised (for the result).
    pub init: String,
}

/// Settings of the adapter to train.
pub struct LoraShape<'a> {
    pub r: usize,
    pub alpha: f64,
    pub dropout: f64,
    pub target_modules: Option<&'a [String]>,
    pub seed: u64,
}

fn kaiming(
    rng: &mut ChaCha8Rng,
    rows: usize,
    cols: usize,
    device: &Device,
) -> candle_core::Result<Tensor> {
    // PEFT: kaiming_uniform_(a = sqrt(5)) on lora_A, i.e. U(-1/sqrt(in), 1/sqrt(in)).
    let bound = 1.0 / (cols as f32).sqrt();
    let data: Vec<f32> = (0..rows * cols)
        .map(|_| rng.random_range(-bound..bound))
        .collect();
    Tensor::from_vec(data, (rows, cols), device)
}

impl TrainableLora {
    pub fn scaling(&self) -> f64 {
        self.alpha / self.r as f64
    }

    /// Factors on the selected layers of `decoder`: A uniform as PEFT initialises it, B zero
    /// (the adapter starts as a no-op), or, with `start`, the start adapter's function exactly:
    /// its A in the first rows, its B rescaled to this adapter's scaling in the first columns,
    /// the remaining rank fresh (A random, B zero).
    pub fn new(
        decoder: &Decoder,
        shape: &LoraShape<'_>,
        start: Option<&LoraAdapter>,
    ) -> Result<Self, String> {
        let device = &decoder.device;
        let err = |e: candle_core::Error| e.to_string();
        if let Some(names) = shape.target_modules
            && let Some(head) = names
                .iter()
                .find(|n| *n == "lm_head" || n.ends_with(".lm_head"))
        {
            return Err(format!(
                "target_modules: {head} (the output head) cannot be trained; adapt the decoder's linear layers"
            ));
        }
        let targets = match shape.target_modules {
            Some(names) => ModuleFilter::List(names.to_vec()),
            None => ModuleFilter::AllLinear,
        };
        let layers = decoder.linear_modules().map_err(|e| e.to_string())?;
        let selected: Vec<_> = layers
            .into_iter()
            .filter(|(m, _, _)| targets.matches(m))
            .collect();
        if selected.is_empty() {
            return Err(format!(
                "target_modules {:?} select no linear layer of the model (its layers end in {})",
                shape.target_modules.unwrap_or_default(),
                decoder.linear_suffixes.join(", ")
            ));
        }
        if let Some(names) = shape.target_modules
            && let Some(unused) = names.iter().find(|n| {
                !selected
                    .iter()
                    .any(|(m, _, _)| ModuleFilter::List(vec![(*n).clone()]).matches(m))
            })
        {
            return Err(format!(
                "target_modules: {unused:?} selects no linear layer of the model"
            ));
        }
        let target_modules = match shape.target_modules {
            Some(names) => names.to_vec(),
            None => decoder
                .linear_suffixes
                .iter()
                .map(|s| s.rsplit('.').next().unwrap_or(s).to_string())
                .collect(),
        };
        let r = shape.r;
        let scaling = shape.alpha / r as f64;
        if let Some(start) = start {
            for (module, f) in &start.factors {
                if !selected.iter().any(|(m, _, _)| m == module) {
                    return Err(format!(
                        "the new task adapter adapts {module}, which target_modules leaves out, so \
                         the compatibility adapter could not start from it; add it to \
                         target_modules or leave target_modules unset"
                    ));
                }
                let rt = f.a.dims2().map_err(err)?.0;
                if rt > r {
                    return Err(format!(
                        "rank {r} is below the new task adapter's rank {rt} (on {module}): the \
                         compatibility adapter starts from the task adapter and must hold it; \
                         use rank >= {rt}"
                    ));
                }
            }
        }
        let mut rng = ChaCha8Rng::seed_from_u64(shape.seed ^ 0x5eed_1042);
        let mut modules = BTreeMap::new();
        let mut from_start = 0;
        for (module, out, inp) in &selected {
            let fresh_a = kaiming(&mut rng, r, *inp, device).map_err(err)?;
            let (a, b) = match start.and_then(|s| s.factors.get(module)) {
                Some(f) => {
                    from_start += 1;
                    let rt = f.a.dims2().map_err(err)?.0;
                    let a = if rt < r {
                        Tensor::cat(&[&f.a, &fresh_a.narrow(0, 0, r - rt).map_err(err)?], 0)
                    } else {
                        Ok(f.a.clone())
                    }
                    .map_err(err)?;
                    let b = (&f.b * (f.scaling / scaling)).map_err(err)?;
                    let b = if rt < r {
                        let zeros =
                            Tensor::zeros((*out, r - rt), DType::F32, device).map_err(err)?;
                        Tensor::cat(&[&b, &zeros], 1).map_err(err)?
                    } else {
                        b
                    };
                    (a, b)
                }
                None => (
                    fresh_a,
                    Tensor::zeros((*out, r), DType::F32, device).map_err(err)?,
                ),
            };
            let a = Var::from_tensor(
                &a.to_dtype(DType::F32)
                    .map_err(err)?
                    .contiguous()
                    .map_err(err)?,
            )
            .map_err(err)?;
            let b = Var::from_tensor(
                &b.to_dtype(DType::F32)
                    .map_err(err)?
                    .contiguous()
                    .map_err(err)?,
            )
            .map_err(err)?;
            modules.insert(module.clone(), (a, b));
        }
        let init = match start {
            Some(s) => format!(
                "started from {} ({from_start} of {} layers; the rest fresh)",
                s.path.display(),
                modules.len()
            ),
            None => "fresh (A uniform, B zero)".into(),
        };
        Ok(Self {
            r,
            alpha: shape.alpha,
            dropout: shape.dropout,
            target_modules,
            modules,
            init,
        })
    }

    /// Puts the factors on `decoder` as unmerged LoRA paths (gradients flow to the `Var`s).
    pub fn attach(&self, decoder: &mut Decoder) -> crate::engine::Result<()> {
        for (module, (a, b)) in &self.modules {
            decoder.set_lora(
                module,
                Some(LoraPath {
                    a: a.as_tensor().clone(),
                    b: b.as_tensor().clone(),
                    scaling: self.scaling(),
                    dropout: self.dropout as f32,
                }),
            )?;
        }
        Ok(())
    }

    /// Every trainable variable with its PEFT key, in a fixed order.
    pub fn vars(&self) -> Vec<(String, &Var)> {
        let mut out = Vec::with_capacity(self.modules.len() * 2);
        for (module, (a, b)) in &self.modules {
            out.push((peft_key(module, true), a));
            out.push((peft_key(module, false), b));
        }
        out
    }

    /// Current values under PEFT keys.
    pub fn tensors(&self) -> HashMap<String, Tensor> {
        self.vars()
            .into_iter()
            .map(|(k, v)| (k, v.as_tensor().detach()))
            .collect()
    }

    /// Overwrites the values from PEFT-keyed tensors (a checkpoint); every key must be there.
    pub fn load(&self, tensors: &HashMap<String, Tensor>) -> Result<(), String> {
        for (key, var) in self.vars() {
            let t = tensors
                .get(&key)
                .ok_or_else(|| format!("the checkpoint lacks {key}"))?;
            if t.dims() != var.dims() {
                return Err(format!(
                    "{key}: checkpoint shape {:?}, expected {:?}",
                    t.dims(),
                    var.dims()
                ));
            }
            var.set(&t.to_dtype(DType::F32).map_err(|e| e.to_string())?)
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

//! Scores the test set with each model (the engine's lm-evaluation-harness scoring) and
//! compares them instance by instance.

use std::path::Path;

use muscle::dataset::Item;
use muscle::engine::scoring::multiple_choice;
use muscle::engine::{BatchConfig, LoadedModel, McItem, ModelSpec, RunOptions};
use muscle::metrics::mcnemar_exact;

/// Per-instance correctness of base + adapter on `items`.
pub fn correct(base: &Path, adapter: Option<&Path>, items: &[Item]) -> Result<Vec<bool>, String> {
    let spec = ModelSpec::cpu_f32(base, adapter.map(Path::to_path_buf));
    let model = LoadedModel::load(&spec, true).map_err(|e| e.to_string())?;
    let mc: Vec<McItem> = items
        .iter()
        .map(|i| match i {
            Item::MultipleChoice {
                prompt, choices, ..
            } => McItem {
                prompt: prompt.clone(),
                choices: choices.clone(),
                delimiter: None,
            },
            Item::Generation { .. } => unreachable!("the task is multiple choice"),
        })
        .collect();
    let results = multiple_choice(&model, &mc, BatchConfig::default(), &RunOptions::default())
        .map_err(|e| e.to_string())?;
    Ok(items
        .iter()
        .zip(results)
        .map(|(i, r)| matches!(i, Item::MultipleChoice { answer, .. } if *answer == r.acc_pred))
        .collect())
}

/// Old vs new, instance by instance.
#[derive(Debug, Clone, Copy)]
pub struct Pair {
    pub n: usize,
    pub acc_new: f64,
    pub nf: usize,
    pub pf: usize,
}

pub fn pair(old: &[bool], new: &[bool]) -> Pair {
    let nf = old.iter().zip(new).filter(|(o, n)| **o && !**n).count();
    let pf = old.iter().zip(new).filter(|(o, n)| !**o && **n).count();
    Pair {
        n: old.len(),
        acc_new: new.iter().filter(|c| **c).count() as f64 / new.len() as f64,
        nf,
        pf,
    }
}

/// McNemar's exact p for "the variant has as many negative flips as the new task model":
/// instances that are a negative flip under one of them but not the other.
pub fn nf_change_p(old: &[bool], new: &[bool], variant: &[bool]) -> (usize, usize, f64) {
    let (mut fixed, mut broken) = (0, 0);
    for ((o, n), v) in old.iter().zip(new).zip(variant) {
        let nf_new = *o && !*n;
        let nf_var = *o && !*v;
        if nf_new && !nf_var {
            fixed += 1;
        }
        if nf_var && !nf_new {
            broken += 1;
        }
    }
    let p = mcnemar_exact(fixed as u64, broken as u64).p_value;
    (fixed, broken, p)
}

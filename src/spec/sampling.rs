//! `task.sampling`: K outputs drawn per instance and side besides the greedy one, at the
//! deployment's temperature (muscle.md section 8).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::engine::sampling::SamplingParams;
use crate::validation::Errors;

/// Most draws per instance and side.
pub const MAX_SAMPLES: u32 = 100;

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SamplingSpec {
    /// Draws per instance and side (K), from 2 to 100.
    pub samples: u32,
    /// Greater than 0 and at most 10.
    pub temperature: f64,
    /// In (0, 1]; 1 keeps every token.
    #[serde(default = "one")]
    pub top_p: f64,
    /// At least 1; null keeps every token.
    #[serde(default)]
    pub top_k: Option<u32>,
    /// With the instance id, the side and the sample's index, the only input of each draw's
    /// random stream: the same job draws the same outputs at any batch size, shard size or
    /// worker count.
    #[serde(default)]
    pub seed: u64,
}

fn one() -> f64 {
    1.0
}

impl SamplingSpec {
    pub fn params(&self) -> SamplingParams {
        SamplingParams {
            temperature: self.temperature,
            top_k: self.top_k.map(|k| k as usize),
            top_p: self.top_p,
        }
    }

    pub fn check(&self, field: &str, errors: &mut Errors) {
        if !(2..=MAX_SAMPLES).contains(&self.samples) {
            errors.add(
                format!("{field}.samples"),
                format!(
                    "must be from 2 to {MAX_SAMPLES}: a reliable change is tested on each side's \
                     K draws"
                ),
            );
        }
        if !(self.temperature.is_finite() && self.temperature > 0.0 && self.temperature <= 10.0) {
            errors.add(
                format!("{field}.temperature"),
                "must be greater than 0 and at most 10 (greedy decoding is the evaluation's own \
                 output; sampling needs a temperature)",
            );
        }
        if !(self.top_p.is_finite() && self.top_p > 0.0 && self.top_p <= 1.0) {
            errors.add(
                format!("{field}.top_p"),
                "must be greater than 0 and at most 1",
            );
        }
        if self.top_k == Some(0) {
            errors.add(
                format!("{field}.top_k"),
                "must be at least 1, or null to keep every token",
            );
        }
    }
}

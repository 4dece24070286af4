//! Continuous-score flip magnitudes and output congruence (MUSCLE 3.2); null for multiple choice.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::counts::Tally;
use super::outcome::{Answer, InstanceOutcome, TaskKind};
use super::rates::{mean, ratio};
use super::rouge::rouge_l_f;

/// Generation-only metrics; every field is null for multiple choice.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Generative {
    /// Mean gain D = new - old over positive flips; null when there are none.
    pub m_g: Option<f64>,
    /// Mean loss |D| over negative flips; null when there are none.
    pub m_r: Option<f64>,
    /// Mean ROUGE-L F of the new output against the old output.
    pub output_similarity: Option<f64>,
    /// Share of instances whose two outputs are byte-for-byte identical.
    pub identical_outputs: Option<f64>,
}

impl Generative {
    /// Names usable as `generative.<name>` in a gate.
    pub const NAMES: [&'static str; 4] = ["m_g", "m_r", "output_similarity", "identical_outputs"];

    /// The value called `name`.
    pub fn get(&self, name: &str) -> Option<f64> {
        match name {
            "m_g" => self.m_g,
            "m_r" => self.m_r,
            "output_similarity" => self.output_similarity,
            "identical_outputs" => self.identical_outputs,
            _ => None,
        }
    }

    pub(crate) fn compute(kind: TaskKind, tally: &Tally, instances: &[InstanceOutcome]) -> Self {
        if kind == TaskKind::MultipleChoice {
            return Generative::default();
        }
        let mut similarity_sum = 0.0;
        let mut texts = 0u64;
        for instance in instances {
            if let (Answer::Text(old), Answer::Text(new)) =
                (&instance.old.answer, &instance.new.answer)
            {
                similarity_sum += rouge_l_f(new, old);
                texts += 1;
            }
        }
        Generative {
            m_g: mean(tally.gain_sum, tally.counts.positive_flips),
            m_r: mean(tally.loss_sum, tally.counts.negative_flips),
            output_similarity: mean(similarity_sum, texts),
            identical_outputs: ratio(tally.same_answer, tally.n),
        }
    }
}

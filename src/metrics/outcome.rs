//! Per-instance inputs and the flip label the worker stores for each instance.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// What a model answered: a choice index (multiple choice) or generated text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum Answer {
    Choice(usize),
    Text(String),
}

/// One model's result on one instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SideOutcome {
    /// 1.0 / 0.0 for multiple-choice correctness; the metric value in [0, 1] for generation.
    pub score: f64,
    pub answer: Answer,
    /// The scores of the sampled outputs (none without `task.sampling`).
    #[serde(default)]
    pub samples: Vec<f64>,
}

/// Both models' results on one instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct InstanceOutcome {
    pub id: String,
    /// Gold label of a multiple-choice row; gives the slice `answer=K`.
    #[serde(default)]
    pub gold: Option<usize>,
    /// Dataset tags; each gives the slice `KEY=VALUE`.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    pub old: SideOutcome,
    pub new: SideOutcome,
}

/// How instances are scored and flips decided.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum TaskKind {
    /// Scores are correctness, 1.0 or 0.0; a score >= 0.5 counts as correct.
    MultipleChoice,
    /// Scores are metric values in [0, 1]; `tolerance` (finite, >= 0) is the dead band for flips.
    Generation { tolerance: f64 },
}

/// Where one instance lands when old and new are compared.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    ToSchema,
    strum::IntoStaticStr,
    strum::EnumString,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum Flip {
    /// Old right, new wrong (generation: new - old < -tolerance).
    Negative,
    /// Old wrong, new right (generation: new - old > tolerance).
    Positive,
    BothCorrect,
    BothWrong,
    /// Generation only: within tolerance, and not both 1 or both 0.
    Tie,
}

impl Flip {
    /// The snake_case name used in JSON and query strings.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// Whether a multiple-choice score counts as correct.
pub(crate) fn mc_correct(score: f64) -> bool {
    score >= 0.5
}

/// Labels one instance. The report counts flips with this same function.
///
/// Multiple choice: the four quadrants of old/new correctness (never `Tie`).
/// Generation: with D = new - old, D > tol is positive, D < -tol negative; otherwise both
/// correct when both scores are 1, both wrong when both are 0, else a tie. A NaN score is a tie.
pub fn classify(kind: TaskKind, old_score: f64, new_score: f64) -> Flip {
    match kind {
        TaskKind::MultipleChoice => match (mc_correct(old_score), mc_correct(new_score)) {
            (true, true) => Flip::BothCorrect,
            (true, false) => Flip::Negative,
            (false, true) => Flip::Positive,
            (false, false) => Flip::BothWrong,
        },
        TaskKind::Generation { tolerance } => {
            let d = new_score - old_score;
            if d > tolerance {
                Flip::Positive
            } else if d < -tolerance {
                Flip::Negative
            } else if old_score == 1.0 && new_score == 1.0 {
                Flip::BothCorrect
            } else if old_score == 0.0 && new_score == 0.0 {
                Flip::BothWrong
            } else {
                Flip::Tie
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GEN0: TaskKind = TaskKind::Generation { tolerance: 0.0 };

    #[test]
    fn multiple_choice_quadrants() {
        let mc = TaskKind::MultipleChoice;
        assert_eq!(classify(mc, 1.0, 1.0), Flip::BothCorrect);
        assert_eq!(classify(mc, 1.0, 0.0), Flip::Negative);
        assert_eq!(classify(mc, 0.0, 1.0), Flip::Positive);
        assert_eq!(classify(mc, 0.0, 0.0), Flip::BothWrong);
    }

    #[test]
    fn generation_strict_inequalities_at_zero_tolerance() {
        assert_eq!(classify(GEN0, 0.5, 0.6), Flip::Positive);
        assert_eq!(classify(GEN0, 0.6, 0.5), Flip::Negative);
        assert_eq!(classify(GEN0, 0.4, 0.4), Flip::Tie);
        assert_eq!(classify(GEN0, 1.0, 1.0), Flip::BothCorrect);
        assert_eq!(classify(GEN0, 0.0, 0.0), Flip::BothWrong);
        assert_eq!(classify(GEN0, 1.0, 0.0), Flip::Negative);
        assert_eq!(classify(GEN0, 0.0, 1.0), Flip::Positive);
    }

    #[test]
    fn generation_tolerance_boundary_is_a_tie() {
        let kind = TaskKind::Generation { tolerance: 0.25 };
        assert_eq!(classify(kind, 0.5, 0.75), Flip::Tie);
        assert_eq!(classify(kind, 0.75, 0.5), Flip::Tie);
        assert_eq!(classify(kind, 0.5, 0.75 + 1e-9), Flip::Positive);
        assert_eq!(classify(kind, 0.75 + 1e-9, 0.5), Flip::Negative);
        assert_eq!(classify(kind, 0.25, 0.0), Flip::Tie);
    }

    #[test]
    fn nan_score_is_a_tie() {
        assert_eq!(classify(GEN0, f64::NAN, 0.5), Flip::Tie);
    }

    #[test]
    fn flip_serialises_snake_case() {
        let json = serde_json::to_string(&[Flip::BothCorrect, Flip::BothWrong, Flip::Tie]).unwrap();
        assert_eq!(json, r#"["both_correct","both_wrong","tie"]"#);
        for flip in [
            Flip::Negative,
            Flip::Positive,
            Flip::BothCorrect,
            Flip::BothWrong,
            Flip::Tie,
        ] {
            assert_eq!(serde_json::to_value(flip).unwrap(), flip.as_str());
        }
    }

    #[test]
    fn task_kind_json_shape() {
        let kind: TaskKind =
            serde_json::from_str(r#"{"type":"generation","tolerance":0.1}"#).unwrap();
        assert_eq!(kind, TaskKind::Generation { tolerance: 0.1 });
        let mc: TaskKind = serde_json::from_str(r#"{"type":"multiple_choice"}"#).unwrap();
        assert_eq!(mc, TaskKind::MultipleChoice);
    }
}

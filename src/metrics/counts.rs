//! Pooled flip counts, and the running tally every metric is computed from.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::outcome::{Flip, InstanceOutcome, TaskKind, classify, mc_correct};

/// How many instances landed in each flip class; they sum to `n`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Counts {
    pub negative_flips: u64,
    pub positive_flips: u64,
    pub both_correct: u64,
    pub both_wrong: u64,
    /// Generation only: instances within tolerance that are not both 1 or both 0.
    pub ties: u64,
}

impl Counts {
    /// Names usable as `counts.<name>` in a gate.
    pub const NAMES: [&'static str; 5] = [
        "negative_flips",
        "positive_flips",
        "both_correct",
        "both_wrong",
        "ties",
    ];

    /// The count called `name`.
    pub fn get(&self, name: &str) -> Option<u64> {
        match name {
            "negative_flips" => Some(self.negative_flips),
            "positive_flips" => Some(self.positive_flips),
            "both_correct" => Some(self.both_correct),
            "both_wrong" => Some(self.both_wrong),
            "ties" => Some(self.ties),
            _ => None,
        }
    }

    /// Sum of all classes.
    pub fn total(&self) -> u64 {
        self.negative_flips + self.positive_flips + self.both_correct + self.both_wrong + self.ties
    }

    pub(crate) fn add(&mut self, flip: Flip) {
        match flip {
            Flip::Negative => self.negative_flips += 1,
            Flip::Positive => self.positive_flips += 1,
            Flip::BothCorrect => self.both_correct += 1,
            Flip::BothWrong => self.both_wrong += 1,
            Flip::Tie => self.ties += 1,
        }
    }
}

/// The score a metric sees: correctness (1 or 0) for multiple choice, the raw score otherwise.
pub(crate) fn effective_score(kind: TaskKind, score: f64) -> f64 {
    match kind {
        TaskKind::MultipleChoice => {
            if mc_correct(score) {
                1.0
            } else {
                0.0
            }
        }
        TaskKind::Generation { .. } => score,
    }
}

/// Running sums over a set of instances (the whole dataset or one slice).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Tally {
    pub n: u64,
    pub counts: Counts,
    pub sum_old: f64,
    pub sum_new: f64,
    /// Every effective score is exactly 0 or 1.
    pub all_binary: bool,
    /// Old and new answers are identical.
    pub same_answer: u64,
    /// New is wrong (effective score 0) and its answer differs from old's.
    pub new_wrong_differs: u64,
    /// Sum of D over positive flips.
    pub gain_sum: f64,
    /// Sum of |D| over negative flips.
    pub loss_sum: f64,
    /// Generation instances with a NaN or infinite score.
    pub non_finite: u64,
    /// Instances with a score other than 0 or 1 (multiple choice) or outside [0, 1] (generation).
    pub irregular: u64,
}

impl Default for Tally {
    fn default() -> Self {
        Tally {
            n: 0,
            counts: Counts::default(),
            sum_old: 0.0,
            sum_new: 0.0,
            all_binary: true,
            same_answer: 0,
            new_wrong_differs: 0,
            gain_sum: 0.0,
            loss_sum: 0.0,
            non_finite: 0,
            irregular: 0,
        }
    }
}

impl Tally {
    pub fn from_instances<'a>(
        kind: TaskKind,
        instances: impl IntoIterator<Item = &'a InstanceOutcome>,
    ) -> Self {
        let mut tally = Tally::default();
        for instance in instances {
            tally.push(kind, instance);
        }
        tally
    }

    pub fn push(&mut self, kind: TaskKind, instance: &InstanceOutcome) {
        let (raw_old, raw_new) = (instance.old.score, instance.new.score);
        let old = effective_score(kind, raw_old);
        let new = effective_score(kind, raw_new);
        let flip = classify(kind, raw_old, raw_new);
        self.n += 1;
        self.counts.add(flip);
        self.sum_old += old;
        self.sum_new += new;
        let binary = |s: f64| s == 0.0 || s == 1.0;
        self.all_binary &= binary(old) && binary(new);
        let same = instance.old.answer == instance.new.answer;
        if same {
            self.same_answer += 1;
        }
        if new == 0.0 && !same {
            self.new_wrong_differs += 1;
        }
        match flip {
            Flip::Positive => self.gain_sum += new - old,
            Flip::Negative => self.loss_sum += old - new,
            _ => {}
        }
        let regular = |s: f64| match kind {
            TaskKind::MultipleChoice => binary(s),
            TaskKind::Generation { .. } => (0.0..=1.0).contains(&s),
        };
        let is_generation = matches!(kind, TaskKind::Generation { .. });
        if is_generation && !(raw_old.is_finite() && raw_new.is_finite()) {
            self.non_finite += 1;
        } else if !regular(raw_old) || !regular(raw_new) {
            self.irregular += 1;
        }
    }

    /// Classical quadrant metrics apply: binary scores and no ties.
    pub fn is_binary(&self) -> bool {
        self.all_binary && self.counts.ties == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::outcome::{Answer, SideOutcome};

    fn inst(old: f64, new: f64, a_old: usize, a_new: usize) -> InstanceOutcome {
        InstanceOutcome {
            id: String::new(),
            gold: None,
            tags: Default::default(),
            old: SideOutcome {
                score: old,
                answer: Answer::Choice(a_old),
                samples: Vec::new(),
            },
            new: SideOutcome {
                score: new,
                answer: Answer::Choice(a_new),
                samples: Vec::new(),
            },
        }
    }

    #[test]
    fn tally_counts_multiple_choice() {
        let rows = [
            inst(1.0, 1.0, 0, 0),
            inst(1.0, 0.0, 0, 1),
            inst(0.0, 0.0, 2, 1),
            inst(0.0, 0.0, 2, 2),
        ];
        let t = Tally::from_instances(TaskKind::MultipleChoice, &rows);
        assert_eq!(t.n, 4);
        assert_eq!(
            t.counts,
            Counts {
                negative_flips: 1,
                positive_flips: 0,
                both_correct: 1,
                both_wrong: 2,
                ties: 0
            }
        );
        assert_eq!(t.counts.total(), 4);
        assert_eq!(t.same_answer, 2);
        assert_eq!(t.new_wrong_differs, 2);
        assert_eq!((t.sum_old, t.sum_new), (2.0, 1.0));
        assert!(t.is_binary());
        assert_eq!(t.irregular, 0);
    }

    #[test]
    fn tally_flags_irregular_and_non_finite_scores() {
        let rows = [inst(0.7, 1.0, 0, 0), inst(f64::NAN, 1.0, 0, 0)];
        let t = Tally::from_instances(TaskKind::MultipleChoice, &rows);
        assert_eq!((t.irregular, t.non_finite), (2, 0));
        assert!(t.is_binary());
        let g = Tally::from_instances(TaskKind::Generation { tolerance: 0.0 }, &rows);
        assert_eq!((g.irregular, g.non_finite), (0, 1));
        assert!(!g.is_binary());
    }

    #[test]
    fn counts_get_covers_every_name() {
        let c = Counts {
            negative_flips: 1,
            positive_flips: 2,
            both_correct: 3,
            both_wrong: 4,
            ties: 5,
        };
        let got: Vec<u64> = Counts::NAMES.iter().map(|n| c.get(n).unwrap()).collect();
        assert_eq!(got, [1, 2, 3, 4, 5]);
        assert_eq!(c.get("n"), None);
    }
}

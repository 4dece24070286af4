//! Per-slice counts and metrics: per gold label (`answer=K`) and per tag value (`KEY=VALUE`).

use std::cmp::Ordering;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::counts::{Counts, Tally};
use super::intervals::{Interval, wilson};
use super::outcome::{InstanceOutcome, TaskKind};
use super::rates::Metrics;

/// One slice of the dataset. Small slices are flagged, never hidden.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Slice {
    /// `answer=K` for gold label K, or `KEY=VALUE` for a tag (`tag:answer=VALUE` for a tag
    /// named `answer`, so it cannot merge with a gold-label slice).
    pub slice: String,
    pub n: u64,
    /// `n` is below the report's `min_slice_size`: its rates are noisy.
    pub small: bool,
    pub counts: Counts,
    pub metrics: Metrics,
    /// Wilson 95% interval of `nfr` (null when scores are not 0/1 or the slice is empty).
    #[serde(default)]
    pub nfr_interval: Option<Interval>,
}

/// The names of every slice `instance` belongs to.
pub fn slice_names(instance: &InstanceOutcome) -> Vec<String> {
    let gold = instance.gold.map(|k| format!("answer={k}"));
    let tags = instance.tags.iter().map(|(key, value)| {
        if key == "answer" {
            format!("tag:{key}={value}")
        } else {
            format!("{key}={value}")
        }
    });
    gold.into_iter().chain(tags).collect()
}

/// Every slice, worst `nfr` first (null last), ties by name.
pub fn compute_slices(
    kind: TaskKind,
    instances: &[InstanceOutcome],
    min_slice_size: u64,
) -> Vec<Slice> {
    let mut tallies: BTreeMap<String, Tally> = BTreeMap::new();
    for instance in instances {
        for name in slice_names(instance) {
            tallies.entry(name).or_default().push(kind, instance);
        }
    }
    let mut slices: Vec<Slice> = tallies
        .into_iter()
        .map(|(slice, tally)| Slice {
            slice,
            n: tally.n,
            small: tally.n < min_slice_size,
            counts: tally.counts,
            metrics: Metrics::from_tally(&tally),
            nfr_interval: if tally.is_binary() {
                wilson(tally.counts.negative_flips, tally.n)
            } else {
                None
            },
        })
        .collect();
    slices.sort_by(|a, b| {
        worst_nfr_first(a.metrics.nfr, b.metrics.nfr).then_with(|| a.slice.cmp(&b.slice))
    });
    slices
}

fn worst_nfr_first(a: Option<f64>, b: Option<f64>) -> Ordering {
    match (a, b) {
        (Some(x), Some(y)) => y.total_cmp(&x),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => Ordering::Equal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::outcome::{Answer, SideOutcome};

    fn inst(gold: Option<usize>, tags: &[(&str, &str)], old: f64, new: f64) -> InstanceOutcome {
        InstanceOutcome {
            id: String::new(),
            gold,
            tags: tags
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            old: SideOutcome {
                score: old,
                answer: Answer::Choice(0),
            },
            new: SideOutcome {
                score: new,
                answer: Answer::Choice(usize::from(new == old)),
            },
        }
    }

    #[test]
    fn no_gold_and_no_tags_gives_no_slices() {
        let rows = [inst(None, &[], 1.0, 0.0)];
        assert!(compute_slices(TaskKind::MultipleChoice, &rows, 30).is_empty());
        assert!(compute_slices(TaskKind::MultipleChoice, &[], 30).is_empty());
    }

    #[test]
    fn slices_sorted_worst_first_then_by_name() {
        let rows = [
            inst(Some(0), &[("topic", "physics")], 1.0, 1.0),
            inst(Some(0), &[("topic", "physics")], 1.0, 0.0),
            inst(Some(1), &[("topic", "biology")], 1.0, 0.0),
            inst(Some(1), &[("topic", "biology"), ("answer", "x")], 0.0, 1.0),
            inst(Some(2), &[], 1.0, 1.0),
        ];
        let slices = compute_slices(TaskKind::MultipleChoice, &rows, 2);
        let names: Vec<(&str, Option<f64>, bool)> = slices
            .iter()
            .map(|s| (s.slice.as_str(), s.metrics.nfr, s.small))
            .collect();
        assert_eq!(
            names,
            [
                ("answer=0", Some(0.5), false),
                ("answer=1", Some(0.5), false),
                ("topic=biology", Some(0.5), false),
                ("topic=physics", Some(0.5), false),
                ("answer=2", Some(0.0), true),
                ("tag:answer=x", Some(0.0), true),
            ]
        );
        let bio = slices.iter().find(|s| s.slice == "topic=biology").unwrap();
        assert_eq!(bio.n, 2);
        assert_eq!(
            bio.counts,
            Counts {
                negative_flips: 1,
                positive_flips: 1,
                both_correct: 0,
                both_wrong: 0,
                ties: 0
            }
        );
        assert_eq!(bio.metrics.btc, Some(0.0));
    }

    #[test]
    fn null_nfr_sorts_last() {
        assert_eq!(worst_nfr_first(None, Some(0.0)), Ordering::Greater);
        assert_eq!(worst_nfr_first(Some(0.0), None), Ordering::Less);
        assert_eq!(worst_nfr_first(Some(0.2), Some(0.1)), Ordering::Less);
    }
}

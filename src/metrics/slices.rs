//! Per-slice counts and metrics: per gold label (`answer=K`) and per tag value (`KEY=VALUE`),
//! each slice's negative flips tested against the rest's with a false-discovery correction
//! across slices (muscle.md section 8).

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::counts::{Counts, Tally};
use super::fdr::benjamini_hochberg;
use super::fisher::fisher_exact;
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
    /// This slice's negative flips against the rest's (two-sided Fisher exact test), adjusted by
    /// Benjamini-Hochberg across every slice of the report, listed or not; null when the slice
    /// holds every instance (there is no rest).
    #[serde(default)]
    pub q_value: Option<f64>,
    /// q < 0.05 and more negative flips than the rest: worse than the rest beyond what chance
    /// gives across this many slices. A slice ranked worst but not flagged may be noise.
    #[serde(default)]
    pub regressed: bool,
}

/// Below this q-value a slice worse than the rest is flagged `regressed`.
pub const SLICE_FDR: f64 = 0.05;

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

/// The slices a report lists, and what it had to leave out.
#[derive(Debug, Clone, PartialEq)]
pub struct SliceSet {
    /// At most `max_slices`, worst `nfr` first (null last), ties by name.
    pub slices: Vec<Slice>,
    /// Slices computed but not listed.
    pub omitted: u64,
    /// Tag keys with more distinct values than `max_slices`, with their count: most likely a
    /// field unique per instance (an id, the question) rather than a category.
    pub too_many_values: Vec<(String, u64)>,
}

/// Every slice when there are at most `max_slices`; else the half of them with the worst `nfr`
/// and the largest by `n` (the rest counted in `omitted`), worst first.
pub fn compute_slices(
    kind: TaskKind,
    instances: &[InstanceOutcome],
    min_slice_size: u64,
    max_slices: usize,
) -> SliceSet {
    let mut tallies: BTreeMap<String, Tally> = BTreeMap::new();
    let mut all = Tally::default();
    for instance in instances {
        all.push(kind, instance);
        for name in slice_names(instance) {
            tallies.entry(name).or_default().push(kind, instance);
        }
    }
    let too_many_values = keys_with_too_many_values(tallies.keys(), max_slices);
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
            q_value: None,
            regressed: false,
        })
        .collect();
    flag_regressions(&mut slices, &all);
    slices.sort_by(|a, b| {
        worst_nfr_first(a.metrics.nfr, b.metrics.nfr).then_with(|| a.slice.cmp(&b.slice))
    });
    let total = slices.len();
    if total > max_slices {
        slices = keep_worst_and_largest(slices, max_slices);
    }
    SliceSet {
        omitted: (total - slices.len()) as u64,
        slices,
        too_many_values,
    }
}

/// Each slice's Fisher test against the rest, BH-adjusted across `slices`, and the flag.
fn flag_regressions(slices: &mut [Slice], all: &Tally) {
    let tested: Vec<(usize, f64)> = slices
        .iter()
        .enumerate()
        .filter(|(_, slice)| slice.n > 0 && slice.n < all.n)
        .map(|(i, slice)| {
            let (inside, rest) = against_rest(slice, all);
            let p = fisher_exact(inside.0, inside.1, rest.0, rest.1);
            (i, p)
        })
        .collect();
    let q_values = benjamini_hochberg(&tested.iter().map(|&(_, p)| p).collect::<Vec<_>>());
    for (&(i, _), q) in tested.iter().zip(q_values) {
        let slice = &mut slices[i];
        let (inside, rest) = against_rest(slice, all);
        let rate = |(flips, others): (u64, u64)| flips as f64 / (flips + others) as f64;
        slice.q_value = Some(q);
        slice.regressed = q < SLICE_FDR && rate(inside) > rate(rest);
    }
}

/// (negative flips, other instances) inside the slice and in the rest of the data.
fn against_rest(slice: &Slice, all: &Tally) -> ((u64, u64), (u64, u64)) {
    let flips = slice.counts.negative_flips;
    let rest_n = all.n - slice.n;
    let rest_flips = all.counts.negative_flips - flips;
    ((flips, slice.n - flips), (rest_flips, rest_n - rest_flips))
}

/// `slices` sorted worst first, cut to `max`: the worst `max - max / 2`, then the largest `n`
/// among the rest; the result still worst first.
fn keep_worst_and_largest(slices: Vec<Slice>, max: usize) -> Vec<Slice> {
    let worst = max - max / 2;
    let mut by_size: Vec<usize> = (worst..slices.len()).collect();
    by_size.sort_by(|&a, &b| slices[b].n.cmp(&slices[a].n).then(a.cmp(&b)));
    let keep: HashSet<usize> = (0..worst)
        .chain(by_size.into_iter().take(max / 2))
        .collect();
    slices
        .into_iter()
        .enumerate()
        .filter(|(i, _)| keep.contains(i))
        .map(|(_, slice)| slice)
        .collect()
}

/// The slice-name prefixes (`topic`, `answer`) with more than `max` distinct values.
fn keys_with_too_many_values<'a>(
    names: impl Iterator<Item = &'a String>,
    max: usize,
) -> Vec<(String, u64)> {
    let mut counts: BTreeMap<&str, u64> = BTreeMap::new();
    for name in names {
        let key = name.split_once('=').map_or(name.as_str(), |(key, _)| key);
        *counts.entry(key).or_default() += 1;
    }
    counts
        .into_iter()
        .filter(|&(_, n)| n > max as u64)
        .map(|(key, n)| (key.to_string(), n))
        .collect()
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
                samples: Vec::new(),
            },
            new: SideOutcome {
                score: new,
                answer: Answer::Choice(usize::from(new == old)),
                samples: Vec::new(),
            },
        }
    }

    #[test]
    fn no_gold_and_no_tags_gives_no_slices() {
        let rows = [inst(None, &[], 1.0, 0.0)];
        assert!(
            compute_slices(TaskKind::MultipleChoice, &rows, 30, 200)
                .slices
                .is_empty()
        );
        assert!(
            compute_slices(TaskKind::MultipleChoice, &[], 30, 200)
                .slices
                .is_empty()
        );
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
        let set = compute_slices(TaskKind::MultipleChoice, &rows, 2, 200);
        assert_eq!((set.omitted, set.too_many_values.len()), (0, 0));
        let slices = set.slices;
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
    fn a_field_unique_per_instance_is_cut_to_the_worst_and_the_largest() {
        // 300 ids, each its own slice; topic=big holds 200 instances, topic=small 100.
        let rows: Vec<InstanceOutcome> = (0..300)
            .map(|i| {
                let id = format!("q{i:03}");
                let topic = if i < 200 { "big" } else { "small" };
                // Every third instance is a negative flip.
                let new = if i % 3 == 0 { 0.0 } else { 1.0 };
                inst(None, &[("id", &id), ("topic", topic)], 1.0, new)
            })
            .collect();
        let set = compute_slices(TaskKind::MultipleChoice, &rows, 30, 10);
        assert_eq!(set.slices.len(), 10);
        assert_eq!(set.omitted, 302 - 10);
        assert_eq!(set.too_many_values, [("id".to_string(), 300)]);
        let names: Vec<&str> = set.slices.iter().map(|s| s.slice.as_str()).collect();
        // The worst five (nfr 1: the first flipped ids by name), then the largest five worst
        // first: both topics, then the first ids of the rest by position.
        assert_eq!(
            &names[..5],
            ["id=q000", "id=q003", "id=q006", "id=q009", "id=q012"]
        );
        assert!(
            names.contains(&"topic=big") && names.contains(&"topic=small"),
            "{names:?}"
        );
        let nfrs: Vec<f64> = set.slices.iter().map(|s| s.metrics.nfr.unwrap()).collect();
        assert!(nfrs.windows(2).all(|w| w[0] >= w[1]), "{nfrs:?}");
        // At or under the cap nothing is cut.
        let all = compute_slices(TaskKind::MultipleChoice, &rows, 30, 302);
        assert_eq!((all.slices.len(), all.omitted), (302, 0));
    }

    #[test]
    fn null_nfr_sorts_last() {
        assert_eq!(worst_nfr_first(None, Some(0.0)), Ordering::Greater);
        assert_eq!(worst_nfr_first(Some(0.0), None), Ordering::Less);
        assert_eq!(worst_nfr_first(Some(0.2), Some(0.1)), Ordering::Less);
    }

    /// 40 topics of 25 instances: topic=law has 12 negative flips, half the other topics one
    /// each (so they rank above the rest by chance), the others none.
    fn forty_topics() -> Vec<InstanceOutcome> {
        (0..1000)
            .map(|i| {
                let (topic, j) = (i % 40, i / 40);
                let name = if topic == 7 {
                    "law".to_string()
                } else {
                    format!("t{topic:02}")
                };
                let flipped = if topic == 7 {
                    j < 12
                } else {
                    topic % 2 == 0 && j == 0
                };
                inst(
                    None,
                    &[("topic", &name)],
                    1.0,
                    if flipped { 0.0 } else { 1.0 },
                )
            })
            .collect()
    }

    #[test]
    fn only_a_slice_worse_than_chance_allows_is_flagged_regressed() {
        let set = compute_slices(TaskKind::MultipleChoice, &forty_topics(), 30, 200);
        let flagged: Vec<&str> = set
            .slices
            .iter()
            .filter(|s| s.regressed)
            .map(|s| s.slice.as_str())
            .collect();
        assert_eq!(flagged, ["topic=law"]);
        let law = &set.slices[0];
        assert_eq!(
            (law.slice.as_str(), law.counts.negative_flips),
            ("topic=law", 12)
        );
        assert!(law.q_value.unwrap() < 1e-6);
        // The next worst topics have a flip or two: ranked, not flagged.
        let next = &set.slices[1];
        assert!(next.counts.negative_flips >= 1 && !next.regressed);
        assert!(next.q_value.unwrap() > SLICE_FDR);
    }

    #[test]
    fn a_slice_of_every_instance_has_no_rest_to_be_tested_against() {
        let rows = [inst(Some(0), &[], 1.0, 0.0), inst(Some(0), &[], 1.0, 1.0)];
        let set = compute_slices(TaskKind::MultipleChoice, &rows, 30, 200);
        assert_eq!(set.slices[0].q_value, None);
        assert!(!set.slices[0].regressed);
    }
}

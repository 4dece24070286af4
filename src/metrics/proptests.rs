//! Property tests: identities that hold for any data.

use proptest::prelude::*;

use super::*;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 128,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn mc_rows() -> impl Strategy<Value = Vec<InstanceOutcome>> {
    prop::collection::vec((0usize..4, 0usize..4, 0usize..4, 0u8..3), 0..120).prop_map(|rows| {
        rows.into_iter()
            .enumerate()
            .map(|(i, (gold, old, new, topic))| {
                let score = |answer: usize| if answer == gold { 1.0 } else { 0.0 };
                InstanceOutcome {
                    id: i.to_string(),
                    gold: Some(gold),
                    tags: [("topic".to_owned(), topic.to_string())].into(),
                    old: SideOutcome {
                        score: score(old),
                        answer: Answer::Choice(old),
                        samples: Vec::new(),
                    },
                    new: SideOutcome {
                        score: score(new),
                        answer: Answer::Choice(new),
                        samples: Vec::new(),
                    },
                }
            })
            .collect()
    })
}

fn score() -> impl Strategy<Value = f64> {
    prop_oneof![Just(0.0), Just(1.0), Just(0.5), 0.0..=1.0f64]
}

fn gen_rows() -> impl Strategy<Value = Vec<InstanceOutcome>> {
    prop::collection::vec((score(), score(), 0u8..3, 0u8..3), 0..80).prop_map(|rows| {
        rows.into_iter()
            .map(|(old, new, a, b)| InstanceOutcome {
                id: String::new(),
                gold: None,
                tags: Default::default(),
                old: SideOutcome {
                    score: old,
                    answer: Answer::Text(format!("w{a} x")),
                    samples: Vec::new(),
                },
                new: SideOutcome {
                    score: new,
                    answer: Answer::Text(format!("w{b} x")),
                    samples: Vec::new(),
                },
            })
            .collect()
    })
}

fn fast() -> ReportOptions {
    ReportOptions {
        bootstrap_resamples: 50,
        ..ReportOptions::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn quadrants_sum_to_n_and_identities_hold(rows in mc_rows()) {
        let r = compute_report(TaskKind::MultipleChoice, &rows, &fast());
        let c = r.counts;
        prop_assert_eq!(c.total(), r.n);
        prop_assert_eq!(r.n as usize, rows.len());
        prop_assert_eq!(c.ties, 0);
        if let Some(btc) = r.metrics.btc {
            let expected = 1.0 - c.negative_flips as f64 / (c.both_correct + c.negative_flips) as f64;
            prop_assert!((btc - expected).abs() < 1e-12);
        }
        if let (Some(nfr), Some(pfr), Some(old), Some(new)) =
            (r.metrics.nfr, r.metrics.pfr, r.old.accuracy, r.new.accuracy)
        {
            prop_assert!(((nfr - pfr) - (old - new)).abs() < 1e-12);
            prop_assert!((r.metrics.delta_accuracy.unwrap() - (new - old)).abs() < 1e-12);
        }
        for slice in &r.slices {
            prop_assert_eq!(slice.counts.total(), slice.n);
            prop_assert_eq!(slice.small, slice.n < 30);
        }
        let slice_n: u64 = r.slices.iter().filter(|s| s.slice.starts_with("answer=")).map(|s| s.n).sum();
        prop_assert_eq!(slice_n, r.n);
        prop_assert!(r.mcnemar.p_value > 0.0 && r.mcnemar.p_value <= 1.0);
        let json = serde_json::to_string(&r).unwrap();
        prop_assert!(!json.contains("NaN"));
    }

    #[test]
    fn report_counts_match_classify(rows in gen_rows(), tolerance in prop_oneof![Just(0.0), 0.0..0.5f64]) {
        let kind = TaskKind::Generation { tolerance };
        let r = compute_report(kind, &rows, &fast());
        let mut counts = Counts::default();
        for row in &rows {
            match classify(kind, row.old.score, row.new.score) {
                Flip::Negative => counts.negative_flips += 1,
                Flip::Positive => counts.positive_flips += 1,
                Flip::BothCorrect => counts.both_correct += 1,
                Flip::BothWrong => counts.both_wrong += 1,
                Flip::Tie => counts.ties += 1,
            }
        }
        prop_assert_eq!(r.counts, counts);
        prop_assert_eq!(counts.total(), r.n);
        if let Some(m_g) = r.generative.m_g {
            prop_assert!(m_g > tolerance && m_g <= 1.0);
        }
        if let Some(m_r) = r.generative.m_r {
            prop_assert!(m_r > tolerance && m_r <= 1.0);
        }
        if let Some(sim) = r.generative.output_similarity {
            prop_assert!((0.0..=1.0).contains(&sim));
            prop_assert!(sim >= r.generative.identical_outputs.unwrap());
        }
    }

    #[test]
    fn wilson_contains_the_estimate_within_unit_interval(n in 1u64..50_000, frac in 0.0..=1.0f64) {
        let k = ((n as f64) * frac).round() as u64;
        let iv = wilson(k, n).unwrap();
        let p = k as f64 / n as f64;
        prop_assert!(0.0 <= iv.lower && iv.lower <= p && p <= iv.upper && iv.upper <= 1.0, "{:?} {}", iv, p);
        prop_assert!(iv.lower < iv.upper);
    }

    #[test]
    fn bootstrap_is_deterministic_and_bounded(
        diffs in prop::collection::vec(-1.0..=1.0f64, 1..60),
        seed in any::<u64>(),
    ) {
        let a = paired_bootstrap_delta(&diffs, 100, seed).unwrap();
        prop_assert_eq!(Some(a), paired_bootstrap_delta(&diffs, 100, seed));
        let min = diffs.iter().copied().fold(f64::INFINITY, f64::min);
        let max = diffs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        prop_assert!(min - 1e-12 <= a.lower && a.lower <= a.upper && a.upper <= max + 1e-12);
    }

    #[test]
    fn mcnemar_is_symmetric_and_a_probability(nf in 0u64..3000, pf in 0u64..3000) {
        let a = mcnemar_exact(nf, pf);
        prop_assert_eq!(a, mcnemar_exact(pf, nf));
        prop_assert!(a.p_value >= 0.0 && a.p_value <= 1.0);
        if nf == pf {
            prop_assert_eq!(a.p_value, 1.0);
        }
    }

    #[test]
    fn rouge_scores_are_symmetric_f_measures(
        a in prop::collection::vec(0u8..5, 0..12),
        b in prop::collection::vec(0u8..5, 0..12),
    ) {
        let text = |v: &[u8]| v.iter().map(|t| format!("T{t}")).collect::<Vec<_>>().join(" ");
        let (a, b) = (text(&a), text(&b));
        for f in [rouge1_f, rouge_l_f] {
            let s = f(&a, &b);
            prop_assert!((0.0..=1.0).contains(&s));
            prop_assert!((s - f(&b, &a)).abs() < 1e-12);
            prop_assert_eq!(f(&a, &a), 1.0);
        }
        prop_assert!(rouge_l_f(&a, &b) <= rouge1_f(&a, &b) + 1e-12);
    }
}

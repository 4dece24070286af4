//! End-to-end reports on small hand-computed datasets.

use std::collections::BTreeSet;

use super::*;

fn mc(gold: usize, old_answer: usize, new_answer: usize) -> InstanceOutcome {
    let score = |answer: usize| if answer == gold { 1.0 } else { 0.0 };
    InstanceOutcome {
        id: format!("q{gold}{old_answer}{new_answer}"),
        gold: Some(gold),
        tags: Default::default(),
        old: SideOutcome {
            score: score(old_answer),
            answer: Answer::Choice(old_answer),
            samples: Vec::new(),
        },
        new: SideOutcome {
            score: score(new_answer),
            answer: Answer::Choice(new_answer),
            samples: Vec::new(),
        },
    }
}

fn gen_row(old: f64, new: f64, old_text: &str, new_text: &str) -> InstanceOutcome {
    InstanceOutcome {
        id: String::new(),
        gold: None,
        tags: Default::default(),
        old: SideOutcome {
            score: old,
            answer: Answer::Text(old_text.to_owned()),
            samples: Vec::new(),
        },
        new: SideOutcome {
            score: new,
            answer: Answer::Text(new_text.to_owned()),
            samples: Vec::new(),
        },
    }
}

/// NF 2, PF 3, BC 10, BW 5 (3 with the same wrong answer, 2 with different ones); N 20.
fn mc_dataset() -> Vec<InstanceOutcome> {
    let mut rows = Vec::new();
    rows.extend((0..10).map(|_| mc(0, 0, 0)));
    rows.extend((0..2).map(|_| mc(1, 1, 0)));
    rows.extend((0..3).map(|_| mc(2, 0, 2)));
    rows.extend((0..3).map(|_| mc(3, 0, 0)));
    rows.extend((0..2).map(|_| mc(3, 0, 1)));
    rows
}

fn close(a: Option<f64>, b: f64) -> bool {
    a.is_some_and(|a| (a - b).abs() < 1e-12)
}

#[test]
fn multiple_choice_report_hand_computed() {
    let r = compute_report(
        TaskKind::MultipleChoice,
        &mc_dataset(),
        &ReportOptions::default(),
    );
    assert_eq!(r.n, 20);
    assert!(!r.partial);
    assert!(close(r.old.accuracy, 0.6));
    assert!(close(r.new.accuracy, 0.65));
    assert_eq!(
        r.counts,
        Counts {
            negative_flips: 2,
            positive_flips: 3,
            both_correct: 10,
            both_wrong: 5,
            ties: 0
        }
    );
    let m = r.metrics;
    assert!(close(m.nfr, 0.1));
    assert!(close(m.pfr, 0.15));
    assert!(close(m.nfi, 2.0 / 7.0));
    assert!(close(m.pfi, 3.0 / 13.0));
    assert!(close(m.btc, 10.0 / 12.0));
    assert!(close(m.bec, 5.0 / 7.0));
    assert!(close(m.nfr_rel, 0.1 / (0.6 * 0.35)));
    assert!(close(m.nfr_mc, 4.0 / 20.0));
    assert!(close(m.agreement, 13.0 / 20.0));
    assert!(close(m.delta_accuracy, 0.05));

    let iv = r.intervals;
    assert_eq!(iv.nfr, wilson(2, 20));
    assert_eq!(iv.pfr, wilson(3, 20));
    assert_eq!(iv.nfi, wilson(2, 7));
    assert_eq!(iv.pfi, wilson(3, 13));
    assert_eq!(iv.btc, wilson(10, 12));
    assert_eq!(iv.bec, wilson(5, 7));
    assert_eq!(iv.nfr_mc, wilson(4, 20));
    assert_eq!(iv.agreement, wilson(13, 20));
    assert_eq!(iv.acc_old, wilson(12, 20));
    assert_eq!(iv.acc_new, wilson(13, 20));
    let delta = iv.delta_accuracy.unwrap();
    assert!(delta.lower <= 0.05 && 0.05 <= delta.upper, "{delta:?}");

    // 2 vs 3 discordant: 2 * P[X <= 2], X ~ Bin(5, 1/2) = 2 * 16/32, capped at 1.
    assert_eq!(
        r.mcnemar,
        McNemar {
            p_value: 1.0,
            discordant: 5
        }
    );
    assert_eq!(r.noise_floor, None);
    assert_eq!(r.generative, Generative::default());
    assert_eq!(
        r.gate,
        GateResult {
            passed: true,
            checks: vec![]
        }
    );

    let names: Vec<&str> = r.slices.iter().map(|s| s.slice.as_str()).collect();
    assert_eq!(names, ["answer=1", "answer=0", "answer=2", "answer=3"]);
    assert!(r.slices.iter().all(|s| s.small));
    assert_eq!(r.slices[0].metrics.nfr, Some(1.0));
    assert_eq!(r.slices[3].counts.both_wrong, 5);
    assert_eq!(
        r.warnings,
        ["4 of 4 slices have fewer than 30 instances (flagged small)"]
    );
}

#[test]
fn report_json_has_the_api_shape() {
    let options = ReportOptions {
        noise_floor: Some(NoiseFloorInput {
            self_flips: 1,
            n: 100,
        }),
        gate: vec![GateCheck {
            metric: "nfr".into(),
            min: None,
            max: Some(0.05),
        }],
        ..ReportOptions::default()
    };
    let r = compute_report(TaskKind::MultipleChoice, &mc_dataset(), &options);
    let json = serde_json::to_value(&r).unwrap();
    let keys: BTreeSet<&str> = json
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let expected: BTreeSet<&str> = [
        "n",
        "partial",
        "old",
        "new",
        "counts",
        "metrics",
        "intervals",
        "mcnemar",
        "noise_floor",
        "generative",
        "slices",
        "slices_omitted",
        "gate",
        "power",
        "sampled",
        "warnings",
    ]
    .into();
    assert_eq!(keys, expected);
    assert_eq!(json["old"]["accuracy"], 0.6);
    assert_eq!(json["counts"]["negative_flips"], 2);
    assert_eq!(json["mcnemar"]["discordant"], 5);
    assert!(json["intervals"]["nfr"]["lower"].is_f64());
    assert!(json["generative"]["m_g"].is_null());
    assert_eq!(json["noise_floor"]["self_flip_rate"], 0.01);
    assert_eq!(json["noise_floor"]["nfr_exceeds_noise"], true);
    assert_eq!(json["slices"][0]["slice"], "answer=1");
    assert_eq!(json["slices"][0]["small"], true);
    assert_eq!(json["gate"]["passed"], false);
    assert_eq!(
        json["gate"]["checks"][0],
        serde_json::json!({"metric": "nfr", "max": 0.05, "value": 0.1, "passed": false})
    );
    let text = serde_json::to_string(&r).unwrap();
    let order: Vec<usize> = [
        "\"n\":",
        "\"partial\":",
        "\"old\":",
        "\"counts\":",
        "\"warnings\":",
    ]
    .iter()
    .map(|k| text.find(k).unwrap())
    .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{text}");
    let back: Report = serde_json::from_str(&text).unwrap();
    assert_eq!(
        (back.n, back.counts, back.slices.len()),
        (r.n, r.counts, r.slices.len())
    );
}

#[test]
fn empty_input_is_all_null() {
    let options = ReportOptions {
        gate: vec![GateCheck {
            metric: "nfr".into(),
            min: None,
            max: Some(1.0),
        }],
        noise_floor: Some(NoiseFloorInput {
            self_flips: 0,
            n: 10,
        }),
        ..ReportOptions::default()
    };
    let r = compute_report(TaskKind::MultipleChoice, &[], &options);
    assert_eq!(r.n, 0);
    assert_eq!(r.old.accuracy, None);
    assert_eq!(r.counts, Counts::default());
    assert_eq!(r.metrics, Metrics::default());
    assert_eq!(r.intervals, Intervals::default());
    assert_eq!(
        r.mcnemar,
        McNemar {
            p_value: 1.0,
            discordant: 0
        }
    );
    assert_eq!(
        r.noise_floor,
        Some(NoiseFloor {
            self_flip_rate: 0.0,
            nfr_exceeds_noise: None
        })
    );
    assert!(r.slices.is_empty());
    assert!(!r.gate.passed);
    assert_eq!(r.gate.checks[0].value, None);
    assert_eq!(r.warnings, ["no instances: every rate is null"]);
    let json = serde_json::to_string(&r).unwrap();
    assert!(!json.contains("NaN") && !json.contains("nan"), "{json}");
}

#[test]
fn no_flips_and_all_flips() {
    let same: Vec<_> = (0..4).map(|i| mc(i % 2, i % 2, i % 2)).collect();
    let r = compute_report(TaskKind::MultipleChoice, &same, &ReportOptions::default());
    assert_eq!((r.metrics.nfr, r.metrics.pfr), (Some(0.0), Some(0.0)));
    assert_eq!(
        (r.metrics.nfi, r.metrics.bec, r.metrics.nfr_rel),
        (None, None, None)
    );
    assert_eq!(r.mcnemar.p_value, 1.0);
    assert_eq!(r.intervals.nfr.unwrap().lower, 0.0);
    assert_eq!(
        r.intervals.delta_accuracy,
        Some(Interval {
            lower: 0.0,
            upper: 0.0
        })
    );

    let flips: Vec<_> = (0..6).map(|_| mc(1, 1, 0)).collect();
    let r = compute_report(TaskKind::MultipleChoice, &flips, &ReportOptions::default());
    assert_eq!(r.metrics.nfr, Some(1.0));
    assert_eq!(r.metrics.btc, Some(0.0));
    assert_eq!(r.metrics.pfi, None);
    assert_eq!(r.intervals.nfr.unwrap().upper, 1.0);
    assert!((r.mcnemar.p_value - 2.0 / 64.0).abs() < 1e-15);
    assert_eq!(
        r.intervals.delta_accuracy,
        Some(Interval {
            lower: -1.0,
            upper: -1.0
        })
    );
}

#[test]
fn continuous_generation_report() {
    let kind = TaskKind::Generation { tolerance: 0.125 };
    let rows = [
        gen_row(0.5, 0.8, "the cat sat", "the cat sat down"),
        gen_row(0.9, 0.4, "x", "y"),
        gen_row(0.6, 0.65, "a b", "b a"),
        gen_row(1.0, 1.0, "yes", "yes"),
        gen_row(0.0, 0.0, "", ""),
        gen_row(0.75, 0.625, "One two", "one two"),
    ];
    let r = compute_report(kind, &rows, &ReportOptions::default());
    assert_eq!(
        r.counts,
        Counts {
            negative_flips: 1,
            positive_flips: 1,
            both_correct: 1,
            both_wrong: 1,
            ties: 2
        }
    );
    assert!(close(r.metrics.nfr, 1.0 / 6.0));
    assert!(close(r.metrics.pfr, 1.0 / 6.0));
    let m = r.metrics;
    assert_eq!(
        (m.nfi, m.pfi, m.btc, m.bec, m.nfr_rel, m.nfr_mc),
        (None, None, None, None, None, None)
    );
    assert!(close(m.agreement, 2.0 / 6.0));
    assert!(close(r.old.accuracy, 3.75 / 6.0));
    assert!(close(r.new.accuracy, 3.475 / 6.0));
    assert!(close(m.delta_accuracy, -0.275 / 6.0));
    assert!(close(r.generative.m_g, 0.3));
    assert!(close(r.generative.m_r, 0.5));
    assert!(close(
        r.generative.output_similarity,
        (6.0 / 7.0 + 0.5 + 3.0) / 6.0
    ));
    assert!(close(r.generative.identical_outputs, 2.0 / 6.0));
    assert_eq!(r.intervals.nfr, wilson(1, 6));
    assert_eq!(r.intervals.agreement, wilson(2, 6));
    assert_eq!((r.intervals.acc_old, r.intervals.nfi), (None, None));
    assert!(r.intervals.delta_accuracy.is_some());
    assert!(r.mcnemar.p_value == 1.0 && r.mcnemar.discordant == 2);
    assert!(
        r.warnings
            .iter()
            .any(|w| w.starts_with("scores are continuous")),
        "{:?}",
        r.warnings
    );
}

#[test]
fn equal_generative_scores_are_ties() {
    let rows = [gen_row(0.4, 0.4, "a", "b"), gen_row(0.4, 0.4, "a", "a")];
    let r = compute_report(
        TaskKind::Generation { tolerance: 0.0 },
        &rows,
        &ReportOptions::default(),
    );
    assert_eq!(r.counts.ties, 2);
    assert_eq!((r.metrics.nfr, r.metrics.pfr), (Some(0.0), Some(0.0)));
    assert_eq!((r.generative.m_g, r.generative.m_r), (None, None));
    assert_eq!(r.metrics.delta_accuracy, Some(0.0));
}

#[test]
fn binary_generation_reduces_to_the_classical_report() {
    let mc_rows = mc_dataset();
    let as_text = |a: &Answer| match a {
        Answer::Choice(k) => Answer::Text(format!("choice {k}")),
        Answer::Text(t) => Answer::Text(t.clone()),
    };
    let gen_rows: Vec<InstanceOutcome> = mc_rows
        .iter()
        .map(|i| InstanceOutcome {
            gold: None,
            old: SideOutcome {
                score: i.old.score,
                answer: as_text(&i.old.answer),
                samples: Vec::new(),
            },
            new: SideOutcome {
                score: i.new.score,
                answer: as_text(&i.new.answer),
                samples: Vec::new(),
            },
            ..i.clone()
        })
        .collect();
    let options = ReportOptions::default();
    let mc_report = compute_report(TaskKind::MultipleChoice, &mc_rows, &options);
    for tolerance in [0.0, 0.5] {
        let r = compute_report(TaskKind::Generation { tolerance }, &gen_rows, &options);
        assert_eq!(r.counts, mc_report.counts);
        assert_eq!(r.metrics, mc_report.metrics);
        assert_eq!(r.intervals, mc_report.intervals);
        assert_eq!((r.old, r.new), (mc_report.old, mc_report.new));
        assert_eq!((r.generative.m_g, r.generative.m_r), (Some(1.0), Some(1.0)));
        assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    }
    // A tolerance of 1 turns every flip into a tie: classical rates no longer apply.
    let r = compute_report(TaskKind::Generation { tolerance: 1.0 }, &gen_rows, &options);
    assert_eq!(r.counts.ties, 5);
    assert_eq!((r.metrics.nfr, r.metrics.btc), (Some(0.0), None));
}

#[test]
fn noise_floor_in_the_report() {
    let rows = mc_dataset();
    let with = |self_flips, n| ReportOptions {
        noise_floor: Some(NoiseFloorInput { self_flips, n }),
        ..ReportOptions::default()
    };
    let lower = wilson(2, 20).unwrap().lower;
    let r = compute_report(TaskKind::MultipleChoice, &rows, &with(0, 50));
    assert_eq!(
        r.noise_floor,
        Some(NoiseFloor {
            self_flip_rate: 0.0,
            nfr_exceeds_noise: Some(true)
        })
    );
    let r = compute_report(TaskKind::MultipleChoice, &rows, &with(5, 50));
    assert!(0.1 > lower);
    assert_eq!(r.noise_floor.unwrap().nfr_exceeds_noise, Some(false));
    let r = compute_report(TaskKind::MultipleChoice, &rows, &with(0, 0));
    assert_eq!(r.noise_floor, None);
    assert!(r.warnings.iter().any(|w| w.contains("noise floor")));
}

#[test]
fn gate_bounds_are_inclusive_and_null_fails() {
    let check = |metric: &str, min, max| GateCheck {
        metric: metric.into(),
        min,
        max,
    };
    let options = ReportOptions {
        gate: vec![
            check("nfr", None, Some(0.1)),
            check("btc", Some(0.9), None),
            check("acc_new", Some(0.6), Some(0.7)),
            check("noise_floor.self_flip_rate", None, Some(1.0)),
            check("counts.negative_flips", None, Some(2.0)),
        ],
        ..ReportOptions::default()
    };
    let r = compute_report(TaskKind::MultipleChoice, &mc_dataset(), &options);
    let passed: Vec<bool> = r.gate.checks.iter().map(|c| c.passed).collect();
    assert_eq!(passed, [true, false, true, false, true]);
    assert!(!r.gate.passed);
    assert_eq!(r.gate.checks[3].value, None);
    let ok = evaluate_gate(&r, &[options.gate[0].clone(), options.gate[2].clone()]);
    assert!(ok.passed);
    assert!(evaluate_gate(&r, &[]).passed);
}

#[test]
fn bootstrap_follows_the_seed() {
    let rows = mc_dataset();
    let at = |seed| {
        let options = ReportOptions {
            seed,
            ..ReportOptions::default()
        };
        compute_report(TaskKind::MultipleChoice, &rows, &options)
            .intervals
            .delta_accuracy
    };
    assert_eq!(at(7), at(7));
    assert_ne!(at(7), at(8));
    let none = ReportOptions {
        bootstrap_resamples: 0,
        ..ReportOptions::default()
    };
    let r = compute_report(TaskKind::MultipleChoice, &rows, &none);
    assert_eq!(r.intervals.delta_accuracy, None);
}

#[test]
fn partial_flag_and_odd_scores_are_reported() {
    let mut rows = mc_dataset();
    rows[0].old.score = 0.7;
    rows[1].new.score = f64::NAN;
    let options = ReportOptions {
        partial: true,
        min_slice_size: 1,
        ..ReportOptions::default()
    };
    let r = compute_report(TaskKind::MultipleChoice, &rows, &options);
    assert!(r.partial);
    assert_eq!(r.counts.total(), 20);
    assert_eq!(r.warnings.len(), 1, "{:?}", r.warnings);
    assert!(r.warnings[0].contains("other than 0 or 1"));

    let rows = [
        gen_row(f64::NAN, 0.5, "a", "b"),
        gen_row(1.5, 0.5, "a", "b"),
    ];
    let r = compute_report(
        TaskKind::Generation { tolerance: -1.0 },
        &rows,
        &ReportOptions::default(),
    );
    assert_eq!(
        (
            r.old.accuracy,
            r.metrics.delta_accuracy,
            r.intervals.delta_accuracy
        ),
        (None, None, None)
    );
    let json = serde_json::to_string(&Report {
        warnings: vec![],
        ..r.clone()
    })
    .unwrap();
    assert!(!json.contains("NaN"), "{json}");
    assert!(r.warnings.iter().any(|w| w.contains("NaN or infinite")));
    assert!(r.warnings.iter().any(|w| w.contains("outside [0, 1]")));
    assert!(r.warnings.iter().any(|w| w.contains("tolerance -1")));
}

#[test]
fn report_types_have_openapi_schemas() {
    use utoipa::OpenApi;

    #[derive(OpenApi)]
    #[openapi(components(schemas(
        Report,
        ReportOptions,
        GateCheck,
        GateError,
        InstanceOutcome,
        TaskKind,
        Flip,
        ExactMatchOptions
    )))]
    struct Doc;

    let json = serde_json::to_value(Doc::openapi()).unwrap();
    let schemas = json["components"]["schemas"].as_object().unwrap();
    for name in [
        "Report",
        "Metrics",
        "Intervals",
        "Slice",
        "GateResult",
        "Flip",
        "Answer",
    ] {
        assert!(
            schemas.contains_key(name),
            "{name} missing: {:?}",
            schemas.keys()
        );
    }
    let nfr = &schemas["Metrics"]["properties"]["nfr"];
    assert!(nfr.to_string().contains("null"), "{nfr}");
}

#[test]
fn a_passing_nfr_gate_on_too_few_instances_says_what_it_could_not_see() {
    // 60 instances, 1 negative and 1 positive flip: nfr 1.7% passes a 5% gate, but McNemar's
    // test finds only an nfr of about 17% at 80% power.
    let mut rows: Vec<InstanceOutcome> = (0..58).map(|_| mc(0, 0, 0)).collect();
    rows.push(mc(0, 0, 1));
    rows.push(mc(0, 1, 0));
    let gate = vec![GateCheck {
        metric: "nfr".into(),
        min: None,
        max: Some(0.05),
    }];
    let report = compute_report(
        TaskKind::MultipleChoice,
        &rows,
        &ReportOptions {
            gate: gate.clone(),
            ..ReportOptions::default()
        },
    );
    assert!(report.gate.passed);
    let detectable = report.power.nfr_detectable.unwrap();
    assert!((0.16..0.18).contains(&detectable), "{detectable}");
    let warning = report
        .warnings
        .iter()
        .find(|w| w.starts_with("too small to detect an nfr of 0.05"))
        .expect("the underpowered gate is named");
    assert!(warning.contains("60 instances"), "{warning}");

    // 20,000 instances with the same rates see a 5% nfr: no warning.
    let many: Vec<InstanceOutcome> = rows.iter().cycle().take(60 * 334).cloned().collect();
    let report = compute_report(
        TaskKind::MultipleChoice,
        &many,
        &ReportOptions {
            gate,
            ..ReportOptions::default()
        },
    );
    assert!(report.power.nfr_detectable.unwrap() < 0.05);
    assert!(!report.warnings.iter().any(|w| w.starts_with("too small")));
}

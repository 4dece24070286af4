//! Agreement with scipy/statsmodels (tests/fixtures/metrics/reference.json, written by
//! scripts/reference/metrics_reference.py).

use serde::Deserialize;

use super::{
    benjamini_hochberg, detectable_nfr, fisher_exact, mcnemar_exact, welch_t_test, wilson,
};

const REFERENCE: &str = include_str!("../../tests/fixtures/metrics/reference.json");

#[derive(Deserialize)]
struct Reference {
    versions: serde_json::Value,
    mcnemar: Vec<McNemarCase>,
    wilson: Vec<WilsonCase>,
    fisher: Vec<FisherCase>,
    benjamini_hochberg: Vec<BhCase>,
    power: Vec<PowerCase>,
    welch: Vec<WelchCase>,
}

#[derive(Deserialize)]
struct WelchCase {
    old: Vec<f64>,
    new: Vec<f64>,
    p_value: f64,
}

#[derive(Deserialize)]
struct PowerCase {
    n: u64,
    pfr: f64,
    nfr_detectable: Option<f64>,
}

#[derive(Deserialize)]
struct FisherCase {
    table: [u64; 4],
    p_value: f64,
}

#[derive(Deserialize)]
struct BhCase {
    p_values: Vec<f64>,
    q_values: Vec<f64>,
}

#[derive(Deserialize)]
struct McNemarCase {
    negative_flips: u64,
    positive_flips: u64,
    p_value: f64,
}

#[derive(Deserialize)]
struct WilsonCase {
    k: u64,
    n: u64,
    lower: f64,
    upper: f64,
}

fn reference() -> Reference {
    serde_json::from_str(REFERENCE).expect("reference.json parses")
}

/// Within 1e-9 relative; exact zeros must be exact (or below 1e-15).
fn agrees(ours: f64, theirs: f64) -> bool {
    let scale = ours.abs().max(theirs.abs());
    (ours - theirs).abs() <= 1e-9 * scale || (ours - theirs).abs() < 1e-15
}

#[test]
fn fixture_records_library_versions() {
    let r = reference();
    for lib in ["scipy", "statsmodels"] {
        assert!(r.versions[lib].is_string(), "{lib}");
    }
    assert!(r.mcnemar.len() >= 20 && r.wilson.len() >= 20);
}

#[test]
fn mcnemar_matches_scipy() {
    for case in reference().mcnemar {
        let ours = mcnemar_exact(case.negative_flips, case.positive_flips);
        assert_eq!(ours.discordant, case.negative_flips + case.positive_flips);
        assert!(
            agrees(ours.p_value, case.p_value),
            "NF {} PF {}: ours {} statsmodels {}",
            case.negative_flips,
            case.positive_flips,
            ours.p_value,
            case.p_value
        );
    }
}

#[test]
fn wilson_matches_statsmodels() {
    for case in reference().wilson {
        let ours = wilson(case.k, case.n).unwrap();
        assert!(
            agrees(ours.lower, case.lower) && agrees(ours.upper, case.upper),
            "k {} n {}: ours {ours:?} statsmodels ({}, {})",
            case.k,
            case.n,
            case.lower,
            case.upper
        );
    }
}

#[test]
fn fisher_matches_scipy() {
    let cases = reference().fisher;
    assert!(cases.len() >= 15);
    for case in cases {
        let [a, b, c, d] = case.table;
        let ours = fisher_exact(a, b, c, d);
        assert!(
            agrees(ours, case.p_value),
            "{:?}: ours {ours} scipy {}",
            case.table,
            case.p_value
        );
    }
}

#[test]
fn benjamini_hochberg_matches_scipy_and_statsmodels() {
    for case in reference().benjamini_hochberg {
        let ours = benjamini_hochberg(&case.p_values);
        for (q, theirs) in ours.iter().zip(&case.q_values) {
            assert!(
                agrees(*q, *theirs),
                "{:?}: ours {ours:?} scipy {:?}",
                case.p_values,
                case.q_values
            );
        }
    }
}

#[test]
fn detectable_nfr_matches_scipy() {
    let cases = reference().power;
    assert!(cases.iter().any(|c| c.nfr_detectable.is_none()));
    for case in cases {
        let ours = detectable_nfr(case.n, case.pfr, 0.05, 0.8);
        match (ours, case.nfr_detectable) {
            (None, None) => {}
            (Some(ours), Some(theirs)) => assert!(
                (ours - theirs).abs() <= 1e-9 * theirs,
                "n {} pfr {}: ours {ours} scipy {theirs}",
                case.n,
                case.pfr
            ),
            (ours, theirs) => panic!(
                "n {} pfr {}: ours {ours:?} scipy {theirs:?}",
                case.n, case.pfr
            ),
        }
    }
}

#[test]
fn welch_matches_scipy() {
    let cases = reference().welch;
    assert!(cases.len() >= 5);
    for case in cases {
        let ours = welch_t_test(&case.old, &case.new);
        assert!(
            agrees(ours, case.p_value),
            "{:?} vs {:?}: ours {ours} scipy {}",
            case.old,
            case.new,
            case.p_value
        );
    }
}

//! The sampler follows the distribution transformers' generate(do_sample=True) draws from: on
//! the llama-gqa fixture, for each prompt and (temperature, top_k, top_p) in
//! tests/fixtures/engine/sampling.json (scripts/reference/make_sampling_fixtures.py), 20,000
//! first tokens drawn from the engine's logits never leave generate's support and match its
//! probabilities (chi-square goodness of fit, p > 0.001). A sampler that applies top-p before
//! the temperature fails the same test wherever the order matters.

use std::collections::BTreeMap;

use muscle::engine::sampling::{SamplingParams, draw, draw_stream, warped_probs};
use muscle::engine::scoring::last_logits;
use muscle::engine::types::{GenItem, GenResult, SampleRequest};
use muscle::engine::*;
use serde_json::Value;
use statrs::distribution::{ChiSquared, ContinuousCDF};

use super::helpers::fixtures_dir;

const DRAWS: u32 = 20_000;
const ALPHA: f64 = 0.001;

/// How a sample of draws compares with the reference distribution.
enum Fit {
    /// Tokens generate never draws were drawn.
    OutsideSupport(usize),
    /// Chi-square goodness of fit over the tokens expected at least 5 times, the rest pooled.
    PValue(f64),
}

fn fit(counts: &BTreeMap<u32, u32>, reference: &BTreeMap<u32, f64>) -> Fit {
    let outside: u32 = counts
        .iter()
        .filter(|(token, _)| !reference.contains_key(token))
        .map(|(_, &n)| n)
        .sum();
    if outside > 0 {
        return Fit::OutsideSupport(outside as usize);
    }
    let (mut observed, mut expected) = (Vec::new(), Vec::new());
    let (mut pooled_observed, mut pooled_expected) = (0.0, 0.0);
    for (token, &p) in reference {
        let e = p * f64::from(DRAWS);
        let o = f64::from(counts.get(token).copied().unwrap_or(0));
        if e >= 5.0 {
            observed.push(o);
            expected.push(e);
        } else {
            pooled_observed += o;
            pooled_expected += e;
        }
    }
    if pooled_expected > 0.0 {
        observed.push(pooled_observed);
        expected.push(pooled_expected);
    }
    if observed.len() < 2 {
        return Fit::PValue(1.0);
    }
    let statistic: f64 = observed
        .iter()
        .zip(&expected)
        .map(|(o, e)| (o - e).powi(2) / e)
        .sum();
    let dof = (observed.len() - 1) as f64;
    Fit::PValue(1.0 - ChiSquared::new(dof).unwrap().cdf(statistic))
}

fn counts(probs: &[f64], case: usize) -> BTreeMap<u32, u32> {
    let mut counts = BTreeMap::new();
    for index in 0..DRAWS {
        let mut stream = draw_stream(0, "new", &format!("case-{case}"), index);
        *counts.entry(draw(probs, &mut stream)).or_insert(0) += 1;
    }
    counts
}

/// The wrong order: top-p (and top-k) on the raw logits, the temperature after.
fn filters_before_temperature(logits: &[f32], params: &SamplingParams) -> Vec<f64> {
    let filtered = warped_probs(
        logits,
        &SamplingParams {
            temperature: 1.0,
            ..*params
        },
    );
    let rescaled: Vec<f32> = logits
        .iter()
        .zip(&filtered)
        .map(|(&l, &p)| {
            if p > 0.0 {
                l / params.temperature as f32
            } else {
                f32::NEG_INFINITY
            }
        })
        .collect();
    warped_probs(
        &rescaled,
        &SamplingParams {
            temperature: 1.0,
            top_k: None,
            top_p: 1.0,
        },
    )
}

#[test]
fn sampled_first_tokens_follow_the_distribution_generate_draws_from() {
    let dir = fixtures_dir();
    let fixture: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("sampling.json")).expect("sampling.json"),
    )
    .unwrap();
    let model = LoadedModel::load(
        &ModelSpec::cpu_f32(dir.join("models/llama-gqa"), None),
        true,
    )
    .unwrap();
    let mut wrong_order_failed = 0;
    let mut order_matters = 0;
    for (case_index, case) in fixture["cases"].as_array().unwrap().iter().enumerate() {
        let ids: Vec<u32> = serde_json::from_value(case["prompt_ids"].clone()).unwrap();
        let params = SamplingParams {
            temperature: case["temperature"].as_f64().unwrap(),
            top_k: case["top_k"].as_u64().map(|k| k as usize),
            top_p: case["top_p"].as_f64().unwrap(),
        };
        let reference: BTreeMap<u32, f64> = case["probs"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(token, p)| (token.parse().unwrap(), p.as_f64().unwrap()))
            .collect();
        let logits = last_logits(&model.decoder, &ids).unwrap();
        let name = format!(
            "{:?} at T={} top_k={:?} top_p={}",
            case["prompt"], params.temperature, params.top_k, params.top_p
        );

        let probs = warped_probs(&logits, &params);
        let support: Vec<u32> = (0..probs.len() as u32)
            .filter(|&t| probs[t as usize] > 0.0)
            .collect();
        assert_eq!(
            support,
            reference.keys().copied().collect::<Vec<_>>(),
            "{name}: the tokens left after the warpers"
        );
        match fit(&counts(&probs, case_index), &reference) {
            Fit::PValue(p) if p > ALPHA => {}
            Fit::PValue(p) => {
                panic!("{name}: the draws do not fit generate's distribution: p = {p}")
            }
            Fit::OutsideSupport(n) => panic!("{name}: {n} draws of tokens generate never draws"),
        }

        // Where filtering before the temperature gives another distribution (not, say, when
        // top-k leaves 5 tokens that top-p keeps either way), it must fail.
        let wrong = filters_before_temperature(&logits, &params);
        let distance: f64 = wrong
            .iter()
            .zip(&probs)
            .map(|(a, b)| (a - b).abs())
            .sum::<f64>()
            / 2.0;
        if distance > 0.01 {
            order_matters += 1;
            match fit(&counts(&wrong, case_index), &reference) {
                Fit::PValue(p) if p > ALPHA => {
                    eprintln!("{name}: top-p before the temperature passed (p = {p})")
                }
                _ => wrong_order_failed += 1,
            }
        }
    }
    assert!(order_matters > 0);
    assert_eq!(
        wrong_order_failed, order_matters,
        "top-p before the temperature must fail wherever the order matters"
    );
}

fn sampled_items(temperature: f64, samples: u32) -> Vec<GenItem> {
    [
        "The capital of France is",
        "Once upon a time",
        "Question: 2 + 2 =",
        "the cat sat on the",
        "A",
        "In the morning we went to the market and",
    ]
    .iter()
    .enumerate()
    .map(|(i, prompt)| GenItem {
        prompt: prompt.to_string(),
        max_new_tokens: 6 + i,
        stop: if i == 3 { vec![" the".into()] } else { vec![] },
        no_repeat_ngram_size: if i == 4 { 2 } else { 0 },
        sampling: Some(SampleRequest {
            params: SamplingParams {
                temperature,
                top_k: None,
                top_p: 0.95,
            },
            samples,
            seed: 11,
            side: "new".into(),
            instance: format!("i{i}"),
        }),
    })
    .collect()
}

fn fixture_model() -> LoadedModel {
    LoadedModel::load(
        &ModelSpec::cpu_f32(fixtures_dir().join("models/llama-gqa"), None),
        true,
    )
    .unwrap()
}

fn run(model: &LoadedModel, items: &[GenItem], max_batch_size: usize) -> Vec<GenResult> {
    let batch = BatchConfig {
        max_batch_tokens: 1 << 16,
        max_batch_size,
    };
    generate::generate(model, items, batch, &RunOptions::default()).unwrap()
}

/// A draw depends on (seed, side, instance, index) alone: one instance per batch or all in one
/// give the same samples, and asking for samples leaves the greedy output as it was.
#[test]
fn sampled_outputs_are_the_same_in_any_batch_and_leave_greedy_unchanged() {
    let model = fixture_model();
    let items = sampled_items(0.9, 5);
    let alone = run(&model, &items, 1);
    let together = run(&model, &items, 64);
    assert_eq!(alone, together);
    let greedy_only: Vec<GenItem> = items
        .iter()
        .map(|it| GenItem {
            sampling: None,
            ..it.clone()
        })
        .collect();
    for (with, without) in together.iter().zip(run(&model, &greedy_only, 64)) {
        assert_eq!(with.text, without.text);
        assert_eq!(with.output_ids, without.output_ids);
        assert!(without.samples.is_empty());
        assert_eq!(with.samples.len(), 5);
    }
    let distinct: std::collections::BTreeSet<&str> = together
        .iter()
        .flat_map(|r| r.samples.iter().map(|g| g.text.as_str()))
        .collect();
    assert!(distinct.len() > 12, "draws at T=0.9 vary: {distinct:?}");
    // The stop string cuts the samples as it cuts the greedy output.
    assert!(together[3].samples.iter().all(|g| !g.text.contains(" the")));
}

/// At a temperature near 0 every draw is the greedy output: the draws continue the prompt's
/// cache, copied to each of them, exactly as the greedy pass does.
#[test]
fn cold_draws_repeat_the_greedy_output() {
    let model = fixture_model();
    let results = run(&model, &sampled_items(1e-4, 3), 64);
    for r in &results {
        for g in &r.samples {
            assert_eq!(
                (&g.output_ids, &g.text, g.finish),
                (&r.output_ids, &r.text, r.finish)
            );
        }
    }
}
